//! The stall self-test: a real server process (the harness's own `loadtest serve`, found
//! through Cargo's `CARGO_BIN_EXE_loadtest`) is stopped with SIGSTOP for one second mid-run;
//! the open-loop report, which counts latency from each request's intended send time, must
//! show the pause in its corrected maximum, p99 and p99.9. (The only wall-time assertions in
//! these tests: they are the point of this one.)

use std::path::Path;
use std::time::Duration;

use loadtest::client::Target;
use loadtest::driver::{self, Load, RunSpec};
use loadtest::serve::Child;
use loadtest::stall::StallSpec;
use loadtest::workload::WorkloadConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_latency_shows_a_one_second_stall() {
    let child = Child::spawn_exe(Path::new(env!("CARGO_BIN_EXE_loadtest")), 1).unwrap();
    let workload = WorkloadConfig {
        seed: 3,
        users: 2_000,
        items: 500,
        candidates: 50,
        top: 5,
        lag: 64,
        ..WorkloadConfig::default()
    };
    let pause = Duration::from_secs(1);
    let mut spec = RunSpec::new(Target::Tcp(child.endpoints.tcp), workload);
    spec.load = Load::Open { rate: 400.0 };
    spec.duration = Duration::from_millis(2_500);
    spec.warmup = Duration::from_millis(300);
    spec.stall = Some(StallSpec {
        pid: child.pid(),
        at: Duration::from_millis(700),
        pause,
    });
    let summary = driver::run(&spec).await.unwrap().summary();
    drop(child);
    let stall = summary.stall.clone().expect("the stall happened");
    assert!(stall.paused_ms >= 1000.0, "{stall:?}");
    assert!(summary.errors.is_empty(), "errors {:?}", summary.errors);
    // The first request due after SIGSTOP took effect waits out the rest of the pause, so the
    // corrected maximum is at least the pause less one schedule interval (2.5 ms here); a
    // request still in flight at the stop waits longer.
    let interval_us = 1e6 / 400.0;
    let max_us = summary
        .ops
        .values()
        .map(|o| o.corrected.max_us)
        .fold(0.0, f64::max);
    assert!(
        max_us >= pause.as_secs_f64() * 1e6 - interval_us,
        "corrected max {max_us} µs does not show the 1 s pause"
    );
    // About 400 of the 1000 measured requests were due inside the pause, waiting from 0 to
    // 1 s: the corrected p99 and p99.9 show the pause (without the correction, one request
    // would carry it and p99 would not).
    let event = &summary.ops["event"].corrected;
    assert!(
        event.p99_us >= 0.8e6,
        "event p99 {} µs does not show the pause",
        event.p99_us
    );
    assert!(
        event.p999_us >= 0.9e6,
        "event p99.9 {} µs does not show the pause",
        event.p999_us
    );
}
