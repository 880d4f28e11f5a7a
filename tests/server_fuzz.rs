//! Bounded fuzzing of the server over real sockets (proptest; cargo-fuzz needs a nightly
//! toolchain, this runs on stable in CI): JSON-like and arbitrary TCP lines, WebSocket text
//! frames and Segment bodies. Every input gets exactly one well-formed JSON reply and the
//! connection keeps serving. `PROPTEST_CASES` sets the number of cases (64 by default); see
//! `docs/protocol.md` for a longer run.

use std::sync::OnceLock;

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::server_support::{http, start, Lines};
use crate::wire_props::FRAGMENTS;

/// One server for every case (started on first use, stopped when the test binary exits).
fn addrs() -> (std::net::SocketAddr, std::net::SocketAddr) {
    static SERVER: OnceLock<(nudge::Engine, nudge::server::RunningServer)> = OnceLock::new();
    let (_, server) = SERVER.get_or_init(|| start(|cfg| cfg.max_line_bytes = 4096));
    (server.tcp_addr().unwrap(), server.http_addr().unwrap())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// A request-like text: JSON fragments, or arbitrary characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(0..FRAGMENTS.len(), 1..48)
            .prop_map(|parts| parts.iter().map(|&i| FRAGMENTS[i]).collect::<String>()),
        "\\PC{1,200}",
    ]
}

/// A reply is one JSON object: a result with `id`, or an error with a code.
fn well_formed(reply: &Value) -> bool {
    reply.is_object() && (reply.get("id").is_some() || reply.get("error").is_some())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn fuzz_tcp_lines_each_get_one_reply(lines in proptest::collection::vec(text(), 1..8)) {
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| l.replace(['\n', '\r'], " "))
            .filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()))
            .collect();
        let mut c = Lines::connect(addrs().0);
        for line in &lines {
            c.send(line);
        }
        for line in &lines {
            let reply = c.recv().expect("a reply per line");
            prop_assert!(well_formed(&reply), "{line:?} → {reply}");
        }
        prop_assert_eq!(&c.call(r#"{"op":"ping","id":"after"}"#)["id"], "after");
    }

    #[test]
    fn fuzz_websocket_frames_each_get_one_reply(frames in proptest::collection::vec(text(), 1..6)) {
        let addr = addrs().1;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let replies: Vec<Value> = rt.block_on(async {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
                .await
                .expect("ws connect");
            for f in &frames {
                ws.send(Message::Text(f.clone())).await.unwrap();
            }
            ws.send(Message::Text(r#"{"op":"ping","id":"after"}"#.into())).await.unwrap();
            let mut replies = Vec::new();
            while replies.len() < frames.len() + 1 {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        if v.get("push").is_none() {
                            replies.push(v);
                        }
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("socket ended: {other:?} after {replies:?}"),
                }
            }
            replies
        });
        for (f, r) in frames.iter().zip(&replies) {
            prop_assert!(well_formed(r), "{f:?} → {r}");
        }
        prop_assert_eq!(&replies[frames.len()]["id"], "after");
    }

    #[test]
    fn fuzz_segment_bodies_get_json(body in text()) {
        let r = http(addrs().1, "POST", "/v1/batch", &[], body.as_bytes());
        prop_assert!([200, 400, 413].contains(&r.status), "{body:?} → {}", r.status);
        let v: Value = serde_json::from_slice(&r.body).expect("a JSON reply");
        prop_assert!(v.get("success").is_some(), "{body:?} → {v}");
    }
}
