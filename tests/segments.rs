//! Issue 14, item 4: live segments. On the simulator, segments recover planted taste groups
//! and follow a group whose taste drifts; through the embedded API, two hand-taught groups
//! of users land in two segments, a name stays with its segment as the centroids move and
//! across a restart, and the segment shows in the export, in `explain`, in rules (scope and
//! `user.segment_name`) and in experiment targeting; over TCP and HTTP, the `segments` op,
//! its routes, `stats` and the per-segment gauges.

use nudge::config::SegmentSource;
use nudge::{
    ArmPolicy, ArmSpec, Config, DecideRequest, Engine, Event, EventKind, ExperimentSpec,
    FsyncPolicy, ItemSpec, ManualClock, PolicyKind, RuleConfig,
};

const T0: u64 = 1_732_200_000_000;

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config {
        shards: 2,
        seed: 3,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    cfg.segments.k = 2;
    cfg.segments.min_steps = 3;
    // The engaged items' fixed features: with ten items, a user's personal weights are mostly
    // its own negatives' noise (they are sampled from the same ten); the planted-world test
    // below holds the default source, the weights, to the issue's bar.
    cfg.segments.source = SegmentSource::Features;
    cfg.segments.update_interval_ms = 1;
    cfg.durability.fsync = FsyncPolicy::No;
    edit(&mut cfg);
    cfg
}

fn start(cfg: Config, clock: &ManualClock) -> Engine {
    let engine = Engine::builder().config(cfg).clock(clock.clone()).build();
    let engine = engine.unwrap();
    for side in ["a", "b"] {
        for i in 0..5 {
            let item = ItemSpec::new(format!("{side}{i}")).attr("category", side);
            engine.upsert_item(item).unwrap();
        }
    }
    engine
}

/// `a-N` users click `a` items, `b-N` users `b` items, `rounds` rounds of one click each,
/// a tick (which hands the shards' sums to the centroids) after every round.
fn teach(engine: &Engine, clock: &ManualClock, users: usize, rounds: usize) {
    for r in 0..rounds {
        for side in ["a", "b"] {
            for u in 0..users {
                clock.advance_ms(100);
                let item = format!("{side}{}", (u + r) % 5);
                let click = Event::new(format!("{side}-{u}"), EventKind::Click).item(item);
                engine.ingest(click).unwrap();
            }
        }
        engine.tick().unwrap();
    }
}

fn segment_of(engine: &Engine, user: &str) -> (u32, Option<String>) {
    let export = engine.user(user).unwrap().expect("the user exists");
    let s = export.segment.expect("the user has a segment");
    (s.id, s.name.map(|n| n.to_string()))
}

