//! What threshold triggers cost an event (issue 14, item 3). Group `triggers` times
//! `TriggerSet::check` alone for one user with 10 triggers, none of which crosses (the common
//! case: each `when` walked, each mark looked up). Group `ingest` times a whole
//! `Engine::ingest` of a scroll event (one shard, in memory) with no triggers and with those
//! 10, so the difference is everything the wiring adds (the set's `Arc`, the feature reads).
//!
//! Run: `cargo bench --bench triggers`. Figures are in `docs/triggers.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nudge::actor::features::{FeatureView, LiveFeatures};
use nudge::actor::Signals;
use nudge::config::HygieneConfig;
use nudge::triggers::{TriggerMarks, TriggerSet};
use nudge::{Engine, Event, EventKind, TriggerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_732_200_000_000;

/// Ten triggers over features a scroll event moves, none of which holds for the benchmark's
/// user (scrolling at 0.5).
fn triggers() -> Vec<TriggerConfig> {
    (0..10)
        .map(|i| TriggerConfig {
            name: format!("t{i}"),
            when: match i % 3 {
                0 => format!("user.scroll_depth > 0.{}", 7 + i % 3),
                1 => format!("user.sentiment < -0.{} && user.events_5m > 1", 4 + i % 5),
                _ => format!(
                    "user.engagement_velocity * 60 < 0.{} * user.engagement_per_hour - 1000",
                    1 + i % 9
                ),
            },
            cooldown_s: 60,
            ..TriggerConfig::default()
        })
        .collect()
}

fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("triggers");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let set = TriggerSet::compile(&triggers(), 1, "").unwrap();
    let mut features = LiveFeatures::default();
    features.observe(EventKind::Scroll, 0.5, T0, None, 1800);
    let (signals, hygiene) = (Signals::default(), HygieneConfig::default());
    let mut marks = TriggerMarks::default();
    g.bench_function("check_10_none_crossing", |b| {
        b.iter(|| {
            let view = FeatureView {
                features: &features,
                signals: &signals,
                hygiene: &hygiene,
                session_idle_s: 1800,
                now_ms: T0,
                segment: None,
            };
            black_box(set.check(&mut marks, view, T0))
        })
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for (name, set) in [("no_triggers", Vec::new()), ("triggers_10", triggers())] {
        let engine = Engine::builder().shards(1).seed(3).build().unwrap();
        engine.set_triggers(&set).unwrap();
        let mut ts = T0;
        g.bench_function(name, |b| {
            b.iter(|| {
                ts += 1;
                let ev = Event::new("u1", EventKind::Scroll).value(0.5).at(ts);
                black_box(engine.ingest(ev).unwrap())
            })
        });
        engine.shutdown();
    }
    g.finish();
}

criterion_group!(benches, check, ingest);
criterion_main!(benches);
