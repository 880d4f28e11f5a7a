//! Short closed-loop runs against nudge's real server, in process, over each protocol: zero
//! errors, and the harness's count of acknowledged events equals the engine's.

use std::time::Duration;

use loadtest::client::Target;
use loadtest::driver::{self, Load, RunSpec};
use loadtest::serve::InProcess;
use loadtest::workload::WorkloadConfig;

fn workload() -> WorkloadConfig {
    WorkloadConfig {
        seed: 9,
        users: 5_000,
        items: 1_000,
        candidates: 50,
        top: 5,
        lag: 64,
        ..WorkloadConfig::default()
    }
}

async fn run_against(make_target: impl Fn(&InProcess) -> Target, batch: u32) {
    let engine = nudge::Engine::builder().shards(2).seed(1).build().unwrap();
    let server = tokio::task::spawn_blocking(move || InProcess::start_with(engine))
        .await
        .unwrap()
        .unwrap();
    let mut spec = RunSpec::new(make_target(&server), workload());
    spec.load = Load::Closed { pipeline: 8 };
    spec.connections = 2;
    spec.batch = batch;
    spec.duration = Duration::from_millis(600);
    spec.warmup = Duration::from_millis(100);
    let summary = driver::run(&spec).await.unwrap().summary();
    assert!(
        summary.errors.is_empty(),
        "{:?}: errors {:?}",
        spec.target,
        summary.errors
    );
    assert!(summary.valid, "{:?}", summary.invalid_reasons);
    let engine = server.engine.clone();
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let stats = engine.stats();
    assert_eq!(stats.catalog_items, 1_000);
    assert!(
        summary.acked_events_total > 50,
        "{}",
        summary.acked_events_total
    );
    assert_eq!(
        summary.acked_events_total,
        stats.total().events_total,
        "{:?}",
        spec.target
    );
    assert_eq!(
        summary.ops["decide"].ok_total,
        stats.total().decisions_total
    );
    assert!(summary.generator.resolved > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_closed_loop_counts_match() {
    run_against(|s| Target::Tcp(s.endpoints.tcp), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_closed_loop_counts_match() {
    run_against(
        |s| Target::Ws(format!("ws://{}/v1/ws", s.endpoints.http)),
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_closed_loop_counts_match() {
    run_against(|s| Target::Http(s.endpoints.http), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_tcp_and_http_counts_match() {
    run_against(|s| Target::Tcp(s.endpoints.tcp), 16).await;
    run_against(|s| Target::Http(s.endpoints.http), 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_over_tcp_then_the_probe_reads_the_servers_counters() {
    let engine = nudge::Engine::builder().shards(2).seed(1).build().unwrap();
    let server = tokio::task::spawn_blocking(move || InProcess::start_with(engine))
        .await
        .unwrap()
        .unwrap();
    let w = loadtest::workload::Workload::new(workload()).unwrap();
    let tcp = Target::Tcp(server.endpoints.tcp);
    loadtest::client::load_catalog(&tcp, &w).await.unwrap();
    assert_eq!(loadtest::client::prefill(&tcp, &w).await.unwrap(), 0);
    // Every shard has published its counters.
    server.engine.flush().unwrap();
    let expected = Some(loadtest::probe::ServerCounters {
        resident_users: 5_000,
        open_decisions: 0,
    });
    for target in [tcp, Target::Http(server.endpoints.http)] {
        let mut probe = loadtest::probe::Probe::connect(&target)
            .await
            .unwrap()
            .expect("TCP and HTTP can be asked");
        // Twice on one connection: the probe's connection stays usable.
        assert_eq!(probe.sample().await, expected, "{target:?}");
        assert_eq!(probe.sample().await, expected, "{target:?}");
    }
    let ws = Target::Ws(format!("ws://{}/v1/ws", server.endpoints.http));
    assert!(loadtest::probe::Probe::connect(&ws)
        .await
        .unwrap()
        .is_none());
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}
