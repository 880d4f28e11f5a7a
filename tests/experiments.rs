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
    let ctr = nudge::experiment::Metric::ClickThrough;
    assert_eq!(b.metric(ctr).count, clicked_b);
    assert_eq!(b.metric(ctr).mean(), Some(1.0));
    assert_eq!(a.metric(ctr).mean(), Some(0.0));
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
        .map(|e| (e.version, e.action.name(), e.reason.as_str(), e.ts_ms))
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
        treated.primary.lift.unwrap() > 0.0 && treated.primary.interval.0 > 0.0,
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
    assert!(r.arms[1].primary.p_value > 0.05);
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
        (last.version, last.action.name(), last.arm.as_deref()),
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

#[test]
fn a_guardrail_an_arm_does_worse_on_raises_the_alarm() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    for id in ["junk", "good"] {
        engine.upsert_item(ItemSpec::new(id)).unwrap();
    }
    for u in 0..60 {
        let click = Event::new(format!("fan{u}"), EventKind::Click).item("good");
        engine.ingest(click).unwrap();
    }
    // The popularity arm places "good" (more clicks) where control keeps "junk" (which
    // converts far more often): better on the metric, worse on the guardrail.
    let mut spec = ExperimentSpec::new(
        "clicks-vs-sales",
        vec![
            arm("control", ArmPolicy::Control),
            arm("popularity", ArmPolicy::Popularity),
        ],
    );
    spec.guardrails = vec![nudge::experiment::Metric::Conversion];
    engine.create_experiment(spec, "").unwrap();
    let mut rng = Rng::new(5);
    for u in 0..3_000 {
        let user = format!("g{u}");
        let d = engine
            .decide(DecideRequest::new(&user, ["junk", "good"], 1))
            .unwrap();
        let item = d.items[0].item.clone();
        let (p_click, p_buy) = if item == "good" {
            (0.25, 0.01)
        } else {
            (0.10, 0.12)
        };
        if rng.next_f64() < p_click {
            let click = Event::new(&user, EventKind::Click).item(&item);
            engine.ingest(click.decision(d.id)).unwrap();
        }
        if rng.next_f64() < p_buy {
            let buy = Event::new(&user, EventKind::Conversion).item(&item);
            engine.ingest(buy.decision(d.id)).unwrap();
        }
    }
    clock.advance_ms(61_000);
    engine.tick().unwrap();
    let r = engine.experiment_results("clicks-vs-sales").unwrap();
    let treated = &r.arms[1];
    assert!(
        treated.primary.significant && !treated.primary.worse,
        "{r:?}"
    );
    let guard = &treated.guardrails[0];
    assert_eq!(guard.metric, nudge::experiment::Metric::Conversion);
    assert!(guard.worse && guard.interval.1 < 0.0, "{guard:?}");
    assert!(guard.count > 1_000, "every closed decision is observed");
    assert_eq!(r.status, Status::GuardrailAlarm, "{r:?}");
    // The baseline is judged against nothing.
    assert!(!r.arms[0].guardrails[0].significant);
    // A guardrail that repeats the metric is refused.
    let mut twice = two_controls("twice");
    twice.guardrails = vec![nudge::experiment::Metric::ClickThrough];
    let refused = engine.create_experiment(twice, "");
    assert_eq!(field_of(refused.unwrap_err()), "guardrails");
    engine.shutdown();
}

#[test]
fn a_targeting_condition_takes_only_the_users_and_contexts_it_names() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    engine.upsert_item(ItemSpec::new("x")).unwrap();
    let mut spec = two_controls("mobile-home");
    spec.target = Some(r#"user.last_device == "mobile" && ctx.page == "home""#.into());
    engine.create_experiment(spec, "").unwrap();
    for (user, device) in [("phone", "mobile"), ("desk", "desktop")] {
        let view = Event::new(user, EventKind::Impression).item("x");
        engine.ingest(view.context("device", device)).unwrap();
    }
    let decide = |user: &str, page: &str| {
        let req = DecideRequest::new(user, ["x"], 1).context("page", page);
        engine.decide(req).unwrap().experiment
    };
    assert!(decide("phone", "home").is_some(), "mobile on the home page");
    assert_eq!(decide("phone", "cart"), None, "another page");
    assert_eq!(decide("desk", "home"), None, "another device");
    assert_eq!(
        decide("new", "home"),
        None,
        "no device known: the condition is false"
    );
    let r = engine.experiment_results("mobile-home").unwrap();
    let decisions: u64 = r.arms.iter().map(|a| a.tally.decisions).sum();
    assert_eq!(decisions, 1, "only the targeted decision counts");

    // A condition that does not compile is refused with its position.
    let mut bad = two_controls("bad-target");
    bad.target = Some("user.no_such_feature > 1".into());
    let e = engine.create_experiment(bad, "").unwrap_err();
    let text = e.to_string();
    assert_eq!(field_of(e), "target");
    assert!(text.contains("1:1"), "{text}");
    engine.shutdown();
}

