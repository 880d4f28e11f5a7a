//! Issue 15, item 4, through the embedded API: frequency caps hold exactly at their window's
//! boundary (per item and per attribute value), plain impression events count, fatigue
//! demotes until the user engages, diversity limits each value in the top n, a request can
//! bring its own controls or none, propensities stay the policy's probabilities over what is
//! left, and what a user was shown survives a restart.

use nudge::saturation::{Diversity, Fatigue, FrequencyCap, SaturationConfig};
use nudge::{
    Config, DecideRequest, Decision, Engine, Event, EventKind, ItemSpec, ManualClock, PolicyKind,
    SaturationKind,
};

const T0: u64 = 1_732_200_000_000;

const ITEMS: [(&str, &str); 6] = [
    ("scarf", "winter"),
    ("coat", "winter"),
    ("boots", "shoes"),
    ("sneakers", "shoes"),
    ("hat", "summer"),
    ("sandals", "summer"),
];

fn engine_at(
    clock: &ManualClock,
    dir: Option<&std::path::Path>,
    edit: impl FnOnce(&mut Config),
) -> Engine {
    let mut cfg = Config {
        shards: 2,
        seed: 9,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    edit(&mut cfg);
    let mut builder = Engine::builder().config(cfg).clock(clock.clone());
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    let engine = builder.build().unwrap();
    for (id, category) in ITEMS {
        engine
            .upsert_item(ItemSpec::new(id).attr("category", category))
            .unwrap();
    }
    engine
}

fn engine(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Engine {
    engine_at(clock, None, edit)
}

fn item_cap(max: u32, window_s: u64) -> FrequencyCap {
    FrequencyCap {
        attribute: None,
        max,
        window_s,
    }
}

fn decide(engine: &Engine, user: &str, candidates: &[&str], n: usize, at: u64) -> Decision {
    let req = DecideRequest::new(user, candidates.iter().copied(), n).at(at);
    engine.decide(req.explain(true)).unwrap()
}

fn placed(d: &Decision) -> Vec<&str> {
    d.items.iter().map(|p| p.item.as_str()).collect()
}

#[test]
fn an_item_cap_holds_exactly_at_the_edge_of_its_window() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| c.saturation.caps = vec![item_cap(2, 60)]);
    let three = ["scarf", "coat", "boots"];
    assert_eq!(decide(&engine, "u", &three, 3, T0).items.len(), 3);
    assert_eq!(decide(&engine, "u", &three, 3, T0 + 10_000).items.len(), 3);
    // Two impressions of each inside the last 60 s: every candidate is at its cap.
    let d = decide(&engine, "u", &three, 3, T0 + 59_999);
    assert!(d.items.is_empty(), "{:?}", placed(&d));
    let capped: Vec<_> = d
        .saturation
        .iter()
        .filter(|e| e.kind == SaturationKind::ItemCap)
        .collect();
    assert_eq!(capped.len(), 3);
    assert!(capped.iter().all(|e| e.shown == 2));
    // Exactly 60 s after the first impressions they have left the window: one is left in it.
    assert_eq!(decide(&engine, "u", &three, 3, T0 + 60_000).items.len(), 3);
    // Another user is not capped by what this one saw.
    assert_eq!(decide(&engine, "v", &three, 3, T0 + 60_000).items.len(), 3);
    engine.shutdown();
}

#[test]
fn a_value_cap_counts_every_item_with_the_value_and_plain_impressions_count() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| {
        c.saturation.caps = vec![FrequencyCap {
            attribute: Some("category".into()),
            max: 2,
            window_s: 3600,
        }]
    });
    // Two impressions of shoes, one through a decision and one as a plain event.
    let d = decide(&engine, "u", &["boots"], 1, T0);
    assert_eq!(placed(&d), ["boots"]);
    let ev = Event::new("u", EventKind::Impression)
        .item("sneakers")
        .at(T0 + 1_000);
    engine.ingest(ev).unwrap();
    let all: Vec<&str> = ITEMS.iter().map(|(id, _)| *id).collect();
    let d = decide(&engine, "u", &all, 6, T0 + 2_000);
    let shown = placed(&d);
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert!(!shown.contains(&"boots") && !shown.contains(&"sneakers"));
    let e = d
        .saturation
        .iter()
        .find(|e| e.kind == SaturationKind::ValueCap)
        .unwrap();
    assert_eq!(e.value.as_deref(), Some("category=shoes"));
    assert_eq!(e.shown, 2);
    engine.shutdown();
}

