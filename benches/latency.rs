//! Tail latency of the embedded `decide` round trip (caller thread → shard thread → caller),
//! with an HdrHistogram: 100 catalog candidates, top 10, ε-greedy, 2 shards, one caller.
//!
//! Run: `cargo bench --bench latency`. Target (issue 2): p50 ≤ 5 µs, p99 ≤ 25 µs.
//! Set `NUDGE_BENCH_REQUESTS` (default 200 000) and `NUDGE_BENCH_ITEMS` (catalog size, default
//! 10 000) to change the run; other `NUDGE_*` variables override the engine's configuration.

mod common;

use std::time::Instant;

use hdrhistogram::Histogram;
use nudge::rng::Rng;
use nudge::{DecideRequest, Event, EventKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USERS: usize = 10_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    let items: usize = std::env::var("NUDGE_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let requests: usize = std::env::var("NUDGE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let engine = common::engine_with_catalog(items);
    // The requests' own seeded stream: which users and candidate ranges are asked for.
    let mut rng = Rng::new(10);
    let ids: Vec<String> = (0..items).map(|i| format!("item-{i}")).collect();
    let request = |rng: &mut Rng| {
        let start = rng.below(items - 100);
        DecideRequest::new(
            format!("user-{}", rng.below(USERS)),
            ids[start..start + 100].iter().cloned(),
            10,
        )
    };
    let mut decide = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut ingest = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for phase in ["warmup", "measure"] {
        let n = if phase == "warmup" {
            requests / 4
        } else {
            requests
        };
        decide.reset();
        ingest.reset();
        for k in 0..n {
            let req = request(&mut rng);
            let user = req.user.clone();
            let t = Instant::now();
            let d = engine.decide(req).unwrap();
            decide.record(t.elapsed().as_nanos() as u64).unwrap();
            if k % 2 == 0 {
                let ev = Event::new(user, EventKind::Click).item(d.items[0].item.clone());
                let t = Instant::now();
                engine.ingest(ev).unwrap();
                ingest.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        }
    }
    println!("embedded round trip, 2 shards, 1 caller thread, {requests} decisions");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for (name, h) in [
        ("decide (100 cand., top 10)", &decide),
        ("ingest (click)", &ingest),
    ] {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            h.max() as f64 / 1000.0
        );
    }
    engine.shutdown();
}
