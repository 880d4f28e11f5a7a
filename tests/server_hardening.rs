//! Issue 16: the server probed as a hostile client and a careless newcomer would. Slow
//! senders, values and ids that must not pass, parser errors in user terms, and the rules of
//! `docs/protocol.md` that came out of it, over real sockets. Transport-specific cases (HTTP
//! statuses, WebSocket close codes, Segment auth) live in their front end's module.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::server_support::{http, parse_prometheus, start, Lines};

/// Sends `bytes` one at a time, `gap` apart, until the server answers or closes; returns what
/// the server sent (read until it closed).
fn trickle(addr: SocketAddr, bytes: &[u8], gap: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(gap)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => continue,
        }
    }
    s.set_read_timeout(Some(crate::server_support::READ_TIMEOUT))
        .unwrap();
    let _ = s.read_to_end(&mut got);
    got
}

/// A line client of `server` whose catalog holds `boots` and `scarf`.
fn with_boots_and_scarf(server: &nudge::server::RunningServer) -> Lines {
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    c.call(r#"{"op":"item","item":"boots"}"#);
    c.call(r#"{"op":"item","item":"scarf"}"#);
    c
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    let r = http(addr, "GET", "/metrics", &[], b"");
    parse_prometheus(&r.text())
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// A request line that trickles in one byte at a time is cut off at `request_timeout_ms`
/// with a `timeout` error, the connection closes, and the close is counted.
#[test]
fn issue16_slow_client_closed() {
    let (_engine, server) = start(|cfg| cfg.request_timeout_ms = 200);
    let tcp = server.tcp_addr().unwrap();
    let got = trickle(tcp, br#"{"op":"ping","id":1}"#, Duration::from_millis(40));
    let reply: Value = serde_json::from_slice(got.split(|&b| b == b'\n').next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&got)));
    assert_eq!(reply["error"]["code"], "timeout", "{reply}");
    assert_eq!(
        got.iter().filter(|&&b| b == b'\n').count(),
        1,
        "one reply, then the close"
    );
    let http_addr = server.http_addr().unwrap();
    assert_eq!(
        metric(http_addr, "nudge_slow_connections_closed_total"),
        1.0
    );
    let outcome = r#"nudge_requests_total{transport="tcp",op="event",outcome="timeout"}"#;
    assert_eq!(
        metric(http_addr, outcome),
        1.0,
        "counted under its own code"
    );
    server.shutdown();
}

/// The deadline covers one line, not the connection: complete lines sent with pauses longer
/// than the deadline keep being served.
#[test]
fn issue16_slow_but_whole_lines_are_served() {
    let (_engine, server) = start(|cfg| cfg.request_timeout_ms = 200);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    for id in 1..=3 {
        assert_eq!(c.call(&format!(r#"{{"op":"ping","id":{id}}}"#))["id"], id);
        std::thread::sleep(Duration::from_millis(300));
    }
    server.shutdown();
}

/// Sends `first` at once, then trickles `slow`; returns what came back.
fn http_trickle(addr: SocketAddr, first: &[u8], slow: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(first).unwrap();
    let gap = Duration::from_millis(40);
    s.set_read_timeout(Some(gap)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    for b in slow.iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    if !closed {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.read_to_end(&mut got);
    }
    got
}

/// HTTP: a head that trickles in (on a fresh connection, or after a first request on a
/// kept-alive one) or a body that trickles in gets a `408` with the JSON error and the
/// connection closes; each close is counted.
#[test]
fn issue16_slow_http_client_closed() {
    let (_engine, server) = start(|cfg| cfg.request_timeout_ms = 200);
    let addr = server.http_addr().unwrap();
    let head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let fresh = http_trickle(addr, b"", head);
    let second = http_trickle(addr, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", head);
    let body =
        br#"{"user":"u1","type":"click","item":"i1","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let post = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let slow_body = http_trickle(addr, post.as_bytes(), body);
    for (what, got) in [
        ("head", fresh),
        ("second head", second),
        ("body", slow_body),
    ] {
        let text = String::from_utf8_lossy(&got).into_owned();
        let last = text
            .rfind("HTTP/1.1 ")
            .unwrap_or_else(|| panic!("{what}: {text:?}"));
        assert!(
            text[last..].starts_with("HTTP/1.1 408 "),
            "{what}: {text:?}"
        );
        assert!(text.ends_with(r#""code":"timeout","message":"the request did not arrive whole within 200 ms of its first byte; closing"}}"#), "{what}: {text:?}");
    }
    assert_eq!(metric(addr, "nudge_slow_connections_closed_total"), 3.0);
    server.shutdown();
}

/// Parse errors name the problem in the client's terms (what was expected, and where), never
/// the parser's internals, and the connection keeps serving.
#[test]
fn issue16_parse_errors_in_user_terms() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let cases = [
        (
            r#"{"op":"ping","id":1} x"#,
            "unexpected text after the JSON value, which ends at byte 19",
        ),
        (
            r#"{"op":"ping","id":2,}"#,
            "expected a quoted key at byte 20 (found `}`)",
        ),
        (
            r#"{"op" "ping","id":3}"#,
            "expected `:` after a key at byte 6 (found `\"`)",
        ),
        (
            r#"{"op":ping,"id":4}"#,
            "expected a JSON value (strings need double quotes) at byte 6 (found `p`)",
        ),
        (
            r#"{"op":"ping","id":5"#,
            "the request ends before its JSON value is complete",
        ),
        (
            r#"{"op":"p\q","id":6}"#,
            "a string has an invalid `\\` escape",
        ),
    ];
    for (line, expected) in cases {
        let r = c.call(line);
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(r["error"]["code"], "bad_request", "{line}: {r}");
        assert_eq!(
            message,
            format!("the request is not valid JSON: {expected}"),
            "{line}"
        );
    }
    assert_eq!(c.call(r#"{"op":"ping","id":7}"#)["pong"], true);
    server.shutdown();
}

/// Values that must not pass: a second explicit reward for one placement, a `ts` of 0 or in
/// seconds, an `n` above the candidate limit. Each is refused by its documented rule, naming
/// the field, and the connection keeps serving.
#[test]
fn issue16_values_that_should_not_pass() {
    let (_engine, server) = start(|_| {});
    let mut c = with_boots_and_scarf(&server);
    let r = c.call(r#"{"op":"decide","user":"u1","candidates":["boots","scarf"],"n":5}"#);
    assert_eq!(
        r["items"].as_array().unwrap().len(),
        2,
        "n clamps to the candidates: {r}"
    );
    let decision = r["decision"].as_str().unwrap();
    let reward = |item: &str| {
        format!(r#"{{"op":"reward","decision":"{decision}","item":"{item}","value":1}}"#)
    };
    assert_eq!(c.call(&reward("boots"))["ok"], true);
    let again = c.call(&reward("boots"));
    assert_eq!(again["error"]["code"], "already_rewarded", "{again}");
    assert_eq!(
        c.call(&reward("scarf"))["ok"],
        true,
        "the other placement still can be"
    );

    for ts in ["0", "1732200000"] {
        let r = c.call(&format!(
            r#"{{"op":"event","user":"u1","type":"click","item":"boots","ts":{ts}}}"#
        ));
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("field `ts` is before 946684800000"),
            "{message}"
        );
    }
    let r = c.call(r#"{"op":"decide","user":"u1","candidates":["boots"],"n":1000000000}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("field `n`"));
    assert_eq!(c.call(r#"{"op":"ping"}"#)["pong"], true);
    server.shutdown();
}

/// A candidate named twice in one `decide` (by id or inline) is placed once: the first
/// occurrence wins, and `n` counts distinct candidates.
#[test]
fn issue16_duplicate_candidates_placed_once() {
    let (_engine, server) = start(|_| {});
    let mut c = with_boots_and_scarf(&server);
    let r = c.call(
        r#"{"op":"decide","user":"u1","candidates":["boots","scarf","boots",{"id":"boots","attrs":{"a":"b"}},"scarf"]}"#,
    );
    let mut items: Vec<&str> = r["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|p| p["item"].as_str().unwrap())
        .collect();
    items.sort_unstable();
    assert_eq!(items, ["boots", "scarf"], "{r}");
    server.shutdown();
}

/// Ids: an `id` that is an object, control characters in a user or item id, and an item id
/// in the body that differs from the URL's are refused with `bad_request` naming the field.
#[test]
fn issue16_bad_ids_are_refused() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let cases = [
        (r#"{"op":"ping","id":{"a":1}}"#, "id"),
        (r#"{"op":"ping","id":[1]}"#, "id"),
        (
            r#"{"op":"event","user":"u\u0000x","type":"click","item":"i1"}"#,
            "user",
        ),
        (
            r#"{"op":"event","user":"u1","type":"click","item":"i\u001b[31m"}"#,
            "item",
        ),
        (
            r#"{"op":"decide","user":"u1","candidates":["ok","bell\u0007"]}"#,
            "candidates",
        ),
        (r#"{"op":"item","item":"del\u007f"}"#, "item"),
    ];
    for (line, field) in cases {
        let r = c.call(line);
        assert_eq!(r["error"]["code"], "bad_request", "{line}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("field `{field}` ")),
            "{line}: {message}"
        );
    }
    assert_eq!(c.call(r#"{"op":"ping","id":null}"#)["pong"], true);

    let addr = server.http_addr().unwrap();
    let r = http(addr, "PUT", "/v1/items/boots", &[], br#"{"item":"shoes"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("field `item` "));
    let r = http(addr, "PUT", "/v1/items/boots", &[], br#"{"item":"boots"}"#);
    assert_eq!(r.status, 200, "the same id is fine: {}", r.text());
    server.shutdown();
}

/// `max_connections` above the open-file limit is fitted to it at start (after raising the
/// soft limit as far as allowed), so accepting does not fail in a loop; the cap in force is
/// in `/metrics`, and the server serves.
#[test]
fn issue16_max_connections_fits_the_fd_limit() {
    let (_engine, server) = start(|cfg| cfg.max_connections = 1 << 30);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    assert_eq!(c.call(r#"{"op":"ping"}"#)["pong"], true);
    let cap = metric(
        server.http_addr().unwrap(),
        r#"nudge_max_connections{transport="tcp"}"#,
    );
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX) as f64;
    assert!(
        cap >= 1.0 && cap + 256.0 <= soft,
        "cap {cap}, soft limit {soft}"
    );
    server.shutdown();
}
