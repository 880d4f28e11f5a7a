//! Memory per resident user at d = 32: creates 1M users (one click each) in a 2-shard engine and
//! reports the growth of the process's resident set size per user.
//!
//! Run: `cargo bench --bench memory`. Target (issue 2): ≤ 1 KiB per user.
//! Set `NUDGE_BENCH_USERS` to change the number of users (default 1 000 000).

use nudge::{Engine, Event, EventKind, ItemSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let users: usize = std::env::var("NUDGE_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let engine = Engine::builder().shards(2).build().unwrap();
    for i in 0..1000 {
        engine
            .upsert_item(ItemSpec::new(format!("item-{i}")).attr("category", "c"))
            .unwrap();
    }
    engine
        .ingest(Event::new("warm", EventKind::Click).item("item-1"))
        .unwrap();
    engine.flush().unwrap();
    let before = rss_bytes();
    let batch = 10_000;
    for start in (0..users).step_by(batch) {
        let events = (start..(start + batch).min(users))
            .map(|u| {
                Event::new(format!("user-{u:08}"), EventKind::Click)
                    .item(format!("item-{}", u % 1000))
            })
            .collect();
        for r in engine.ingest_batch(events) {
            r.unwrap();
        }
    }
    engine.flush().unwrap();
    let after = rss_bytes();
    let resident = engine.stats().total().resident_users;
    println!(
        "users created: {users}, resident: {resident}, d = {}",
        engine.config().model.dim
    );
    println!(
        "RSS before: {:.1} MiB, after: {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "RSS growth per resident user: {:.0} bytes",
        (after - before) as f64 / resident as f64
    );
    engine.shutdown();
}
