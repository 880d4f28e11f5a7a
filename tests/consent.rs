//! Issue 15, item 3, through the embedded API with a real data directory: a consent change in
//! the middle of a stream takes effect on the next request and erases what it must; a user
//! who denied personalization gets the global model and leaves nothing; a user who denied
//! storage is personalized in memory and never reaches the disk; the choice survives
//! restarts, from the log and from a checkpoint. Issue 15's gaps, closed: template decisions
//! for either limited consent are served (as previews, with exact propensities) and keep the
//! promise; a memory-only user exports what memory holds; their triggers fire.

use std::path::Path;

use crate::checkpoints::{everything, holding};
use std::collections::HashMap;
use std::sync::Arc;

use nudge::template::{TemplateRequest, TemplateSpec};
use nudge::{
    Config, Consent, DecideRequest, DecisionId, Engine, Event, EventKind, FsyncPolicy, ItemSpec,
    ManualClock, PolicyKind, TriggerConfig, TriggerFiring, TriggerSink, UpdateSink, UserUpdate,
};
use parking_lot::Mutex;

const T0: u64 = 1_732_200_000_000;
const ITEMS: [(&str, &str); 4] = [
    ("scarf", "winter"),
    ("coat", "winter"),
    ("hat", "summer"),
    ("sandals", "summer"),
];

fn start(dir: &Path, clock: &ManualClock) -> Engine {
    start_with(dir, clock, |_| {})
}

fn start_with(dir: &Path, clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Engine {
    // One shard: every user sees the same shared model without waiting for a mix.
    let mut cfg = Config {
        shards: 1,
        seed: 8,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    cfg.durability.fsync = FsyncPolicy::No;
    edit(&mut cfg);
    let e = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .data_dir(dir)
        .build()
        .unwrap();
    for (id, category) in ITEMS {
        e.upsert_item(ItemSpec::new(id).attr("category", category))
            .unwrap();
    }
    e
}

fn clicks(e: &Engine, user: &str, item: &str, n: u64, from: u64) {
    for k in 0..n {
        let ev = Event::new(user, EventKind::Click).item(item).at(from + k);
        e.ingest(ev).unwrap();
    }
}

fn ranking(e: &Engine, user: &str, at: u64) -> Vec<String> {
    let ids = ITEMS.map(|(id, _)| id);
    let d = e.decide(DecideRequest::new(user, ids, 4).at(at)).unwrap();
    d.items.into_iter().map(|p| p.item).collect()
}

const DENY_PERSONALIZATION: Consent = Consent {
    personalization: false,
    storage: true,
};
const DENY_STORAGE: Consent = Consent {
    personalization: true,
    storage: false,
};

#[test]
fn denying_personalization_erases_the_user_and_keeps_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start(dir.path(), &clock);
    clicks(&e, "ann", "sandals", 5, T0);
    assert!(e.user("ann").unwrap().is_some());
    assert!(
        e.set_consent("ann", DENY_PERSONALIZATION).unwrap(),
        "erased"
    );
    assert!(e.user("ann").unwrap().is_none());
    // The next event is acknowledged and withheld; nothing is kept.
    let ack = e
        .ingest(Event::new("ann", EventKind::Click).item("hat").at(T0 + 10))
        .unwrap();
    assert!(ack.withheld && !ack.trained, "{ack:?}");
    assert!(e.user("ann").unwrap().is_none());
    // Her decisions are the global model's: the same as a stranger's, and recorded nowhere.
    let d = e
        .decide(DecideRequest::new("ann", ITEMS.map(|(id, _)| id), 2).at(T0 + 20))
        .unwrap();
    assert_eq!(d.id, DecisionId::UNTRACKED);
    assert_eq!(
        ranking(&e, "ann", T0 + 21),
        ranking(&e, "stranger", T0 + 21)
    );
    assert!(e.user("ann").unwrap().is_none());
    assert_eq!(e.consent("ann").unwrap(), DENY_PERSONALIZATION);
    // Granting it again starts from nothing.
    assert!(!e.set_consent("ann", Consent::GRANTED).unwrap());
    assert!(
        !e.ingest(Event::new("ann", EventKind::Click).item("hat").at(T0 + 30))
            .unwrap()
            .withheld
    );
    assert!(e.user("ann").unwrap().is_some());
    e.shutdown();
}

#[test]
fn denying_storage_personalizes_in_memory_and_nothing_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start(dir.path(), &clock);
    clicks(&e, "bob-the-private", "coat", 3, T0);
    e.checkpoint().unwrap();
    assert!(
        !holding(&everything(dir.path()), b"bob-the-private").is_empty(),
        "stored before"
    );
    assert!(e.set_consent("bob-the-private", DENY_STORAGE).unwrap());
    let before_sandals = ranking(&e, "stranger", T0 + 50);
    // In memory from now on: his clicks move his own ranking…
    clicks(&e, "bob-the-private", "sandals", 4, T0 + 100);
    let sandals = |user: &str| {
        let d = e.decide(DecideRequest::new(user, ["sandals"], 1).at(T0 + 200));
        d.unwrap().items[0].score
    };
    let (mine, theirs) = (sandals("bob-the-private"), sandals("stranger"));
    assert!(mine > theirs + 0.1, "{mine} vs {theirs}");
    // …and not the shared model: a stranger ranks as before his clicks on sandals.
    assert_eq!(ranking(&e, "stranger", T0 + 200), before_sandals);
    // After the next checkpoint, no file of the directory holds his id.
    e.checkpoint().unwrap();
    let files = everything(dir.path());
    assert!(
        holding(&files, b"bob-the-private").is_empty(),
        "{:?}",
        holding(&files, b"bob-the-private")
    );
    e.shutdown();
    drop(e);
    // A restart forgets his memory-only state, and keeps his choice.
    let e = start(dir.path(), &clock);
    assert_eq!(e.consent("bob-the-private").unwrap(), DENY_STORAGE);
    assert!(e.user("bob-the-private").unwrap().is_none());
    e.shutdown();
}

