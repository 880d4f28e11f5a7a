//! nudge choosing a chatbot's tone: each message's sentiment (scored here by the built-in
//! lexicon) enters the user's state, and the tone to answer in follows the user's mood, first
//! from the configured priors alone, then with what rewards taught the model.
//!
//! Run: `cargo run --release --example chatbot`

use mimalloc::MiMalloc;
use nudge::actor::features::FeatureValue;
use nudge::actor::Feature;
use nudge::{Engine, ManualClock, PolicyKind, ToneDecision, ToneRequest};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const T0: u64 = 1_767_225_600_000;

/// A support conversation that turns sour, one message every 40 seconds.
const CONVERSATION: [&str; 8] = [
    "Hi! Thanks, the new app is great",
    "ok, quick question: how do I export my data?",
    "I tried that, but it isn't working",
    "I get an error again. still stuck",
    "this is frustrating, nothing works",
    "honestly useless. I'm really annoyed",
    "worst support ever, absolutely terrible!!",
    "fine. thanks for finally fixing it",
];

fn feature(engine: &Engine, user: &str, f: Feature) -> f64 {
    let export = engine.user(user).unwrap().expect("a user with a message");
    match export.features.into_iter().find(|(g, _)| *g == f) {
        Some((_, FeatureValue::Num(x))) => x,
        _ => 0.0,
    }
}

/// Plays the conversation for `user` and prints each step.
fn converse(engine: &Engine, clock: &ManualClock, user: &str, start_ms: u64) -> Vec<String> {
    println!(
        "{:<44} {:>8} {:>9} {:>7} {:>11} {:>7} {:>7} {:>6}",
        "message", "lexicon", "sentiment", "trend", "tone", "prior", "logit", "prop."
    );
    let mut tones = Vec::new();
    for (k, text) in CONVERSATION.iter().enumerate() {
        let at = start_ms + 40_000 * k as u64;
        clock.set_ms(at);
        let t = engine
            .tone(ToneRequest::new(user).text(*text).at(at).explain(true))
            .expect("a tone");
        let placed = &t.decision.items[0];
        let parts = placed.explain.expect("explained");
        println!(
            "{:<44} {:>8} {:>9.3} {:>7.3} {:>11} {:>7.3} {:>7.3} {:>6.3}",
            text,
            t.sentiment.map_or("-".into(), |s| format!("{s:.3}")),
            feature(engine, user, Feature::Sentiment),
            feature(engine, user, Feature::SentimentTrend),
            t.tone,
            parts.prior,
            parts.logit(),
            placed.propensity
        );
        tones.push(t.tone);
    }
    tones
}

/// How a simulated user answers a tone in a mood: the chance they are helped (the reward).
fn helped(tone: &str, mood: f64) -> f64 {
    match (tone, mood < -0.2) {
        ("empathetic", true) => 0.8,
        ("neutral", true) => 0.4,
        (_, true) => 0.1,
        ("concise", false) => 0.7,
        ("neutral", false) => 0.5,
        _ => 0.3,
    }
}

/// Many conversations with simulated users, each tone decision rewarded when it helped.
/// Returns the mean reward.
fn learn(engine: &Engine, clock: &ManualClock, start_ms: u64, users: u64) -> f64 {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut sum, mut n) = (0.0, 0.0);
    for u in 0..users {
        // Half the conversations go sour, half stay friendly.
        let sour = u % 2 == 0;
        for k in 0..6u64 {
            let at = start_ms + u * 600_000 + k * 30_000;
            clock.set_ms(at);
            let mood = if sour { -0.2 * k as f64 } else { 0.5 };
            let req = ToneRequest::new(format!("sim-{u}")).sentiment(mood).at(at);
            let t: ToneDecision = engine.tone(req).expect("a tone");
            let reward = f64::from(uniform() < helped(&t.tone, mood));
            let item = format!("tone:{}", t.tone);
            engine
                .reward(t.decision.id, &item, reward)
                .expect("a reward");
            sum += reward;
            n += 1.0;
        }
    }
    sum / n
}

fn main() {
    let clock = ManualClock::new(T0);
    let mut cfg = nudge::Config {
        shards: 2,
        seed: 7,
        ..nudge::Config::default()
    };
    cfg.exploration.policy = PolicyKind::EpsilonGreedy;
    cfg.exploration.epsilon = 0.1;
    let engine = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .expect("an engine");
    println!("Tones: concise (prior +1.0 per unit of sentiment, +0.5 of trend), neutral (0),");
    println!(
        "empathetic (-1.5 per unit of sentiment, -1.0 of trend); lexicon: built-in word list.\n"
    );
    println!("1. A new deployment, nothing learned yet: the priors alone.\n");
    let before = converse(&engine, &clock, "alice", T0);

    let start = T0 + 3_600_000;
    let mean = learn(&engine, &clock, start, 400);
    println!("\n2. After 400 simulated conversations (2,400 rewarded tone decisions, mean reward {mean:.3}),");
    println!("   the same conversation with a new user: the learned parts join the priors.\n");
    let later = start + 400 * 600_000 + 3_600_000;
    let after = converse(&engine, &clock, "bob", later);

    let first_empathetic = |t: &[String]| t.iter().position(|x| x == "empathetic");
    println!(
        "\nFirst empathetic answer: message {:?} before learning, {:?} after (1-based).",
        first_empathetic(&before).map(|i| i + 1),
        first_empathetic(&after).map(|i| i + 1)
    );
    engine.shutdown();
}
