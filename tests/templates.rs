//! Issue 15 through the embedded API: templates refused with positions, rendered with the
//! user's features and the request's values (escaped), versioned and rolled back, decided
//! slot by slot with exact propensities, trained by a reward on the whole decision, and
//! replayed exactly from the write-ahead log.

use std::collections::HashMap;

use nudge::template::{TemplateDecision, TemplateRequest, TemplateSpec, VariantSpec};
use nudge::{Config, Engine, Error, Event, EventKind, FsyncPolicy, ItemSpec, ManualClock};
use nudge::{ErrorCode, PolicyKind};

const T0: u64 = 1_732_200_000_000;

fn engine(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Engine {
    let mut cfg = Config {
        shards: 2,
        seed: 15,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    edit(&mut cfg);
    let engine = Engine::builder().config(cfg).clock(clock.clone()).build();
    engine.unwrap()
}

/// headline × 3, image × 2, button × 3.
fn promo() -> TemplateSpec {
    TemplateSpec::new(
        "promo",
        "<h1>{{headline}}</h1><img src=\"{{image}}\"><button>{{button}}</button>",
    )
    .slot(
        "headline",
        [
            ("h1", "Hi {{first_name}}"),
            ("h2", "New in {{top_category}}"),
            ("h3", "Welcome back"),
        ],
    )
    .slot("image", [("i1", "a.png"), ("i2", "b.png")])
    .slot("button", [("b1", "Buy"), ("b2", "Go"), ("b3", "See more")])
    .value("first_name")
}

fn refused(e: Error) -> String {
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    e.to_string()
}

#[test]
fn a_bad_template_is_refused_with_its_position() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let mut spec = promo();
    spec.body = "<h1>{{headline}}</h1>\n  <p>{{nope}}</p>".into();
    let e = refused(engine.register_template(spec).unwrap_err());
    assert!(e.contains("`body` at 2:6 (byte 27)"), "{e}");
    assert!(e.contains("unknown placeholder `nope`"), "{e}");

    let mut spec = promo();
    spec.body = "<h1>{{headline}}</h1>\n{{#image}}<img>".into();
    let e = refused(engine.register_template(spec).unwrap_err());
    assert!(e.contains("`body` at 2:1 (byte 22)"), "{e}");
    assert!(e.contains("unclosed section"), "{e}");

    let mut spec = promo();
    spec.slots[1].variants[0].text = "x.png {{first_name".into();
    let e = refused(engine.register_template(spec).unwrap_err());
    assert!(
        e.contains("`slots[1].variants[0].text` at 1:7 (byte 6)"),
        "{e}"
    );
    assert!(e.contains("unclosed tag"), "{e}");

    let mut spec = promo();
    spec.slots[2].variants.clear();
    let e = refused(engine.register_template(spec).unwrap_err());
    assert!(
        e.contains("`slots[2].variants`: slot `button` has no variants"),
        "{e}"
    );

    let mut spec = promo();
    spec.slots[0].variants.push(VariantSpec {
        id: "h1".into(),
        ..VariantSpec::default()
    });
    let e = refused(engine.register_template(spec).unwrap_err());
    assert!(e.contains("variant `h1` appears twice"), "{e}");

    // Nothing refused was registered.
    assert!(engine.template("promo").is_none());
    engine.shutdown();
}

#[test]
fn rendering_fills_features_and_values_and_escapes_html() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    for (id, category) in [("boots", "shoes"), ("heels", "shoes"), ("scarf", "winter")] {
        engine
            .upsert_item(ItemSpec::new(id).attr("category", category))
            .unwrap();
    }
    for item in ["scarf", "boots", "heels"] {
        let click = Event::new("u1", EventKind::Click).item(item).at(T0);
        engine.ingest(click.context("device", "<phone>")).unwrap();
    }
    let spec = TemplateSpec::new(
        "hello",
        "{{greeting}} {{first_name}}! {{{first_name}}} on {{user.last_device}}, \
         for {{ctx.page}}: {{top_category}}{{^ctx.missing}}.{{/ctx.missing}}",
    )
    .slot("greeting", [("g1", "Hi <b>{{first_name}}</b>")])
    .value("first_name");
    assert_eq!(engine.register_template(spec).unwrap(), 1);
    let d = engine
        .decide_template(
            TemplateRequest::new("u1", "hello")
                .value("first_name", "Ann & <Bo>")
                .context("page", "\"home\"")
                .at(T0 + 1),
        )
        .unwrap();
    assert_eq!(
        d.rendered,
        "Hi <b>Ann &amp; &lt;Bo&gt;</b> Ann &amp; &lt;Bo&gt;! Ann & <Bo> on &lt;phone&gt;, \
         for &quot;home&quot;: shoes."
    );
    assert_eq!(d.slots.len(), 1);
    assert_eq!(d.slots[0].item, "hello/greeting/g1");
    assert_eq!(d.propensity, 1.0);
    engine.shutdown();
}

