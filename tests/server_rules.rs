//! Issue 14 over a real socket: the `rules` op (replace, read, a bad rule refused with its
//! position and the old set kept), a decision's `triggers` and `explain`'s rules, and the
//! `features` op and the user export's features.

use crate::server_support::{serve, start, Lines};

#[test]
fn rules_and_features_over_tcp() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    for (id, category) in [("scarf", "winter"), ("hat", "summer")] {
        let line = format!(r#"{{"op":"item","item":"{id}","attrs":{{"category":"{category}"}}}}"#);
        assert_eq!(c.call(&line)["ok"], true);
    }
    let r = c.call(
        r#"{"op":"event","id":1,"user":"u1","type":"scroll","value":0.9,"context":{"device":"mobile"}}"#,
    );
    assert_eq!(r["ok"], true, "{r}");

    let set = r#"{"op":"rules","id":2,"rules":[
        {"name":"winter","action":"boost","by":30,"when":"user.scroll_depth > 0.7","items":"item.category == \"winter\""},
        {"name":"offer","action":"trigger","trigger":"offer","when":"user.last_device == 'mobile'","priority":5}]}"#
        .replace('\n', "");
    let r = c.call(&set);
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(r["rules"][1]["name"], "offer", "as given: {r}");
    assert_eq!(r["rules"][0]["by"], 30.0, "{r}");

    let bad = r#"{"op":"rules","id":3,"rules":[{"name":"typed","action":"exclude","items":"item.category > 3"}]}"#;
    let r = c.call(bad);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("`items` at 1:15 (byte 14)"), "{message}");
    let r = c.call(r#"{"op":"rules","id":4,"rules":[{"name":"x","action":"pin","colour":"red"}]}"#);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown key `colour`"),
        "{r}"
    );
    let r = c.call(r#"{"op":"rules","id":5}"#);
    assert_eq!(
        (r["version"].as_u64(), r["rules"].as_array().map(Vec::len)),
        (Some(1), Some(2))
    );

    let r = c.call(
        r#"{"op":"decide","id":6,"user":"u1","candidates":["hat","scarf"],"n":2,"explain":true}"#,
    );
    assert_eq!(r["items"][0]["item"], "scarf", "{r}");
    assert_eq!(r["triggers"][0], "offer", "{r}");
    assert_eq!(r["rules"][0]["rule"], "offer", "priority first: {r}");
    assert_eq!(r["rules"][1]["action"], "boost", "{r}");
    assert_eq!(r["rules"][1]["items"][0], "scarf", "{r}");
    let r = c.call(r#"{"op":"decide","id":7,"user":"u1","candidates":["hat","scarf"],"n":2}"#);
    assert!(
        r.get("rules").is_none() && r["triggers"][0] == "offer",
        "{r}"
    );

    let r = c.call(r#"{"op":"features","id":8,"user":"u1"}"#);
    let f = &r["features"];
    assert_eq!(f["last_device"], "mobile", "{r}");
    assert!(
        (f["scroll_depth"].as_f64().unwrap() - 0.9).abs() < 1e-6,
        "{r}"
    );
    assert_eq!(f["session_events"], 1.0, "{r}");
    assert!(f["last_location"].is_null(), "{r}");
    let r = c.call(r#"{"op":"features","id":9,"user":"nobody"}"#);
    assert!(r["features"].is_null(), "{r}");
    let r = c.call(r#"{"op":"user","id":10,"user":"u1"}"#);
    assert_eq!(r["user"]["features"]["last_device"], "mobile", "{r}");
    let r = c.call(r#"{"op":"stats","id":11}"#);
    assert_eq!(r["stats"]["total"]["rules_fired_total"], 4, "{r}");
    server.shutdown();
}

/// Issue 15 over a real socket: a decision's own `saturation` object, `false` for none, its
/// effects in `explain`, and a bad one refused naming the key.
#[test]
fn saturation_over_tcp() {
    let mut cfg = nudge::Config {
        shards: 2,
        seed: 7,
        ..nudge::Config::default()
    };
    cfg.saturation.caps = vec![nudge::saturation::FrequencyCap {
        attribute: None,
        max: 1,
        window_s: 3600,
    }];
    let engine = nudge::Engine::builder().config(cfg).build().unwrap();
    let (_engine, server) = serve(engine, |_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    for (id, category) in [("scarf", "winter"), ("coat", "winter"), ("hat", "summer")] {
        let line = format!(r#"{{"op":"item","item":"{id}","attrs":{{"category":"{category}"}}}}"#);
        assert_eq!(c.call(&line)["ok"], true);
    }
    let r = c.call(r#"{"op":"decide","user":"u1","candidates":["hat"],"n":1}"#);
    assert_eq!(r["items"][0]["item"], "hat", "{r}");
    // The engine's cap: the hat was shown once this hour.
    let r =
        c.call(r#"{"op":"decide","user":"u1","candidates":["hat","scarf"],"n":2,"explain":true}"#);
    assert_eq!(r["items"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["saturation"][0]["kind"], "item_cap", "{r}");
    assert_eq!(r["saturation"][0]["item"], "hat", "{r}");
    assert_eq!(r["saturation"][0]["shown"], 1, "{r}");
    // `false`: no control for this decision.
    let r = c.call(r#"{"op":"decide","user":"u1","candidates":["hat"],"n":1,"saturation":false}"#);
    assert_eq!(r["items"][0]["item"], "hat", "{r}");
    // Its own diversity, and no caps: one winter item at most.
    let r = c.call(
        r#"{"op":"decide","user":"u2","candidates":["scarf","coat","hat"],"n":3,"explain":true,
            "saturation":{"diversity":{"attribute":"category","max_per_value":1}}}"#
            .replace('\n', "")
            .as_str(),
    );
    assert_eq!(r["items"].as_array().unwrap().len(), 2, "{r}");
    let kinds: Vec<_> = r["saturation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert!(kinds.iter().all(|k| k == "diversity"), "{r}");
    let r = c.call(r#"{"op":"decide","user":"u2","candidates":["hat"],"saturation":{"caps":[{"max":1,"window":60}]}}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown key `window`"),
        "{r}"
    );
    let r = c.call(r#"{"op":"decide","user":"u2","candidates":["hat"],"saturation":{"caps":[{"max":0,"window_s":60}]}}"#);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("saturation.caps[0].max"),
        "{r}"
    );
}

/// Issue 15 over real sockets: the `tone` op on TCP (lexicon-scored text, a given score, a
/// bad one) and `POST /v1/tone`, then a reward on the chosen tone.
#[test]
fn tone_over_tcp_and_http() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let r = c.call(r#"{"op":"tone","id":1,"user":"u1","text":"still broken, this is useless!","explain":true}"#);
    assert_eq!(r["source"], "lexicon", "{r}");
    assert!(r["sentiment"].as_f64().unwrap() < -0.5, "{r}");
    assert_eq!(r["tone"], "empathetic", "{r}");
    assert_eq!(r["items"][0]["item"], "tone:empathetic", "{r}");
    assert!(
        r["items"][0]["explain"]["prior"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    let decision = r["decision"].as_str().unwrap().to_string();
    let reward = format!(r#"{{"op":"reward","decision":"{decision}","item":"tone:empathetic"}}"#);
    assert_eq!(c.call(&reward)["ok"], true);
    let r = c.call(r#"{"op":"tone","user":"u2","sentiment":2}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = c.call(r#"{"op":"tone","user":"u3","text":"see you at noon"}"#);
    assert_eq!(
        (r["source"].as_str(), r["sentiment"].is_null()),
        (Some("none"), true),
        "{r}"
    );
    let body = br#"{"user":"u4","sentiment":0.8}"#;
    let addr = server.http_addr().unwrap();
    let r = crate::server_support::http(addr, "POST", "/v1/tone", &[], body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tone"], "concise", "{}", r.json());
}
