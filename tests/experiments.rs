//! Experiments through the embedded API (issue 13): definitions and their errors, sticky
//! assignment through `decide`, attribution of outcomes to arms, results (a real advantage is
//! significant, an A/A test keeps collecting, a biased exposure raises the SRM alarm), the
//! audit trail, and `[[experiments]]` in the config file.

use nudge::config::{ArmConfig, ExperimentConfig};
use nudge::rng::Rng;
use nudge::{
    ArmPolicy, ArmSpec, Config, DecideRequest, Engine, Error, Event, EventKind, ExperimentSpec,
    ItemSpec, ManualClock, PolicyKind, Status,
};

const T0: u64 = 1_732_200_000_000;

fn engine(clock: &ManualClock) -> Engine {
    let mut cfg = Config {
        shards: 2,
        seed: 11,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    cfg.attribution.window_s = 60;
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn arm(name: &str, policy: ArmPolicy) -> ArmSpec {
    ArmSpec {
        name: name.into(),
        weight: 1.0,
        policy,
    }
}

fn arm_config(name: &str, policy: &str) -> ArmConfig {
    ArmConfig {
        name: name.into(),
        policy: policy.into(),
        ..ArmConfig::default()
    }
}

fn two_controls(name: &str) -> ExperimentSpec {
    ExperimentSpec::new(
        name,
        vec![arm("a", ArmPolicy::Control), arm("b", ArmPolicy::Control)],
    )
}

fn field_of(e: Error) -> &'static str {
    match e {
        Error::Invalid { field, .. } => field,
        other => panic!("not a field error: {other:?}"),
    }
}

#[test]
fn bad_definitions_are_refused_naming_the_field_and_nothing_changes() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    engine.create_experiment(two_controls("first"), "").unwrap();
    let config = |arms: Vec<ArmConfig>| ExperimentConfig {
        name: "x".into(),
        layer: "other".into(),
        arms,
        ..ExperimentConfig::default()
    };
    let unknown_policy = config(vec![arm_config("a", "magic")]);
    assert_eq!(
        field_of(unknown_policy.to_spec().unwrap_err()),
        "arms.policy"
    );
    let mut zero = config(vec![arm_config("a", "nudge"), arm_config("b", "global")]);
    zero.arms[1].weight = Some(0.0);
    assert_eq!(field_of(zero.to_spec().unwrap_err()), "arms.weight");
    let twice = config(vec![arm_config("a", "nudge"), arm_config("a", "control")]);
    assert_eq!(field_of(twice.to_spec().unwrap_err()), "arms.name");
    let mut metric = config(vec![arm_config("a", "nudge")]);
    metric.metric = Some("happiness".into());
    assert_eq!(field_of(metric.to_spec().unwrap_err()), "metric");
    let mut epsilon = config(vec![arm_config("a", "popularity")]);
    epsilon.arms[0].epsilon = Some(0.1);
    assert_eq!(field_of(epsilon.to_spec().unwrap_err()), "arms.policy");
    let none = config(vec![]);
    assert_eq!(field_of(none.to_spec().unwrap_err()), "arms");
    // The default layer is taken whole by `first`: a second experiment there overlaps it.
    let overlap = engine.create_experiment(two_controls("second"), "");
    assert_eq!(field_of(overlap.unwrap_err()), "buckets");
    assert_eq!(
        engine.create_experiment(two_controls("first"), ""),
        Err(Error::ExperimentExists("first".into()))
    );
    assert_eq!(
        engine.experiment_results("nope").unwrap_err().code(),
        "unknown_experiment"
    );
    assert_eq!(engine.experiments().len(), 1);
    assert_eq!(engine.experiment_audit().len(), 1);
    // Disjoint bucket ranges of one layer run side by side.
    let mut left = two_controls("left");
    (left.layer, left.buckets) = ("l".into(), 0..5_000);
    let mut right = two_controls("right");
    (right.layer, right.buckets) = ("l".into(), 5_000..10_000);
    engine.create_experiment(left, "").unwrap();
    engine.create_experiment(right.clone(), "").unwrap();
    right.name = "right2".into();
    assert_eq!(
        field_of(engine.create_experiment(right, "").unwrap_err()),
        "buckets"
    );
    engine.shutdown();
}