fn taught(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Engine {
    let engine = start(config(edit), clock);
    teach(&engine, clock, 12, 12);
    engine
}

#[test]
fn two_taught_groups_land_in_two_segments_named_and_targeted() {
    let clock = ManualClock::new(T0);
    let engine = taught(&clock, |_| {});
    let a: Vec<u32> = (0..12)
        .map(|u| segment_of(&engine, &format!("a-{u}")).0)
        .collect();
    let b: Vec<u32> = (0..12)
        .map(|u| segment_of(&engine, &format!("b-{u}")).0)
        .collect();
    assert!(a.iter().all(|&s| s == a[0]), "{a:?}");
    assert!(b.iter().all(|&s| s == b[0]), "{b:?}");
    assert_ne!(a[0], b[0]);

    // Named by id; the name is in the export, and `segments` lists both with their sizes.
    assert_eq!(
        engine.name_segment(&a[0].to_string(), "a-fans").unwrap(),
        a[0]
    );
    // Each shard takes the new name at its next tick.
    engine.tick().unwrap();
    assert!(
        engine.name_segment("a-fans", "123").is_err(),
        "all digits reads as an id"
    );
    assert!(engine.name_segment("no-such", "x").is_err());
    assert_eq!(segment_of(&engine, "a-3"), (a[0], Some("a-fans".into())));
    let all = engine.segments().unwrap();
    assert_eq!(all.len(), 2);
    let fans = all.iter().find(|s| s.id == a[0]).unwrap();
    assert_eq!(fans.name.as_deref(), Some("a-fans"));
    assert_eq!(fans.size, 12);
    assert!(fans.top_items.iter().all(|(item, _)| item.starts_with('a')));

    // Rules: a scope on the segment, and `user.segment_name` in a condition.
    let rules = vec![
        RuleConfig {
            name: "scoped".into(),
            action: "trigger".into(),
            trigger: Some("fan-offer".into()),
            segment: Some("a-fans".into()),
            ..RuleConfig::default()
        },
        RuleConfig {
            name: "by-name".into(),
            when: Some("user.segment_name == 'a-fans'".into()),
            action: "trigger".into(),
            trigger: Some("named".into()),
            ..RuleConfig::default()
        },
    ];
    engine.set_rules(&rules).unwrap();
    let decide = |user: &str| {
        let req = DecideRequest::new(user, vec!["a0".to_string(), "b0".to_string()], 1);
        engine.decide(req.explain(true)).unwrap()
    };
    let fan = decide("a-1");
    let triggers: Vec<&str> = fan.triggers.iter().map(|t| &**t).collect();
    assert_eq!(triggers, ["fan-offer", "named"]);
    let segment = fan.segment.expect("explain shows the segment");
    assert_eq!(
        (segment.id, segment.name.as_deref()),
        (a[0], Some("a-fans"))
    );
    assert!(decide("b-1").triggers.is_empty());

    // Experiment targeting: only the segment's users take part.
    let mut spec = ExperimentSpec::new(
        "fans-only",
        vec![ArmSpec {
            name: "only".into(),
            weight: 1.0,
            policy: ArmPolicy::Control,
        }],
    );
    spec.segments = vec!["a-fans".into()];
    engine.create_experiment(spec, "test").unwrap();
    assert!(decide("a-2").experiment.is_some());
    assert!(decide("b-2").experiment.is_none());
}

#[test]
fn a_name_stays_with_its_segment_as_centroids_move_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let path = dir.path().to_path_buf();
    let engine = taught(&clock, |c| c.data_dir = Some(path.display().to_string()));
    let (id, _) = segment_of(&engine, "a-0");
    engine.name_segment(&id.to_string(), "a-fans").unwrap();
    engine.tick().unwrap();
    let before = engine.segments().unwrap();
    // Many more updates: the centroids move, the name and id stay with the `a` users.
    teach(&engine, &clock, 12, 12);
    let after = engine.segments().unwrap();
    let weight = |all: &[nudge::SegmentReport]| all.iter().find(|s| s.id == id).unwrap().weight;
    assert!(
        weight(&after) > weight(&before),
        "the centroid took more points"
    );
    assert_eq!(segment_of(&engine, "a-7"), (id, Some("a-fans".into())));
    assert_ne!(segment_of(&engine, "b-7").0, id);

    engine.checkpoint().unwrap();
    engine.shutdown();
    drop(engine);
    let path = dir.path().to_path_buf();
    let cfg = config(|c| c.data_dir = Some(path.display().to_string()));
    let engine = Engine::builder().config(cfg).clock(clock.clone()).build();
    let engine = engine.unwrap();
    assert_eq!(segment_of(&engine, "a-5"), (id, Some("a-fans".into())));
    assert_ne!(segment_of(&engine, "b-5").0, id);
    engine.shutdown();
    drop(engine);
}

#[test]
fn without_segments_nothing_has_one() {
    let clock = ManualClock::new(T0);
    let engine = taught(&clock, |c| c.segments.k = 0);
    let export = engine.user("a-0").unwrap().unwrap();
    assert!(export.segment.is_none());
    assert!(engine.segments().unwrap().is_empty());
    assert!(engine.name_segment("1", "x").is_err());
}

#[test]
fn engaged_sources_separate_two_taught_groups() {
    for source in [SegmentSource::Engaged, SegmentSource::Features] {
        let clock = ManualClock::new(T0);
        let engine = taught(&clock, |c| c.segments.source = source);
        let (a, b) = (segment_of(&engine, "a-0").0, segment_of(&engine, "b-0").0);
        assert_ne!(a, b, "{source:?}");
        for u in 1..12 {
            assert_eq!(segment_of(&engine, &format!("a-{u}")).0, a, "{source:?}");
            assert_eq!(segment_of(&engine, &format!("b-{u}")).0, b, "{source:?}");
        }
    }
}