#[test]
fn rolling_back_takes_effect_on_the_next_decision() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let spec = |body: &str| TemplateSpec::new("t", body).slot("s", [("a", "A")]);
    assert_eq!(engine.register_template(spec("one {{s}}")).unwrap(), 1);
    assert_eq!(engine.register_template(spec("two {{s}}")).unwrap(), 2);
    let decide = || {
        engine
            .decide_template(TemplateRequest::new("u1", "t"))
            .unwrap()
    };
    let d = decide();
    assert_eq!((d.version, d.rendered.as_str()), (2, "two A"));
    engine.rollback_template("t", 1).unwrap();
    let d = decide();
    assert_eq!((d.version, d.rendered.as_str()), (1, "one A"));
    let versions = engine.template_versions("t").unwrap();
    assert_eq!((versions.all.len(), versions.current), (2, 1));
    assert_eq!(engine.register_template(spec("three {{s}}")).unwrap(), 3);
    assert_eq!(decide().rendered, "three A");
    let e = engine.rollback_template("t", 9).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    let e = engine
        .decide_template(TemplateRequest::new("u1", "nope"))
        .unwrap_err();
    assert!(e.to_string().contains("no template `nope`"), "{e}");
    engine.shutdown();
}

#[test]
fn a_reward_on_the_decision_trains_every_slot() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    engine.register_template(promo()).unwrap();
    let preview = |at: u64| {
        let req = TemplateRequest::new("u1", "promo").track(false).at(at);
        engine.decide_template(req).unwrap()
    };
    let before = preview(T0);
    let d = engine
        .decide_template(TemplateRequest::new("u1", "promo").at(T0))
        .unwrap();
    let steps = engine.user("u1").unwrap().unwrap().training_steps;
    assert_eq!(engine.reward_decision(d.id, 1.0).unwrap(), 3);
    let after_steps = engine.user("u1").unwrap().unwrap().training_steps;
    assert_eq!(after_steps, steps + 3, "one step per slot");
    let after = preview(T0 + 1);
    for (b, a) in before.slots.iter().zip(&after.slots) {
        assert_eq!(b.variant, a.variant, "greedy keeps the rewarded variants");
        assert!(
            a.score > b.score,
            "slot {}: {} → {}",
            a.slot,
            b.score,
            a.score
        );
    }
    // The decision took its reward: a second one is refused.
    let e = engine.reward_decision(d.id, 1.0).unwrap_err();
    assert!(matches!(e, Error::AlreadyRewarded { .. }), "{e}");
    let never = nudge::DecisionId::new(nudge::ShardId(0), 1 << 40);
    let e = engine.reward_decision(never, 1.0).unwrap_err();
    assert!(matches!(e, Error::UnknownDecision(_)), "{e}");
    engine.shutdown();
}

/// Within `z` standard errors of a binomial proportion `p` over `n` trials.
fn close(observed: usize, n: usize, p: f64, z: f64) -> bool {
    let freq = observed as f64 / n as f64;
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    (freq - p).abs() <= z * sd + 1e-9
}

