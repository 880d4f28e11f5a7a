//! Issue 14 through the embedded API: live features computed from hand-made event sequences,
//! rules compiled (or refused with positions), applied in `decide`, shown in `explain`,
//! skipped and counted on a runtime error, hot-reloaded atomically, loaded from the config
//! file, and exploration's propensities over what the rules leave.

use nudge::actor::features::FeatureValue;
use nudge::actor::Feature;
use nudge::rules::ActionKind;
use nudge::{
    Config, DecideRequest, Decision, Engine, Error, Event, EventKind, ItemSpec, ManualClock,
    PolicyKind, RuleConfig,
};

const T0: u64 = 1_732_200_000_000;

fn engine(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Engine {
    let mut cfg = Config {
        shards: 2,
        seed: 5,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    edit(&mut cfg);
    let engine = Engine::builder().config(cfg).clock(clock.clone()).build();
    let engine = engine.unwrap();
    for (id, category, brand) in [
        ("scarf", "winter", "north"),
        ("coat", "winter", "north"),
        ("boots", "shoes", "north"),
        ("sandals", "summer", "south"),
        ("hat", "summer", "south"),
    ] {
        let item = ItemSpec::new(id).attr("category", category);
        engine.upsert_item(item.attr("brand", brand)).unwrap();
    }
    engine
}

const ITEMS: [&str; 5] = ["scarf", "coat", "boots", "sandals", "hat"];

fn rule(name: &str, action: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        action: action.into(),
        ..RuleConfig::default()
    }
}

fn feature(engine: &Engine, user: &str, f: Feature) -> FeatureValue {
    let export = engine.user(user).unwrap().expect("a resident user");
    let (_, v) = export.features.into_iter().find(|(g, _)| *g == f).unwrap();
    v
}

fn num(v: FeatureValue) -> f64 {
    match v {
        FeatureValue::Num(x) => x,
        other => panic!("not a number: {other:?}"),
    }
}

fn decide(engine: &Engine, user: &str, n: usize) -> Decision {
    let req = DecideRequest::new(user, ITEMS, n).context("page", "home");
    engine.decide(req.explain(true)).unwrap()
}

fn placed(d: &Decision) -> Vec<&str> {
    d.items.iter().map(|p| p.item.as_str()).collect()
}

#[test]
fn features_follow_a_hand_made_event_sequence() {
    let clock = ManualClock::new(T0 + 10_000_000);
    let engine = engine(&clock, |c| c.features.session_idle_s = 600);
    let click = |ts| Event::new("u", EventKind::Click).item("scarf").at(ts);
    engine
        .ingest(click(T0).context("device", "mobile").context("hour", "9"))
        .unwrap();
    engine.ingest(click(T0 + 60_000)).unwrap();
    let scroll = Event::new("u", EventKind::Scroll)
        .value(0.8)
        .at(T0 + 120_000);
    engine.ingest(scroll).unwrap();
    let clicks = num(feature(&engine, "u", Feature::Clicks1h));
    let want = (-1.0f64 / 30.0).exp() + (-1.0f64 / 60.0).exp();
    assert!((clicks - want).abs() < 1e-9, "{clicks} vs {want}");
    let events = num(feature(&engine, "u", Feature::Events5m));
    let want = 1.0 + (-0.2f64).exp() + (-0.4f64).exp();
    assert!((events - want).abs() < 1e-9, "{events} vs {want}");
    assert_eq!(num(feature(&engine, "u", Feature::SessionEvents)), 3.0);
    assert_eq!(num(feature(&engine, "u", Feature::SessionLengthS)), 120.0);
    assert_eq!(
        feature(&engine, "u", Feature::LastDevice),
        FeatureValue::Str("mobile".into())
    );
    // The last event gave no hour: its own (UTC) hour counts. T0 + 2 min is 14:42 UTC.
    assert_eq!(num(feature(&engine, "u", Feature::LastHour)), 14.0);
    assert!((num(feature(&engine, "u", Feature::AvgScrollDepth)) - 0.8).abs() < 1e-6);
    // Ten idle minutes and a millisecond later, a new session starts.
    let later = T0 + 120_000 + 600_001;
    engine.ingest(click(later)).unwrap();
    assert_eq!(num(feature(&engine, "u", Feature::Sessions)), 2.0);
    assert_eq!(num(feature(&engine, "u", Feature::SessionEvents)), 1.0);
    assert_eq!(
        num(feature(&engine, "u", Feature::SessionStartMs)),
        later as f64
    );
    engine.shutdown();
}

#[test]
fn syntax_and_type_errors_are_refused_with_their_positions() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let mut typed = rule("winter", "boost");
    typed.items = Some("item.category > 3".into());
    let Err(Error::Invalid { field, problem }) = engine.set_rules(&[typed]) else {
        panic!("a type error is refused")
    };
    let message = problem.to_string();
    assert_eq!(field, "rules");
    assert!(
        message.contains("rule 0 `winter`: `items` at 1:15 (byte 14)")
            && message.contains("cannot compare a string with a number"),
        "{message}"
    );
    let mut syntax = rule("scroll", "pin");
    syntax.when = Some("user.scroll_depth >> 0.7".into());
    let err = engine.set_rules(&[syntax]).unwrap_err().to_string();
    assert!(err.contains("`when` at 1:20 (byte 19)"), "{err}");
    assert_eq!(engine.rules().version(), 0, "nothing was installed");
    engine.shutdown();
}

