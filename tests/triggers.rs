//! Issue 14, item 3, through the embedded API: threshold triggers checked after every event,
//! fired once per crossing, held back by their cooldown (in event time, at its boundary),
//! refused whole with positions, expressible for an engagement drop and a sentiment turn,
//! delivered to a trigger's name subscribers and to sinks, and replayed after a restart
//! without delivering again.

use std::sync::Arc;

use nudge::{
    Config, Engine, Error, Event, EventKind, ManualClock, TriggerConfig, TriggerFiring,
    TriggerSink, UpdateSink, UserUpdate,
};
use parking_lot::Mutex;

const T0: u64 = 1_732_200_000_000;

fn trigger(name: &str, when: &str, cooldown_s: u64) -> TriggerConfig {
    TriggerConfig {
        name: name.into(),
        when: when.into(),
        cooldown_s,
        ..TriggerConfig::default()
    }
}

fn engine(clock: &ManualClock, triggers: Vec<TriggerConfig>) -> Engine {
    let cfg = Config {
        shards: 2,
        seed: 5,
        triggers,
        ..Config::default()
    };
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn scroll(engine: &Engine, user: &str, depth: f64, ts_ms: u64) -> Vec<String> {
    let ack = engine
        .ingest(Event::new(user, EventKind::Scroll).value(depth).at(ts_ms))
        .unwrap();
    ack.triggers.iter().map(|t| t.to_string()).collect()
}

/// Every firing it was handed (a name subscriber's or a sink's).
#[derive(Default)]
struct Recorded(Mutex<Vec<TriggerFiring>>);

impl TriggerSink for Recorded {
    fn fired(&self, firing: &TriggerFiring) {
        self.0.lock().push(firing.clone());
    }
}

impl UpdateSink for Recorded {
    fn push(&self, _update: UserUpdate) {}
    fn fired(&self, firing: &TriggerFiring) {
        self.0.lock().push(firing.clone());
    }
}

impl Recorded {
    fn names(&self) -> Vec<(String, String)> {
        let all = self.0.lock();
        all.iter()
            .map(|f| (f.trigger.to_string(), f.user.clone()))
            .collect()
    }
}

#[test]
fn a_scroll_past_70_percent_fires_offer_in_the_events_reply() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(&clock, vec![trigger("offer", "user.scroll_depth > 0.7", 0)]);
    assert_eq!(engine.triggers().version(), 1);
    // No scroll seen yet: the condition cannot be evaluated, so it does not hold.
    let ack = engine
        .ingest(Event::new("u1", EventKind::Click).item("i1").at(T0))
        .unwrap();
    assert!(ack.triggers.is_empty());
    assert!(scroll(&engine, "u1", 0.5, T0 + 1).is_empty());
    assert_eq!(scroll(&engine, "u1", 0.8, T0 + 2), ["offer"]);
    // Still past 70%: no new crossing.
    assert!(scroll(&engine, "u1", 0.9, T0 + 3).is_empty());
    // Another user crosses on their own.
    assert_eq!(scroll(&engine, "u2", 0.75, T0 + 4), ["offer"]);
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().triggers_fired_total, 2);
    assert_eq!(engine.stats().triggers.fired, [("offer".to_string(), 2)]);
    engine.shutdown();
}

#[test]
fn a_trigger_fires_once_per_crossing_and_respects_its_cooldown() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(&clock, vec![trigger("deep", "user.scroll_depth > 0.7", 60)]);
    let at = |s: u64| T0 + s * 1000;
    // Crossing, leaving, crossing again: once per crossing without a cooldown in the way.
    assert_eq!(scroll(&engine, "u1", 0.9, at(0)), ["deep"]);
    assert!(scroll(&engine, "u1", 0.2, at(10)).is_empty());
    // A crossing 59.999 s after the firing is inside the cooldown: swallowed, and it stays
    // swallowed while the condition holds (the trigger waits for the next crossing).
    assert!(scroll(&engine, "u1", 0.9, at(60) - 1).is_empty());
    assert!(scroll(&engine, "u1", 0.9, at(61)).is_empty());
    assert!(scroll(&engine, "u1", 0.1, at(62)).is_empty());
    assert_eq!(scroll(&engine, "u1", 0.8, at(63)), ["deep"]);
    // Exactly the cooldown after the last firing is allowed.
    assert!(scroll(&engine, "u1", 0.1, at(64)).is_empty());
    assert_eq!(scroll(&engine, "u1", 0.8, at(123)), ["deep"]);
    engine.shutdown();
}