#[test]
fn multi_slot_propensities_are_the_empirical_frequencies() {
    let seed = 15;
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |cfg| {
        cfg.shards = 1;
        cfg.seed = seed;
        cfg.exploration.policy = PolicyKind::Softmax;
        cfg.exploration.temperature = 0.05;
    });
    engine.register_template(promo()).unwrap();
    // Teach the user a taste, so that the distribution is far from uniform.
    for i in 0..60 {
        let d = engine
            .decide_template(TemplateRequest::new("u1", "promo").at(T0 + i))
            .unwrap();
        let liked = d.slots[0].variant == "h2" || d.slots[2].variant == "b3";
        engine
            .reward_decision_at(d.id, if liked { 1.0 } else { 0.0 }, Some(T0 + i))
            .unwrap();
    }
    // Then many previews of one fixed state.
    let n = 6000;
    let at = T0 + 100;
    let mut joint: HashMap<Vec<String>, (usize, f64)> = HashMap::new();
    let mut first: HashMap<String, (usize, f32)> = HashMap::new();
    let mut second: HashMap<(String, String), (usize, f32)> = HashMap::new();
    for _ in 0..n {
        let req = TemplateRequest::new("u1", "promo").track(false).at(at);
        let d: TemplateDecision = engine.decide_template(req).unwrap();
        let choice: Vec<String> = d.slots.iter().map(|s| s.variant.clone()).collect();
        let e = joint.entry(choice).or_insert((0, d.propensity));
        e.0 += 1;
        assert_eq!(e.1, d.propensity, "one state, one propensity (seed {seed})");
        let e = first
            .entry(d.slots[0].variant.clone())
            .or_insert((0, d.slots[0].propensity));
        e.0 += 1;
        assert_eq!(e.1, d.slots[0].propensity, "seed {seed}");
        let key = (d.slots[0].variant.clone(), d.slots[1].variant.clone());
        let e = second.entry(key).or_insert((0, d.slots[1].propensity));
        e.0 += 1;
        assert_eq!(e.1, d.slots[1].propensity, "seed {seed}");
    }
    // The first slot: each variant's frequency is its propensity, and they sum to at most 1
    // (exactly 1 once every variant has been seen).
    let total: f64 = first.values().map(|(_, p)| f64::from(*p)).sum();
    assert!(total <= 1.0 + 1e-5, "seed {seed}: {first:?}");
    assert!(
        1.0 - total < 10.0 / n as f64,
        "seed {seed}: unseen mass: {first:?}"
    );
    for (v, (count, p)) in &first {
        let ok = close(*count, n, f64::from(*p), 4.5);
        assert!(ok, "seed {seed}: headline {v}: {count}/{n} against {p}");
    }
    assert!(
        first.values().any(|(_, p)| *p > 0.45),
        "not uniform: {first:?}"
    );
    // The second slot, given the first: conditional frequencies.
    for ((h, i), (count, p)) in &second {
        let given = first[h].0;
        let ok = close(*count, given, f64::from(*p), 4.5);
        assert!(
            ok,
            "seed {seed}: image {i} given {h}: {count}/{given} against {p}"
        );
    }
    // The whole choice: the product is the joint probability, and all of them sum to 1.
    let sum: f64 = joint.values().map(|(_, p)| p).sum();
    assert!(
        sum <= 1.0 + 1e-5,
        "seed {seed}: joint propensities sum to {sum}"
    );
    assert!(1.0 - sum < 0.01, "seed {seed}: unseen mass {}", 1.0 - sum);
    for (choice, (count, p)) in &joint {
        let ok = close(*count, n, *p, 4.5);
        assert!(ok, "seed {seed}: {choice:?}: {count}/{n} against {p}");
    }
    engine.shutdown();
}

#[test]
fn template_decisions_and_their_rewards_replay_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = || {
        let mut cfg = Config {
            shards: 1,
            seed: 3,
            ..Config::default()
        };
        cfg.exploration.policy = PolicyKind::Softmax;
        cfg.durability.fsync = FsyncPolicy::No;
        let b = Engine::builder().config(cfg).clock(clock.clone());
        b.data_dir(dir.path()).build().unwrap()
    };
    let engine = start();
    engine.register_template(promo()).unwrap();
    let mut open = Vec::new();
    for i in 0..20 {
        let req = TemplateRequest::new("u1", "promo").at(T0 + i * 10);
        let d = engine.decide_template(req).unwrap();
        if i % 3 == 0 {
            engine
                .reward_decision_at(d.id, 1.0, Some(T0 + i * 10 + 1))
                .unwrap();
        }
        open.push(d);
    }
    let before = engine.user("u1").unwrap().unwrap();
    engine.shutdown_without_checkpoint();
    drop(engine);
    let engine = start();
    let after = engine.user("u1").unwrap().unwrap();
    assert_eq!(before.personal_weights, after.personal_weights);
    assert_eq!(before.state, after.state);
    assert_eq!(before.training_steps, after.training_steps);
    assert_eq!(before.open_decisions, after.open_decisions);
    // The replayed decisions are open under the same ids, with their slots' items.
    let last = open.last().unwrap();
    let replayed = after
        .open_decisions
        .iter()
        .find(|o| o.id == last.id)
        .unwrap();
    let items: Vec<&str> = replayed
        .placements
        .iter()
        .map(|(i, _)| i.as_str())
        .collect();
    let chosen: Vec<&str> = last.slots.iter().map(|s| s.item.as_str()).collect();
    assert_eq!(items, chosen);
    engine.shutdown();
}

