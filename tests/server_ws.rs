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

/// Sends an `impression` event of `user` (whom this socket follows) after everything sent so
/// far and returns every frame that arrives before its push, split into replies and pushes.
/// Pushes leave a socket's queue in order, so every push caused before it has arrived. (A
/// `ping` is no such barrier: its reply is not ordered with pushes.)
async fn until_impression_push(ws: &mut Ws, user: &str) -> (Vec<Value>, Vec<Value>) {
    let barrier = format!(
        r#"{{"op":"event","id":"barrier","user":"{user}","type":"impression","item":"boots"}}"#
    );
    ws.send(Message::Text(barrier)).await.unwrap();
    let (mut replies, mut pushes) = (Vec::new(), Vec::new());
    let mut barrier_acked = false;
    loop {
        let v = next_json(ws).await;
        if v.get("push").is_some() {
            if v["cause"] == "impression" && v["user"] == user {
                // Its reply may come before or after its push; wait for both.
                while !barrier_acked {
                    let r = next_json(ws).await;
                    barrier_acked = r["id"] == "barrier";
                    if !barrier_acked {
                        replies.push(r);
                    }
                }
                return (replies, pushes);
            }
            pushes.push(v);
        } else if v["id"] == "barrier" {
            barrier_acked = true;
        } else {
            replies.push(v);
        }
    }
}

/// Issue 16: subscribing twice to one user answers the same subscription and pushes each
/// update once: the subscription's first update (at once, ranking the user's last decision,
/// so its `top` is not empty until the next `decide`) and then the event's, each once.
#[test]
fn issue16_subscribe_twice_pushes_once() {
    let (_engine, server) = start(|_| {});
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
        for text in [
            r#"{"op":"subscribe","id":"s1","user":"u1"}"#,
            r#"{"op":"subscribe","id":"s2","user":"u1"}"#,
            r#"{"op":"event","id":"e","user":"u1","type":"click","item":"boots"}"#,
        ] {
            ws.send(Message::Text(text.into())).await.unwrap();
        }
        let (replies, pushes) = until_impression_push(&mut ws, "u1").await;
        let ids: Vec<&str> = replies.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["s1", "s2", "e"], "{replies:?}");
        assert_eq!(
            replies[0]["subscription"], replies[1]["subscription"],
            "{replies:?}"
        );
        let causes: Vec<&str> = pushes
            .iter()
            .map(|p| p["cause"].as_str().unwrap())
            .collect();
        assert_eq!(causes, ["subscribed", "click"], "{pushes:?}");
        for push in &pushes {
            let top = push["top"].as_array().unwrap();
            assert_eq!(top.len(), 2, "the last decision, ranked: {push}");
        }
    });
    server.shutdown();
}

/// Issue 16 item 6: a new subscription pushes the user's current top at once, ranked from
/// their state over their last decision's placements (a dashboard opened after the user's
/// activity sees it without waiting for their next event); a user the engine holds no state
/// for gets no first push.
#[test]
fn issue16_subscribe_pushes_the_current_top_at_once() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    runtime().block_on(async {
        let mut app = connect(addr).await;
        for item in ["boots", "scarf", "hat"] {
            call(&mut app, &format!(r#"{{"op":"item","item":"{item}"}}"#)).await;
        }
        let d = call(
            &mut app,
            r#"{"op":"decide","user":"u7","candidates":["boots","scarf","hat"],"n":2}"#,
        )
        .await;
        let mut shown: Vec<&str> = d["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["item"].as_str().unwrap())
            .collect();
        assert_eq!(shown.len(), 2, "{d}");
        let click = format!(
            r#"{{"op":"event","user":"u7","type":"click","item":"{}"}}"#,
            shown[0]
        );
        assert_eq!(call(&mut app, &click).await["ok"], true);

        // A dashboard on another socket subscribes after the fact: the push comes at once,
        // before any further event of the user.
        let mut dashboard = connect(addr).await;
        let before = engine.now_ms();
        let text = r#"{"op":"subscribe","id":1,"user":"u7"}"#;
        dashboard.send(Message::Text(text.into())).await.unwrap();
        let (mut reply, mut push) = (None, None);
        while reply.is_none() || push.is_none() {
            let v = next_json(&mut dashboard).await;
            match v.get("push") {
                Some(_) => push = Some(v),
                None => reply = Some(v),
            }
        }
        let (reply, push) = (reply.unwrap(), push.unwrap());
        assert_eq!(
            (reply["id"].as_i64(), reply["ok"].as_bool()),
            (Some(1), Some(true))
        );
        assert_eq!(push["push"], "user_update", "{push}");
        assert_eq!(push["user"], "u7", "{push}");
        assert_eq!(push["cause"], "subscribed", "{push}");
        assert_eq!(push["engagement_drop"], false, "{push}");
        assert_eq!(push["dropped"], 0, "{push}");
        assert!(push["ts"].as_u64().unwrap() >= before, "{push}");
        assert!(push["signals"].is_object(), "{push}");
        let mut top: Vec<&str> = push["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["item"].as_str().unwrap())
            .collect();
        top.sort_unstable();
        shown.sort_unstable();
        assert_eq!(top, shown, "the placements of the last decision: {push}");

        // A user with no state: the subscription opens and pushes nothing until an event.
        let text = r#"{"op":"subscribe","id":2,"user":"nobody"}"#;
        dashboard.send(Message::Text(text.into())).await.unwrap();
        let (replies, pushes) = until_impression_push(&mut dashboard, "u7").await;
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0]["ok"], true, "{replies:?}");
        assert!(pushes.is_empty(), "no state, no first push: {pushes:?}");
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
