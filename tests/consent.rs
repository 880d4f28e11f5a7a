//! Issue 15, item 3, through the embedded API with a real data directory: a consent change in
//! the middle of a stream takes effect on the next request and erases what it must; a user
//! who denied personalization gets the global model and leaves nothing; a user who denied
//! storage is personalized in memory and never reaches the disk; the choice survives
//! restarts, from the log and from a checkpoint.

use std::path::Path;

use crate::checkpoints::{everything, holding};
use nudge::{
    Config, Consent, DecideRequest, DecisionId, Engine, Event, EventKind, FsyncPolicy, ItemSpec,
    ManualClock, PolicyKind,
};

const T0: u64 = 1_732_200_000_000;
const ITEMS: [(&str, &str); 4] = [
    ("scarf", "winter"),
    ("coat", "winter"),
    ("hat", "summer"),
    ("sandals", "summer"),
];

fn start(dir: &Path, clock: &ManualClock) -> Engine {
    // One shard: every user sees the same shared model without waiting for a mix.
    let mut cfg = Config {
        shards: 1,
        seed: 8,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    cfg.durability.fsync = FsyncPolicy::No;
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