#[test]
fn assignment_is_sticky_through_decide_and_the_arm_applies_its_policy() {
    let items: Vec<String> = (0..6).map(|i| format!("i{i}")).collect();
    let mut first = Vec::new();
    for run in 0..2 {
        let clock = ManualClock::new(T0);
        let engine = engine(&clock);
        for id in &items {
            engine.upsert_item(ItemSpec::new(id)).unwrap();
        }
        let spec = ExperimentSpec::new(
            "sticky",
            vec![
                arm("control", ArmPolicy::Control),
                arm("nudge", ArmPolicy::Nudge { epsilon: Some(0.0) }),
                arm("global", ArmPolicy::Global),
            ],
        );
        engine.create_experiment(spec, "test").unwrap();
        let mut arms = Vec::new();
        for u in 0..300 {
            let user = format!("user-{u}");
            let request = || DecideRequest::new(&user, items.iter().cloned(), 3);
            let d1 = engine.decide(request()).unwrap();
            let d2 = engine.decide(request()).unwrap();
            let a1 = d1.experiment.expect("every user is in the experiment");
            assert_eq!(Some(a1.clone()), d2.experiment, "{user}");
            assert_eq!(&*a1.experiment, "sticky");
            let preview = engine.experiment_arm("sticky", &user).unwrap();
            assert_eq!(preview.as_deref(), Some(&*a1.arm));
            if &*a1.arm == "control" {
                let order: Vec<&str> = d1.items.iter().map(|p| p.item.as_str()).collect();
                assert_eq!(
                    order,
                    ["i0", "i1", "i2"],
                    "control keeps the caller's order"
                );
            }
            arms.push(a1.arm.to_string());
        }
        for name in ["control", "nudge", "global"] {
            let n = arms.iter().filter(|a| *a == name).count();
            assert!((60..140).contains(&n), "{name}: {n} of 300");
        }
        let results = engine.experiment_results("sticky").unwrap();
        let users: u64 = results.arms.iter().map(|a| a.tally.users).sum();
        let decisions: u64 = results.arms.iter().map(|a| a.tally.decisions).sum();
        assert_eq!((users, decisions), (300, 600));
        if run == 0 {
            first = arms;
        } else {
            assert_eq!(first, arms, "a new engine assigns the same arms");
        }
        engine.shutdown();
    }
}

#[test]
fn attributed_clicks_count_for_their_arm_and_stopping_keeps_the_results() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    let items = ["x", "y"];
    for id in items {
        engine.upsert_item(ItemSpec::new(id)).unwrap();
    }
    engine
        .create_experiment(two_controls("clicks"), "launch")
        .unwrap();
    let mut clicked_b = 0;
    for u in 0..200 {
        let user = format!("u{u}");
        let d = engine.decide(DecideRequest::new(&user, items, 1)).unwrap();
        if &*d.experiment.unwrap().arm == "b" {
            let click = Event::new(&user, EventKind::Click).item("x").decision(d.id);
            assert!(engine.ingest(click).unwrap().attributed);
            clicked_b += 1;
        }
    }
    clock.advance_ms(61_000);
    engine.tick().unwrap();
    let r = engine.experiment_results("clicks").unwrap();
    let (a, b) = (&r.arms[0].tally, &r.arms[1].tally);
    assert_eq!((a.clicks, b.clicks), (0, clicked_b));
    assert_eq!(a.decisions + b.decisions, 200);
    assert_eq!(b.metric.count, clicked_b);
    assert_eq!(b.metric.mean(), Some(1.0));
    assert_eq!(a.metric.mean(), Some(0.0));
    assert!(engine.stop_experiment("clicks", "done").unwrap());
    assert!(!engine.stop_experiment("clicks", "again").unwrap());
    let d = engine.decide(DecideRequest::new("u1", items, 1)).unwrap();
    assert_eq!(d.experiment, None, "a stopped experiment takes no decision");
    let after = engine.experiment_results("clicks").unwrap();
    assert!(!after.running);
    assert_eq!(after.arms[1].tally, r.arms[1].tally);
    let audit = engine.experiment_audit();
    let trail: Vec<_> = audit
        .iter()
        .map(|e| (e.version, e.action, e.reason.as_str(), e.ts_ms))
        .collect();
    assert_eq!(
        trail,
        [
            (1, "created", "launch", T0),
            (2, "stopped", "done", T0 + 61_000)
        ]
    );
    engine.shutdown();
}

