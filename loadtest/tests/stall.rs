//! The stall self-test: a real server process (the harness's own `loadtest serve`, found
//! through Cargo's `CARGO_BIN_EXE_loadtest`) is stopped with SIGSTOP for one second mid-run;
//! the open-loop report, which counts latency from each request's intended send time, must
//! show the pause in its corrected maximum. (The only wall-time assertion in these tests:
//! it is the point of this one.)

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
    let max_us = summary
        .ops
        .values()
        .map(|o| o.corrected.max_us)
        .fold(0.0, f64::max);
    assert!(
        max_us >= pause.as_secs_f64() * 1e6,
        "corrected max {max_us} µs < the 1 s pause"
    );
    // About a sixth of the requests were scheduled inside the pause, so p99.9 shows it too.
    let p999_us = summary.ops["event"].corrected.p999_us;
    assert!(
        p999_us >= 0.5e6,
        "event p99.9 {p999_us} µs does not show the pause"
    );
}