#[test]
fn updates_change_only_what_keeps_the_comparison_and_any_version_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = || {
        let cfg = Config {
            shards: 2,
            seed: 11,
            ..Config::default()
        };
        let builder = Engine::builder().config(cfg).clock(clock.clone());
        builder.data_dir(dir.path()).build().unwrap()
    };
    let e = start();
    e.create_experiment(two_controls("a"), "launch").unwrap(); // v1
    let mut wider = two_controls("a");
    wider.holdout = 0.5;
    wider.guardrails = vec![nudge::experiment::Metric::MeanDwell];
    assert!(e.update_experiment(wider.clone(), "hold half out").unwrap()); // v2
    assert!(
        !e.update_experiment(wider.clone(), "again").unwrap(),
        "no change"
    );
    for (field, change) in [
        (
            "salt",
            (|s: &mut ExperimentSpec| s.salt = "new".into()) as fn(&mut ExperimentSpec),
        ),
        ("arms", |s| s.arms[1].weight = 3.0),
        ("metric", |s| {
            s.metric = nudge::experiment::Metric::Conversion
        }),
    ] {
        let mut changed = wider.clone();
        change(&mut changed);
        let refused = e.update_experiment(changed, "");
        assert_eq!(field_of(refused.unwrap_err()), field);
    }
    let unknown = e.update_experiment(two_controls("nope"), "");
    assert!(matches!(unknown, Err(Error::UnknownExperiment(_))));
    e.promote_experiment("a", "b", "b won").unwrap(); // v3
    let mut other = two_controls("later");
    other.layer = "l".into();
    e.create_experiment(other, "").unwrap(); // v4
    assert!(e.stop_experiment("a", "done").unwrap()); // v5

    clock.set_ms(T0 + 1_000);
    assert!(e.restore_experiments(2, "undo the promotion").unwrap()); // v6
    let (spec, running) = e.experiment("a").unwrap();
    assert!(running, "running at version 2");
    assert_eq!(spec.holdout, 0.5);
    let r = e.experiment_results("a").unwrap();
    assert_eq!(r.promoted, None, "promoted only at version 3");
    assert!(
        !e.experiment("later").unwrap().1,
        "created after version 2: stopped"
    );
    let last = e.experiment_audit().pop().unwrap();
    assert_eq!(
        (last.version, last.action.name(), last.restored, last.ts_ms),
        (6, "restored", Some(2), T0 + 1_000)
    );
    assert!(e.restore_experiments(1, "").unwrap()); // v7
    assert_eq!(e.experiment("a").unwrap().0.holdout, 0.0);
    // A restore of a restore: version 6 is version 2 again.
    assert!(e.restore_experiments(6, "").unwrap()); // v8
    assert_eq!(e.experiment("a").unwrap().0.holdout, 0.5);
    assert!(!e.restore_experiments(8, "").unwrap(), "already there");
    for bad in [0, 99] {
        let refused = e.restore_experiments(bad, "");
        assert_eq!(field_of(refused.unwrap_err()), "version");
    }
    let audit = e.experiment_audit();
    let arm_of_u3 = e.experiment_arm("a", "u3").unwrap();
    e.shutdown();
    drop(e);

    // The log replays every change: the same registry, the same trail.
    let e = start();
    assert_eq!(e.experiment_audit(), audit);
    assert_eq!(e.experiment("a").unwrap().0, wider);
    assert!(!e.experiment("later").unwrap().1);
    assert_eq!(e.experiment_arm("a", "u3").unwrap(), arm_of_u3);
    e.shutdown();
}