#[test]
fn a_consent_change_replays_from_the_log_and_takes_effect_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start(dir.path(), &clock);
    // Mid-stream: the events before the change are applied, the ones after are not.
    let batch = vec![
        Event::new("cy", EventKind::Click).item("hat").at(T0),
        Event::new("cy", EventKind::Click).item("hat").at(T0 + 1),
    ];
    assert!(e
        .ingest_batch(batch)
        .iter()
        .all(|r| !r.as_ref().unwrap().withheld));
    e.set_consent("cy", DENY_PERSONALIZATION).unwrap();
    let after = e
        .ingest(Event::new("cy", EventKind::Click).item("hat").at(T0 + 2))
        .unwrap();
    assert!(after.withheld);
    e.shutdown_without_checkpoint();
    drop(e);
    let e = start(dir.path(), &clock);
    assert_eq!(
        e.consent("cy").unwrap(),
        DENY_PERSONALIZATION,
        "from the log"
    );
    assert!(e.user("cy").unwrap().is_none(), "the replay erased her too");
    assert!(
        e.ingest(Event::new("cy", EventKind::Click).item("hat").at(T0 + 3))
            .unwrap()
            .withheld
    );
    e.shutdown();
    drop(e);
    let e = start(dir.path(), &clock);
    assert_eq!(
        e.consent("cy").unwrap(),
        DENY_PERSONALIZATION,
        "from the checkpoint"
    );
    e.shutdown();
}

#[test]
fn with_a_pseudonymization_key_no_id_reaches_memory_logs_or_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = Config {
        shards: 2,
        seed: 8,
        ..Config::default()
    };
    cfg.consent.pseudonymize_key = "a long random secret".into();
    let e = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .data_dir(dir.path())
        .build()
        .unwrap();
    e.upsert_item(ItemSpec::new("hat")).unwrap();
    clicks(&e, "dana.the.customer@example.com", "hat", 3, T0);
    let export = e.user("dana.the.customer@example.com").unwrap().unwrap();
    assert!(
        export.user.starts_with("p-") && export.user.len() == 34,
        "{}",
        export.user
    );
    assert!(
        e.forget("dana.the.customer@example.com").unwrap(),
        "found through its pseudonym"
    );
    clicks(&e, "dana.the.customer@example.com", "hat", 1, T0 + 10);
    e.checkpoint().unwrap();
    let files = everything(dir.path());
    assert!(holding(&files, b"dana.the.customer").is_empty());
    assert!(
        !holding(&files, export.user.as_bytes()).is_empty(),
        "stored under the pseudonym"
    );
    e.shutdown();
}

