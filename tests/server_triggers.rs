//! Issue 14, item 3, over real sockets: the `triggers` op (set, read, refused with positions),
//! the scroll-past-70% `offer` in the event's reply (alone and in a batch), WebSocket pushes
//! per user and per trigger name, the webhook against a tiny HTTP server in the test (500
//! then 200; always 500; a server that never answers, while events keep being answered),
//! `/metrics` and `stats`, and a restart that replays without delivering again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use nudge::config::WebhookConfig;
use nudge::{Config, Engine};
use parking_lot::Mutex;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::server_support::{http, parse_prometheus, serve, start, Lines};
use crate::server_ws::{call, connect, next_json, runtime};

const OFFER: &str = r#"{"name":"offer","when":"user.scroll_depth > 0.7","cooldown_s":60}"#;

fn set_triggers(c: &mut Lines, triggers: &str) -> Value {
    c.call(&format!(
        r#"{{"op":"triggers","id":"t","triggers":[{triggers}]}}"#
    ))
}

#[test]
fn offer_fires_in_the_events_reply_and_the_op_sets_and_reads_triggers() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let r = set_triggers(&mut c, OFFER);
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(r["triggers"][0]["cooldown_s"], 60, "{r}");

    let scroll = |c: &mut Lines, user: &str, depth: f64, ts: u64| {
        c.call(&format!(
            r#"{{"op":"event","id":1,"user":"{user}","type":"scroll","value":{depth},"ts":{ts}}}"#
        ))
    };
    let t0 = 1_732_200_000_000u64;
    let r = scroll(&mut c, "u1", 0.5, t0);
    assert!(r["ok"] == true && r.get("triggers").is_none(), "{r}");
    let r = scroll(&mut c, "u1", 0.8, t0 + 1);
    assert_eq!(r["triggers"], serde_json::json!(["offer"]), "{r}");
    let r = scroll(&mut c, "u1", 0.9, t0 + 2);
    assert!(r.get("triggers").is_none(), "once per crossing: {r}");

    // In a batch, each event's reply says what it fired.
    let batch = format!(
        r#"{{"op":"batch","id":2,"ops":[{{"op":"event","id":"a","user":"u2","type":"scroll","value":0.9,"ts":{t0}}},{{"op":"event","id":"b","user":"u3","type":"scroll","value":0.1,"ts":{t0}}},{{"op":"event","id":"c","user":"u3","type":"scroll","value":0.95,"ts":{}}}]}}"#,
        t0 + 1
    );
    let r = c.call(&batch);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["triggers"][0], "offer", "{r}");
    assert!(results[1].get("triggers").is_none(), "{r}");
    assert_eq!(results[2]["triggers"][0], "offer", "{r}");

    // Refused whole, with the position; the set in force stays.
    let r = set_triggers(&mut c, r#"{"name":"s","when":"user.scroll_depth >"}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("trigger 0 `s`: `when` at 1:20 (byte 19)"),
        "{message}"
    );
    let r = set_triggers(
        &mut c,
        r#"{"name":"ok","when":"true"},{"name":"t","when":"user.last_device > 3"}"#,
    );
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("trigger 1 `t`: `when` at 1:18 (byte 17)"),
        "{message}"
    );
    let r = set_triggers(&mut c, r#"{"name":"x","when":"true","colour":"red"}"#);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown key `colour`"),
        "{r}"
    );
    let r = c.call(r#"{"op":"triggers","id":3}"#);
    assert_eq!(
        (r["version"].as_u64(), r["triggers"][0]["name"].as_str()),
        (Some(1), Some("offer"))
    );

    // HTTP: read and replace.
    let http_addr = server.http_addr().unwrap();
    let got = http(http_addr, "GET", "/v1/triggers", &[], b"");
    assert_eq!(got.status, 200);
    let body = br#"{"triggers":[{"name":"offer","when":"user.scroll_depth > 0.5"}]}"#;
    let put = http(http_addr, "PUT", "/v1/triggers", &[], body);
    let v: Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!((put.status, v["version"].as_u64()), (200, Some(2)), "{v}");
    let bad = http(
        http_addr,
        "PUT",
        "/v1/triggers",
        &[],
        br#"{"triggers":[{"name":"b","when":"1 +"}]}"#,
    );
    assert_eq!(bad.status, 400);

    // `POST /v1/events` names, in its summary, the events that fired.
    let body = br#"[{"user":"h1","type":"scroll","value":0.1},{"user":"h2","type":"scroll","value":0.6,"id":"e2"}]"#;
    let posted = http(http_addr, "POST", "/v1/events", &[], body);
    let v: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(
        v["triggers"],
        serde_json::json!([{"index":1,"id":"e2","triggers":["offer"]}]),
        "{v}"
    );

    // Counted in stats and in /metrics by trigger name.
    let r = c.call(r#"{"op":"stats","id":4}"#);
    assert_eq!(r["stats"]["total"]["triggers_fired_total"], 4, "{r}");
    assert_eq!(r["stats"]["triggers"]["fired"]["offer"], 4, "{r}");
    let metrics = http(http_addr, "GET", "/metrics", &[], b"");
    let m = parse_prometheus(std::str::from_utf8(&metrics.body).unwrap());
    assert_eq!(m[r#"nudge_triggers_fired_total{trigger="offer"}"#], 4.0);
    assert_eq!(m["nudge_webhook_dropped_total"], 0.0);
    server.shutdown();
}

#[test]
fn websocket_pushes_per_user_and_per_trigger_name() {
    let (_engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    runtime().block_on(async {
        let mut admin = connect(addr).await;
        let r = call(
            &mut admin,
            &format!(r#"{{"op":"triggers","id":1,"triggers":[{OFFER}]}}"#),
        )
        .await;
        assert_eq!(r["version"], 1, "{r}");
        let mut watcher = connect(addr).await;
        let r = call(
            &mut watcher,
            r#"{"op":"subscribe","id":2,"trigger":"offer"}"#,
        )
        .await;
        assert_eq!(r["ok"], true, "{r}");
        let mut user = connect(addr).await;
        let r = call(&mut user, r#"{"op":"subscribe","id":3,"user":"u1"}"#).await;
        assert_eq!(r["ok"], true, "{r}");
        let r = call(
            &mut user,
            r#"{"op":"subscribe","id":4,"user":"u1","trigger":"offer"}"#,
        )
        .await;
        assert_eq!(r["error"]["code"], "bad_request", "either, not both: {r}");

        // u1 scrolls past 70%: its reply and its user push both name the trigger.
        user.send(Message::Text(
            r#"{"op":"event","id":5,"user":"u1","type":"scroll","value":0.9}"#.into(),
        ))
        .await
        .unwrap();
        let (mut ack, mut push) = (None, None);
        while ack.is_none() || push.is_none() {
            let v = next_json(&mut user).await;
            if v.get("push").is_some() {
                push = Some(v);
            } else {
                ack = Some(v);
            }
        }
        let (ack, push) = (ack.unwrap(), push.unwrap());
        assert_eq!(ack["triggers"][0], "offer", "{ack}");
        assert_eq!(
            (push["push"].as_str(), push["triggers"][0].as_str()),
            (Some("user_update"), Some("offer")),
            "{push}"
        );

        // The name's subscriber hears of it, and of another user's crossing.
        let p = next_json(&mut watcher).await;
        assert_eq!(
            (
                p["push"].as_str(),
                p["trigger"].as_str(),
                p["user"].as_str()
            ),
            (Some("trigger"), Some("offer"), Some("u1")),
            "{p}"
        );
        assert!(p["ts"].as_u64().unwrap() > 0 && p["dropped"] == 0, "{p}");
        let r = call(
            &mut admin,
            r#"{"op":"event","id":6,"user":"u2","type":"scroll","value":0.75}"#,
        )
        .await;
        assert_eq!(r["triggers"][0], "offer", "{r}");
        let p = next_json(&mut watcher).await;
        assert_eq!(p["user"], "u2", "{p}");

        // Unsubscribed: the next firing reaches nobody there (the reply to a ping comes next).
        let r = call(
            &mut watcher,
            r#"{"op":"unsubscribe","id":7,"trigger":"offer"}"#,
        )
        .await;
        assert_eq!(r["ok"], true, "{r}");
        call(
            &mut admin,
            r#"{"op":"event","id":8,"user":"u3","type":"scroll","value":0.8}"#,
        )
        .await;
        let r = call(&mut watcher, r#"{"op":"ping","id":9}"#).await;
        assert_eq!(r["pong"], true, "no push after unsubscribing: {r}");
    });
    server.shutdown();
}

/// What the tiny webhook server does with a request: answer with a status, or never answer.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Hang,
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 that records each request's body and answers the
/// n-th request with `script(n)`.
struct Hook {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Connections accepted (each attempt is one).
    accepted: Arc<Mutex<usize>>,
}

impl Hook {
    fn start(script: impl Fn(usize) -> Answer + Send + 'static) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (b, a) = (bodies.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut hanging = Vec::new();
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                *a.lock() += 1;
                let body = read_request(&mut stream);
                b.lock()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                match script(n) {
                    Answer::Status(code) => {
                        let reply = format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(reply.as_bytes());
                    }
                    Answer::Hang => hanging.push(stream),
                }
            }
        });
        Hook {
            addr,
            bodies,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&all[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if all.len() >= end + 4 + length {
                return all[end + 4..end + 4 + length].to_vec();
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Vec::new(),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// An engine whose webhook waits `timeout_ms` and tries `max_attempts` times, served.
fn webhook_server(timeout_ms: u64, max_attempts: u32) -> (Engine, nudge::server::RunningServer) {
    let cfg = Config {
        shards: 2,
        seed: 7,
        webhook: WebhookConfig {
            timeout_ms,
            max_attempts,
            backoff_ms: 5,
            ..WebhookConfig::default()
        },
        ..Config::default()
    };
    serve(Engine::start(cfg).unwrap(), |_| {})
}

/// Waits (up to 20 s) until `done` holds of the stats' webhook counters.
fn until(engine: &Engine, done: impl Fn(&nudge::TriggerStats) -> bool) -> nudge::TriggerStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = engine.stats().triggers;
        if done(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "webhook counters stuck at {t:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hook_trigger(url: &str) -> String {
    format!(r#"{{"name":"offer","when":"user.scroll_depth > 0.7","webhook_url":"{url}"}}"#)
}

#[test]
fn the_webhook_retries_a_500_and_then_delivers() {
    let hook = Hook::start(|n| Answer::Status(if n == 0 { 500 } else { 200 }));
    let (engine, server) = webhook_server(5_000, 4);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    assert_eq!(
        set_triggers(&mut c, &hook_trigger(&hook.url()))["version"],
        1
    );
    let r = c.call(
        r#"{"op":"event","id":1,"user":"u1","type":"scroll","value":0.9,"ts":1732200000000}"#,
    );
    assert_eq!(r["triggers"][0], "offer", "{r}");
    let t = until(&engine, |t| t.webhook_delivered_total == 1);
    assert_eq!((t.webhook_retried_total, t.webhook_failed_total), (1, 0));
    let bodies = hook.bodies.lock().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[1]["trigger"], "offer");
    assert_eq!(bodies[1]["user"], "u1");
    assert_eq!(bodies[1]["ts"], 1_732_200_000_000u64);
    let metrics = http(server.http_addr().unwrap(), "GET", "/metrics", &[], b"");
    let m = parse_prometheus(std::str::from_utf8(&metrics.body).unwrap());
    assert_eq!(
        (
            m["nudge_webhook_delivered_total"],
            m["nudge_webhook_retried_total"]
        ),
        (1.0, 1.0)
    );
    server.shutdown();
}

#[test]
fn the_webhook_gives_up_after_its_attempts() {
    let hook = Hook::start(|_| Answer::Status(500));
    let (engine, server) = webhook_server(5_000, 3);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    set_triggers(&mut c, &hook_trigger(&hook.url()));
    c.call(r#"{"op":"event","id":1,"user":"u1","type":"scroll","value":0.9}"#);
    let t = until(&engine, |t| t.webhook_failed_total == 1);
    assert_eq!((t.webhook_retried_total, t.webhook_delivered_total), (2, 0));
    assert_eq!(*hook.accepted.lock(), 3, "three attempts, then no more");
    let r = c.call(r#"{"op":"stats","id":2}"#);
    assert_eq!(r["stats"]["triggers"]["webhook_failed_total"], 1, "{r}");
    server.shutdown();
}

#[test]
fn a_hanging_webhook_times_out_without_blocking_events() {
    let hook = Hook::start(|_| Answer::Hang);
    let (engine, server) = webhook_server(300, 2);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    set_triggers(&mut c, &hook_trigger(&hook.url()));
    let r = c.call(r#"{"op":"event","id":0,"user":"u0","type":"scroll","value":0.9}"#);
    assert_eq!(r["triggers"][0], "offer", "{r}");
    // While the webhook holds its connection open, events are answered, and fire.
    for i in 1..=50 {
        let line =
            format!(r#"{{"op":"event","id":{i},"user":"u{i}","type":"scroll","value":0.9}}"#);
        let r = c.call(&line);
        assert_eq!(
            (r["id"].as_i64(), r["triggers"][0].as_str()),
            (Some(i), Some("offer")),
            "{r}"
        );
        if i == 1 {
            // The first delivery is under way: the hook has its connection.
            let deadline = Instant::now() + Duration::from_secs(20);
            while *hook.accepted.lock() == 0 {
                assert!(Instant::now() < deadline, "the webhook never connected");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    // Each attempt timed out; the firings are given up one after another, none delivered.
    let t = until(&engine, |t| t.webhook_failed_total >= 2);
    assert_eq!(t.webhook_delivered_total, 0);
    assert!(t.webhook_retried_total >= 2, "{t:?}");
    server.shutdown();
}

#[test]
fn a_restart_replays_without_posting_again() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Hook::start(|_| Answer::Status(200));
    let durable = || {
        let mut cfg = Config {
            shards: 2,
            seed: 7,
            ..Config::default()
        };
        cfg.data_dir = Some(dir.path().to_string_lossy().into_owned());
        cfg.webhook.url = hook.url();
        cfg.triggers = vec![nudge::TriggerConfig {
            name: "offer".into(),
            when: "user.scroll_depth > 0.7".into(),
            ..Default::default()
        }];
        serve(Engine::start(cfg).unwrap(), |_| {})
    };
    let (engine, server) = durable();
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let r = c.call(r#"{"op":"event","id":1,"user":"u1","type":"scroll","value":0.9}"#);
    assert_eq!(r["triggers"][0], "offer", "{r}");
    until(&engine, |t| t.webhook_delivered_total == 1);
    drop(c);
    // As a crash would leave it: the log written, no checkpoint; the restart replays it.
    engine.shutdown_without_checkpoint();
    server.shutdown();
    drop(engine);

    let (engine, server) = durable();
    assert!(engine.stats().durability.unwrap().recovered_records > 0);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    // u1 is still past 70% after the replay: no new crossing.
    let r = c.call(r#"{"op":"event","id":2,"user":"u1","type":"scroll","value":0.95}"#);
    assert!(r.get("triggers").is_none(), "{r}");
    let r = c.call(r#"{"op":"event","id":3,"user":"u2","type":"scroll","value":0.9}"#);
    assert_eq!(r["triggers"][0], "offer", "{r}");
    // The webhook's queue is first in, first out: had the replay posted u1 again, it would
    // come before u2.
    until(&engine, |t| t.webhook_delivered_total == 1);
    let users: Vec<Value> = hook
        .bodies
        .lock()
        .iter()
        .map(|b| b["user"].clone())
        .collect();
    assert_eq!(users, ["u1", "u2"]);
    server.shutdown();
}
