//! The HTTP front end over real sockets: every route, status codes, and `/metrics` as
//! Prometheus text that counts what the test did.

use crate::server_support::{http, parse_prometheus, start, Lines};

#[test]
fn every_op_over_http() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();

    let r = http(
        addr,
        "PUT",
        "/v1/items/boots",
        &[],
        br#"{"attrs":{"category":"shoes"},"vector":[1,0]}"#,
    );
    assert_eq!(
        (r.status, r.json()["new"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text()
    );
    let r = http(addr, "PUT", "/v1/items/scarf", &[], b"");
    assert_eq!(r.status, 200, "an empty body is an item without attributes");
    let r = http(addr, "GET", "/v1/items/boots", &[], b"");
    assert_eq!(
        r.json()["item"]["attrs"][0],
        serde_json::json!(["category", "shoes"])
    );
    assert_eq!(http(addr, "GET", "/v1/items/nope", &[], b"").status, 404);

    // One object, an array, NDJSON.
    let r = http(
        addr,
        "POST",
        "/v1/events",
        &[],
        br#"{"user":"u1","type":"click","item":"boots"}"#,
    );
    assert_eq!(
        (r.status, r.json()["accepted"].as_u64()),
        (200, Some(1)),
        "{}",
        r.text()
    );
    let r = http(
        addr,
        "POST",
        "/v1/events",
        &[],
        br#"[{"user":"u1","type":"impression","item":"scarf"},{"user":"u2","type":"click","item":"boots"}]"#,
    );
    assert_eq!(r.json()["accepted"], 2, "{}", r.text());
    let ndjson = b"{\"user\":\"u3\",\"type\":\"click\",\"item\":\"boots\"}\n{\"user\":\"u3\",\"type\":\"warp\",\"item\":\"boots\"}\n\n{\"user\":\"u4\",\"type\":\"dwell\",\"item\":\"scarf\",\"value\":30}\n";
    let r = http(addr, "POST", "/v1/events", &[], ndjson);
    let j = r.json();
    assert_eq!(
        (r.status, j["accepted"].as_u64(), j["rejected"].as_u64()),
        (200, Some(2), Some(1)),
        "{j}"
    );
    assert_eq!(j["errors"][0]["index"], 1);
    assert_eq!(j["errors"][0]["error"]["code"], "bad_request");
    let r = http(addr, "POST", "/v1/events", &[], br#"{"type":"click"}"#);
    assert_eq!(r.status, 400, "{}", r.text());

    let r = http(addr, "POST", "/v1/decide", &[], br#"{"id":7,"user":"u1","candidates":["boots","scarf"],"n":2,"context":{"device":"mobile"}}"#);
    let d = r.json();
    assert_eq!((r.status, d["id"].as_i64()), (200, Some(7)), "{d}");
    let decision = d["decision"].as_str().unwrap();
    let item = d["items"][0]["item"].as_str().unwrap();
    let body = format!(r#"{{"decision":"{decision}","item":"{item}","value":1}}"#);
    let r = http(addr, "POST", "/v1/reward", &[], body.as_bytes());
    assert_eq!(
        (r.status, r.json()["ok"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text()
    );
    let r = http(
        addr,
        "POST",
        "/v1/reward",
        &[],
        br#"{"decision":"00ff000000000001","item":"boots"}"#,
    );
    assert_eq!(r.status, 404, "an unknown decision: {}", r.text());
    let r = http(addr, "POST", "/v1/decide", &[], br#"{"user":"u1"}"#);
    assert_eq!(
        (r.status, r.json()["error"]["message"].as_str()),
        (400, Some("field `candidates` is missing"))
    );

    let r = http(addr, "GET", "/v1/users/u1", &[], b"");
    let u = r.json();
    assert_eq!(
        (r.status, u["user"]["events_by_kind"]["click"].as_u64()),
        (200, Some(1)),
        "{u}"
    );
    // The impression of `scarf` opened an implicit decision before the `decide`.
    let open: Vec<_> = u["user"]["open_decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(open.len(), 2, "{u}");
    assert_eq!(open[1], decision);
    assert_eq!(http(addr, "GET", "/v1/users/ghost", &[], b"").status, 404);
    let r = http(addr, "DELETE", "/v1/users/u1", &[], b"");
    assert_eq!(r.json()["forgotten"], true);
    assert_eq!(http(addr, "GET", "/v1/users/u1", &[], b"").status, 404);

    let r = http(addr, "DELETE", "/v1/items/scarf", &[], b"");
    assert_eq!(r.json()["removed"], true);
    let r = http(addr, "GET", "/v1/stats", &[], b"");
    assert_eq!(r.json()["stats"]["catalog_items"], 1);

    assert_eq!(http(addr, "GET", "/livez", &[], b"").status, 200);
    assert_eq!(http(addr, "GET", "/readyz", &[], b"").status, 200);
    assert_eq!(engine.item("boots").unwrap().unwrap().attrs.len(), 1);
    server.shutdown();
}

#[test]
fn metrics_are_prometheus_text_and_count_what_happened() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    for i in 0..3 {
        let body = format!(r#"{{"user":"m{i}","candidates":["a","b"],"n":1}}"#);
        assert_eq!(
            http(addr, "POST", "/v1/decide", &[], body.as_bytes()).status,
            200
        );
    }
    let events = b"{\"user\":\"m1\",\"type\":\"click\",\"item\":\"a\"}\n{\"user\":\"m2\",\"type\":\"click\",\"item\":\"b\"}\n{\"user\":\"m2\",\"type\":\"bogus\",\"item\":\"b\"}\n";
    assert_eq!(http(addr, "POST", "/v1/events", &[], events).status, 200);
    let mut tcp = Lines::connect(server.tcp_addr().unwrap());
    for i in 0..4 {
        tcp.call(&format!(r#"{{"op":"ping","id":{i}}}"#));
    }
    tcp.call(r#"{"op":"nonsense","id":9}"#);
    engine.flush().unwrap();

    let r = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"].starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    let text = r.text();
    let m = parse_prometheus(&text);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no series {k} in\n{text}"))
    };
    assert_eq!(
        get(r#"nudge_requests_total{transport="http",op="decide",outcome="ok"}"#),
        3.0
    );
    assert_eq!(
        get(r#"nudge_requests_total{transport="http",op="event",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        get(r#"nudge_requests_total{transport="http",op="event",outcome="bad_request"}"#),
        1.0
    );
    assert_eq!(
        get(r#"nudge_requests_total{transport="tcp",op="ping",outcome="ok"}"#),
        4.0
    );
    assert_eq!(
        get(r#"nudge_request_duration_seconds_count{transport="http",op="decide"}"#),
        3.0
    );
    assert_eq!(
        get(r#"nudge_request_duration_seconds_bucket{transport="http",op="decide",le="+Inf"}"#),
        3.0
    );
    assert!(get(r#"nudge_request_duration_seconds_sum{transport="http",op="decide"}"#) > 0.0);
    assert_eq!(get("nudge_decisions_total"), 3.0);
    assert_eq!(get("nudge_events_total"), 2.0);
    assert_eq!(get(r#"nudge_connections{transport="tcp"}"#), 1.0);
    assert!(m.contains_key(r#"nudge_shard_inbox_depth{shard="1"}"#));
    assert!(
        get(r#"nudge_resident_users{shard="0"}"#) + get(r#"nudge_resident_users{shard="1"}"#)
            >= 3.0
    );
    // Three decisions, none of whose windows can have closed yet.
    let open =
        get(r#"nudge_open_decisions{shard="0"}"#) + get(r#"nudge_open_decisions{shard="1"}"#);
    assert!((1.0..=3.0).contains(&open), "open decisions {open}");
    for name in [
        "nudge_outliers_filtered_total",
        "nudge_rewards_attributed_total",
        "nudge_decisions_expired_total",
    ] {
        assert!(m.contains_key(name), "{name} missing");
    }
    assert!(
        !text.contains("m1") && !text.contains("m2"),
        "no per-user labels"
    );
    server.shutdown();
}

/// Issue 16: every HTTP error reply has the JSON error shape: a wrong method is `405` with
/// `Allow`, an unknown path `404`, a body over the limit `413`.
#[test]
fn issue16_http_errors_are_json() {
    let (_engine, server) = start(|cfg| cfg.max_body_bytes = 1024);
    let addr = server.http_addr().unwrap();
    let cases = [
        ("POST", "/v1/stats", 405, "method_not_allowed", Some("GET")),
        ("GET", "/v1/decide", 405, "method_not_allowed", Some("POST")),
        ("GET", "/v1/track", 405, "method_not_allowed", Some("POST")),
        (
            "PATCH",
            "/v1/items/boots",
            405,
            "method_not_allowed",
            Some("GET, PUT, DELETE"),
        ),
        ("GET", "/v1/nope", 404, "not_found", None),
    ];
    for (method, path, status, code, allow) in cases {
        let r = http(addr, method, path, &[], b"");
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{method} {path}");
        assert_eq!(r.headers.get("allow").map(String::as_str), allow);
    }
    let big = format!(r#"{{"user":"u1","candidates":["{}"]}}"#, "x".repeat(2000));
    let r = http(addr, "POST", "/v1/decide", &[], big.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "too_large");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1024"));
    assert_eq!(http(addr, "GET", "/livez", &[], b"").status, 200);
    server.shutdown();
}
