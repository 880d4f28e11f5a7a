//! The crash loop against real child processes killed with SIGKILL: nothing acknowledged is
//! lost, nothing is applied twice, a forgotten user stays forgotten and
//! the catalog comes back whole.

use std::process::Command;

#[test]
fn a_short_crash_loop_under_always_keeps_every_acknowledged_event() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "crash",
            "--seed",
            "3",
            "--kills",
            "3",
            "--max-run-ms",
            "600",
        ])
        .args(["--users", "16", "--connections", "2"])
        .output()
        .expect("run loadtest crash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("no violation"), "{stdout}");
    assert_eq!(stdout.matches("\n| ").count(), 3 + 1 + 1, "{stdout}");
}