#[test]
fn decisions_replayed_from_the_log_keep_their_arm() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = || {
        let mut cfg = Config {
            shards: 2,
            seed: 11,
            ..Config::default()
        };
        cfg.attribution.window_s = 60;
        cfg.durability.fsync = nudge::config::FsyncPolicy::Always;
        let builder = Engine::builder().config(cfg).clock(clock.clone());
        builder.data_dir(dir.path()).build().unwrap()
    };
    let e = start();
    e.upsert_item(ItemSpec::new("x")).unwrap();
    // Targeted on the context, which the log does not keep: only the logged arm can say.
    let mut spec = two_controls("logged");
    spec.target = Some(r#"ctx.page == "home""#.into());
    e.create_experiment(spec, "").unwrap();
    let mut made = Vec::new();
    for u in 0..40 {
        let user = format!("r{u}");
        let page = if u % 4 == 0 { "cart" } else { "home" };
        let req = DecideRequest::new(&user, ["x"], 1).context("page", page);
        let d = e.decide(req).unwrap();
        made.push((user, d.id, d.experiment.map(|a| a.arm.to_string())));
    }
    let before = e.experiment_results("logged").unwrap();
    // A crash: nothing checkpointed, the decisions are only in the log.
    e.shutdown_without_checkpoint();
    drop(e);

    let e = start();
    let after = e.experiment_results("logged").unwrap();
    let counts = |r: &nudge::experiment::ExperimentResults| -> Vec<(u64, u64)> {
        (r.arms.iter())
            .map(|a| (a.tally.users, a.tally.decisions))
            .collect()
    };
    assert_eq!(
        counts(&after),
        counts(&before),
        "replay counts the same arms"
    );
    for (user, id, _) in &made {
        let click = Event::new(user, EventKind::Click).item("x").decision(*id);
        assert!(e.ingest(click).unwrap().attributed);
    }
    let r = e.experiment_results("logged").unwrap();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let expected = made.iter().filter(|m| m.2.as_deref() == Some(name)).count();
        assert_eq!(r.arms[i].tally.clicks, expected as u64, "arm {name}");
    }
    let total: u64 = r.arms.iter().map(|a| a.tally.clicks).sum();
    assert_eq!(
        total, 30,
        "the 10 decisions on the cart page were in no arm"
    );
    e.shutdown();
}

/// The norm of a vector.
fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// How far `b` is from `a`, relative to `a`. Weights also decay (30-day half-life): a few
/// seconds move them by about 1e-6.
fn moved(a: &[f32], b: &[f32]) -> f32 {
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&d) / norm(a)
}

