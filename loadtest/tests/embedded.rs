//! Short runs against an in-process engine: zero errors, and the harness's count of
//! acknowledged events equals the engine's.

use std::time::Duration;

use loadtest::client::Target;
use loadtest::driver::{self, Load, RunSpec};
use loadtest::workload::WorkloadConfig;
use nudge::Engine;

fn spec(engine: &Engine, load: Load) -> RunSpec {
    let workload = WorkloadConfig {
        seed: 5,
        users: 5_000,
        items: 1_000,
        candidates: 50,
        top: 5,
        lag: 64,
        ..WorkloadConfig::default()
    };
    let mut spec = RunSpec::new(Target::Embedded(engine.clone()), workload);
    spec.load = load;
    spec.connections = 2;
    spec.duration = Duration::from_millis(700);
    spec.warmup = Duration::from_millis(100);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_acknowledges_exactly_what_the_engine_counts() {
    let engine = Engine::builder().shards(2).seed(1).build().unwrap();
    let result = driver::run(&spec(&engine, Load::Closed { pipeline: 16 }))
        .await
        .unwrap();
    let summary = result.summary();
    assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
    assert!(summary.valid, "{:?}", summary.invalid_reasons);
    engine.flush().unwrap();
    let stats = engine.stats();
    assert_eq!(stats.catalog_items, 1_000);
    assert!(
        summary.acked_events_total > 100,
        "{}",
        summary.acked_events_total
    );
    assert_eq!(summary.acked_events_total, stats.total().events_total);
    let decides = &summary.ops["decide"];
    assert!(decides.ok_total > 0);
    assert_eq!(decides.ok_total, stats.total().decisions_total);
    // Follow-ups used the replies, and explicit rewards were accepted.
    assert!(summary.generator.resolved > 0);
    assert!(summary.ops["reward"].ok_total > 0);
    assert!(summary.ops["event"].corrected.count > 0);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_on_schedule() {
    let engine = Engine::builder().shards(2).seed(1).build().unwrap();
    let result = driver::run(&spec(&engine, Load::Open { rate: 2_000.0 }))
        .await
        .unwrap();
    let summary = result.summary();
    assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
    // The schedule is exact: 2000/s over the 0.7 s measured window, give or take one per
    // connection at the edges.
    assert!(
        (1_398..=1_402).contains(&summary.sends),
        "sends {}",
        summary.sends
    );
    engine.flush().unwrap();
    assert_eq!(
        summary.acked_events_total,
        engine.stats().total().events_total
    );
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_acknowledge_every_event() {
    let engine = Engine::builder().shards(2).seed(1).build().unwrap();
    let mut spec = spec(&engine, Load::Closed { pipeline: 4 });
    spec.batch = 32;
    let summary = driver::run(&spec).await.unwrap().summary();
    assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
    assert!(summary.ops["batch"].ok_total > 0);
    engine.flush().unwrap();
    assert_eq!(
        summary.acked_events_total,
        engine.stats().total().events_total
    );
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_makes_every_user_resident_before_the_run() {
    let engine = Engine::builder().shards(2).seed(1).build().unwrap();
    let mut spec = spec(&engine, Load::Closed { pipeline: 4 });
    spec.prefill = true;
    spec.duration = Duration::from_millis(200);
    let summary = driver::run(&spec).await.unwrap().summary();
    assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
    engine.flush().unwrap();
    let total = engine.stats().total();
    // One event per user, then the run's own events; nobody evicted at this size.
    assert_eq!(total.resident_users, 5_000);
    assert_eq!(total.events_total, summary.acked_events_total + 5_000);
    engine.shutdown();
}