#[test]
fn an_engagement_drop_and_a_sentiment_turn_are_expressible() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(
        &clock,
        vec![
            trigger("sour", "user.sentiment < -0.4", 0),
            trigger("turning", "user.sentiment_trend < -0.3", 0),
            trigger(
                "cooling",
                "user.engagement_per_hour > 20 && user.engagement_velocity * 60 < 0.5 * user.engagement_per_hour",
                0,
            ),
        ],
    );
    let sentiment = |v: f64, ts: u64| {
        let ack = engine
            .ingest(Event::new("u1", EventKind::Sentiment).value(v).at(ts))
            .unwrap();
        ack.triggers
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
    };
    assert!(sentiment(0.8, T0).is_empty());
    assert!(sentiment(0.6, T0 + 60_000).is_empty());
    let fired = sentiment(-0.9, T0 + 3_600_000);
    assert!(fired.contains(&"turning".to_string()), "{fired:?}");
    let mut all = fired;
    all.extend(sentiment(-0.9, T0 + 3_601_000));
    all.extend(sentiment(-0.9, T0 + 3_602_000));
    assert!(all.contains(&"sour".to_string()), "{all:?}");

    // A burst of engagement, then one event after a long pause: the five-minute rate falls
    // below half the hourly one.
    for i in 0..120 {
        let ev = Event::new("u2", EventKind::Click)
            .item("i1")
            .at(T0 + i * 1000);
        assert!(engine.ingest(ev).unwrap().triggers.is_empty());
    }
    let later = Event::new("u2", EventKind::Click)
        .item("i1")
        .at(T0 + 1_800_000);
    let ack = engine.ingest(later).unwrap();
    assert_eq!(ack.triggers.len(), 1, "{ack:?}");
    assert_eq!(&*ack.triggers[0], "cooling");
    engine.shutdown();
}

#[test]
fn a_bad_set_is_refused_whole_with_positions_and_the_running_set_stays() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(&clock, vec![trigger("offer", "user.scroll_depth > 0.7", 0)]);
    let refused = |set: Vec<TriggerConfig>| match engine.set_triggers(&set) {
        Err(Error::Invalid { field, problem }) => {
            assert_eq!(field, "triggers");
            problem.to_string()
        }
        other => panic!("refused, not {other:?}"),
    };
    let syntax = refused(vec![
        trigger("fine", "true", 0),
        trigger("broken", "user.scroll_depth >", 0),
    ]);
    assert!(
        syntax.contains("trigger 1 `broken`: `when` at 1:20 (byte 19)"),
        "{syntax}"
    );
    let typed = refused(vec![trigger("typed", "user.last_device > 3", 0)]);
    assert!(typed.contains("`when` at 1:18 (byte 17)"), "{typed}");
    assert!(typed.contains("cannot compare"), "{typed}");
    let item = refused(vec![trigger("item", "item.category == 'x'", 0)]);
    assert!(
        item.contains("at 1:1 (byte 0)") && item.contains("only `user.*`"),
        "{item}"
    );
    let unknown = refused(vec![trigger("u", "user.nope > 1", 0)]);
    assert!(unknown.contains("unknown feature `user.nope`"), "{unknown}");
    // The set in force is untouched and still fires.
    assert_eq!(engine.triggers().version(), 1);
    assert_eq!(scroll(&engine, "u1", 0.9, T0), ["offer"]);
    // A good replacement: a new version, and the changed trigger with it.
    let v = engine
        .set_triggers(&[trigger("offer", "user.scroll_depth > 0.95", 0)])
        .unwrap();
    assert_eq!((v, engine.triggers().specs()[0].1), (2, 2));
    assert!(scroll(&engine, "u2", 0.9, T0).is_empty());
    assert_eq!(scroll(&engine, "u2", 0.99, T0 + 1), ["offer"]);
    engine.shutdown();
}

