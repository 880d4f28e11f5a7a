//! The hot-path cost of experiments' statistical core: assigning a user (two hashes of its id
//! and a search over the arms' cumulative weights), assigning through a layer (one more hash),
//! and counting one observation into an arm's moments; plus one look of the sequential test,
//! which runs on read, not per decision. The `engine` functions time what the wiring adds:
//! the registry's lookup as `Engine::decide` makes it (with and without a running experiment)
//! and a shard's count of one decision into its arm's tally.
//!
//! Run: `cargo bench --bench experiment`. Target (issue 13): assigning and counting add
//! ≤ 100 ns to a decision.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nudge::experiment::{
    ArmPolicy, ArmSpec, ArmTag, Effect, ExperimentSpec, Layer, Moments, Registry, Sequential,
    Split, Tallies,
};

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
    let registry = Registry::default();
    group.bench_function("engine_lookup_none_running", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(registry.assign(black_box(&users[i])))
        })
    });
    let spec = ExperimentSpec::new(
        "headline",
        arms.iter()
            .map(|&(name, weight)| ArmSpec {
                name: name.into(),
                weight,
                policy: ArmPolicy::Control,
            })
            .collect(),
    );
    registry.create(spec, 0, "bench").unwrap();
    group.bench_function("engine_lookup_4_arms", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(registry.assign(black_box(&users[i])))
        })
    });
    let mut tallies = Tallies::default();
    group.bench_function("engine_count_decision", |b| {
        b.iter(|| {
            i = (i + 1) % 4;
            let tag = ArmTag {
                experiment: 0,
                arm: i as u16,
            };
            tallies.arm(black_box(tag)).decisions += 1;
        })
    });
    black_box(&tallies);
    group.bench_function("sequential_look", |b| {
        let mut test = Sequential::new(Effect::Relative, 0.2, 0.05);
        b.iter(|| black_box(test.observe(black_box(&control), black_box(&treatment))))
    });
    group.finish();
}

/// A whole `Engine::decide` (one shard, 20 candidates, greedy) with no experiment and with one
/// whose four arms are all plain `nudge`: the ranking is the same, so the difference is what
/// the wiring adds (lookup, the arm carried to the shard, counting, the reply's names).
fn decide(c: &mut Criterion) {
    use nudge::{DecideRequest, Engine, ItemSpec, PolicyKind};
    let mut group = c.benchmark_group("decide");
    // A decision takes microseconds; the difference sought is tens of nanoseconds, so more
    // samples and a longer measurement than the group above.
    group
        .sample_size(100)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    let users = users();
    let items: Vec<String> = (0..20).map(|i| format!("item-{i}")).collect();
    for running in [false, true] {
        let engine = Engine::builder()
            .shards(1)
            .seed(3)
            .policy(PolicyKind::Greedy)
            .build()
            .unwrap();
        for id in &items {
            engine.upsert_item(ItemSpec::new(id)).unwrap();
        }
        if running {
            let arms = ["a", "b", "c", "d"].map(|name| ArmSpec {
                name: name.into(),
                weight: 1.0,
                policy: ArmPolicy::Nudge { epsilon: None },
            });
            let spec = ExperimentSpec::new("bench", arms.to_vec());
            engine.create_experiment(spec, "bench").unwrap();
        }
        let name = if running {
            "one_experiment"
        } else {
            "no_experiment"
        };
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % users.len();
                let request = DecideRequest::new(&users[i], items.iter().cloned(), 5);
                black_box(engine.decide(request).unwrap())
            })
        });
        engine.shutdown();
    }
    group.finish();
}

criterion_group!(benches, experiment, decide);
criterion_main!(benches);