#[test]
fn templates_load_from_the_config_file_and_a_bad_one_refuses_to_start() {
    let toml = r#"
        [[templates]]
        name = "promo"
        body = "{{headline}} {{first_name}}"
        values = ["first_name"]
        [[templates.slots]]
        name = "headline"
        [[templates.slots.variants]]
        id = "h1"
        text = "Hi"
        attrs = { tone = "warm" }
        [[templates.slots.variants]]
        id = "h2"
        text = "Hello"
    "#;
    let cfg = Config::from_toml_with_env(toml, std::iter::empty()).unwrap();
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| c.templates = cfg.templates.clone());
    let t = engine.template("promo").expect("registered at start");
    assert_eq!(t.version(), 1);
    assert_eq!(
        t.spec().slots[0].variants[0].attrs,
        [("tone".into(), "warm".into())]
    );
    let d = engine
        .decide_template(TemplateRequest::new("u1", "promo").value("first_name", "Ann"))
        .unwrap();
    assert!(d.rendered.ends_with(" Ann"), "{}", d.rendered);
    engine.shutdown();
    let bad = toml.replace("{{headline}} {{first_name}}", "{{headline}} {{last_name}}");
    let err = Config::from_toml_with_env(&bad, std::iter::empty()).unwrap_err();
    assert!(
        err.contains("templates[0]: `body` at 1:14 (byte 13): unknown placeholder `last_name`"),
        "{err}"
    );
}

#[test]
fn later_slots_learn_which_earlier_choices_they_go_with() {
    // Only the pairs (a1, b1) and (a2, b2) are rewarded: no variant of the second slot is
    // better on its own, so only the cross features can tell it what to pick.
    let seed = 21;
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |cfg| {
        cfg.shards = 1;
        cfg.seed = seed;
        cfg.exploration.policy = PolicyKind::Softmax;
        // Near-uniform exploration: the test reads the sign of the learned differences.
        cfg.exploration.temperature = 1.0;
    });
    let spec = TemplateSpec::new("pair", "{{a}}{{b}}")
        .slot("a", [("a1", "1"), ("a2", "2")])
        .slot("b", [("b1", "1"), ("b2", "2")]);
    engine.register_template(spec).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..1500u64 {
        // Many users, so that the global model (not one user's weights) learns the pairs.
        let user = format!("u{}", i % 50);
        let at = T0 + i * 10;
        let d = engine
            .decide_template(TemplateRequest::new(user, "pair").at(at))
            .unwrap();
        let matched = d.rendered == "11" || d.rendered == "22";
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let value = if matched && rng % 10 < 8 { 1.0 } else { 0.0 };
        // Only the second slot is rewarded, so the first stays near-uniform and the second
        // sees both of its contexts equally often (no main effect to learn).
        let item = &d.slots[1].item;
        engine.reward_at(d.id, item, value, Some(at + 1)).unwrap();
    }
    // A new user's previews: the second slot's propensity given the first's choice.
    let mut given: HashMap<(String, String), f32> = HashMap::new();
    for _ in 0..400 {
        let req = TemplateRequest::new("fresh", "pair")
            .track(false)
            .at(T0 + 20_000);
        let d = engine.decide_template(req).unwrap();
        let key = (d.slots[0].variant.clone(), d.slots[1].variant.clone());
        given.insert(key, d.slots[1].propensity);
    }
    let p = |a: &str, b: &str| given.get(&(a.to_string(), b.to_string())).copied();
    for (a, good, bad) in [("a1", "b1", "b2"), ("a2", "b2", "b1")] {
        let (good_p, bad_p) = (p(a, good), p(a, bad));
        let ok = good_p.unwrap_or(1.0) > 0.5 && bad_p.map_or(true, |q| q < 0.5);
        assert!(
            ok,
            "seed {seed}: after {a}, {good}: {good_p:?}, {bad}: {bad_p:?} ({given:?})"
        );
        assert!(
            good_p.is_some() || bad_p.is_some(),
            "seed {seed}: {a} never chosen"
        );
    }
    engine.shutdown();
}

