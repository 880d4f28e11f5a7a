//! What rules cost a decision (issue 14; budget: 50 rules add ≤ 1 µs). Group `rules` times
//! `RuleSet::apply` alone on a decision of 20 candidates with 50 rules: none firing (each
//! `when` false, the common case of targeted rules), 5 firing (each then choosing items by
//! category and boosting them), and all 50 firing (the worst case: 50 × 20 item conditions).
//! Group `decide` times a whole `Engine::decide` (one shard, 20 candidates, greedy) with no
//! rules and with those sets, so the difference is everything the wiring adds too (the set's
//! lock and `Arc`, the kept context, the features' decay, the placement).
//!
//! Run: `cargo bench --bench rules`. Figures are in `docs/rules.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nudge::actor::features::{FeatureView, LiveFeatures};
use nudge::actor::Signals;
use nudge::config::HygieneConfig;
use nudge::rules::expr::ItemView;
use nudge::rules::{Candidates, DecisionView, ItemMatches, RuleSet};
use nudge::{DecideRequest, Engine, Event, EventKind, ItemSpec, PolicyKind, RuleConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_732_200_000_000;
const CANDIDATES: usize = 20;

/// 50 boost rules of which the first `firing` hold for the benchmark's user and context.
fn rules(firing: usize) -> Vec<RuleConfig> {
    (0..50)
        .map(|i| {
            let when = if i < firing {
                format!(
                    "user.events_5m >= 0 && ctx.page == 'home' && user.clicks_1h < {}",
                    100 + i
                )
            } else {
                format!("user.clicks_1h > {} && ctx.page == 'checkout'", 100 + i)
            };
            RuleConfig {
                name: format!("rule-{i}"),
                priority: i as i32 % 7,
                when: Some(when),
                action: "boost".into(),
                items: Some(format!("item.category == 'c{}'", i % 5)),
                by: Some(0.5),
                ..RuleConfig::default()
            }
        })
        .collect()
}

fn item_attrs(i: usize) -> Vec<(String, String)> {
    vec![
        ("category".into(), format!("c{}", i % 5)),
        ("brand".into(), format!("b{}", i % 3)),
    ]
}

struct Items(Vec<(String, Vec<(String, String)>)>);

impl Candidates for Items {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn item(&self, i: usize) -> ItemView<'_> {
        ItemView {
            id: &self.0[i].0,
            attrs: &self.0[i].1,
        }
    }
    fn key(&self, i: usize) -> Option<u64> {
        Some(i as u64)
    }
    fn item_key(&self, i: usize) -> u64 {
        i as u64
    }
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("rules");
    // Sub-microsecond to a few microseconds per call: 50 samples of 3 s each.
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let items = Items(
        (0..CANDIDATES)
            .map(|i| (format!("item-{i}"), item_attrs(i)))
            .collect(),
    );
    let mut features = LiveFeatures::default();
    features.observe(EventKind::Click, 1.0, T0, None, 1800);
    let signals = Signals::default();
    let hygiene = HygieneConfig::default();
    let ctx = vec![
        ("page".to_string(), "home".to_string()),
        ("device".to_string(), "mobile".to_string()),
    ];
    let logits: Vec<f32> = (0..CANDIDATES).map(|i| i as f32 * 0.01).collect();
    for firing in [0, 5, 50] {
        let set = RuleSet::compile(&rules(firing), 1).unwrap();
        let decision = DecisionView {
            user: FeatureView {
                features: &features,
                signals: &signals,
                hygiene: &hygiene,
                session_idle_s: 1800,
                now_ms: T0,
                segment: None,
            },
            ctx: &ctx,
            arm: None,
            explain: false,
        };
        let mut remembered = ItemMatches::default();
        group.bench_function(format!("apply_50_rules_{firing}_fire"), |b| {
            b.iter(|| {
                let logits = black_box(&logits);
                black_box(set.apply(&decision, &items, logits, &mut remembered))
            })
        });
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    // A decision takes microseconds and the difference sought is below one: more samples.
    group
        .sample_size(100)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    let ids: Vec<String> = (0..CANDIDATES).map(|i| format!("item-{i}")).collect();
    for firing in [None, Some(0), Some(5), Some(50)] {
        let engine = Engine::builder()
            .shards(1)
            .seed(3)
            .policy(PolicyKind::Greedy)
            .build()
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            let mut item = ItemSpec::new(id);
            item.attrs = item_attrs(i);
            engine.upsert_item(item).unwrap();
        }
        let users: Vec<String> = (0..256).map(|u| format!("user-{u:06}")).collect();
        for u in &users {
            let click = Event::new(u, EventKind::Click).item(&ids[0]);
            engine.ingest(click).unwrap();
        }
        let name = match firing {
            None => "no_rules".to_string(),
            Some(f) => {
                engine.set_rules(&rules(f)).unwrap();
                format!("rules_50_{f}_fire")
            }
        };
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % users.len();
                let request = DecideRequest::new(&users[i], ids.iter().cloned(), 5)
                    .context("page", "home")
                    .context("device", "mobile");
                black_box(engine.decide(request).unwrap())
            })
        });
        engine.shutdown();
    }
    group.finish();
}

/// What live segments (issue 14, item 4) add to a decision: the user's point, its nearest of
/// `k = 8` centroids and the sum it joins (O(k·2d)), against `segments.k = 0`. Users have
/// trained enough (a dozen clicks each) to be clustered.
fn segments(c: &mut Criterion) {
    let mut group = c.benchmark_group("segments");
    group
        .sample_size(100)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    let ids: Vec<String> = (0..CANDIDATES).map(|i| format!("item-{i}")).collect();
    for k in [0, 8] {
        let mut cfg = nudge::Config {
            shards: 1,
            seed: 3,
            ..nudge::Config::default()
        };
        cfg.exploration.policy = PolicyKind::Greedy;
        cfg.segments.k = k;
        cfg.segments.update_interval_ms = 1;
        let engine = Engine::builder().config(cfg).build().unwrap();
        for (i, id) in ids.iter().enumerate() {
            let mut item = ItemSpec::new(id);
            item.attrs = item_attrs(i);
            engine.upsert_item(item).unwrap();
        }
        let users: Vec<String> = (0..256).map(|u| format!("user-{u:06}")).collect();
        for round in 0..12 {
            for (u, user) in users.iter().enumerate() {
                let click = Event::new(user, EventKind::Click).item(&ids[(u + round) % 7]);
                engine.ingest(click).unwrap();
            }
            engine.tick().unwrap();
        }
        let mut i = 0usize;
        group.bench_function(format!("decide_k_{k}"), |b| {
            b.iter(|| {
                i = (i + 1) % users.len();
                let request = DecideRequest::new(&users[i], ids.iter().cloned(), 5)
                    .context("page", "home")
                    .context("device", "mobile");
                black_box(engine.decide(request).unwrap())
            })
        });
        if k > 0 {
            let clustered = users.iter().filter(|u| {
                let export = engine.user(u).unwrap().unwrap();
                export.segment.is_some()
            });
            eprintln!(
                "segments: {} of {} users clustered",
                clustered.count(),
                users.len()
            );
        }
        engine.shutdown();
    }
    group.finish();
}

criterion_group!(benches, apply, decide, segments);
criterion_main!(benches);