/// On a small planted world (2 taste groups, one of which gets a new centre at 60% of the
/// stream), with the defaults but `k = 2`: segments match the groups (ARI ≥ 0.7) before
/// the drift and again at the end, the drifted group followed. Small worlds learn personal
/// weights slowly (few users train the item embeddings); the 8-group measurement is
/// `cargo bench --bench quality -- segments` (`docs/segments.md`).
#[cfg(feature = "eval")]
#[test]
fn issue14_segments_recover_planted_groups_and_follow_a_drift() {
    use nudge::eval::segments::measure;
    use nudge::eval::sim::{SimConfig, World};
    let seed = 5;
    let world = World::new(SimConfig {
        users: 200,
        items: 100,
        sessions_per_user: 40,
        drift_at: 0.6,
        ..SimConfig::planted(seed, 2)
    });
    let mut cfg = Config {
        seed,
        ..Config::default()
    };
    cfg.segments.k = 2;
    let points = measure(&world, cfg, 8).unwrap();
    let before = points.iter().rfind(|p| !p.after_drift).unwrap();
    let end = points.last().unwrap();
    let all: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.decisions_per_user, p.ari))
        .collect();
    assert!(before.ari >= 0.7, "seed {seed}: before the drift {all:?}");
    assert!(
        end.after_drift && end.ari >= 0.7,
        "seed {seed}: at the end {all:?}"
    );
}

/// The `segments` op over TCP (list, name, a bad name refused), the HTTP routes, the
/// segment in the user export and in `explain`, `stats`, and the per-segment gauges.
#[cfg(feature = "server")]
#[test]
fn segments_over_tcp_http_and_metrics() {
    use crate::server_support::{http, parse_prometheus, serve, Lines};
    let clock = ManualClock::new(T0);
    let (engine, server) = serve(taught(&clock, |_| {}), |_| {});
    let (a, _) = segment_of(&engine, "a-0");
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    let r = c.call(r#"{"op":"segments","id":1}"#);
    assert_eq!(r["segments"].as_array().map(Vec::len), Some(2), "{r}");
    let line = format!(r#"{{"op":"segments","id":2,"segment":"{a}","name":"a-fans"}}"#);
    let r = c.call(&line);
    let named = r["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a);
    assert_eq!(named.unwrap()["name"], "a-fans", "{r}");
    assert_eq!(named.unwrap()["size"], 12, "{r}");
    let r = c.call(r#"{"op":"segments","id":3,"name":"orphan"}"#);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    engine.tick().unwrap();
    let r = c.call(r#"{"op":"user","id":4,"user":"a-1"}"#);
    assert_eq!(r["user"]["segment"]["name"], "a-fans", "{r}");
    assert_eq!(r["user"]["features"]["segment_name"], "a-fans", "{r}");
    let r =
        c.call(r#"{"op":"decide","id":5,"user":"a-1","candidates":["a0","b0"],"explain":true}"#);
    assert_eq!(r["segment"]["id"], a, "{r}");
    let r = c.call(r#"{"op":"stats","id":6}"#);
    assert_eq!(
        r["stats"]["segments"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );

    let addr = server.http_addr().unwrap();
    let r = http(
        addr,
        "PUT",
        &format!("/v1/segments/{a}"),
        &[],
        br#"{"name":"fans"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(addr, "GET", "/v1/segments", &[], b"");
    let names: Vec<String> = (r.json()["segments"].as_array().unwrap().iter())
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["fans"], "{}", r.text());
    let r = http(addr, "PUT", "/v1/segments/99", &[], br#"{"name":"x"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    let metrics = parse_prometheus(&http(addr, "GET", "/metrics", &[], b"").text());
    let users = format!(r#"nudge_segment_users{{segment="{a}"}}"#);
    assert_eq!(metrics.get(&users), Some(&12.0), "{users}");
    let info = format!(r#"nudge_segment_info{{segment="{a}",name="fans"}}"#);
    assert_eq!(metrics.get(&info), Some(&1.0), "{info}");
    server.shutdown();
}
