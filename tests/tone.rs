//! Issue 15, item 2, through the embedded API: a message's sentiment (given, or scored from
//! its text by the built-in lexicon) enters the user's state, the tone follows the user's mood
//! through the configured priors, rewards on tone decisions teach the model, and bad input is
//! refused without touching the user.

use nudge::actor::features::FeatureValue;
use nudge::actor::Feature;
use nudge::saturation::FrequencyCap;
use nudge::tone::{ToneConfig, ToneSpec};
use nudge::{Config, Engine, ManualClock, PolicyKind, SentimentSource, ToneRequest};

const T0: u64 = 1_732_200_000_000;

fn engine(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Engine {
    let mut cfg = Config {
        shards: 2,
        seed: 4,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    edit(&mut cfg);
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn sentiment(engine: &Engine, user: &str) -> f64 {
    let export = engine.user(user).unwrap().expect("a resident user");
    match export
        .features
        .into_iter()
        .find(|(f, _)| *f == Feature::Sentiment)
    {
        Some((_, FeatureValue::Num(x))) => x,
        other => panic!("no sentiment: {other:?}"),
    }
}

#[test]
fn the_tone_turns_empathetic_as_a_conversation_sours() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let messages = [
        "Hi! Thanks, the new app is great",
        "ok, how do I export my data?",
        "it isn't working, I get an error",
        "still broken. this is useless and I'm frustrated",
        "worst support ever, absolutely terrible!!",
    ];
    let mut tones = Vec::new();
    for (k, text) in messages.iter().enumerate() {
        let req = ToneRequest::new("u1")
            .text(*text)
            .at(T0 + 20_000 * k as u64);
        let t = engine.tone(req.explain(true)).unwrap();
        assert_eq!(t.source, SentimentSource::Lexicon, "{text}");
        let parts = t.decision.items[0].explain.unwrap();
        assert!(
            (parts.logit()
                - parts.bias
                - parts.global
                - parts.personal
                - parts.context
                - parts.state
                - parts.cooccurrence
                - parts.prior)
                .abs()
                < 1e-6
        );
        tones.push(t.tone);
    }
    assert_eq!(
        tones.first().map(String::as_str),
        Some("concise"),
        "{tones:?}"
    );
    assert_eq!(
        tones.last().map(String::as_str),
        Some("empathetic"),
        "{tones:?}"
    );
    assert!(sentiment(&engine, "u1") < 0.0);
    // Another user is untouched by u1's mood.
    let other = engine
        .tone(ToneRequest::new("u2").sentiment(0.7).at(T0))
        .unwrap();
    assert_eq!(other.tone, "concise");
    engine.shutdown();
}

#[test]
fn a_given_score_wins_over_the_text_and_plain_text_records_nothing() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    let t = engine
        .tone(
            ToneRequest::new("u")
                .text("this is great")
                .sentiment(-0.5)
                .at(T0),
        )
        .unwrap();
    assert_eq!(
        (t.source, t.sentiment),
        (SentimentSource::Given, Some(-0.5))
    );
    assert!((sentiment(&engine, "u") + 0.5).abs() < 1e-9);
    let t = engine
        .tone(ToneRequest::new("v").text("what time is it").at(T0))
        .unwrap();
    assert_eq!((t.source, t.sentiment), (SentimentSource::None, None));
    assert_eq!(
        t.tone, "concise",
        "no mood yet: the first tone's prior and ties"
    );
    engine.shutdown();
}

#[test]
fn a_bad_score_is_refused_and_records_nothing() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |_| {});
    for bad in [1.5, f64::NAN, -3.0] {
        let err = engine
            .tone(ToneRequest::new("u").sentiment(bad).at(T0))
            .unwrap_err();
        assert_eq!(err.code(), "bad_request", "{bad}: {err}");
    }
    assert!(engine.user("u").unwrap().is_none(), "nothing recorded");
    engine.shutdown();
}

#[test]
fn rewards_on_tone_decisions_teach_which_tone_works() {
    let clock = ManualClock::new(T0);
    // No priors: only learning can prefer a tone.
    let flat = ToneConfig {
        tones: ["concise", "neutral", "empathetic"]
            .map(|name| ToneSpec {
                name: name.into(),
                ..ToneSpec::default()
            })
            .to_vec(),
    };
    let engine = engine(&clock, |c| {
        c.tone = flat;
        c.exploration.policy = PolicyKind::EpsilonGreedy;
        c.exploration.epsilon = 0.5;
    });
    // Many users, each rewarding the neutral tone and passing on the others.
    for k in 0..400u64 {
        let user = format!("u{}", k % 40);
        let t = engine
            .tone(ToneRequest::new(&user).sentiment(0.0).at(T0 + k * 1_000))
            .unwrap();
        clock.set_ms(T0 + k * 1_000);
        let value = if t.tone == "neutral" { 1.0 } else { 0.0 };
        let item = format!("tone:{}", t.tone);
        engine.reward(t.decision.id, &item, value).unwrap();
    }
    // A new user, greedy: the learned preference decides.
    let mut chosen = std::collections::HashMap::<String, u32>::new();
    for k in 0..50u64 {
        let t = engine
            .tone(
                ToneRequest::new(format!("new{k}"))
                    .at(T0 + 500_000 + k)
                    .explain(true),
            )
            .unwrap();
        if t.decision.items[0].propensity > 0.5 {
            *chosen.entry(t.tone).or_default() += 1;
        }
    }
    let neutral = chosen.get("neutral").copied().unwrap_or(0);
    assert!(
        neutral >= 20,
        "the greedy slot goes to the rewarded tone: {chosen:?}"
    );
    engine.shutdown();
}

#[test]
fn frequency_caps_do_not_silence_a_chatbot() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock, |c| {
        c.saturation.caps = vec![FrequencyCap {
            attribute: None,
            max: 1,
            window_s: 3600,
        }]
    });
    for k in 0..5 {
        let t = engine
            .tone(ToneRequest::new("u").sentiment(0.6).at(T0 + k))
            .unwrap();
        assert_eq!(t.tone, "concise");
    }
    engine.shutdown();
}

/// A tone decision is logged with the message's sentiment: replaying the log after a crash
/// rebuilds the same user (the same priors placed the same tones, trained the same way).
#[test]
fn tone_decisions_replay_exactly_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let start = || {
        let mut cfg = Config {
            shards: 1,
            seed: 4,
            ..Config::default()
        };
        cfg.exploration.policy = PolicyKind::Softmax;
        // The export's segment is read from centroids the log does not carry.
        cfg.segments.k = 0;
        Engine::builder()
            .config(cfg)
            .clock(clock.clone())
            .data_dir(dir.path())
            .build()
            .unwrap()
    };
    let engine = start();
    for (k, s) in [0.6, 0.1, -0.4, -0.8, -0.9].into_iter().enumerate() {
        let at = T0 + 10_000 * k as u64;
        let t = engine
            .tone(ToneRequest::new("u").sentiment(s).at(at))
            .unwrap();
        let item = format!("tone:{}", t.tone);
        engine.reward(t.decision.id, &item, 0.5).unwrap();
    }
    let before = format!("{:?}", engine.user("u").unwrap().unwrap());
    engine.shutdown_without_checkpoint();
    drop(engine);
    let engine = start();
    let after = format!("{:?}", engine.user("u").unwrap().unwrap());
    assert_eq!(before, after);
    engine.shutdown();
}