/// headline × 3, button × 2; the body reads the user's scroll depth.
fn promo() -> TemplateSpec {
    TemplateSpec::new(
        "promo",
        "<h1>{{headline}}</h1><b>{{button}}</b><i>{{user.scroll_depth}}</i>",
    )
    .slot(
        "headline",
        [("h1", "Hi"), ("h2", "Read on"), ("h3", "Welcome")],
    )
    .slot("button", [("b1", "Buy"), ("b2", "Go")])
}

/// An engine whose shared model has learned to prefer headline `h2` (from users with full
/// consent), under softmax, so that propensities are far from 0, 1 and uniform.
fn trained_templates(dir: &Path, clock: &ManualClock) -> Engine {
    let e = start_with(dir, clock, |cfg| {
        cfg.exploration.policy = PolicyKind::Softmax;
        cfg.exploration.temperature = 4.0;
    });
    e.register_template(promo()).unwrap();
    for i in 0..200 {
        let user = format!("trainer-{}", i % 10);
        let d = e
            .decide_template(TemplateRequest::new(user, "promo").at(T0 + i))
            .unwrap();
        let reward = if d.slots[0].variant == "h2" { 1.0 } else { 0.0 };
        e.reward_decision_at(d.id, reward, Some(T0 + i)).unwrap();
    }
    e
}

/// Within `z` standard errors of a binomial proportion `p` over `n` trials.
fn close(observed: usize, n: usize, p: f64, z: f64) -> bool {
    let freq = observed as f64 / n as f64;
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    (freq - p).abs() <= z * sd + 1e-9
}

/// `n` template decisions for `user` from `from` on: each is a preview (recorded nowhere)
/// whose propensity is the product of its slots', and each headline's frequency is its
/// propensity. Returns each headline's propensity.
fn served_as_previews(e: &Engine, user: &str, from: u64, n: u64) -> HashMap<String, f32> {
    let mut seen: HashMap<String, (usize, f32)> = HashMap::new();
    for i in 0..n {
        // Tracking asked for: limited consent makes it a preview anyway.
        let d = e
            .decide_template(TemplateRequest::new(user, "promo").at(from + i))
            .unwrap();
        assert_eq!(d.id, DecisionId::UNTRACKED, "{d:?}");
        assert_eq!(d.slots.len(), 2);
        let product: f64 = d.slots.iter().map(|s| f64::from(s.propensity)).product();
        assert!((d.propensity - product).abs() < 1e-9, "{d:?}");
        assert!(d
            .slots
            .iter()
            .all(|s| s.propensity > 0.0 && s.propensity <= 1.0));
        let head = &d.slots[0];
        let entry = seen
            .entry(head.variant.clone())
            .or_insert((0, head.propensity));
        entry.0 += 1;
        assert!((entry.1 - head.propensity).abs() < 1e-6, "one state: {d:?}");
    }
    for (v, (count, p)) in &seen {
        let ok = close(*count, n as usize, f64::from(*p), 4.5);
        assert!(ok, "{user}: headline {v}: {count}/{n} against {p}");
    }
    seen.into_iter().map(|(v, (_, p))| (v, p)).collect()
}

#[test]
fn a_template_decision_without_personalization_uses_the_global_model_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = trained_templates(dir.path(), &clock);
    let user = "ann-the-private";
    e.set_consent(user, DENY_PERSONALIZATION).unwrap();
    // A stranger's first decision is the global model's too (a new user has no state).
    let stranger = e
        .decide_template(TemplateRequest::new("stranger", "promo").track(false))
        .unwrap();
    let headlines = served_as_previews(&e, user, T0 + 1_000, 1_500);
    let theirs = &stranger.slots[0];
    let mine = headlines[&theirs.variant];
    assert!(
        (mine - theirs.propensity).abs() < 1e-6,
        "{mine} vs {theirs:?}"
    );
    assert!(
        (0.5..0.99).contains(&headlines["h2"]),
        "learned, not uniform nor certain: {headlines:?}"
    );
    // Nothing is held of her, and a reward has nothing to train.
    assert!(e.user(user).unwrap().is_none());
    assert!(e.reward_decision(DecisionId::UNTRACKED, 1.0).is_err());
    assert!(e.user(user).unwrap().is_none());
    e.checkpoint().unwrap();
    let files = everything(dir.path());
    assert!(holding(&files, user.as_bytes()).is_empty());
    e.shutdown();
}

