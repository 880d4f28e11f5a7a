//! Issue 13 over real sockets: the experiment ops on TCP (create, decide names the arm,
//! results, list and audit, update, promote, restore, stop) and the `/v1/experiments` and
//! `/v1/experiment-versions` routes on HTTP, with their errors.

use crate::server_support::{http, start, Lines};

const CREATE: &str = r#"{"op":"create_experiment","id":1,"reason":"launch","experiment":{"name":"ranker","salt":"s1","holdout":0.1,"metric":"click_through","arms":[{"name":"control","policy":"control"},{"name":"greedy","policy":"nudge","epsilon":0,"weight":2}]}}"#;

#[test]
fn experiment_ops_round_trip_over_tcp() {
    let (engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    assert_eq!(c.call(r#"{"op":"item","item":"a"}"#)["ok"], true);
    assert_eq!(c.call(r#"{"op":"item","item":"b"}"#)["ok"], true);
    let r = c.call(CREATE);
    assert_eq!(
        (r["id"].as_i64(), r["ok"].as_bool()),
        (Some(1), Some(true)),
        "{r}"
    );
    let again = c.call(CREATE);
    assert_eq!(again["error"]["code"], "experiment_exists", "{again}");

    let mut in_arms = 0;
    for u in 0..50 {
        let line = format!(r#"{{"op":"decide","user":"u{u}","candidates":["a","b"],"n":1}}"#);
        let d = c.call(&line);
        let arm = engine.experiment_arm("ranker", &format!("u{u}")).unwrap();
        match arm {
            Some(arm) => {
                assert_eq!(d["experiment"]["name"], "ranker", "{d}");
                assert_eq!(d["experiment"]["arm"], arm.as_str(), "{d}");
                in_arms += 1;
            }
            None => assert!(d.get("experiment").is_none(), "held out: {d}"),
        }
    }
    assert!(in_arms > 30, "{in_arms} of 50 outside the 10% holdout");

    let r = c.call(r#"{"op":"experiment_results","name":"ranker"}"#);
    let e = &r["experiment"];
    assert_eq!(
        (e["status"].as_str(), e["metric"].as_str()),
        (Some("collecting"), Some("click_through")),
        "{r}"
    );
    let arms = e["arms"].as_array().unwrap();
    assert_eq!(
        (arms[0]["name"].as_str(), arms[1]["policy"].as_str()),
        (Some("control"), Some("nudge"))
    );
    let decisions: u64 = arms.iter().map(|a| a["decisions"].as_u64().unwrap()).sum();
    assert_eq!(decisions, in_arms);
    assert!(
        arms[1]["interval"].is_null() && arms[1]["lift"].is_null(),
        "no look yet: {r}"
    );

    let r = c.call(r#"{"op":"promote_experiment","name":"ranker","arm":"greedy","reason":"won"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let r = c.call(r#"{"op":"experiment_results","name":"ranker"}"#);
    assert_eq!(
        (
            r["experiment"]["status"].as_str(),
            r["experiment"]["promoted"].as_str()
        ),
        (Some("promoted"), Some("greedy")),
        "{r}"
    );
    let r = c.call(r#"{"op":"promote_experiment","name":"ranker","arm":"nope"}"#);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("`arm`"),
        "{r}"
    );
    let r = c.call(r#"{"op":"stop_experiment","name":"ranker","reason":"done"}"#);
    assert_eq!(r["was_running"], true, "{r}");
    let r = c.call(r#"{"op":"experiments"}"#);
    assert_eq!(r["experiments"][0]["running"], false, "{r}");
    assert_eq!(r["experiments"][0]["arms"][1]["epsilon"], 0.0, "{r}");
    let audit: Vec<_> = r["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["version"].as_u64().unwrap(),
                a["action"].as_str().unwrap().to_string(),
                a["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            (1, "created".into(), "launch".into()),
            (2, "promoted".into(), "won".into()),
            (3, "stopped".into(), "done".into())
        ]
    );
    assert_eq!(r["audit"][1]["arm"], "greedy", "{r}");

    let r = c.call(r#"{"op":"experiment_results","name":"nope"}"#);
    assert_eq!(r["error"]["code"], "unknown_experiment", "{r}");
    server.shutdown();
    engine.shutdown();
}

#[test]
fn bad_experiments_are_bad_requests_naming_the_field() {
    let (engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let cases = [
        (
            r#"{"name":"x","arms":[{"name":"a","policy":"magic"}]}"#,
            "arms.policy",
        ),
        (
            r#"{"name":"x","arms":[{"name":"a","policy":"nudge","weight":-1}]}"#,
            "arms.weight",
        ),
        (
            r#"{"name":"x","arms":[{"name":"a","policy":"nudge"},{"name":"a","policy":"global"}]}"#,
            "arms.name",
        ),
        (
            r#"{"name":"x","metric":"joy","arms":[{"name":"a","policy":"nudge"}]}"#,
            "metric",
        ),
        (
            r#"{"name":"x","holdotu":0.5,"arms":[{"name":"a","policy":"nudge"}]}"#,
            "experiment",
        ),
        (
            r#"{"name":"x","buckets":[10,5],"arms":[{"name":"a","policy":"nudge"}]}"#,
            "buckets",
        ),
        (r#""x""#, "experiment"),
        (
            r#"{"name":"x","arms":[{"name":"a","policy":"nudge","learning_rate":-1}]}"#,
            "arms.learning_rate",
        ),
        (
            r#"{"name":"x","arms":[{"name":"a","policy":"nudge","state_half_life_s":0}]}"#,
            "arms.state_half_life_s",
        ),
        (
            r#"{"name":"x","arms":[{"name":"a","policy":"global","learning_rate":0.01}]}"#,
            "arms.policy",
        ),
    ];
    for (experiment, field) in cases {
        let line = format!(r#"{{"op":"create_experiment","experiment":{experiment}}}"#);
        let r = c.call(&line);
        assert_eq!(r["error"]["code"], "bad_request", "{line}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{line}: {message}");
    }
    let r = c.call(r#"{"op":"create_experiment"}"#);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`experiment`"),
        "{r}"
    );
    assert!(engine.experiments().is_empty(), "nothing was created");
    server.shutdown();
    engine.shutdown();
}

#[test]
fn experiment_routes_over_http() {
    let (engine, server) = start(|_| {});
    let addr = server.http_addr().unwrap();
    let body = br#"{"experiment":{"name":"web","arms":[{"name":"a","policy":"control"},{"name":"b","policy":"popularity"}]}}"#;
    let r = http(addr, "POST", "/v1/experiments", &[], body);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(addr, "POST", "/v1/experiments", &[], body);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (409, Some("experiment_exists"))
    );
    let r = http(addr, "GET", "/v1/experiments/web", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["experiment"]["arms"][1]["policy"], "popularity");
    // A nudge arm with learning overrides (another layer: `web` takes the default one whole).
    let tuned = br#"{"experiment":{"name":"tuned","layer":"l2","arms":[{"name":"a","policy":"nudge"},{"name":"slow","policy":"nudge","epsilon":0.1,"learning_rate":0.002,"state_half_life_s":600}]}}"#;
    let r = http(addr, "POST", "/v1/experiments", &[], tuned);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(addr, "GET", "/v1/experiments", &[], b"");
    let all = r.json()["experiments"].as_array().unwrap().clone();
    let tuned = all.iter().find(|e| e["name"] == "tuned").unwrap();
    let slow = &tuned["arms"][1];
    assert_eq!(slow["policy"], "nudge", "{slow}");
    assert_eq!(
        slow["epsilon"].as_f64().map(|e| e as f32),
        Some(0.1),
        "{slow}"
    );
    assert_eq!(
        slow["learning_rate"].as_f64().map(|x| x as f32),
        Some(0.002),
        "{slow}"
    );
    assert_eq!(slow["state_half_life_s"], 600.0, "{slow}");
    assert!(r.json()["experiment"]["arms"][0]
        .get("learning_rate")
        .is_none());
    let r = http(addr, "GET", "/v1/experiments", &[], b"");
    assert_eq!(r.json()["experiments"][0]["name"], "web");
    let r = http(addr, "GET", "/v1/experiments/other", &[], b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("unknown_experiment"))
    );
    let r = http(addr, "DELETE", "/v1/experiments/web", &[], b"");
    assert_eq!(
        (r.status, r.json()["was_running"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text()
    );
    let r = http(addr, "PATCH", "/v1/experiments/web", &[], b"");
    assert_eq!(r.status, 405);
    let r = http(
        addr,
        "POST",
        "/v1/experiments",
        &[],
        br#"{"experiment":{"name":"y","arms":[]}}"#,
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    server.shutdown();
    engine.shutdown();
}

/// Update (what keeps the comparison may change, the rest is refused naming the field),
/// promote and restore, over TCP and then over their HTTP routes; the audit trail records
/// each, and a restore brings back the holdout and targeting of the version it names.
#[test]
fn update_promote_and_restore_over_tcp_and_http() {
    let (engine, server) = start(|_| {});
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    assert_eq!(c.call(CREATE)["ok"], true);
    let update = r#"{"op":"update_experiment","id":2,"reason":"widen","experiment":{"name":"ranker","salt":"s1","holdout":0.3,"metric":"click_through","guardrails":["mean_reward"],"target":"ctx.page == \"home\"","arms":[{"name":"control","policy":"control"},{"name":"greedy","policy":"nudge","epsilon":0,"weight":2}]}}"#;
    let r = c.call(update);
    assert_eq!(
        (r["ok"].as_bool(), r["changed"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    let r = c.call(r#"{"op":"experiments"}"#);
    let e = &r["experiments"][0];
    assert_eq!(
        (
            e["holdout"].as_f64(),
            e["target"].as_str(),
            e["guardrails"][0].as_str()
        ),
        (Some(0.3), Some("ctx.page == \"home\""), Some("mean_reward")),
        "{r}"
    );
    let reweigh = update.replace(r#""weight":2"#, r#""weight":3"#);
    let r = c.call(&reweigh);
    assert_eq!(
        (r["error"]["code"].as_str(), r["error"]["field"].as_str()),
        (Some("bad_request"), Some("arms")),
        "{r}"
    );
    // Version 1 is the creation: restoring it takes back the holdout and the target.
    let r = c.call(r#"{"op":"restore_experiments","version":1,"reason":"undo"}"#);
    assert_eq!(r["changed"], true, "{r}");
    let r = c.call(r#"{"op":"experiments"}"#);
    let e = &r["experiments"][0];
    assert_eq!(
        (e["holdout"].as_f64(), e.get("target")),
        (Some(0.1), None),
        "{r}"
    );
    let actions: Vec<&str> = (r["audit"].as_array().unwrap().iter())
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "updated", "restored"], "{r}");
    assert_eq!(r["audit"][2]["restored"], 1, "{r}");
    let r = c.call(r#"{"op":"restore_experiments","version":9}"#);
    assert_eq!(r["error"]["field"], "version", "{r}");

    let addr = server.http_addr().unwrap();
    let body = br#"{"reason":"web","experiment":{"name":"ranker","salt":"s1","holdout":0.2,"metric":"click_through","arms":[{"name":"control","policy":"control"},{"name":"greedy","policy":"nudge","epsilon":0,"weight":2}]}}"#;
    let r = http(addr, "PUT", "/v1/experiments/ranker", &[], body);
    assert_eq!(
        (r.status, r.json()["changed"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text()
    );
    let r = http(addr, "PUT", "/v1/experiments/other", &[], body);
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("name")),
        "the body names another experiment than the URL: {}",
        r.text()
    );
    let r = http(
        addr,
        "POST",
        "/v1/experiments/ranker/promote",
        &[],
        br#"{"arm":"greedy"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(addr, "GET", "/v1/experiments/ranker", &[], b"");
    assert_eq!(r.json()["experiment"]["status"], "promoted", "{}", r.text());
    let r = http(
        addr,
        "POST",
        "/v1/experiments/ranker/promote",
        &[],
        br#"{"arm":"nope"}"#,
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("arm"))
    );
    let r = http(addr, "POST", "/v1/experiment-versions/3", &[], b"");
    assert_eq!(
        (r.status, r.json()["changed"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text()
    );
    let r = http(addr, "GET", "/v1/experiments", &[], b"");
    let e = &r.json()["experiments"][0];
    assert_eq!(
        e["holdout"],
        0.1,
        "version 3 is the first restore: {}",
        r.text()
    );
    let r = http(addr, "GET", "/v1/experiments/ranker", &[], b"");
    assert_eq!(
        r.json()["experiment"]["status"],
        "collecting",
        "unpromoted: {}",
        r.text()
    );
    let r = http(addr, "POST", "/v1/experiment-versions/latest", &[], b"");
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("version"))
    );
    let r = http(
        addr,
        "POST",
        "/v1/experiment-versions/1",
        &[],
        br#"{"version":2}"#,
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("version"))
    );
    server.shutdown();
    engine.shutdown();
}
