//! Durability figures (issue 11): recovery time and memory bounded by the resident cap.
//!
//! Run: `cargo bench --bench recovery`. Two parts, on a data directory under the system's
//! temporary directory (removed after), 2 shards, d = 32, `fsync = no` (the figures are about
//! the checkpoint and the replay, not the disk's fsync):
//!
//! 1. **Recovery**: N users (one click each) checkpointed to the store, then N more clicks on
//!    them logged after the checkpoint; the engine is stopped without a final checkpoint and
//!    started again. Reports the checkpoint's duration and size, the start's duration ("ready")
//!    and its replay rate. Target: N = 1M → ready in ≤ 3 s.
//! 2. **Bounded memory**: a resident cap of C users per shard and 2·N distinct users streamed
//!    through as fast as `ingest_batch` takes them, retrying what the store's back-pressure
//!    refuses (`unavailable`, as a client would); reports resident users, parked bytes,
//!    refusals, stored users and the process's RSS after each quarter, and checks that sampled
//!    users export after it all.
//!
//! `NUDGE_BENCH_USERS` sets N (default 1 000 000); `NUDGE_BENCH_CAP` sets C (default 50 000,
//! i.e. 100k resident over the two shards).

use std::time::Instant;

use nudge::{Engine, Error, Event, EventKind, FsyncPolicy, ItemSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (pages * 4096) as f64 / (1 << 20) as f64
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn engine(dir: &std::path::Path, cap: usize) -> Engine {
    Engine::builder()
        .shards(2)
        .data_dir(dir)
        .fsync(FsyncPolicy::No)
        .max_users_per_shard(cap)
        .build()
        .unwrap()
}

/// One click for each user in `users`, in batches; events refused by the store's
/// back-pressure are sent again after a millisecond, as a client would.
fn clicks(engine: &Engine, users: std::ops::Range<usize>) {
    let batch = 10_000;
    let click = |u: usize| {
        Event::new(format!("user-{u:08}"), EventKind::Click).item(format!("item-{}", u % 1000))
    };
    for start in users.clone().step_by(batch) {
        let mut todo: Vec<usize> = (start..(start + batch).min(users.end)).collect();
        while !todo.is_empty() {
            let results = engine.ingest_batch(todo.iter().map(|&u| click(u)).collect());
            let mut refused = Vec::new();
            for (u, r) in todo.iter().zip(results) {
                match r {
                    Ok(_) => {}
                    Err(Error::Unavailable(_)) => refused.push(*u),
                    Err(e) => panic!("user-{u:08}: {e}"),
                }
            }
            if !refused.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            todo = refused;
        }
    }
    engine.flush().unwrap();
}

fn recovery(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 4_000_000);
    for i in 0..1000 {
        e.upsert_item(ItemSpec::new(format!("item-{i}")).attr("category", "c"))
            .unwrap();
    }
    clicks(&e, 0..n);
    let started = Instant::now();
    e.checkpoint().unwrap();
    let d = e.stats().durability.unwrap();
    println!(
        "checkpoint of {n} dirty users: {:.2} s, {:.0} MiB, {} stored",
        started.elapsed().as_secs_f64(),
        d.last_checkpoint_bytes as f64 / (1 << 20) as f64,
        d.stored_users
    );
    clicks(&e, 0..n);
    e.shutdown_without_checkpoint();
    drop(e);
    let started = Instant::now();
    let e = engine(dir.path(), 4_000_000);
    let ready = started.elapsed().as_secs_f64();
    let d = e.stats().durability.unwrap();
    println!(
        "restart with {} stored users and {} log records after the checkpoint: ready in {ready:.2} s \
         (replay {:.0} records/s)",
        d.stored_users,
        d.recovered_records,
        d.recovered_records as f64 / ready
    );
    // The users load on first touch: one of each half.
    assert!(e.user("user-00000007").unwrap().is_some());
    assert!(e.user(&format!("user-{:08}", n - 1)).unwrap().is_some());
}

fn bounded(n: usize, cap: usize) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), cap);
    for i in 0..1000 {
        e.upsert_item(ItemSpec::new(format!("item-{i}")).attr("category", "c"))
            .unwrap();
    }
    let total = 2 * n;
    println!("resident cap {} per shard, {total} distinct users:", cap);
    for q in 0..4 {
        clicks(&e, q * total / 4..(q + 1) * total / 4);
        let s = e.stats();
        let d = s.durability.as_ref().unwrap();
        println!(
            "  after {:>8} users: resident {:>7}, parked {:>4} MiB, refused {:>8}, stored {:>8}, passivations {:>8}, checkpoints {:>3}, RSS {:.0} MiB",
            (q + 1) * total / 4,
            s.total().resident_users,
            s.total().parked_bytes >> 20,
            d.parked_refusals_total,
            d.stored_users,
            d.passivations_total,
            d.checkpoints_total,
            rss_mib()
        );
    }
    for u in (0..total).step_by(total / 16) {
        let user = format!("user-{u:08}");
        let Some(x) = e.user(&user).unwrap() else {
            panic!("{user} does not export: {:?}", e.stats().durability);
        };
        assert_eq!(x.events_by_kind[EventKind::Click as usize], 1, "{user}");
    }
    println!("  16 sampled users of all quarters export with their click");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("NUDGE_BENCH_USERS", 1_000_000);
    recovery(n);
    bounded(n, env("NUDGE_BENCH_CAP", 50_000));
}
