//! Issue 12: one protocol session and one table of outcomes. The same request over TCP,
//! WebSocket and HTTP gives the same reply; every error code has the HTTP status and metric
//! label the protocol documents, over real sockets where a front end can produce it.

use std::collections::HashMap;

use nudge::config::ServerConfig;
use nudge::server::metrics::{MetricOp, Metrics, Transport};
use nudge::server::RunningServer;
use nudge::wire::OpKind;
use nudge::{Config, Engine, ErrorCode, ManualClock, PolicyKind};
use serde_json::Value;

use crate::server_support::{http, parse_prometheus, serve, Lines};
use crate::server_ws::{call, connect, runtime};

/// A one-shard engine on a fixed clock with a greedy policy (so a repeated decision answers
/// the same), an alias `purchase` for `conversion`, and its server on loopback.
fn start(edit: impl FnOnce(&mut ServerConfig)) -> (Engine, RunningServer) {
    let mut cfg = Config::default();
    cfg.event_aliases
        .insert("purchase".to_string(), "conversion".to_string());
    let engine = Engine::builder()
        .config(cfg)
        .shards(1)
        .seed(7)
        .policy(PolicyKind::Greedy)
        .clock(ManualClock::new(1_732_200_000_000))
        .build()
        .expect("engine");
    serve(engine, edit)
}

/// The codes and HTTP statuses of the error table in `docs/protocol.md`.
fn documented_statuses() -> HashMap<String, u16> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    let mut out = HashMap::new();
    let table = doc
        .lines()
        .skip_while(|l| !l.starts_with("| code | meaning | HTTP status |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in table {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // `| codes | meaning | statuses |`: one status per code, or one for all of them.
        let codes: Vec<&str> = cells[1].split(" / ").map(|c| c.trim_matches('`')).collect();
        let statuses: Vec<u16> = cells[3]
            .split(" / ")
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect();
        if statuses.is_empty() {
            continue;
        }
        for (i, code) in codes.iter().enumerate() {
            let status = statuses[i.min(statuses.len() - 1)];
            out.insert(code.to_string(), status);
        }
    }
    out
}

#[test]
fn issue12_every_error_code_has_its_documented_status_and_metric_label() {
    let documented = documented_statuses();
    let metrics = Metrics::default();
    let started = std::time::Instant::now();
    for code in ErrorCode::ALL {
        assert_eq!(
            documented.get(code.as_str()),
            Some(&code.http_status()),
            "docs/protocol.md's error table for `{code}`"
        );
        metrics.record(
            Transport::Tcp,
            MetricOp::Op(OpKind::Event),
            Some(code),
            started,
            1,
        );
    }
    assert_eq!(documented.len(), ErrorCode::ALL.len(), "{documented:?}");
    let series = parse_prometheus(&metrics.render(&nudge::Stats::default()));
    for code in ErrorCode::ALL {
        let name = format!(
            r#"nudge_requests_total{{transport="tcp",op="event",outcome="{}"}}"#,
            code.as_str()
        );
        assert_eq!(series.get(&name), Some(&1.0), "{name}");
    }
    // Every op has its label, from the op table.
    for kind in OpKind::ALL {
        assert_eq!(OpKind::parse(kind.name()), Some(kind));
        assert_eq!(MetricOp::Op(kind).name(), kind.name());
    }
}

/// An HTTP error reply: its status, its body's code and the code's own status agree.
fn assert_http_error(r: &crate::server_support::Response, code: ErrorCode) {
    let body = r.json();
    assert_eq!(body["error"]["code"], code.as_str(), "{body}");
    assert_eq!(r.status, code.http_status(), "{code}: {body}");
}

