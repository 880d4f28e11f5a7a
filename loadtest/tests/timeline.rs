//! The soak run's timeline: a short open-loop run writes one CSV row per interval with sane
//! values (times in order, the scheduled rate, ordered percentiles, this process's RSS), the
//! file parses back, and `plot` draws it as a PNG.

use std::time::Duration;

use loadtest::client::Target;
use loadtest::driver::{self, Load, RunSpec};
use loadtest::timeline::{self, TimelineSpec};
use loadtest::workload::WorkloadConfig;
use nudge::Engine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_has_a_sane_row_per_interval_and_plots() {
    let dir = std::env::temp_dir().join(format!("loadtest-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("timeline.csv");
    let engine = Engine::builder().shards(2).seed(1).build().unwrap();
    let workload = WorkloadConfig {
        seed: 7,
        users: 5_000,
        items: 1_000,
        candidates: 50,
        top: 5,
        lag: 64,
        ..WorkloadConfig::default()
    };
    let rate = 1_000.0;
    let mut spec = RunSpec::new(Target::Embedded(engine.clone()), workload);
    spec.load = Load::Open { rate };
    spec.connections = 2;
    spec.duration = Duration::from_millis(2_000);
    spec.warmup = Duration::from_millis(200);
    spec.timeline = Some(TimelineSpec {
        path: csv.clone(),
        interval: Duration::from_millis(400),
        rss_pid: Some(std::process::id()),
    });
    let summary = driver::run(&spec).await.unwrap().summary();
    engine.shutdown();
    assert!(summary.errors.is_empty(), "errors {:?}", summary.errors);

    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with(&timeline::header()), "{text}");
    let rows = timeline::parse(&text).unwrap();
    assert_eq!(rows.len(), 5, "{text}");
    let mut last_t = 0.0;
    let mut replies = 0;
    for (n, row) in rows.iter().enumerate() {
        assert!(row.t_s > last_t, "row {n}: time goes backwards\n{text}");
        assert!((row.t_s - 0.4 * (n + 1) as f64).abs() < 1e-6, "{text}");
        last_t = row.t_s;
        // Replies arrive in the interval after their send, so a row's rate is near the
        // schedule's, not equal to it (and this machine is shared: wide bounds).
        assert!(
            row.rate_per_s > rate * 0.3 && row.rate_per_s < rate * 2.0,
            "row {n}: rate {}\n{text}",
            row.rate_per_s
        );
        let rss = row.rss_bytes.expect("this process's RSS is readable");
        // The embedded engine's counters, sampled at the row's end.
        let users = row
            .resident_users
            .expect("the engine's counters are sampled");
        assert!(users > 0 && users <= 5_000, "row {n}: {users} users");
        assert!(row.open_decisions.is_some(), "row {n}\n{text}");
        assert!(rss > 4 << 20 && rss < 64 << 30, "row {n}: rss {rss}");
        let event = &row.ops[0];
        assert!(event.count > 0, "row {n}: no events\n{text}");
        assert!(event.p50_us > 0.0, "{text}");
        assert!(event.p50_us <= event.p99_us, "{text}");
        assert!(event.p99_us <= event.p999_us, "{text}");
        assert!(event.p999_us <= event.max_us * 1.001, "{text}");
        replies += row.ops.iter().map(|o| o.count).sum::<u64>();
    }
    // Every measured reply that arrived inside the window is in exactly one row; those that
    // arrived after it are in the summary only (many, if this shared machine stalls the run
    // at its end, so the lower bound is loose).
    let measured: u64 = summary.ops.values().map(|o| o.corrected.count).sum();
    assert!(
        replies <= measured && replies * 2 >= measured,
        "{replies} of {measured}"
    );

    let png = dir.join("timeline.png");
    loadtest::plot::draw(&rows, "test", &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::remove_dir_all(&dir).unwrap();
}
