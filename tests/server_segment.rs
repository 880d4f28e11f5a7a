//! Segment-compatible ingestion over real sockets: write-key auth, a batch mapped through the
//! table, `messageId` deduplication, clock-skew correction, gzip bodies and size limits.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::json;

use crate::server_support::{http, start};

fn iso(ms: u64) -> String {
    // Unix ms → RFC 3339 (UTC), by civil-from-days (Howard Hinnant).
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

#[test]
fn segment_batch_with_auth_dedup_and_clock_skew() {
    let (engine, server) = start(|cfg| cfg.segment.write_key = "wk_test".into());
    let addr = server.http_addr().unwrap();

    // The client's clock runs an hour fast: left uncorrected, these times would be refused as
    // too far in the future. The event happened 5 s before the batch was sent.
    let skew = 3_600_000;
    let t_client_event = now_ms() + skew - 5_000;
    let t_client_sent = now_ms() + skew;
    let body = json!({
        "sentAt": iso(t_client_sent),
        "batch": [
            {"type": "track", "userId": "seg-u1", "event": "Product Clicked", "messageId": "m-1",
             "properties": {"product_id": "p1", "price": 19.99},
             "context": {"device": {"type": "mobile"}, "locale": "de-DE"},
             "originalTimestamp": iso(t_client_event)},
            {"type": "track", "anonymousId": "anon-7", "event": "Product Viewed", "messageId": "m-2",
             "properties": {"product_id": 42, "dwell_seconds": 12.5},
             "timestamp": iso(t_client_event)},
            {"type": "identify", "userId": "seg-u1", "messageId": "m-3", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "seg-u1", "event": "Newsletter Opened", "messageId": "m-4"}
        ]
    })
    .to_string();

    let r = http(addr, "POST", "/v1/batch", &[], body.as_bytes());
    assert_eq!(r.status, 401, "no credentials: {}", r.text());
    assert!(r.headers.contains_key("www-authenticate"));
    let wrong = basic("nope");
    let r = http(
        addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &wrong)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    // Issue 16: a 401 says `unauthorized`, not `bad_request`.
    assert_eq!(r.json()["error"]["code"], "unauthorized", "{}", r.text());

    let auth = basic("wk_test");
    let before = now_ms();
    let r = http(
        addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &auth)],
        body.as_bytes(),
    );
    let after = now_ms();
    let j = r.json();
    assert_eq!(r.status, 200, "{j}");
    assert_eq!(j["success"], true);
    // click(p1) + product view(42) + dwell(42); identify and the unmapped event are ignored.
    assert_eq!(
        (
            j["events"].as_u64(),
            j["ignored"].as_u64(),
            j["deduplicated"].as_u64()
        ),
        (Some(3), Some(2), Some(0)),
        "{j}"
    );

    let u1 = engine.user("seg-u1").unwrap().expect("seg-u1 exists");
    assert_eq!(u1.events_by_kind[1], 1, "one click");
    // receivedAt - (sentAt - originalTimestamp) = receivedAt - 5 s.
    let ts = u1.last_seen_ms;
    assert!(
        ts >= before - 5_000 - 50 && ts <= after - 5_000 + 50,
        "corrected time {ts} not within [{}, {}]",
        before - 5_000,
        after - 5_000
    );
    let anon = engine
        .user("anon-7")
        .unwrap()
        .expect("anonymousId is the user");
    assert_eq!(
        (anon.events_by_kind[1], anon.events_by_kind[2]),
        (1, 1),
        "a product view (a click by default) and its dwell"
    );

    // The same batch again: every event's messageId is a duplicate, nothing is ingested
    // twice; the two calls that map to no event are ignored again.
    let r = http(
        addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &auth)],
        body.as_bytes(),
    );
    let j = r.json();
    assert_eq!(
        (
            j["events"].as_u64(),
            j["deduplicated"].as_u64(),
            j["ignored"].as_u64()
        ),
        (Some(0), Some(2), Some(2)),
        "{j}"
    );
    engine.flush().unwrap();
    assert_eq!(engine.user("seg-u1").unwrap().unwrap().events_by_kind[1], 1);

    // A gzip-compressed single track call, as SDKs send them.
    let track = json!({"userId": "seg-u2", "event": "Product Clicked", "messageId": "m-5",
                       "properties": {"product_id": "p9"}})
    .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(track.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let r = http(
        addr,
        "POST",
        "/v1/track",
        &[
            ("Authorization", &auth),
            ("Content-Encoding", "gzip"),
            ("Content-Type", "application/json"),
        ],
        &gz,
    );
    assert_eq!(
        (r.status, r.json()["events"].as_u64()),
        (200, Some(1)),
        "{}",
        r.text()
    );
    assert_eq!(engine.user("seg-u2").unwrap().unwrap().events_by_kind[1], 1);

    // A mapped event without its item property is a clear 400, and nothing is ingested.
    let bad = json!({"userId": "seg-u3", "event": "Product Clicked", "properties": {}}).to_string();
    let r = http(
        addr,
        "POST",
        "/v1/track",
        &[("Authorization", &auth)],
        bad.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("product_id"), "{}", r.text());
    assert!(engine.user("seg-u3").unwrap().is_none());
    server.shutdown();
}