#[test]
fn a_template_decision_without_storage_reads_memory_only_and_nothing_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = trained_templates(dir.path(), &clock);
    let user = "bob-the-private";
    e.set_consent(user, DENY_STORAGE).unwrap();
    let scrolled = Event::new(user, EventKind::Scroll).value(0.75).at(T0 + 900);
    e.ingest(scrolled).unwrap();
    let d = e
        .decide_template(TemplateRequest::new(user, "promo").at(T0 + 950))
        .unwrap();
    assert!(
        d.rendered.ends_with("<i>0.75</i>"),
        "his live feature: {d:?}"
    );
    let headlines = served_as_previews(&e, user, T0 + 1_000, 1_500);
    assert!(
        (0.5..0.99).contains(&headlines["h2"]),
        "learned, not uniform nor certain: {headlines:?}"
    );
    assert!(e.reward_decision(d.id, 1.0).is_err());
    // His export is what memory holds: the scroll, no decision opened.
    let export = e.user(user).unwrap().expect("held in memory");
    assert!(export.memory_only && export.open_decisions.is_empty());
    e.checkpoint().unwrap();
    let files = everything(dir.path());
    assert!(
        holding(&files, user.as_bytes()).is_empty(),
        "{:?}",
        holding(&files, user.as_bytes())
    );
    e.shutdown_without_checkpoint();
    drop(e);
    // Replaying the log brings nothing of him back.
    let e = start(dir.path(), &clock);
    assert_eq!(e.consent(user).unwrap(), DENY_STORAGE);
    assert!(e.user(user).unwrap().is_none());
    e.shutdown();
}

#[test]
fn a_memory_only_user_exports_what_memory_holds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start(dir.path(), &clock);
    clicks(&e, "cat", "hat", 2, T0);
    assert!(!e.user("cat").unwrap().unwrap().memory_only);
    e.set_consent("cat", DENY_STORAGE).unwrap();
    assert!(e.user("cat").unwrap().is_none(), "erased, nothing new yet");
    clicks(&e, "cat", "coat", 3, T0 + 100);
    let scrolled = Event::new("cat", EventKind::Scroll).value(0.5).at(T0 + 110);
    e.ingest(scrolled).unwrap();
    let export = e.user("cat").unwrap().expect("held in memory");
    assert!(export.memory_only, "{export:?}");
    assert_eq!(export.user, "cat");
    assert_eq!(export.events_by_kind[EventKind::Click as usize], 3);
    assert_eq!(export.events_by_kind[EventKind::Scroll as usize], 1);
    assert_eq!(
        (export.first_seen_ms, export.last_seen_ms),
        (T0 + 100, T0 + 110)
    );
    assert!(
        export.state.iter().any(|x| *x != 0.0),
        "the clicks moved it"
    );
    assert!(
        export.personal_weights.iter().all(|w| *w == 0.0),
        "nothing trained"
    );
    assert_eq!(export.training_steps, 0);
    let depth = export
        .features
        .iter()
        .find(|(f, _)| f.name() == "scroll_depth");
    assert_eq!(format!("{:?}", depth.unwrap().1), "Num(0.5)");
    // Personalization denied: nothing is held, so nothing is exported.
    e.set_consent("cat", DENY_PERSONALIZATION).unwrap();
    clicks(&e, "cat", "coat", 1, T0 + 200);
    assert!(e.user("cat").unwrap().is_none());
    e.shutdown();
}

/// Every firing handed to it.
#[derive(Default)]
struct Firings(Mutex<Vec<TriggerFiring>>);

impl TriggerSink for Firings {
    fn fired(&self, firing: &TriggerFiring) {
        self.0.lock().push(firing.clone());
    }
}

/// A subscriber: each `user_update`'s triggers, and each firing pushed by name.
#[derive(Default)]
struct Pushes(Mutex<Vec<Vec<String>>>, Firings);