/// Runs one user per decision through `engine`: a click with probability `p(item placed)`.
fn traffic(engine: &Engine, clock: &ManualClock, users: usize, seed: u64, p: impl Fn(&str) -> f64) {
    let mut rng = Rng::new(seed);
    for u in 0..users {
        let user = format!("s{seed}-{u}");
        let d = engine
            .decide(DecideRequest::new(&user, ["junk", "good"], 1))
            .unwrap();
        let item = d.items[0].item.clone();
        if rng.next_f64() < p(&item) {
            let click = Event::new(&user, EventKind::Click)
                .item(item)
                .decision(d.id);
            engine.ingest(click).unwrap();
        }
    }
    clock.advance_ms(61_000);
    engine.tick().unwrap();
}

#[test]
fn a_real_advantage_is_significant_and_an_a_a_test_keeps_collecting() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    for id in ["junk", "good"] {
        engine.upsert_item(ItemSpec::new(id)).unwrap();
    }
    // "good" is popular: the popularity arm puts it first, control keeps "junk" first.
    for u in 0..60 {
        let click = Event::new(format!("fan{u}"), EventKind::Click).item("good");
        engine.ingest(click).unwrap();
    }
    let spec = ExperimentSpec::new(
        "popular",
        vec![
            arm("control", ArmPolicy::Control),
            arm("popularity", ArmPolicy::Popularity),
        ],
    );
    engine.create_experiment(spec, "").unwrap();
    traffic(&engine, &clock, 3_000, 1, |item| {
        if item == "good" {
            0.25
        } else {
            0.10
        }
    });
    let r = engine.experiment_results("popular").unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.status, Status::Significant, "{r:?}");
    let treated = &r.arms[1];
    assert!(
        treated.lift.unwrap() > 0.0 && treated.interval.0 > 0.0,
        "{treated:?}"
    );
    engine.stop_experiment("popular", "winner found").unwrap();

    let mut aa = two_controls("aa");
    aa.salt = "aa-1".into();
    engine.create_experiment(aa, "").unwrap();
    traffic(&engine, &clock, 2_000, 2, |_| 0.10);
    let r = engine.experiment_results("aa").unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.status, Status::Collecting, "{r:?}");
    assert!(r.arms[1].p_value > 0.05);
    engine.shutdown();
}

#[test]
fn a_biased_exposure_raises_the_srm_alarm() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    engine.upsert_item(ItemSpec::new("x")).unwrap();
    engine.create_experiment(two_controls("srm"), "").unwrap();
    for u in 0..4_000 {
        let user = format!("v{u}");
        // A broken client loses one in five of arm b's users before they reach the engine.
        let arm = engine.experiment_arm("srm", &user).unwrap();
        if arm.as_deref() == Some("b") && u % 5 == 0 {
            continue;
        }
        engine.decide(DecideRequest::new(&user, ["x"], 1)).unwrap();
    }
    let r = engine.experiment_results("srm").unwrap();
    assert_eq!(r.status, Status::SrmAlarm, "{r:?}");
    assert!(r.srm_p_value.unwrap() < 0.001);
    engine.shutdown();
}

#[test]
fn experiments_start_from_the_config_file() {
    let toml = r#"
        shards = 1
        [[experiments]]
        name = "ranker"
        holdout = 0.1
        metric = "mean_reward"
        arms = [
            { name = "control", policy = "control" },
            { name = "explore", policy = "nudge", epsilon = 0.2, weight = 2 },
        ]
    "#;
    let cfg = Config::from_toml_with_env(toml, []).unwrap();
    let engine = Engine::start(cfg).unwrap();
    let (spec, running) = engine.experiment("ranker").unwrap();
    assert!(running);
    assert_eq!(spec.arms[1].policy, ArmPolicy::Nudge { epsilon: Some(0.2) });
    assert_eq!(engine.experiment_audit()[0].reason, "config");
    engine.shutdown();
    let bad = toml.replace("\"control\" }", "\"controll\" }");
    let err = Config::from_toml_with_env(&bad, []).unwrap_err();
    assert!(
        err.contains("experiments[0]") && err.contains("arms.policy"),
        "{err}"
    );
}