/// Issue 13 for template decisions: a template decision falls in the user's arm (targeting
/// applied), is decided under the arm's policy, counts for it, and keeps its arm through a
/// replay of the write-ahead log.
#[test]
fn template_decisions_fall_in_experiment_arms_and_replay_with_them() {
    use nudge::experiment::{ArmSpec, ExperimentSpec};
    use nudge::ArmPolicy;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = || {
        let mut cfg = Config {
            shards: 2,
            seed: 15,
            ..Config::default()
        };
        cfg.exploration.policy = PolicyKind::Softmax;
        cfg.durability.fsync = FsyncPolicy::Always;
        let b = Engine::builder().config(cfg).clock(clock.clone());
        b.data_dir(dir.path()).build().unwrap()
    };
    let engine = start();
    engine.register_template(promo()).unwrap();
    let arm = |name: &str, policy| ArmSpec {
        name: name.into(),
        weight: 1.0,
        policy,
    };
    let mut spec = ExperimentSpec::new(
        "copy",
        vec![
            arm("control", ArmPolicy::Control),
            arm("nudge", ArmPolicy::Nudge { epsilon: None }),
        ],
    );
    spec.target = Some(r#"ctx.page != "checkout""#.into());
    engine.create_experiment(spec, "").unwrap();
    let mut made = Vec::new();
    for u in 0..60 {
        let user = format!("v{u}");
        let page = if u % 5 == 0 { "checkout" } else { "home" };
        let req = TemplateRequest::new(&user, "promo")
            .context("page", page)
            .at(T0 + u);
        let d = engine.decide_template(req).unwrap();
        let assigned = engine.experiment_arm("copy", &user).unwrap();
        let got = d.experiment.as_ref().map(|a| a.arm.to_string());
        match page {
            "checkout" => assert_eq!(got, None, "not targeted: as if held out"),
            _ => assert_eq!(got, assigned, "{user}"),
        }
        if got.as_deref() == Some("control") {
            // The template's order: every slot's first variant, not chosen by a policy.
            let variants: Vec<&str> = d.slots.iter().map(|s| s.variant.as_str()).collect();
            assert_eq!(variants, ["h1", "i1", "b1"]);
            assert_eq!(d.propensity, 1.0);
        }
        made.push((user, d.id, d.slots[0].item.clone(), got));
    }
    let in_arm = |name: &str| made.iter().filter(|m| m.3.as_deref() == Some(name)).count();
    assert!(in_arm("control") >= 10 && in_arm("nudge") >= 10, "{made:?}");
    let before = engine.experiment_results("copy").unwrap();
    let counts = |r: &nudge::experiment::ExperimentResults| -> Vec<(u64, u64)> {
        (r.arms.iter())
            .map(|a| (a.tally.users, a.tally.decisions))
            .collect()
    };
    assert_eq!(
        counts(&before),
        [
            (in_arm("control") as u64, in_arm("control") as u64),
            (in_arm("nudge") as u64, in_arm("nudge") as u64)
        ]
    );
    // A crash: the decisions are only in the log, which names each one's arm.
    engine.shutdown_without_checkpoint();
    drop(engine);
    let engine = start();
    let after = engine.experiment_results("copy").unwrap();
    assert_eq!(
        counts(&after),
        counts(&before),
        "replay counts the same arms"
    );
    // A click on a replayed decision's slot counts for its arm.
    for (user, id, item, _) in &made {
        let click = Event::new(user, EventKind::Click).item(item).decision(*id);
        assert!(engine.ingest(click).unwrap().attributed);
    }
    let r = engine.experiment_results("copy").unwrap();
    for (i, name) in ["control", "nudge"].into_iter().enumerate() {
        assert_eq!(r.arms[i].tally.clicks, in_arm(name) as u64, "{name}");
    }
    engine.shutdown();
}
