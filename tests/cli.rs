//! The `nudge` binary at first contact (issue 16): the banner's hints work on a machine
//! without `nc`, it says whether Segment ingestion is authenticated, a mistyped `NUDGE_*`
//! variable is warned about, logs to a pipe carry no colour codes, and a bind error names
//! the address.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

fn nudge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nudge"));
    cmd.env_remove("NO_COLOR")
        .env("NUDGE_LOG", "info")
        .env("RUST_BACKTRACE", "0");
    cmd
}

#[test]
fn issue16_first_contact() {
    let mut child = nudge()
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--shards", "1"])
        .env("NUDGE_SEGMENT__WRITE_KEY", "typo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nudge");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = Vec::new();
    while !banner
        .last()
        .is_some_and(|l: &String| l.contains("segment ingestion"))
    {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "banner: {banner:?}"
        );
        banner.push(line.trim_end().to_string());
    }
    let text = banner.join("\n");
    assert!(!text.contains(" nc "), "{text}");
    assert!(text.contains("NOT authenticated"), "{text}");
    // The TCP hint, run as printed: one pong, and it returns (no waiting for a close).
    let hint = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("try: bash -c "))
        .unwrap_or_else(|| panic!("a bash hint: {text}"));
    let out = Command::new("sh")
        .args(["-c", &format!("bash -c {hint}")])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        reply.trim(),
        r#"{"id":null,"ok":true,"pong":true}"#,
        "{hint}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI codes in a piped log: {log:?}"
    );
    assert!(
        log.contains("NUDGE_SEGMENT__WRITE_KEY is not a configuration variable"),
        "{log}"
    );
    assert!(log.contains("Segment ingestion accepts calls without a write key"));
}

#[test]
fn issue16_bind_error_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = nudge()
        .args(["serve", "--tcp", &addr, "--http", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen for tcp on {addr} (server.tcp, --tcp)"
        )),
        "{err}"
    );
}