#[test]
fn fatigue_demotes_until_the_user_engages() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| {
        c.saturation.fatigue = Some(Fatigue {
            after: 2,
            penalty: 10.0,
        })
    });
    // Teach the user to like the scarf, so it leads.
    for k in 0..3 {
        let click = Event::new("u", EventKind::Click).item("scarf").at(T0 + k);
        engine.ingest(click).unwrap();
    }
    let pair = ["scarf", "hat"];
    let mut t = T0 + 1_000;
    assert_eq!(placed(&decide(&engine, "u", &pair, 1, t))[0], "scarf");
    t += 1_000;
    assert_eq!(placed(&decide(&engine, "u", &pair, 1, t))[0], "scarf");
    // Shown twice without engagement: demoted by 10 logits, below the hat.
    t += 1_000;
    let d = decide(&engine, "u", &pair, 1, t);
    assert_eq!(placed(&d), ["hat"]);
    let e = d
        .saturation
        .iter()
        .find(|e| e.kind == SaturationKind::Fatigue)
        .unwrap();
    assert_eq!(
        (e.item.as_deref(), e.shown, e.delta),
        (Some("scarf"), 2, -10.0)
    );
    // A click on the scarf ends its fatigue.
    t += 1_000;
    engine
        .ingest(Event::new("u", EventKind::Click).item("scarf").at(t))
        .unwrap();
    t += 1_000;
    let d = decide(&engine, "u", &pair, 1, t);
    assert_eq!(placed(&d), ["scarf"]);
    assert!(d.saturation.is_empty());
    engine.shutdown();
}

#[test]
fn diversity_limits_each_value_in_the_top_n_under_exploration() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| {
        c.exploration.policy = PolicyKind::Softmax;
        c.exploration.temperature = 1.0;
        c.saturation.diversity = Some(Diversity {
            attribute: "category".into(),
            max_per_value: 1,
        })
    });
    let all: Vec<&str> = ITEMS.iter().map(|(id, _)| *id).collect();
    for u in 0..50 {
        let d = decide(&engine, &format!("u{u}"), &all, 4, T0 + u);
        // Three values, one each: three placements, one per category.
        let mut cats: Vec<&str> = placed(&d)
            .iter()
            .map(|id| ITEMS.iter().find(|(i, _)| i == id).unwrap().1)
            .collect();
        cats.sort();
        assert_eq!(cats, ["shoes", "summer", "winter"]);
        assert_eq!(
            d.saturation
                .iter()
                .filter(|e| e.kind == SaturationKind::Diversity)
                .count(),
            3
        );
        let product: f32 = d.items.iter().map(|p| p.propensity).product();
        assert!(product > 0.0 && product <= 1.0);
    }
    engine.shutdown();
}

#[test]
fn a_request_brings_its_own_controls_or_none() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| c.saturation.caps = vec![item_cap(1, 60)]);
    assert_eq!(decide(&engine, "u", &["hat"], 1, T0).items.len(), 1);
    assert!(decide(&engine, "u", &["hat"], 1, T0 + 1).items.is_empty());
    // `SaturationConfig::default()` turns every control off for this decision.
    let off = DecideRequest::new("u", ["hat"], 1)
        .at(T0 + 2)
        .saturation(SaturationConfig::default());
    assert_eq!(engine.decide(off).unwrap().items.len(), 1);
    // A request's own cap, stricter than nothing, looser than the engine's.
    let own = SaturationConfig {
        caps: vec![item_cap(5, 60)],
        ..Default::default()
    };
    let loose = DecideRequest::new("u", ["hat"], 1)
        .at(T0 + 3)
        .saturation(own);
    assert_eq!(engine.decide(loose).unwrap().items.len(), 1);
    // A bad one is refused, naming the field.
    let bad = SaturationConfig {
        caps: vec![item_cap(0, 60)],
        ..Default::default()
    };
    let err = engine
        .decide(DecideRequest::new("u", ["hat"], 1).saturation(bad))
        .unwrap_err();
    assert_eq!(err.code(), "bad_request");
    assert!(err.to_string().contains("saturation.caps[0].max"), "{err}");
    engine.shutdown();
}

