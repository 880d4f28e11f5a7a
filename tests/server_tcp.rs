//! The TCP line-JSON front end over real sockets: every op, pipelining and reply order, bad
//! and oversized lines, half-close, the connection limit, and graceful shutdown mid-stream.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::server_support::{start, Lines, READ_TIMEOUT};

#[test]
fn every_op_over_tcp() {
    let (engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());

    let r = c.call(r#"{"op":"ping","id":1}"#);
    assert_eq!(
        (r["id"].as_i64(), r["pong"].as_bool()),
        (Some(1), Some(true))
    );

    let r = c.call(r#"{"op":"item","id":2,"item":"boots","attrs":{"category":"shoes","tags":["a","b"]},"vector":[0.1,0.2]}"#);
    assert_eq!(
        (r["id"].as_i64(), r["new"].as_bool()),
        (Some(2), Some(true)),
        "{r}"
    );
    c.call(r#"{"op":"item","id":"2b","item":"scarf","attrs":{"category":"winter"}}"#);

    let r = c.call(r#"{"op":"event","id":3,"user":"u1","type":"click","item":"boots","ts":null,"context":{"device":"mobile","hour":21}}"#);
    assert_eq!(
        (r["id"].as_i64(), r["ok"].as_bool()),
        (Some(3), Some(true)),
        "{r}"
    );
    assert!(r["trained"].is_boolean());

    let r = c.call(r#"{"op":"decide","id":4,"user":"u1","candidates":["boots","scarf",{"id":"hat","attrs":{"category":"winter"}}],"n":2,"explain":true}"#);
    assert_eq!(r["id"].as_i64(), Some(4), "{r}");
    let decision = r["decision"].as_str().unwrap().to_string();
    assert_eq!(decision.len(), 16);
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for p in items {
        let score = p["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert!(p["propensity"].as_f64().unwrap() > 0.0);
        assert!(p["explain"]["logit"].is_number());
    }
    let shown = items[0]["item"].as_str().unwrap();

    let r = c.call(&format!(
        r#"{{"op":"reward","id":5,"decision":"{decision}","item":"{shown}","value":1.0}}"#
    ));
    assert_eq!(
        (r["id"].as_i64(), r["ok"].as_bool()),
        (Some(5), Some(true)),
        "{r}"
    );
    let r = c.call(&format!(
        r#"{{"op":"reward","id":6,"decision":"{decision}","item":"nope","value":1.0}}"#
    ));
    assert_eq!(r["error"]["code"], "not_shown", "{r}");

    let r = c.call(r#"{"op":"user","id":7,"user":"u1"}"#);
    assert_eq!(r["user"]["user"], "u1", "{r}");
    assert_eq!(r["user"]["events_by_kind"]["click"], 1);
    assert_eq!(r["user"]["decisions"], 1);
    let r = c.call(r#"{"op":"user","id":8,"user":"nobody"}"#);
    assert!(r["user"].is_null(), "{r}");

    let r = c.call(r#"{"op":"stats","id":9}"#);
    assert_eq!(r["stats"]["catalog_items"], 2, "{r}");
    assert_eq!(r["stats"]["shards"].as_array().unwrap().len(), 2);

    let r = c.call(r#"{"op":"batch","id":10,"ops":[{"op":"event","id":"a","user":"u2","type":"click","item":"boots"},{"op":"event","id":"b","user":"u3","type":"dwell","item":"scarf","value":12.5},{"op":"ping","id":"c"},{"op":"bogus","id":"d"}]}"#);
    let results = r["results"].as_array().unwrap();
    let ids: Vec<&Value> = results.iter().map(|x| &x["id"]).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["ok"], true);
    assert_eq!(results[2]["pong"], true);
    assert_eq!(results[3]["error"]["code"], "bad_request");

    let r = c.call(r#"{"op":"forget","id":11,"user":"u1"}"#);
    assert_eq!(r["forgotten"], true, "{r}");
    assert!(c.call(r#"{"op":"user","id":12,"user":"u1"}"#)["user"].is_null());

    let r = c.call(r#"{"op":"remove_item","id":13,"item":"scarf"}"#);
    assert_eq!(r["removed"], true, "{r}");
    assert_eq!(engine.item("scarf").unwrap(), None);

    let r = c.call(r#"{"op":"subscribe","id":14,"user":"u1"}"#);
    assert_eq!(
        r["error"]["code"], "bad_request",
        "subscribe is WebSocket-only: {r}"
    );
    let r = c.call(r#"{"op":"event","id":15,"user":"u1","type":"teleport","item":"boots"}"#);
    assert_eq!(r["error"]["code"], "bad_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("teleport"));
    server.shutdown();
}

#[test]
fn ten_thousand_pipelined_requests_reply_in_order() {
    let (engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let mut writer = c.writer.try_clone().unwrap();
    const N: usize = 10_000;
    let sender = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..N {
            let line = match i % 10 {
                0 => format!(r#"{{"op":"ping","id":{i}}}"#),
                5 => format!(
                    r#"{{"op":"decide","id":{i},"user":"u{}","candidates":["a","b","c"],"n":1}}"#,
                    i % 97
                ),
                _ => format!(
                    r#"{{"op":"event","id":{i},"user":"u{}","type":"click","item":"i{}"}}"#,
                    i % 97,
                    i % 13
                ),
            };
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if buf.len() > 32 * 1024 {
                writer.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        writer.write_all(&buf).unwrap();
    });
    for i in 0..N {
        let r = c.recv().expect("a reply per request");
        assert_eq!(
            r["id"].as_u64(),
            Some(i as u64),
            "replies out of order: {r}"
        );
        assert!(r.get("error").is_none(), "{r}");
    }
    sender.join().unwrap();
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, (N / 10 * 8) as u64);
    server.shutdown();
}

#[test]
fn a_malformed_line_between_two_good_ones() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    c.send(r#"{"op":"event","id":1,"user":"u1","type":"click","item":"i1"}"#);
    c.send(r#"{"id":2, "op":"event", this is not json"#);
    c.send(r#"{"op":"event","id":3,"user":"u1","type":"click","item":"i2"}"#);
    let (a, b, d) = (c.recv().unwrap(), c.recv().unwrap(), c.recv().unwrap());
    assert_eq!(
        (a["id"].as_i64(), a["ok"].as_bool()),
        (Some(1), Some(true)),
        "{a}"
    );
    assert_eq!(b["id"].as_i64(), Some(2), "the id is recovered: {b}");
    assert_eq!(b["error"]["code"], "bad_request");
    assert_eq!(
        (d["id"].as_i64(), d["ok"].as_bool()),
        (Some(3), Some(true)),
        "{d}"
    );
    // A missing field names the field.
    let r = c.call(r#"{"op":"event","id":4,"type":"click","item":"i1"}"#);
    assert_eq!(r["error"]["message"], "field `user` is missing");
    server.shutdown();
}

#[test]
fn an_oversized_line_is_refused_and_skipped() {
    let (_engine, server) = start(|cfg| cfg.max_line_bytes = 1024);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    c.send(r#"{"op":"ping","id":1}"#);
    // 300 KB: more than one read, so the skip must carry across reads.
    let big = format!(
        r#"{{"op":"event","id":2,"user":"{}"}}"#,
        "x".repeat(300_000)
    );
    c.send(&big);
    c.send(r#"{"op":"ping","id":3}"#);
    // Just over the limit, within one read.
    c.send(&format!(
        r#"{{"op":"ping","id":4,"pad":"{}"}}"#,
        "y".repeat(1100)
    ));
    c.send(r#"{"op":"ping","id":5}"#);
    assert_eq!(c.recv().unwrap()["id"], 1);
    let r = c.recv().unwrap();
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    assert_eq!(c.recv().unwrap()["id"], 3);
    assert_eq!(c.recv().unwrap()["error"]["code"], "too_large");
    assert_eq!(c.recv().unwrap()["id"], 5);
    server.shutdown();
}

/// Issue 4: an oversized line that arrives in the same read as a run of events gets its
/// `too_large` reply after theirs, not before (the run is coalesced into one batch, and the
/// error must not overtake it).
#[test]
fn issue4_an_oversized_line_after_a_run_of_events_keeps_its_place() {
    let (_engine, server) = start(|cfg| cfg.max_line_bytes = 1024);
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let mut burst = String::new();
    for i in 1..=3 {
        burst.push_str(&format!(
            r#"{{"op":"event","id":{i},"user":"u1","type":"click","item":"i1"}}"#
        ));
        burst.push('\n');
    }
    burst.push_str(&format!(
        r#"{{"op":"ping","id":4,"pad":"{}"}}"#,
        "y".repeat(1100)
    ));
    burst.push('\n');
    burst.push_str(r#"{"op":"ping","id":5}"#);
    c.writer.write_all(burst.as_bytes()).unwrap();
    c.writer.write_all(b"\n").unwrap();
    for i in 1..=3 {
        let r = c.recv().unwrap();
        assert_eq!(
            (r["id"].as_u64(), r["ok"].as_bool()),
            (Some(i), Some(true)),
            "{r}"
        );
    }
    let r = c.recv().unwrap();
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    assert_eq!(c.recv().unwrap()["id"], 5);
    server.shutdown();
}

#[test]
fn a_client_that_half_closes_gets_every_reply() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    c.send(r#"{"op":"ping","id":1}"#);
    c.send(r#"{"op":"event","id":2,"user":"u1","type":"click","item":"i1"}"#);
    // The last line has no newline: end of input ends it.
    c.writer
        .write_all(br#"{"op":"decide","id":3,"user":"u1","candidates":["i1"]}"#)
        .unwrap();
    c.writer.shutdown(Shutdown::Write).unwrap();
    let ids: Vec<i64> = std::iter::from_fn(|| c.recv())
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    server.shutdown();
}

#[test]
fn the_connection_limit_refuses_clearly() {
    let (_engine, server) = start(|cfg| cfg.max_connections = 2);
    let addr = server.tcp_addr().unwrap();
    let mut a = Lines::connect(addr);
    let mut b = Lines::connect(addr);
    assert_eq!(a.call(r#"{"op":"ping","id":1}"#)["pong"], true);
    assert_eq!(b.call(r#"{"op":"ping","id":1}"#)["pong"], true);
    let mut third = Lines::connect(addr);
    let r = third.recv().expect("a refusal line");
    assert_eq!(r["error"]["code"], "too_many_connections", "{r}");
    assert!(third.recv().is_none(), "then the connection closes");
    drop(a);
    // The freed slot is reused once the server has seen the close.
    let mut ok = false;
    for _ in 0..100 {
        let mut c = Lines::connect(addr);
        let r = c.call(r#"{"op":"ping","id":9}"#);
        if r["pong"] == true {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "a slot frees up when a connection closes");
    server.shutdown();
}

#[test]
fn graceful_shutdown_mid_stream_loses_no_acknowledged_event() {
    let (engine, server) = start(|_| {});
    let stream = TcpStream::connect(server.tcp_addr().unwrap()).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut sent = 0u64;
        for chunk in 0..10_000u64 {
            let mut buf = Vec::new();
            for j in 0..100u64 {
                let i = chunk * 100 + j;
                buf.extend_from_slice(
                    format!("{{\"op\":\"event\",\"id\":{i},\"user\":\"u{}\",\"type\":\"click\",\"item\":\"i{}\"}}\n", i % 501, i % 17)
                        .as_bytes(),
                );
            }
            if writer.write_all(&buf).is_err() {
                break;
            }
            sent += 100;
        }
        sent
    });
    // Read acknowledgements; shut the server down once a few thousand are in.
    let mut reader = std::io::BufReader::new(stream);
    let mut acked = 0u64;
    let mut server = Some(server);
    let mut line = String::new();
    let mut shutdown_thread = None;
    loop {
        line.clear();
        match std::io::BufRead::read_line(&mut reader, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let r: Value = serde_json::from_str(&line).unwrap();
        if r["ok"] == true {
            acked += 1;
        } else {
            assert_eq!(r["error"]["code"], "shutting_down", "{r}");
        }
        if acked == 3_000 {
            let s = server.take().unwrap();
            shutdown_thread = Some(std::thread::spawn(move || s.shutdown()));
        }
    }
    shutdown_thread
        .expect("the shutdown started")
        .join()
        .unwrap();
    let sent = sender.join().unwrap();
    assert!(acked >= 3_000);
    // The engine has drained its shards: its counters are final.
    let seen = engine.stats().total().events_total;
    assert!(
        seen >= acked,
        "acknowledged {acked} events but the engine holds {seen}"
    );
    assert!(seen <= sent, "{seen} events from {sent} lines");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

/// Issue 3 found it: removing an item that a shard had just learned about (a pending delta
/// for the global model) made the next mixing round panic and kill the shard thread.
#[test]
fn issue3_removing_a_freshly_learned_item_keeps_shards_alive() {
    // Before the fix a dead shard made the engine wait forever: bound the wait.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        remove_then_mix();
        let _ = done.send(());
    });
    finished
        .recv_timeout(READ_TIMEOUT)
        .expect("the engine still answers after mixing a removed item");
}

fn remove_then_mix() {
    let clock = nudge::ManualClock::new(1_700_000_000_000);
    let engine = nudge::Engine::builder()
        .shards(2)
        .seed(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    engine
        .upsert_item(nudge::ItemSpec::new("i1").attr("category", "shoes"))
        .unwrap();
    for u in 0..8 {
        engine
            .ingest(nudge::Event::new(format!("u{u}"), nudge::EventKind::Click).item("i1"))
            .unwrap();
    }
    engine.remove_item("i1").unwrap();
    clock.advance_ms(1_000);
    engine.tick().unwrap();
    clock.advance_ms(1_000);
    engine.tick().unwrap();
    for u in 0..8 {
        let d = engine.decide(nudge::DecideRequest::new(format!("u{u}"), ["i1", "i2"], 1));
        assert!(d.is_ok(), "shard answers after mixing: {d:?}");
    }
    engine.shutdown();
}

/// Issue 11 found it: on SIGTERM under pipelined load the server dropped requests it had
/// already read (lines buffered behind `max_in_flight` while earlier requests waited for a
/// busy shard) with no reply at all. Every complete line read before the stop is answered
/// now, acknowledged or refused.
#[test]
fn issue11_shutdown_answers_every_line_already_read() {
    use crate::engine_api::HeldShard;
    use std::collections::BTreeSet;

    let engine = nudge::Engine::builder().shards(1).seed(2).build().unwrap();
    // Another caller holds the only shard, so the connection's requests queue behind it.
    let held = HeldShard::hold(&engine, "held", "a");
    let (_engine, server) = crate::server_support::serve(engine, |c| c.max_in_flight = 4);
    let mut stream = TcpStream::connect(server.tcp_addr().unwrap()).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // One write, well under one read: the server reads every line, submits four, and holds
    // the other 146 in its buffer behind `max_in_flight`.
    let mut lines = String::new();
    for i in 0..150 {
        lines.push_str(&format!(
            "{{\"op\":\"event\",\"id\":{i},\"user\":\"u{i}\",\"type\":\"click\",\"item\":\"a\"}}\n"
        ));
    }
    stream.write_all(lines.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Stop the server while the lines wait, then release the shard.
    let stopping = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(200));
    held.release().unwrap();
    let mut replies = String::new();
    let _ = stream.read_to_string(&mut replies);
    stopping.join().unwrap();
    let mut answered = BTreeSet::new();
    for line in replies.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        if r["ok"] != true {
            assert_eq!(r["error"]["code"], "shutting_down", "{r}");
        }
        assert!(
            answered.insert(r["id"].as_u64().unwrap()),
            "{r} answered twice"
        );
    }
    assert_eq!(answered, (0..150).collect(), "every line read gets a reply");
}

/// Issue 11 item 7 over the wire: `event_id` makes a retried line count once.
#[test]
fn issue11_a_line_retried_with_its_event_id_counts_once() {
    let (engine, server) = start(|_| {});
    let mut lines = Lines::connect(server.tcp_addr().unwrap());
    let line = r#"{"op":"event","id":1,"user":"u","type":"click","item":"a","event_id":"e-1"}"#;
    let first = lines.call(line);
    assert_eq!(first["ok"], true, "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    let retry = lines.call(line);
    assert_eq!(retry["ok"], true, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    let bad =
        lines.call(r#"{"op":"event","id":2,"user":"u","type":"click","item":"a","event_id":7}"#);
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, 1);
    server.shutdown();
}