#[test]
fn firings_reach_name_subscribers_and_sinks() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(
        &clock,
        vec![
            trigger("offer", "user.scroll_depth > 0.7", 0),
            trigger("lost", "user.scroll_depth < 0.1", 0),
        ],
    );
    let by_name = Arc::new(Recorded::default());
    let sink = Arc::new(Recorded::default());
    let sub = engine.subscribe_trigger("offer", by_name.clone()).unwrap();
    engine.add_trigger_sink(sink.clone());
    scroll(&engine, "u1", 0.9, T0);
    scroll(&engine, "u2", 0.05, T0);
    scroll(&engine, "u3", 0.8, T0);
    assert_eq!(
        by_name.names(),
        [("offer".into(), "u1".into()), ("offer".into(), "u3".into())]
    );
    assert_eq!(sink.names().len(), 3);
    assert_eq!(sink.0.lock()[0].ts_ms, T0);
    assert!(engine.unsubscribe_trigger(sub));
    scroll(&engine, "u4", 0.9, T0);
    assert_eq!(by_name.names().len(), 2);
    assert!(matches!(
        engine.subscribe_trigger("", by_name.clone()),
        Err(Error::Invalid { .. })
    ));
    engine.shutdown();
}

fn durable(dir: &std::path::Path, clock: &ManualClock) -> (Engine, Arc<Recorded>) {
    let mut cfg = Config {
        shards: 2,
        seed: 5,
        triggers: vec![trigger("offer", "user.scroll_depth > 0.7", 600)],
        ..Config::default()
    };
    cfg.data_dir = Some(dir.to_string_lossy().into_owned());
    let engine = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap();
    let sink = Arc::new(Recorded::default());
    engine.add_trigger_sink(sink.clone());
    (engine, sink)
}

#[test]
fn a_restart_replays_triggers_without_delivering_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 3_600_000);
    let (engine, sink) = durable(dir.path(), &clock);
    assert_eq!(scroll(&engine, "u1", 0.9, T0), ["offer"]);
    // A set given over the API is logged: the log replays with it.
    engine
        .set_triggers(&[
            trigger("offer", "user.scroll_depth > 0.7", 600),
            trigger("shallow", "user.scroll_depth < 0.3", 0),
        ])
        .unwrap();
    engine.checkpoint().unwrap();
    assert_eq!(scroll(&engine, "u2", 0.8, T0 + 1), ["offer"]);
    assert_eq!(scroll(&engine, "u3", 0.1, T0 + 2), ["shallow"]);
    assert_eq!(scroll(&engine, "u1", 0.2, T0 + 3), ["shallow"]);
    engine.flush().unwrap();
    assert_eq!(sink.names().len(), 4);
    engine.shutdown_without_checkpoint();
    drop(engine);

    // The restart replays the log past the checkpoint: nothing is delivered again, and the
    // users' marks are as they were (u2 still past 70%, u1 inside its cooldown).
    let (engine, sink) = durable(dir.path(), &clock);
    engine.flush().unwrap();
    assert!(sink.names().is_empty(), "{:?}", sink.names());
    // The hub counts every firing it delivers: the replay handed it none.
    assert!(engine.stats().triggers.fired.is_empty());
    assert!(
        engine.stats().total().triggers_fired_total > 0,
        "replayed, counted"
    );
    assert!(engine.stats().durability.unwrap().recovered_records > 0);
    assert!(scroll(&engine, "u2", 0.9, T0 + 10).is_empty());
    assert!(
        scroll(&engine, "u1", 0.9, T0 + 11).is_empty(),
        "cooldown of 600 s"
    );
    // The set given over the API is the one in force after the start (`DIR/definitions.log`),
    // so `shallow` fires again on u1's next crossing.
    assert_eq!(engine.triggers().specs().len(), 2);
    assert_eq!(scroll(&engine, "u1", 0.2, T0 + 12), ["shallow"]);
    assert_eq!(scroll(&engine, "u1", 0.9, T0 + 600_000), ["offer"]);
    engine.flush().unwrap();
    let u1 = |t: &str| (t.to_string(), "u1".to_string());
    assert_eq!(sink.names(), [u1("shallow"), u1("offer")]);
    engine.shutdown();
}
