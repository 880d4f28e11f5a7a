//! What a template decision costs (issue 15). Group `templates` times a whole
//! `Engine::decide_template` (one shard, softmax, untracked previews so the open decisions do
//! not fill the user's quota) over 256 users for a template of 4 slots × 3 variants, rendered
//! with a request value and a live feature; beside it, `Engine::decide` placing one of the
//! same 12 ids (one slot's worth of work, scored once), and the render alone.
//!
//! Run: `cargo bench --bench templates`. Figures are in `docs/templates.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nudge::template::{RenderValues, TemplateRequest, TemplateSpec};
use nudge::{DecideRequest, Engine, Event, EventKind, PolicyKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn spec() -> TemplateSpec {
    let mut spec = TemplateSpec::new(
        "promo",
        "<h1>{{headline}}</h1><img src=\"{{image}}\"><button>{{button}}</button>{{tone}}",
    )
    .value("first_name");
    for slot in ["headline", "image", "button", "tone"] {
        let texts = [
            "Hi {{first_name}}",
            "On {{user.last_device}}?",
            "Welcome back",
        ];
        let variants: Vec<(String, &str)> =
            (0..3).map(|v| (format!("{slot}{v}"), texts[v])).collect();
        spec = spec.slot(slot, variants.iter().map(|(id, t)| (id.as_str(), *t)));
    }
    spec
}

fn templates(c: &mut Criterion) {
    let mut group = c.benchmark_group("templates");
    // Several microseconds per call: 100 samples of 5 s each.
    group
        .sample_size(100)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    let engine = Engine::builder()
        .shards(1)
        .seed(3)
        .policy(PolicyKind::Softmax)
        .build()
        .unwrap();
    engine.register_template(spec()).unwrap();
    let users: Vec<String> = (0..256).map(|u| format!("user-{u:06}")).collect();
    for u in &users {
        let click = Event::new(u, EventKind::Click)
            .item("x")
            .context("device", "mobile");
        engine.ingest(click).unwrap();
    }
    let mut i = 0usize;
    group.bench_function("decide_template_4x3", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            let req = TemplateRequest::new(&users[i], "promo")
                .value("first_name", "Ann")
                .context("page", "home")
                .track(false);
            black_box(engine.decide_template(req).unwrap())
        })
    });
    let ids: Vec<String> = (0..12).map(|v| format!("promo/slot/{v}")).collect();
    group.bench_function("decide_12_candidates_n1", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            let req = DecideRequest::new(&users[i], ids.iter().cloned(), 1)
                .context("page", "home")
                .track(false);
            black_box(engine.decide(req).unwrap())
        })
    });
    let template = engine.template("promo").unwrap();
    let features = vec!["mobile".to_string()];
    let values = vec![Some("Ann".to_string())];
    let context = Vec::new();
    group.bench_function("render_4_slots", |b| {
        b.iter(|| {
            let values = RenderValues {
                features: &features,
                top_category: None,
                context: &context,
                values: &values,
            };
            black_box(template.render(black_box(&[0, 1, 2, 0]), &values))
        })
    });
    engine.shutdown();
    group.finish();
}

criterion_group!(benches, templates);
criterion_main!(benches);
