//! The WebSocket front end with a real client (tokio-tungstenite): every op per text frame,
//! a subscription receiving a push, and close codes on protocol violations.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::server_support::{http, parse_prometheus, start};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(addr: std::net::SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("ws connect");
    ws
}

/// The next text frame, parsed (pings and pongs skipped); panics after 20 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a valid frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn call(ws: &mut Ws, text: &str) -> Value {
    ws.send(Message::Text(text.to_string())).await.unwrap();
    next_json(ws).await
}

#[test]
fn websocket_ops_and_a_subscription_push() {
    let (_engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(addr).await;
        assert_eq!(call(&mut ws, r#"{"op":"ping","id":1}"#).await["pong"], true);
        let r = call(&mut ws, r#"{"op":"item","id":2,"item":"boots","attrs":{"category":"shoes"}}"#).await;
        assert_eq!(r["new"], true, "{r}");
        call(&mut ws, r#"{"op":"item","id":3,"item":"scarf","attrs":{"category":"winter"}}"#).await;

        let r = call(&mut ws, r#"{"op":"subscribe","id":4,"user":"u1"}"#).await;
        assert_eq!((r["id"].as_i64(), r["ok"].as_bool()), (Some(4), Some(true)), "{r}");

        let d = call(&mut ws, r#"{"op":"decide","id":5,"user":"u1","candidates":["boots","scarf"],"n":2}"#).await;
        assert_eq!(d["items"].as_array().unwrap().len(), 2, "{d}");
        let decision = d["decision"].as_str().unwrap().to_string();

        // An event for the subscribed user: its reply and a push both arrive (either order).
        ws.send(Message::Text(r#"{"op":"event","id":6,"user":"u1","type":"click","item":"boots"}"#.into()))
            .await
            .unwrap();
        let (mut ack, mut push) = (None, None);
        while ack.is_none() || push.is_none() {
            let v = next_json(&mut ws).await;
            if v.get("push").is_some() {
                push = Some(v);
            } else {
                ack = Some(v);
            }
        }
        let (ack, push) = (ack.unwrap(), push.unwrap());
        assert_eq!((ack["id"].as_i64(), ack["ok"].as_bool()), (Some(6), Some(true)), "{ack}");
        assert_eq!(push["push"], "user_update", "{push}");
        assert_eq!(push["user"], "u1");
        assert_eq!(push["cause"], "click");
        assert_eq!(push["dropped"], 0);
        let top: Vec<&str> = push["top"].as_array().unwrap().iter().map(|t| t["item"].as_str().unwrap()).collect();
        assert!(top.contains(&"boots"), "the last decision's candidates, rescored: {push}");

        let r = call(&mut ws, &format!(r#"{{"op":"reward","id":7,"decision":"{decision}","item":"scarf","value":0.5}}"#)).await;
        assert_eq!(r["ok"], true, "{r}");
        let r = call(&mut ws, r#"{"op":"user","id":8,"user":"u1"}"#).await;
        assert_eq!(r["user"]["events_by_kind"]["click"], 1, "{r}");
        let r = call(&mut ws, r#"{"op":"stats","id":9}"#).await;
        assert_eq!(r["stats"]["catalog_items"], 2);
        let r = call(&mut ws, r#"{"op":"batch","id":10,"ops":[{"op":"ping","id":"x"},{"op":"event","id":"y","user":"u9","type":"click","item":"scarf"}]}"#).await;
        assert_eq!(r["results"][1]["ok"], true, "{r}");
        let r = call(&mut ws, r#"{"op":"unsubscribe","id":11,"user":"u1"}"#).await;
        assert_eq!(r["ok"], true);
        let r = call(&mut ws, r#"{"op":"remove_item","id":12,"item":"scarf"}"#).await;
        assert_eq!(r["removed"], true);
        let r = call(&mut ws, r#"{"op":"forget","id":13,"user":"u1"}"#).await;
        assert_eq!(r["forgotten"], true);
        let r = call(&mut ws, r#"{"op":"event","id":14, oops"#).await;
        assert_eq!((r["id"].as_i64(), r["error"]["code"].as_str()), (Some(14), Some("bad_request")));
        ws.close(None).await.unwrap();
    });
    server.shutdown();
}

async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a close in time");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
        }
    }
}

#[test]
fn websocket_violations_close_with_codes() {
    let (_engine, server) = start(|cfg| cfg.ws_max_frame_bytes = 1024);
    let addr = server.http_addr().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(addr).await;
        let big = format!(r#"{{"op":"ping","id":1,"pad":"{}"}}"#, "x".repeat(4096));
        ws.send(Message::Text(big)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1009, "message too big");

        let mut ws = connect(addr).await;
        ws.send(Message::Binary(b"{}".to_vec())).await.unwrap();
        assert_eq!(
            close_code(&mut ws).await,
            1003,
            "binary frames are unsupported"
        );
    });
    server.shutdown();
}

/// Sends every frame of `burst` without waiting for a reply while reading replies
/// concurrently (a client that only wrote would stall once the server's in-flight bound is
/// reached and its replies filled the socket), and returns the replies, pushes skipped.
async fn burst_and_collect(ws: Ws, burst: Vec<String>) -> Vec<Value> {
    let n = burst.len();
    let (mut sink, mut stream) = ws.split();
    let send = async move {
        for text in burst {
            sink.feed(Message::Text(text)).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    };
    let receive = async move {
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            let msg = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("a reply in time")
                .expect("the socket is open")
                .expect("a valid frame");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v.get("push").is_none() {
                    replies.push(v);
                }
            }
        }
        replies
    };
    let (_sink, replies) = tokio::join!(send, receive);
    replies
}

fn event_frame(i: usize) -> String {
    format!(
        r#"{{"op":"event","id":{i},"user":"u{}","type":"click","item":"i{}"}}"#,
        i % 53,
        i % 11
    )
}

/// A single-threaded runtime for one test's client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects to `addr` and runs `burst_and_collect` on a runtime of its own.
fn burst(addr: std::net::SocketAddr, frames: Vec<String>) -> Vec<Value> {
    runtime().block_on(async {
        let ws = connect(addr).await;
        burst_and_collect(ws, frames).await
    })
}

/// Issue 4: the WebSocket front end takes every frame already received at once and ingests
/// runs of events as one batch; a burst must still get one ack per event, in order, and
/// every event must reach the engine exactly once.
#[test]
fn issue4_a_burst_of_events_is_acked_in_order_and_ingested_once() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    const N: usize = 5_000;
    let replies = burst(addr, (0..N).map(event_frame).collect());
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(
            r["id"].as_u64(),
            Some(i as u64),
            "replies out of order: {r}"
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, N as u64);
    let m = parse_prometheus(&http(addr, "GET", "/metrics", &[], b"").text());
    let ok = m[r#"nudge_requests_total{transport="ws",op="event",outcome="ok"}"#];
    assert_eq!(ok, N as f64, "one ok event per ack in the metrics");
    server.shutdown();
}

/// Issue 4: malformed frames, events the parser refuses, and other ops inside a burst of
/// events each get their own reply in their place; the events around them are acked.
#[test]
fn issue4_bad_frames_inside_a_burst_keep_their_place() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    const N: usize = 3_000;
    let frame = |i: usize| match i % 100 {
        37 => format!(r#"{{"op":"event","id":{i}, oops"#),
        71 => format!(r#"{{"op":"event","id":{i},"type":"click","item":"i1"}}"#),
        90 => format!(r#"{{"op":"ping","id":{i}}}"#),
        _ => event_frame(i),
    };
    let replies = burst(addr, (0..N).map(frame).collect());
    let mut good = 0;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(
            r["id"].as_u64(),
            Some(i as u64),
            "replies out of order: {r}"
        );
        match i % 100 {
            37 => assert_eq!(r["error"]["code"], "bad_request", "{r}"),
            71 => {
                assert_eq!(r["error"]["code"], "bad_request", "{r}");
                assert_eq!(r["error"]["message"], "field `user` is missing", "{r}");
            }
            90 => assert_eq!(r["pong"], true, "{r}"),
            _ => {
                assert_eq!(r["ok"], true, "{r}");
                good += 1;
            }
        }
    }
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, good);
    let m = parse_prometheus(&http(addr, "GET", "/metrics", &[], b"").text());
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        get(r#"nudge_requests_total{transport="ws",op="event",outcome="ok"}"#),
        good as f64
    );
    assert_eq!(
        get(r#"nudge_requests_total{transport="ws",op="event",outcome="bad_request"}"#),
        (2 * N / 100) as f64
    );
    server.shutdown();
}

/// Issue 16: a text frame that is not UTF-8 closes with 1007 (invalid payload), not 1002.
#[test]
fn issue16_websocket_invalid_utf8_closes_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::OpCode, Frame};
    let (_engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    runtime().block_on(async {
        let mut ws = connect(addr).await;
        let text =
            OpCode::Data(tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text);
        let frame = Frame::message(b"{\"op\":\"\xff\"}".to_vec(), text, true);
        ws.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1007);
    });
    server.shutdown();
}

/// Issue 16: a handshake whose headers are over the limit is refused at once with `431` and
/// the JSON error, instead of upgrading and waiting for the heartbeat timeout.
#[test]
fn issue16_oversized_handshake_refused() {
    let (_engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let pad = "x".repeat(100_000);
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("X-Pad", pad.as_str()),
    ];
    let r = http(addr, "GET", "/v1/ws", &headers, b"");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "too_large");
    server.shutdown();
}

/// Issue 16: subscribing twice to one user answers the same subscription and pushes each
/// update once; a new subscription ranks the user's last decision at once (its `top` is not
/// empty until the next `decide`).
#[test]
fn issue16_subscribe_twice_pushes_once() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    runtime().block_on(async {
        let mut ws = connect(addr).await;
        call(&mut ws, r#"{"op":"item","item":"boots"}"#).await;
        call(&mut ws, r#"{"op":"item","item":"scarf"}"#).await;
        let d = call(
            &mut ws,
            r#"{"op":"decide","user":"u1","candidates":["boots","scarf"]}"#,
        )
        .await;
        assert!(d["decision"].is_string(), "{d}");
        let first = call(&mut ws, r#"{"op":"subscribe","user":"u1"}"#).await;
        let second = call(&mut ws, r#"{"op":"subscribe","user":"u1"}"#).await;
        assert_eq!(
            first["subscription"], second["subscription"],
            "{first} {second}"
        );
        let ack = call(
            &mut ws,
            r#"{"op":"event","id":"e","user":"u1","type":"click","item":"boots"}"#,
        )
        .await;
        let mut pushes: Vec<Value> = Vec::new();
        if ack.get("push").is_some() {
            pushes.push(ack);
        }
        // Every push of that event is queued once the shards have handled it.
        engine.flush().unwrap();
        ws.send(Message::Text(r#"{"op":"ping","id":"p"}"#.into()))
            .await
            .unwrap();
        loop {
            let v = next_json(&mut ws).await;
            if v["id"] == "p" {
                break;
            }
            if v.get("push").is_some() {
                pushes.push(v);
            }
        }
        assert_eq!(pushes.len(), 1, "{pushes:?}");
        let top = pushes[0]["top"].as_array().unwrap();
        assert_eq!(top.len(), 2, "the last decision, ranked: {}", pushes[0]);
    });
    server.shutdown();
}

/// Issue 16: the HTTP request deadline ends at the upgrade; a WebSocket frame that gets no
/// reply (a pong) does not start a deadline that would cut the socket.
#[test]
fn issue16_request_deadline_spares_websockets() {
    let (_engine, server) = start(|cfg| cfg.request_timeout_ms = 200);
    let addr = server.http_addr().unwrap();
    runtime().block_on(async {
        let mut ws = connect(addr).await;
        ws.send(Message::Pong(Vec::new())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(call(&mut ws, r#"{"op":"ping","id":1}"#).await["pong"], true);
    });
    server.shutdown();
}