#[test]
fn a_promoted_arm_serves_everyone_but_the_holdout() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    engine.upsert_item(ItemSpec::new("x")).unwrap();
    let mut spec = two_controls("promo");
    spec.holdout = 0.2;
    engine.create_experiment(spec, "").unwrap();
    let wrong_arm = engine.promote_experiment("promo", "c", "");
    assert_eq!(field_of(wrong_arm.unwrap_err()), "arm");
    assert_eq!(
        engine
            .promote_experiment("nope", "a", "")
            .unwrap_err()
            .code(),
        "unknown_experiment"
    );
    engine.promote_experiment("promo", "b", "b won").unwrap();
    let mut held_out = 0;
    for u in 0..500 {
        let d = engine
            .decide(DecideRequest::new(format!("p{u}"), ["x"], 1))
            .unwrap();
        match d.experiment {
            Some(arm) => assert_eq!(&*arm.arm, "b"),
            None => held_out += 1,
        }
    }
    assert!(
        (60..140).contains(&held_out),
        "{held_out} of 500 held out at 20%"
    );
    let r = engine.experiment_results("promo").unwrap();
    assert_eq!(
        (r.status, r.promoted.as_deref()),
        (Status::Promoted, Some("b"))
    );
    let last = engine.experiment_audit().pop().unwrap();
    assert_eq!(
        (last.version, last.action, last.arm.as_deref()),
        (2, "promoted", Some("b"))
    );
    engine.stop_experiment("promo", "").unwrap();
    let stopped = engine.promote_experiment("promo", "a", "");
    assert_eq!(field_of(stopped.unwrap_err()), "name");
    engine.shutdown();
}

/// Issue 13, item 4: with a data directory, experiments come back after a restart as they
/// were (created, promoted, stopped, with the audit trail's times and reasons), a config
/// file's experiment is not created twice, and arms stay sticky.
#[test]
fn experiments_and_their_audit_trail_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = |with_config: bool| {
        let mut cfg = Config {
            shards: 2,
            seed: 11,
            ..Config::default()
        };
        if with_config {
            cfg.experiments = vec![ExperimentConfig {
                name: "from-config".into(),
                layer: "config".into(),
                arms: vec![arm_config("a", "control"), arm_config("b", "nudge")],
                ..ExperimentConfig::default()
            }];
        }
        Engine::builder()
            .config(cfg)
            .clock(clock.clone())
            .data_dir(dir.path())
            .build()
            .unwrap()
    };
    let e = start(true);
    let mut promoted = two_controls("promoted");
    promoted.layer = "p".into();
    e.create_experiment(promoted, "launch").unwrap();
    e.promote_experiment("promoted", "b", "b won").unwrap();
    let mut stopped = two_controls("stopped");
    stopped.layer = "s".into();
    e.create_experiment(stopped, "try").unwrap();
    clock.set_ms(T0 + 5_000);
    assert!(e.stop_experiment("stopped", "enough").unwrap());
    let arm_before = e.experiment_arm("from-config", "u7").unwrap();
    let audit = e.experiment_audit();
    e.shutdown();
    drop(e);

    for with_config in [true, false] {
        let e = start(with_config);
        let all: Vec<(String, bool)> = (e.experiments().into_iter())
            .map(|(s, on)| (s.name, on))
            .collect();
        assert_eq!(
            all,
            [
                ("from-config".to_string(), true),
                ("promoted".to_string(), true),
                ("stopped".to_string(), false)
            ]
        );
        assert_eq!(
            e.experiment_audit(),
            audit,
            "the trail, times and reasons included"
        );
        let r = e.experiment_results("promoted").unwrap();
        assert_eq!(r.promoted.as_deref(), Some("b"));
        assert_eq!(e.experiment_arm("from-config", "u7").unwrap(), arm_before);
        e.shutdown();
    }
}