#[test]
fn issue12_error_codes_over_real_sockets() {
    let (_engine, server) = start(|c| {
        c.max_body_bytes = 4096;
        c.max_connections = 1;
        c.segment.write_key = "wk".into();
    });
    let addr = server.http_addr().unwrap();
    let mut tcp = Lines::connect(server.tcp_addr().unwrap());
    tcp.call(r#"{"op":"item","item":"boots"}"#);
    tcp.call(r#"{"op":"item","item":"scarf"}"#);
    let d = tcp.call(r#"{"op":"decide","user":"u1","candidates":["boots"],"n":1}"#);
    let decision = d["decision"].as_str().expect("a decision").to_string();

    let post = |path: &str, body: String| http(addr, "POST", path, &[], body.as_bytes());
    let reward = |item: &str| format!(r#"{{"decision":"{decision}","item":"{item}"}}"#);
    assert_eq!(post("/v1/reward", reward("boots")).status, 200);
    let cases = [
        (post("/v1/decide", "{".into()), ErrorCode::BadRequest),
        (
            post("/v1/reward", reward("boots")),
            ErrorCode::AlreadyRewarded,
        ),
        (post("/v1/reward", reward("scarf")), ErrorCode::NotShown),
        (
            post(
                "/v1/reward",
                r#"{"decision":"0000ff0000000001","item":"boots"}"#.into(),
            ),
            ErrorCode::UnknownDecision,
        ),
        (
            http(addr, "GET", "/v1/items/ghost", &[], b""),
            ErrorCode::UnknownItem,
        ),
        (
            http(addr, "DELETE", "/v1/decide", &[], b""),
            ErrorCode::MethodNotAllowed,
        ),
        (
            http(addr, "GET", "/v1/nowhere", &[], b""),
            ErrorCode::NotFound,
        ),
        (
            post("/v1/decide", format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000))),
            ErrorCode::TooLarge,
        ),
        (post("/v1/track", "{}".into()), ErrorCode::Unauthorized),
    ];
    for (r, code) in &cases {
        assert_http_error(r, *code);
    }
    // Those the session answered are counted under their own label.
    let text = http(addr, "GET", "/metrics", &[], b"").text();
    let m = parse_prometheus(&text);
    for (op, code) in [
        ("decide", ErrorCode::BadRequest),
        ("reward", ErrorCode::AlreadyRewarded),
        ("reward", ErrorCode::NotShown),
        ("reward", ErrorCode::UnknownDecision),
        ("item", ErrorCode::UnknownItem),
    ] {
        let series = format!(
            r#"nudge_requests_total{{transport="http",op="{op}",outcome="{}"}}"#,
            code.as_str()
        );
        assert_eq!(m.get(&series), Some(&1.0), "{series}\n{text}");
    }
    let series = r#"nudge_requests_total{transport="segment",op="track",outcome="unauthorized"}"#;
    assert_eq!(m.get(series), Some(&1.0), "{text}");

    // The TCP connection limit answers its own code, then closes.
    let mut refused = Lines::connect(server.tcp_addr().unwrap());
    let line = refused.recv().expect("a refusal line");
    assert_eq!(
        line["error"]["code"],
        ErrorCode::TooManyConnections.as_str()
    );
    assert!(refused.recv().is_none());
    let m = parse_prometheus(&http(addr, "GET", "/metrics", &[], b"").text());
    let series =
        r#"nudge_requests_total{transport="tcp",op="event",outcome="too_many_connections"}"#;
    assert_eq!(m.get(series), Some(&1.0));
    drop(tcp);
    server.shutdown();
}

/// The request without its `op`: an HTTP route's body.
fn body_of(request: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(request).unwrap();
    v.as_object_mut().unwrap().remove("op");
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn issue12_the_same_request_gets_the_same_reply_over_tcp_websocket_and_http() {
    let (_engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let mut tcp = Lines::connect(server.tcp_addr().unwrap());
    tcp.call(r#"{"op":"item","item":"boots","attrs":{"category":"shoes"}}"#);
    tcp.call(r#"{"op":"item","item":"scarf","attrs":{"category":"winter"}}"#);
    tcp.call(r#"{"op":"event","user":"u1","type":"click","item":"boots"}"#);

    // Ops with an HTTP route taking the body: all three front ends.
    let routed = [
        (
            "/v1/decide",
            r#"{"op":"decide","id":1,"user":"u1","candidates":["boots","scarf"],"n":2,"explain":true,"track":false}"#,
        ),
        (
            "/v1/decide",
            r#"{"op":"decide","id":"two","user":"","candidates":["boots"]}"#,
        ),
        (
            "/v1/decide",
            r#"{"op":"decide","id":3,"user":"u1","candidates":"boots"}"#,
        ),
        (
            "/v1/reward",
            r#"{"op":"reward","id":4,"decision":"0000ff0000000001","item":"boots"}"#,
        ),
        (
            "/v1/reward",
            r#"{"op":"reward","id":5,"decision":"nope","item":"boots"}"#,
        ),
    ];
    // Ops only TCP and WebSocket take as written (a fresh user each, so that each front end
    // starts from the same state).
    let framed = [
        r#"{"op":"event","id":6,"user":"{u}","type":"purchase","item":"boots","value":5}"#,
        r#"{"op":"event","id":7,"user":"{u}","type":"warp","item":"boots"}"#,
        r#"{"op":"batch","id":8,"ops":[{"op":"event","id":"a","user":"{u}b","type":"purchase","item":"scarf"},{"op":"event","id":"b","user":"{u}b","type":"warp"},{"op":"ping","id":"c"}]}"#,
        r#"{"op":"nope","id":9}"#,
        r#"{"op":"user","id":10,"user":"nobody"}"#,
        "{\"op\":\"event\",\"id\":11,",
    ];
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(addr).await;
        for (path, request) in routed {
            let over_tcp = tcp.call(request);
            let over_ws = call(&mut ws, request).await;
            let r = http(addr, "POST", path, &[], &body_of(request));
            let over_http = r.json();
            assert_eq!(over_tcp, over_ws, "{request}");
            assert_eq!(over_tcp, over_http, "{request}");
            let status = match over_http["error"]["code"].as_str() {
                None => 200,
                Some(code) => ErrorCode::ALL
                    .into_iter()
                    .find(|c| c.as_str() == code)
                    .map_or(0, ErrorCode::http_status),
            };
            assert_eq!(r.status, status, "{request}: {over_http}");
        }
        for template in framed {
            let over_tcp = tcp.call(&template.replace("{u}", "t"));
            let over_ws = call(&mut ws, &template.replace("{u}", "w")).await;
            assert_eq!(over_tcp, over_ws, "{template}");
        }
    });
    // The events route takes the same events, aliases resolved the same way.
    let body = br#"[{"user":"h","type":"purchase","item":"boots","value":5},{"id":7,"user":"h","type":"warp","item":"boots"}]"#;
    let r = http(addr, "POST", "/v1/events", &[], body).json();
    assert_eq!(r["accepted"], 1, "{r}");
    let over_tcp = tcp.call(r#"{"op":"event","id":7,"user":"h2","type":"warp","item":"boots"}"#);
    assert_eq!(r["errors"][0]["error"], over_tcp["error"], "{r}");
    server.shutdown();
}