impl UpdateSink for Pushes {
    fn push(&self, update: UserUpdate) {
        let triggers = update.triggers.iter().map(|t| t.to_string()).collect();
        self.0.lock().push(triggers);
    }
    fn fired(&self, firing: &TriggerFiring) {
        self.1.fired(firing);
    }
}

#[test]
fn a_memory_only_users_triggers_fire_in_the_reply_and_to_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start_with(dir.path(), &clock, |cfg| {
        cfg.triggers = vec![TriggerConfig {
            name: "offer".into(),
            when: "user.scroll_depth > 0.7".into(),
            cooldown_s: 600,
            ..TriggerConfig::default()
        }];
    });
    let sink = Arc::new(Firings::default());
    e.add_trigger_sink(sink.clone());
    let user = "dee-the-private";
    e.set_consent(user, DENY_STORAGE).unwrap();
    let (by_user, by_name) = (Arc::new(Pushes::default()), Arc::new(Pushes::default()));
    e.subscribe(user, by_user.clone()).unwrap();
    e.subscribe_trigger("offer", by_name.clone()).unwrap();
    let scroll = |depth: f64, ts_ms: u64| {
        let ack = e
            .ingest(Event::new(user, EventKind::Scroll).value(depth).at(ts_ms))
            .unwrap();
        ack.triggers
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
    };
    assert!(scroll(0.5, T0).is_empty());
    assert_eq!(scroll(0.8, T0 + 1_000), ["offer"]);
    assert!(
        scroll(0.9, T0 + 2_000).is_empty(),
        "still holds: no new crossing"
    );
    assert!(scroll(0.2, T0 + 3_000).is_empty());
    assert!(scroll(0.95, T0 + 4_000).is_empty(), "inside the cooldown");
    let fired: Vec<(String, String, u64)> = (sink.0.lock().iter())
        .map(|f| (f.trigger.to_string(), f.user.clone(), f.ts_ms))
        .collect();
    assert_eq!(fired, [("offer".to_string(), user.to_string(), T0 + 1_000)]);
    assert_eq!(by_name.1 .0.lock().len(), 1, "the name's subscriber");
    let updates = by_user.0.lock().clone();
    assert_eq!(updates.len(), 5, "one update per event: {updates:?}");
    assert_eq!(updates[1], ["offer"], "{updates:?}");
    assert!(e.user(user).unwrap().unwrap().memory_only);
    // The marks are memory only: nothing of hers is on disk, and a restart forgets them.
    e.checkpoint().unwrap();
    assert!(holding(&everything(dir.path()), user.as_bytes()).is_empty());
    e.shutdown();
    drop(e);
    let e = start_with(dir.path(), &clock, |cfg| {
        cfg.triggers = vec![TriggerConfig {
            name: "offer".into(),
            when: "user.scroll_depth > 0.7".into(),
            cooldown_s: 600,
            ..TriggerConfig::default()
        }];
    });
    assert_eq!(
        e.ingest(
            Event::new(user, EventKind::Scroll)
                .value(0.8)
                .at(T0 + 5_000)
        )
        .unwrap()
        .triggers
        .len(),
        1,
        "a new memory-only user: the first crossing counts"
    );
    e.shutdown();
}

#[test]
fn a_memory_only_users_retried_event_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start(dir.path(), &clock);
    e.set_consent("dee", DENY_STORAGE).unwrap();
    let scroll = |at: u64| {
        let ev = Event::new("dee", EventKind::Scroll).value(0.5).at(at);
        e.ingest(ev.event_id("msg-1")).unwrap()
    };
    assert!(!scroll(T0 + 10).duplicate);
    assert!(scroll(T0 + 20).duplicate, "a retry within the window");
    let export = e.user("dee").unwrap().expect("held in memory");
    assert_eq!(export.events_by_kind[EventKind::Scroll as usize], 1);
    // Another user's event may carry the same id: the sets are not shared with anyone
    // else's, and a full-consent user's retry is still caught by the durable set.
    let other = Event::new("eve", EventKind::Scroll).value(0.5).at(T0 + 30);
    assert!(!e.ingest(other.clone().event_id("msg-1")).unwrap().duplicate);
    assert!(e.ingest(other.event_id("msg-1")).unwrap().duplicate);
    e.shutdown();
}