#[test]
fn segment_size_limits() {
    let (_engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let pad = "x".repeat(40 * 1024);
    let call = json!({"userId": "u", "event": "Product Viewed", "properties": {"product_id": "p", "pad": pad}});
    let r = http(addr, "POST", "/v1/track", &[], call.to_string().as_bytes());
    assert_eq!(r.status, 413, "a call over 32 KB: {}", r.text());
    let batch = json!({"batch": [{"type": "track", "userId": "u", "event": "Product Viewed",
                                  "properties": {"product_id": "p", "pad": pad}}]});
    let r = http(addr, "POST", "/v1/batch", &[], batch.to_string().as_bytes());
    assert_eq!(r.status, 400, "a batched call over 32 KB: {}", r.text());
    let calls: Vec<_> = (0..20).map(|_| call.clone()).collect();
    let huge = json!({"batch": calls}).to_string();
    let r = http(addr, "POST", "/v1/batch", &[], huge.as_bytes());
    assert_eq!(r.status, 413, "a batch over 500 KB");
    let r = http(addr, "POST", "/v1/track", &[], b"{not json");
    assert_eq!(r.status, 400);
    server.shutdown();
}

/// Issue 16: a pre-1970 ISO time is a valid time (a device whose clock reset): with `sentAt`
/// the skew correction places the event now, and it is ingested. A dwell out of range is not
/// dropped behind a success: the batch reports it per message in `errors`.
#[test]
fn issue16_segment_old_times_and_bad_dwell() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let body = json!({
        "sentAt": "1969-12-31T23:59:59.000Z",
        "batch": [
            {"type": "track", "userId": "old", "event": "Product Clicked", "messageId": "o-1",
             "properties": {"product_id": "p1"},
             "originalTimestamp": "1969-12-31T23:59:58.000Z"},
            {"type": "track", "userId": "dw", "event": "Product Viewed", "messageId": "o-2",
             "properties": {"product_id": "p1", "dwell_seconds": -5}},
            {"type": "track", "userId": "dw", "event": "Product Viewed", "messageId": "o-3",
             "properties": {"product_id": "p1", "dwell_seconds": 1.0e12}},
            {"type": "track", "userId": "dw", "event": "Product Viewed", "messageId": "o-4",
             "properties": {"product_id": "p1", "dwell_seconds": "long"}}
        ]
    })
    .to_string();
    let r = http(addr, "POST", "/v1/batch", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["events"], 4, "the click and the three product views: {v}");
    let errors = v["errors"].as_array().unwrap();
    let calls: Vec<u64> = errors.iter().map(|e| e["call"].as_u64().unwrap()).collect();
    assert_eq!(calls, [1, 2, 3], "each bad dwell, by call: {v}");
    for e in errors {
        assert!(
            e["error"]["message"].as_str().unwrap().contains("value"),
            "{e}"
        );
    }
    let old = engine
        .user("old")
        .unwrap()
        .expect("the 1969 click was ingested");
    assert!(
        old.last_seen_ms > 946_684_800_000,
        "placed now by the skew correction"
    );
    server.shutdown();
}

/// Issue 15: Segment's consent fields set the user's consent before the call's events apply,
/// and the `consent` op reads and changes it over TCP.
#[test]
fn consent_from_segment_calls_and_the_consent_op() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let call = |user: &str, personalization: bool| {
        json!({"type":"track","userId":user,"event":"Product Clicked","messageId":format!("m-{user}-{personalization}"),
               "properties":{"product_id":"boots"},
               "context":{"consent":{"categoryPreferences":{"Personalization":personalization,"Advertising":true}}}})
    };
    let r = http(
        addr,
        "POST",
        "/v1/track",
        &[],
        call("seg-1", true).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    assert!(engine.user("seg-1").unwrap().is_some());
    // Consent withdrawn in the next call: erased, and that call's event is withheld.
    let r = http(
        addr,
        "POST",
        "/v1/track",
        &[],
        call("seg-1", false).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    assert!(engine.user("seg-1").unwrap().is_none());
    let mut tcp = crate::server_support::Lines::connect(server.tcp_addr().unwrap());
    let r = tcp.call(r#"{"op":"consent","id":1,"user":"seg-1"}"#);
    assert_eq!(
        (
            r["personalization"].as_bool(),
            r["storage"].as_bool(),
            r["erased"].as_bool()
        ),
        (Some(false), Some(true), Some(false)),
        "{r}"
    );
    let r = tcp.call(r#"{"op":"event","user":"seg-1","type":"click","item":"boots"}"#);
    assert_eq!(r["withheld"], true, "{r}");
    let r = tcp.call(r#"{"op":"consent","id":2,"user":"seg-2","storage":false}"#);
    assert_eq!(
        (r["personalization"].as_bool(), r["storage"].as_bool()),
        (Some(true), Some(false)),
        "{r}"
    );
    let r = tcp.call(r#"{"op":"consent","id":3,"user":"seg-2","storage":"no"}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
}