#[test]
fn rules_act_in_decide_and_show_in_explain() {
    let clock = ManualClock::new(T0 + 1000);
    let engine = engine(&clock, |_| {});
    let scroll = Event::new("u", EventKind::Scroll).value(0.9).at(T0);
    engine.ingest(scroll).unwrap();
    let baseline = decide(&engine, "u", 5);
    assert!(baseline.rules.is_empty() && baseline.triggers.is_empty());
    let mut boost = rule("winter-offer", "boost");
    boost.when = Some("user.scroll_depth > 0.7 && ctx.page == 'home'".into());
    boost.items = Some("item.category == 'winter'".into());
    boost.by = Some(50.0);
    let mut exclude = rule("no-boots", "exclude");
    exclude.items = Some("item.id == 'boots'".into());
    let mut force = rule("hat-first", "force");
    force.item = Some("hat".into());
    force.priority = 10;
    let mut offer = rule("offer", "trigger");
    offer.when = Some("user.scroll_depth > 0.7".into());
    offer.trigger = Some("offer".into());
    let mut never = rule("never", "bury");
    never.when = Some("user.scroll_depth < 0.5".into());
    let set = [boost, exclude, force, offer, never];
    assert_eq!(engine.set_rules(&set).unwrap(), 1);

    let d = decide(&engine, "u", 4);
    let order = placed(&d);
    assert_eq!(order[0], "hat", "forced first: {order:?}");
    assert_eq!(d.items[0].propensity, 1.0);
    let mut winter = order[1..3].to_vec();
    winter.sort_unstable();
    assert_eq!(winter, ["coat", "scarf"], "boosted next: {order:?}");
    assert_eq!(order[3], "sandals");
    assert!(!order.contains(&"boots"));
    assert_eq!(
        d.triggers.iter().map(|t| &**t).collect::<Vec<_>>(),
        ["offer"]
    );
    // Explain names each rule that fired, highest priority first, with what it changed.
    let fired: Vec<(&str, ActionKind, Vec<&str>)> = d
        .rules
        .iter()
        .map(|e| {
            let items = e.items.iter().map(String::as_str).collect();
            (&*e.rule, e.action, items)
        })
        .collect();
    assert_eq!(
        fired,
        [
            ("hat-first", ActionKind::Force, vec!["hat"]),
            ("winter-offer", ActionKind::Boost, vec!["scarf", "coat"]),
            ("no-boots", ActionKind::Exclude, vec!["boots"]),
            ("offer", ActionKind::Trigger, vec![]),
        ]
    );
    assert_eq!(d.rules[1].by, Some(50.0));
    assert!(d.rules.iter().all(|e| e.version == 1 && e.error.is_none()));
    // The score stays the model's; the boost shows in the order and in `explain` alone.
    let scarf = |d: &Decision| d.items.iter().find(|p| p.item == "scarf").unwrap().score;
    assert!((scarf(&d) - scarf(&baseline)).abs() < 1e-6);
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().rules_fired_total, 4);
    engine.shutdown();
}

#[test]
fn a_cap_limits_placements_per_attribute_value() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let mut cap = rule("one-per-brand", "cap");
    cap.attr = Some("brand".into());
    cap.max = Some(1);
    engine.set_rules(&[cap]).unwrap();
    let d = decide(&engine, "u", 4);
    // Two brands: one placement each, and nothing else is eligible.
    assert_eq!(d.items.len(), 2, "{:?}", placed(&d));
    let north = ["scarf", "coat", "boots"];
    assert_eq!(
        d.items.iter().filter(|p| north.contains(&&*p.item)).count(),
        1
    );
    engine.shutdown();
}

#[test]
fn a_runtime_error_skips_the_rule_counts_it_and_the_decision_is_served() {
    let clock = ManualClock::new(T0 + 1000);
    let engine = engine(&clock, |_| {});
    engine
        .ingest(Event::new("u", EventKind::Click).item("boots").at(T0))
        .unwrap();
    let mut divide = rule("divide", "exclude");
    divide.when = Some("1 / (user.sessions - 1) > 0".into());
    let mut device = rule("device", "exclude");
    device.items = Some("user.last_device == 'mobile' && item.category == 'winter'".into());
    let mut context = rule("context", "trigger");
    context.when = Some("ctx.hour > 20".into());
    context.trigger = Some("night".into());
    let mut fine = rule("fine", "exclude");
    fine.items = Some("item.id == 'hat'".into());
    engine.set_rules(&[divide, device, context, fine]).unwrap();
    let d = decide(&engine, "u", 5);
    assert_eq!(d.items.len(), 4, "only `fine` excluded: {:?}", placed(&d));
    assert!(!placed(&d).contains(&"hat") && d.triggers.is_empty());
    let errors: Vec<(&str, Option<&str>)> = d.rules.iter().map(|e| (&*e.rule, e.error)).collect();
    assert_eq!(
        errors,
        [
            ("divide", Some("division by zero")),
            ("device", Some("a feature with no value")),
            ("context", Some("a context key not given")),
            ("fine", None),
        ]
    );
    engine.flush().unwrap();
    let total = engine.stats().total();
    assert_eq!((total.rule_errors_total, total.rules_fired_total), (3, 1));
    engine.shutdown();
}