#[test]
fn a_tuned_arm_changes_how_its_users_learn_from_their_first_decision_and_after_a_restart() {
    use nudge::experiment::Tuning;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = || {
        let mut cfg = Config {
            shards: 2,
            seed: 11,
            ..Config::default()
        };
        cfg.exploration.policy = PolicyKind::Greedy;
        cfg.durability.fsync = nudge::config::FsyncPolicy::Always;
        let builder = Engine::builder().config(cfg).clock(clock.clone());
        builder.data_dir(dir.path()).build().unwrap()
    };
    let e = start();
    for (id, category) in [("a", "x"), ("b", "y"), ("c", "z")] {
        e.upsert_item(ItemSpec::new(id).attr("category", category))
            .unwrap();
    }
    // "frozen": the personal model does not step and the state forgets within seconds.
    let tuning = Tuning {
        learning_rate: Some(0.0),
        state_half_life_s: Some(1.0),
    };
    let frozen = ArmPolicy::NudgeTuned {
        epsilon: None,
        tuning,
    };
    let spec = ExperimentSpec::new(
        "tuning",
        vec![
            arm("frozen", frozen),
            arm("plain", ArmPolicy::Nudge { epsilon: None }),
        ],
    );
    e.create_experiment(spec, "").unwrap();
    let in_arm = |name: &str| {
        (0..200)
            .map(|u| format!("t{u}"))
            .find(|u| e.experiment_arm("tuning", u).unwrap().as_deref() == Some(name))
            .unwrap()
    };
    let (f, p) = (in_arm("frozen"), in_arm("plain"));
    let click = |user: &str, item: &str, ts: u64| {
        let ev = Event::new(user, EventKind::Click).item(item).at(ts);
        e.ingest(ev).unwrap();
    };
    let export = |user: &str| e.user(user).unwrap().expect("known");
    // Before any decision the user is not in the arm: they learn as configured.
    click(&f, "a", T0 + 1_000);
    let before = export(&f);
    assert!(before.training_steps > 0);
    assert!(norm(&before.personal_weights) > 0.0, "{before:?}");
    // A decision exposes both; from then on the frozen user's weights stay put.
    for user in [&f, &p] {
        let d = e.decide(DecideRequest::new(user, ["a", "b", "c"], 2).at(T0 + 2_000));
        assert!(d.unwrap().experiment.is_some());
    }
    let (f0, p0) = (export(&f), export(&p));
    click(&f, "b", T0 + 3_000);
    click(&p, "b", T0 + 3_000);
    let (f1, p1) = (export(&f), export(&p));
    assert!(
        f1.training_steps > f0.training_steps,
        "it still takes steps"
    );
    let still = 1e-5;
    let (fm, pm) = (
        moved(&f0.personal_weights, &f1.personal_weights),
        moved(&p0.personal_weights, &p1.personal_weights),
    );
    assert!(fm < still, "steps of size zero: moved {fm}");
    assert!(pm > 100.0 * still, "plain moved {pm}");
    // Ten seconds later the frozen user's state has halved ten times, the plain one's not
    // even once (60 s configured).
    for user in [&f, &p] {
        let req = DecideRequest::new(user, ["a", "b", "c"], 2).at(T0 + 13_000);
        e.decide(req).unwrap();
    }
    let (f2, p2) = (export(&f), export(&p));
    let kept =
        |was: &nudge::UserExport, now: &nudge::UserExport| norm(&now.state) / norm(&was.state);
    assert!(kept(&f1, &f2) < 0.01, "frozen kept {}", kept(&f1, &f2));
    assert!(kept(&p1, &p2) > 0.8, "plain kept {}", kept(&p1, &p2));
    e.shutdown();
    drop(e);

    // After a restart the users are loaded from the store: the arm still holds.
    let e = start();
    let export = |user: &str| e.user(user).unwrap().expect("known");
    let click = |user: &str, item: &str, ts: u64| {
        let ev = Event::new(user, EventKind::Click).item(item).at(ts);
        e.ingest(ev).unwrap();
    };
    let (f3, p3) = (export(&f), export(&p));
    assert_eq!(f3.personal_weights, f2.personal_weights);
    click(&f, "c", T0 + 14_000);
    click(&p, "c", T0 + 14_000);
    let fm = moved(&f3.personal_weights, &export(&f).personal_weights);
    let pm = moved(&p3.personal_weights, &export(&p).personal_weights);
    assert!(fm < still, "frozen after the restart: moved {fm}");
    assert!(pm > 100.0 * still, "plain after the restart: moved {pm}");
    // Stopped, the experiment tunes nobody: the frozen user learns again.
    e.stop_experiment("tuning", "done").unwrap();
    let f4 = export(&f);
    click(&f, "a", T0 + 15_000);
    let fm = moved(&f4.personal_weights, &export(&f).personal_weights);
    assert!(fm > 100.0 * still, "frozen once stopped: moved {fm}");
    e.shutdown();
}

#[test]
fn overrides_are_checked_and_shown() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    let config = |arm: ArmConfig| ExperimentConfig {
        name: "x".into(),
        arms: vec![arm],
        ..ExperimentConfig::default()
    };
    let mut lr = arm_config("a", "nudge");
    lr.learning_rate = Some(-0.1);
    assert_eq!(
        field_of(config(lr).to_spec().unwrap_err()),
        "arms.learning_rate"
    );
    let mut half_life = arm_config("a", "nudge");
    half_life.state_half_life_s = Some(0.0);
    assert_eq!(
        field_of(config(half_life).to_spec().unwrap_err()),
        "arms.state_half_life_s"
    );
    let mut on_control = arm_config("a", "control");
    on_control.learning_rate = Some(0.01);
    assert_eq!(
        field_of(config(on_control).to_spec().unwrap_err()),
        "arms.policy"
    );
    let mut epsilon = arm_config("a", "nudge");
    epsilon.epsilon = Some(2.0);
    assert_eq!(
        field_of(config(epsilon).to_spec().unwrap_err()),
        "arms.epsilon"
    );
    // Only ε: the plain variant, as the experiments' log always wrote it.
    let mut only_epsilon = arm_config("a", "nudge");
    only_epsilon.epsilon = Some(0.1);
    let spec = config(only_epsilon).to_spec().unwrap();
    assert_eq!(spec.arms[0].policy, ArmPolicy::Nudge { epsilon: Some(0.1) });
    let mut tuned = arm_config("a", "nudge");
    tuned.state_half_life_s = Some(30.0);
    let spec = config(tuned).to_spec().unwrap();
    assert_eq!(spec.arms[0].policy.tuning().state_half_life_s, Some(30.0));
    assert_eq!(spec.arms[0].policy.name(), "nudge");
    engine.create_experiment(spec, "").unwrap();
    let (got, _) = &engine.experiments()[0];
    assert_eq!(got.arms[0].policy.tuning().learning_rate, None);
    engine.shutdown();
}
