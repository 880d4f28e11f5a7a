//! The embedded engine through real shard threads: batched ingest throughput on 2 shards, and
//! the mean `decide` round trip. Tails are in `benches/latency.rs`.
//!
//! Run: `cargo bench --bench engine`. Target (issue 2): batched ingest ≥ 2M events/s.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nudge::rng::Rng;
use nudge::{DecideRequest, Event, EventKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ITEMS: usize = 10_000;
const USERS: usize = 100_000;
const BATCH: usize = 4096;

fn batch(rng: &mut Rng) -> Vec<Event> {
    (0..BATCH)
        .map(|_| {
            let kind = match rng.below(10) {
                0..=5 => EventKind::Impression,
                6..=8 => EventKind::Click,
                _ => EventKind::Skip,
            };
            Event::new(format!("user-{}", rng.below(USERS)), kind)
                .item(format!("item-{}", rng.below(ITEMS)))
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let engine = common::engine_with_catalog(ITEMS);
    let mut rng = Rng::new(1);
    // Pre-build batches so the measurement is the engine's work, not string formatting.
    let batches: Vec<Vec<Event>> = (0..64).map(|_| batch(&mut rng)).collect();
    let mut group = c.benchmark_group("engine");
    // Each iteration is a 4096-event batch across both shards; a few seconds is plenty.
    group.sample_size(30).warm_up_time(Duration::from_secs(2));
    group
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(BATCH as u64));
    let mut k = 0;
    group.bench_function("ingest_batch_2_shards", |b| {
        b.iter_batched(
            || {
                k += 1;
                batches[k % batches.len()].clone()
            },
            |events| black_box(engine.ingest_batch(events)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    let ids: Vec<String> = (0..ITEMS).map(|i| format!("item-{i}")).collect();
    let mut j = 0usize;
    group.bench_function("decide_round_trip_100_top10", |b| {
        b.iter_batched(
            || {
                j += 1;
                let start = (j * 100) % (ITEMS - 100);
                DecideRequest::new(
                    format!("user-{}", j % USERS),
                    ids[start..start + 100].iter().cloned(),
                    10,
                )
            },
            |req| black_box(engine.decide(req).unwrap()),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
    engine.shutdown();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