#[test]
fn a_bad_hot_reload_leaves_the_old_set_running() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let mut keep = rule("no-hat", "exclude");
    keep.items = Some("item.id == 'hat'".into());
    assert_eq!(engine.set_rules(&[keep.clone()]).unwrap(), 1);
    let mut bad = rule("broken", "boost");
    bad.when = Some("user.clicks_1h >".into());
    let err = engine
        .set_rules(&[rule("good", "exclude"), bad])
        .unwrap_err();
    assert!(err.to_string().contains("rule 1 `broken`"), "{err}");
    let running = engine.rules();
    assert_eq!(running.version(), 1);
    assert_eq!(running.specs(), &[(keep.clone(), 1)]);
    let d = decide(&engine, "u", 5);
    assert_eq!(d.items.len(), 4, "no-hat still applies: {:?}", placed(&d));
    // A good reload replaces the set whole; the unchanged rule keeps its version.
    let mut trigger = rule("t", "trigger");
    trigger.trigger = Some("hello".into());
    assert_eq!(engine.set_rules(&[keep, trigger]).unwrap(), 2);
    let versions: Vec<u64> = engine.rules().specs().iter().map(|(_, v)| *v).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(decide(&engine, "u", 5).triggers.len(), 1);
    assert_eq!(engine.set_rules(&[]).unwrap(), 3);
    assert_eq!(decide(&engine, "u", 5).items.len(), 5);
    engine.shutdown();
}

#[test]
fn propensities_are_over_what_the_rules_leave() {
    let clock = ManualClock::new(T0);
    let epsilon = 0.3;
    let engine = engine(&clock, |c| {
        c.exploration.policy = PolicyKind::EpsilonGreedy;
        c.exploration.epsilon = epsilon;
    });
    let mut pin = rule("pin-boots", "pin");
    pin.items = Some("item.id == 'boots'".into());
    let mut exclude = rule("no-summer", "exclude");
    exclude.items = Some("item.category in ['summer']".into());
    engine.set_rules(&[pin, exclude]).unwrap();
    for u in 0..40 {
        let d = decide(&engine, &format!("u{u}"), 3);
        assert_eq!(placed(&d)[0], "boots");
        assert_eq!(d.items[0].propensity, 1.0);
        // Sampled among the two left (scarf, coat): ε/2 + (1 − ε) for the best, else ε/2.
        assert_eq!(d.items.len(), 3);
        let p = d.items[1].propensity;
        let (best, other) = (1.0 - epsilon + epsilon / 2.0, epsilon / 2.0);
        assert!((p - best).abs() < 1e-6 || (p - other).abs() < 1e-6, "{p}");
        // The last one left is placed with certainty.
        assert!((d.items[2].propensity - 1.0).abs() < 1e-6);
    }
    engine.shutdown();
}

#[test]
fn rules_load_from_the_config_file_and_a_bad_one_refuses_to_start() {
    let toml = r#"
        [[rules]]
        name = "no-hat"
        action = "exclude"
        items = "item.id == 'hat'"
    "#;
    let cfg = Config::from_toml_with_env(toml, std::iter::empty()).unwrap();
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| c.rules = cfg.rules.clone());
    assert_eq!(engine.rules().version(), 1);
    assert_eq!(decide(&engine, "u", 5).items.len(), 4);
    engine.shutdown();
    let bad = toml.replace("item.id == 'hat'", "item.id == 'hat' &&");
    let err = Config::from_toml_with_env(&bad, std::iter::empty()).unwrap_err();
    assert!(
        err.contains("rules: rule 0 `no-hat`: `items` at 1:"),
        "{err}"
    );
}

#[test]
fn an_upserted_item_is_matched_by_its_new_attributes() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let mut exclude = rule("no-winter", "exclude");
    exclude.items = Some("item.category == 'winter'".into());
    engine.set_rules(&[exclude]).unwrap();
    let d = decide(&engine, "u", 5);
    assert!(!placed(&d).contains(&"scarf"), "{:?}", placed(&d));
    // Shards remember item-only matches per item; an upsert must make them forget.
    let scarf = ItemSpec::new("scarf").attr("category", "summer");
    engine.upsert_item(scarf).unwrap();
    let d = decide(&engine, "u", 5);
    assert!(placed(&d).contains(&"scarf"), "{:?}", placed(&d));
    assert!(!placed(&d).contains(&"coat"), "{:?}", placed(&d));
    // An inline candidate is matched by its own attributes, never by what was remembered.
    let inline = ItemSpec::new("coat").attr("category", "summer");
    let req = DecideRequest::new("u", [nudge::Candidate::Inline(inline)], 1);
    assert_eq!(engine.decide(req).unwrap().items.len(), 1);
    engine.shutdown();
}
