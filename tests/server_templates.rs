//! Issue 15 over real sockets: the `template` op (register, read, roll back, a bad template
//! refused with its position), a `decide` with a `template` and its reply, and a `reward`
//! without an `item` that every slot takes; the HTTP route `/v1/templates`; a template decision
//! for a user who limited consent, served as a preview.

use crate::server_support::{http, start, Lines};

const PROMO: &str = r#"{"op":"template","id":1,"template":{"name":"promo","values":["first_name"],
    "body":"<h1>{{headline}}</h1><b>{{button}}</b>",
    "slots":[{"name":"headline","variants":[{"id":"h1","text":"Hi {{first_name}}"},{"id":"h2","text":"Hello {{first_name}}","attrs":{"tone":"warm"}}]},
             {"name":"button","variants":[{"id":"b1","text":"Buy"},{"id":"b2","text":"Go"}]}]}}"#;

#[test]
fn templates_over_tcp() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let r = c.call(&PROMO.replace('\n', ""));
    assert_eq!(
        (r["id"].as_u64(), r["template"].as_str()),
        (Some(1), Some("promo")),
        "{r}"
    );
    assert_eq!(r["current"], 1, "{r}");
    assert_eq!(
        r["versions"][0]["slots"][0]["variants"][1]["attrs"]["tone"], "warm",
        "{r}"
    );

    // A bad template: the error names the field and the position; nothing changes.
    let bad = r#"{"op":"template","id":2,"template":{"name":"promo","body":"ok\n {{headline}} {{oops}}","slots":[{"name":"headline","variants":[{"id":"h1","text":"x"}]}]}}"#;
    let r = c.call(bad);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("`body` at 2:15 (byte 17)"), "{message}");
    assert!(message.contains("unknown placeholder `oops`"), "{message}");
    let bad = r#"{"op":"template","id":3,"template":{"name":"promo","body":"{{headline","slots":[{"name":"headline","variants":[{"id":"h1","text":"x"}]}]}}"#;
    let message = c.call(bad)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("`body` at 1:1 (byte 0): unclosed tag"),
        "{message}"
    );
    let r = c.call(r#"{"op":"template","id":4,"template":{"name":"t","colour":"red"}}"#);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown key `colour`"),
        "{r}"
    );

    let decide = r#"{"op":"decide","id":5,"user":"u1","template":"promo","values":{"first_name":"<Ann>"},"explain":true}"#;
    let r = c.call(decide);
    assert_eq!(r["id"], 5, "{r}");
    assert_eq!(
        (r["template"].as_str(), r["version"].as_u64()),
        (Some("promo"), Some(1))
    );
    let slots = r["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{r}");
    assert_eq!(slots[0]["slot"], "headline");
    assert!(slots[0]["explain"]["logit"].is_number(), "{r}");
    let product: f64 = slots
        .iter()
        .map(|s| s["propensity"].as_f64().unwrap())
        .product();
    assert!(
        (r["propensity"].as_f64().unwrap() - product).abs() < 1e-6,
        "{r}"
    );
    let rendered = r["rendered"].as_str().unwrap();
    assert!(
        rendered.starts_with("<h1>H") && rendered.contains("&lt;Ann&gt;"),
        "{rendered}"
    );
    let decision = r["decision"].as_str().unwrap().to_string();

    // A reward without an item: every slot takes it.
    let r = c.call(&format!(
        r#"{{"op":"reward","id":6,"decision":"{decision}","value":1}}"#
    ));
    assert_eq!(
        (r["ok"].as_bool(), r["rewarded"].as_u64()),
        (Some(true), Some(2)),
        "{r}"
    );

    // A second version, then a rollback: the next decision uses version 1 again.
    let v2 = PROMO
        .replace('\n', "")
        .replace("<h1>", "<h2>")
        .replace("\"id\":1", "\"id\":7");
    assert_eq!(c.call(&v2)["current"], 2);
    let r = c.call(r#"{"op":"decide","id":8,"user":"u1","template":"promo","track":false}"#);
    assert!(r["rendered"].as_str().unwrap().starts_with("<h2>"), "{r}");
    assert_eq!(r["decision"], "ffffffffffffffff", "a preview: {r}");
    let r = c.call(r#"{"op":"template","id":9,"name":"promo","version":1}"#);
    assert_eq!(
        (
            r["current"].as_u64(),
            r["versions"].as_array().map(Vec::len)
        ),
        (Some(1), Some(2))
    );
    let r = c.call(r#"{"op":"decide","id":10,"user":"u1","template":"promo"}"#);
    assert!(r["rendered"].as_str().unwrap().starts_with("<h1>"), "{r}");
    let r = c.call(r#"{"op":"template","id":11,"name":"promo"}"#);
    assert_eq!(r["current"], 1, "{r}");
    let r = c.call(r#"{"op":"decide","id":12,"user":"u1","template":"nope"}"#);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no template `nope`"),
        "{r}"
    );
    let r = c.call(r#"{"op":"decide","id":13,"user":"u1","template":"promo","candidates":["a"]}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    // Under an experiment, the reply names the arm (one arm: every user is in it).
    let create = r#"{"op":"create_experiment","experiment":{"name":"copy","arms":[{"name":"only","policy":"control"}]}}"#;
    assert_eq!(c.call(create)["ok"], true);
    let r = c.call(r#"{"op":"decide","id":14,"user":"u1","template":"promo"}"#);
    assert_eq!(r["experiment"]["name"], "copy", "{r}");
    assert_eq!(r["experiment"]["arm"], "only", "{r}");
    assert_eq!(
        r["propensity"], 1.0,
        "control takes the template's order: {r}"
    );
    assert_eq!(
        c.call(r#"{"op":"stop_experiment","name":"copy"}"#)["ok"],
        true
    );

    // The HTTP route runs the same op.
    let addr = server.http_addr().unwrap();
    let r = http(addr, "POST", "/v1/templates", &[], br#"{"name":"promo"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["current"], 1);
    let r = http(
        addr,
        "POST",
        "/v1/decide",
        &[],
        br#"{"user":"u2","template":"promo"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["rendered"].as_str().unwrap().starts_with("<h1>"));
}

/// Issue 15: a template decision for a user who limited consent is served over TCP, as a
/// preview (`ffffffffffffffff`) with its propensities; a memory-only user's export says so.
#[test]
fn template_decisions_under_limited_consent_over_tcp() {
    let (_engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    assert_eq!(c.call(&PROMO.replace('\n', ""))["current"], 1);
    for (n, consent) in [(1, r#""personalization":false"#), (2, r#""storage":false"#)] {
        let user = format!("limited-{n}");
        let r = c.call(&format!(
            r#"{{"op":"consent","id":1,"user":"{user}",{consent}}}"#
        ));
        assert_eq!(r["erased"], false, "{r}");
        let r = c.call(&format!(
            r#"{{"op":"event","id":2,"user":"{user}","type":"scroll","value":0.5}}"#
        ));
        assert_eq!(r["withheld"].as_bool().unwrap_or(false), n == 1, "{r}");
        let r = c.call(&format!(
            r#"{{"op":"decide","id":3,"user":"{user}","template":"promo","values":{{"first_name":"Ann"}}}}"#
        ));
        assert_eq!(r["decision"], "ffffffffffffffff", "a preview: {r}");
        let slots = r["slots"].as_array().unwrap();
        assert_eq!(slots.len(), 2, "{r}");
        let product: f64 = slots
            .iter()
            .map(|s| s["propensity"].as_f64().unwrap())
            .product();
        assert!(product > 0.0 && product <= 1.0, "{r}");
        assert!(
            (r["propensity"].as_f64().unwrap() - product).abs() < 1e-6,
            "{r}"
        );
        assert!(r["rendered"].as_str().unwrap().contains("Ann"), "{r}");
        let r = c.call(&format!(r#"{{"op":"user","id":4,"user":"{user}"}}"#));
        match n {
            1 => assert!(r["user"].is_null(), "nothing held: {r}"),
            _ => assert_eq!(r["user"]["memory_only"], true, "{r}"),
        }
    }
}