/// With a softmax policy and a fixed state (previews change nothing), the first slot's
/// reported propensity matches the frequency of its choice over what a cap leaves.
#[test]
fn propensities_are_the_frequencies_over_what_the_caps_leave() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| {
        c.exploration.policy = PolicyKind::Softmax;
        c.exploration.temperature = 0.5;
        c.saturation.caps = vec![item_cap(1, 3600)];
    });
    for k in 0..4 {
        let click = Event::new("u", EventKind::Click).item("coat").at(T0 + k);
        engine.ingest(click).unwrap();
    }
    // The scarf is capped; coat, boots and hat share the first slot.
    decide(&engine, "u", &["scarf"], 1, T0 + 10);
    let three = ["scarf", "coat", "boots", "hat"];
    let draws = 4_000;
    let mut counts = std::collections::HashMap::<String, (u32, f32)>::new();
    for k in 0..draws {
        let req = DecideRequest::new("u", three, 1)
            .at(T0 + 20 + k)
            .track(false);
        let d = engine.decide(req).unwrap();
        assert_ne!(d.items[0].item, "scarf");
        let e = counts.entry(d.items[0].item.clone()).or_default();
        e.0 += 1;
        e.1 = d.items[0].propensity;
    }
    let total: f32 = counts.values().map(|(_, p)| p).sum();
    assert!(
        (total - 1.0).abs() < 1e-4,
        "propensities over what is left sum to 1: {counts:?}"
    );
    for (item, (n, p)) in &counts {
        let freq = f64::from(*n) / f64::from(draws as u32);
        let sd = (f64::from(*p) * (1.0 - f64::from(*p)) / f64::from(draws as u32)).sqrt();
        assert!(
            (freq - f64::from(*p)).abs() < 4.0 * sd + 1e-3,
            "{item}: {freq} vs {p}"
        );
    }
    engine.shutdown();
}

#[test]
fn what_a_user_was_shown_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let caps = |c: &mut Config| c.saturation.caps = vec![item_cap(1, 3600)];
    let engine = engine_at(&clock, Some(dir.path()), caps);
    decide(&engine, "u", &["hat"], 1, T0);
    // A request's own cap is logged with its decision, so replay places the same way.
    let own = SaturationConfig {
        caps: vec![item_cap(1, 3600)],
        ..Default::default()
    };
    let req = DecideRequest::new("u", ["coat"], 1)
        .at(T0 + 1)
        .saturation(own);
    engine.decide(req).unwrap();
    // First from the log alone, then from the checkpoint a clean shutdown writes.
    engine.shutdown_without_checkpoint();
    drop(engine);
    for at in [T0 + 2, T0 + 3] {
        let engine = engine_at(&clock, Some(dir.path()), caps);
        // A preview, so the check itself shows nothing.
        let four = ["hat", "coat", "boots", "scarf"];
        let req = DecideRequest::new("u", four, 4).at(at).track(false);
        let d = engine.decide(req).unwrap();
        assert_eq!(placed(&d).len(), 2, "{:?}", placed(&d));
        assert!(!placed(&d).contains(&"hat") && !placed(&d).contains(&"coat"));
        engine.shutdown();
    }
}

#[test]
fn controls_load_from_the_config_file_and_a_bad_one_refuses_to_start() {
    let toml = r#"
        [saturation]
        max_tracked = 128
        fatigue = { after = 3, penalty = 0.5 }
        diversity = { attribute = "category", max_per_value = 2 }

        [[saturation.caps]]
        max = 3
        window_s = 3600

        [[saturation.caps]]
        attribute = "brand"
        max = 10
        window_s = 86400
    "#;
    let cfg = Config::from_toml_with_env(toml, std::iter::empty()).unwrap();
    let s = &cfg.saturation;
    assert_eq!(s.caps.len(), 2);
    assert_eq!(s.caps[1].attribute.as_deref(), Some("brand"));
    assert_eq!(s.fatigue.as_ref().map(|f| f.after), Some(3));
    assert_eq!(s.diversity.as_ref().map(|d| d.max_per_value), Some(2));
    let bad = toml.replace("max = 10", "max = 100");
    let err = Config::from_toml_with_env(&bad, std::iter::empty()).unwrap_err();
    assert!(err.contains("saturation.caps[1].max"), "{err}");
    let typo = toml.replace("window_s = 86400", "window = 86400");
    let err = Config::from_toml_with_env(&typo, std::iter::empty()).unwrap_err();
    assert!(err.contains("window"), "{err}");
}
