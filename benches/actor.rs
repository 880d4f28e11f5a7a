//! Actor-level costs on one shard, no threads: one click on a resident user, one decision over
//! 100 catalog candidates (with and without the per-candidate lookup), the edge's validation,
//! and the one-shot reply channel (the crate's only `unsafe`) on its own.
//!
//! Run: `cargo bench --bench actor`. Targets (issue 2): event ≤ 250 ns, decision over 100
//! resolved candidates with top 10 ≤ 2 µs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nudge::actor::UserActor;
use nudge::config::Config;
use nudge::engine::validate;
use nudge::model::math::dot;
use nudge::model::policy;
use nudge::model::FeatureSpace;
use nudge::rng::Rng;
use nudge::shard::learner::Learner;
use nudge::shard::msg::{ValidDecide, ValidEvent};
use nudge::shard::{Counters, Shard};
use nudge::sync::oneshot;
use nudge::{DecideRequest, Event, EventKind, ItemSpec, ShardId, UserId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: u64 = 1_732_200_000_000;
const ITEMS: usize = 1000;

fn setup() -> (Shard, Arc<Config>, FeatureSpace) {
    let cfg = Arc::new(Config::default());
    let space = FeatureSpace {
        dim: cfg.model.dim,
        item_embedding_init: 0.1,
    };
    let mut shard = Shard::new(
        ShardId(0),
        cfg.clone(),
        0,
        None,
        Arc::new(Counters::default()),
    );
    let mut rng = Rng::new(1);
    for i in 0..ITEMS {
        let vector: Vec<f32> = (0..32).map(|_| rng.normal() as f32).collect();
        let spec = ItemSpec::new(format!("item-{i}"))
            .attr("category", format!("c{}", i % 20))
            .vector(vector);
        shard.on_upsert(Arc::new(validate::item(&cfg, &space, spec).unwrap()));
    }
    (shard, cfg, space)
}

fn event(cfg: &Config, space: &FeatureSpace, i: u64) -> ValidEvent {
    let ev = Event::new("u1", EventKind::Click).item(format!("item-{}", i % ITEMS as u64));
    validate::event(cfg, space, ev.at(NOW + i), NOW + i).unwrap()
}

fn decide_request(i: u64) -> DecideRequest {
    let start = (i * 100) % ITEMS as u64;
    let ids = (0..100).map(|k| format!("item-{}", (start + k) % ITEMS as u64));
    DecideRequest::new("u1", ids, 10)
        .at(NOW + i)
        .context("device", "mobile")
}

fn valid_decide(cfg: &Config, space: &FeatureSpace, i: u64) -> ValidDecide {
    validate::decide(cfg, space, decide_request(i), NOW + i, false).unwrap()
}

fn actor(c: &mut Criterion) {
    let mut group = c.benchmark_group("actor");
    // Sub-microsecond work: many samples, a short warm-up, and 1 element per iteration.
    group.sample_size(100).warm_up_time(Duration::from_secs(1));
    group
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));

    let (mut shard, cfg, space) = setup();
    let mut i = 0u64;
    shard.on_event(event(&cfg, &space, 0)).unwrap();
    group.bench_function("event_click_resident_d32", |b| {
        b.iter_batched(
            || {
                i += 1;
                event(&cfg, &space, i)
            },
            |ev| black_box(shard.on_event(ev)),
            BatchSize::SmallInput,
        )
    });

    let mut j = 0u64;
    group.bench_function("decide_100_top10_with_lookup", |b| {
        b.iter_batched(
            || {
                j += 1;
                valid_decide(&cfg, &space, j)
            },
            |req| black_box(shard.on_decide(req)),
            BatchSize::SmallInput,
        )
    });

    // Candidates already resolved: the shard's own per-candidate code (`logit_row`: one dot
    // product of the extended query with the item's row [x, bias, popularity]) over 100
    // looked-up items, then the partial top-10 selection with epsilon-greedy propensities. Only
    // the map lookup is left out.
    let mut learner = Learner::new(cfg.clone(), 3, false);
    let mut keys = Vec::new();
    for i in 0..100 {
        let spec = ItemSpec::new(format!("r{i}"))
            .attr("category", format!("c{}", i % 20))
            .vector((0..32).map(|k| ((i * 31 + k) % 17) as f32 - 8.0).collect());
        let f = Arc::new(validate::item(&cfg, &space, spec).unwrap());
        keys.push(f.id.key());
        learner
            .global
            .items
            .insert(f.id.key(), Some(f.clone()), &f.e0);
        learner
            .global
            .record_popularity(f.id.key(), NOW - (i as u64) * 60_000);
    }
    let mut user = UserActor::new(UserId::new("u1").unwrap(), NOW, 32);
    let x: Vec<f32> = learner.item_vector(keys[0], None).to_vec();
    user.add_signal(1.0, &x, NOW, 1800.0);
    let context = validate::context(&cfg, &space, &[("device".into(), "mobile".into())]).unwrap();
    let full = learner.full_context(&context, &user);
    learner.prepare_query(&user, &full, NOW);
    let resolved: Vec<_> = keys
        .iter()
        .map(|&k| learner.resolve(k, None).unwrap())
        .collect();
    let mut logits = vec![0.0f32; 100];
    let mut policy_rng = Rng::new(4);
    group.bench_function("score_select_100_top10_resolved", |b| {
        b.iter(|| {
            for (z, &row) in logits.iter_mut().zip(&resolved) {
                *z = learner.logit_row(row);
            }
            black_box(policy::place(
                &cfg.exploration,
                &logits,
                10,
                &mut policy_rng,
            ))
        })
    });
    let q = learner.query.clone();
    let row = x.clone();
    group.bench_function("dot_32", |b| b.iter(|| black_box(dot(black_box(&q), &row))));
    group.finish();

    let mut edge = c.benchmark_group("edge");
    edge.sample_size(50).warm_up_time(Duration::from_secs(1));
    edge.measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut k = 0u64;
    edge.bench_function("validate_decide_100", |b| {
        b.iter_batched(
            || {
                k += 1;
                decide_request(k)
            },
            |req| black_box(validate::decide(&cfg, &space, req, NOW, false)),
            BatchSize::SmallInput,
        )
    });
    edge.finish();
}

fn oneshot_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("oneshot");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    // A request/reply pair to a thread that spins on a crossbeam inbox, as a shard does.
    let (tx, rx) = crossbeam_channel::bounded::<oneshot::Sender<u64>>(1024);
    let server = std::thread::spawn(move || {
        while let Ok(reply) = rx.recv() {
            reply.send(7);
        }
    });
    group.bench_function("request_reply_via_thread", |b| {
        b.iter(|| {
            let (reply, wait) = oneshot::channel();
            tx.send(reply).unwrap();
            black_box(wait.wait(Duration::from_micros(50)).unwrap())
        })
    });
    group.bench_function("send_then_wait_same_thread", |b| {
        b.iter(|| {
            let (reply, wait) = oneshot::channel();
            reply.send(1u64);
            black_box(wait.wait(Duration::ZERO).unwrap())
        })
    });
    drop(tx);
    server.join().unwrap();
    group.finish();
}

criterion_group!(benches, actor, oneshot_round_trip);
criterion_main!(benches);
