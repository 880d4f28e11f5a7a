//! The hot-path cost of experiments' statistical core: assigning a user (two hashes of its id
//! and a search over the arms' cumulative weights), assigning through a layer (one more hash),
//! and counting one observation into an arm's moments; plus one look of the sequential test,
//! which runs on read, not per decision.
//!
//! Run: `cargo bench --bench experiment`. Target (issue 13): assigning and counting add
//! ≤ 100 ns to a decision.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nudge::experiment::{Effect, Layer, Moments, Sequential, Split};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct user ids of a realistic length, cycled through so the hash sees varied input.
fn users() -> Vec<String> {
    (0..1024).map(|i| format!("user-{i:08}-a1b2c3")).collect()
}

fn experiment(c: &mut Criterion) {
    let mut group = c.benchmark_group("experiment");
    // Each function takes tens of nanoseconds: short warm-up and measurement keep the whole
    // group near 15 s, and 50 samples still give tight intervals at this scale.
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let users = users();
    let arms = [
        ("control", 1.0),
        ("nudge", 1.0),
        ("global", 1.0),
        ("popular", 1.0),
    ];
    let split = Split::new("headline", "headline-2026-12", &arms, 0.05).unwrap();
    let mut i = 0usize;
    group.bench_function("assign_4_arms_holdout", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(split.assign(black_box(&users[i])))
        })
    });
    let mut layer = Layer::new("ranking");
    layer.add(0..5_000, split.clone()).unwrap();
    layer
        .add(
            5_000..10_000,
            Split::new("tone", "tone-1", &arms, 0.0).unwrap(),
        )
        .unwrap();
    group.bench_function("assign_in_layer_of_2", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(layer.assign(black_box(&users[i])).map(|(_, a)| a))
        })
    });
    let mut moments = [Moments::default(); 4];
    let mut x = 0.0f64;
    group.bench_function("count_one_observation", |b| {
        b.iter(|| {
            i = (i + 1) % 4;
            x += 0.25;
            moments[i].add(black_box(x));
        })
    });
    black_box(&moments);
    let (control, treatment) = (
        Moments::proportion(500, 10_000),
        Moments::proportion(560, 10_000),
    );
    group.bench_function("sequential_look", |b| {
        let mut test = Sequential::new(Effect::Relative, 0.2, 0.05);
        b.iter(|| black_box(test.observe(black_box(&control), black_box(&treatment))))
    });
    group.finish();
}

criterion_group!(benches, experiment);
criterion_main!(benches);
