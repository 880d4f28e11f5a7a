//! The embedded `Engine` API end to end: learning from clicks, determinism, attribution and
//! expiry, every kind of bad input, back-pressure, export and erasure, concurrency.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nudge::{
    Config, DecideRequest, Engine, Error, Event, EventKind, ItemSpec, ManualClock, OnFull,
    PolicyKind, Problem, UpdateSink, UserExport, UserUpdate,
};

const T0: u64 = 1_732_200_000_000;

const CATEGORIES: [&str; 4] = ["shoes", "books", "music", "garden"];

fn catalog(engine: &Engine) -> Vec<String> {
    let mut ids = Vec::new();
    for c in CATEGORIES {
        for i in 0..5 {
            let id = format!("{c}-{i}");
            engine
                .upsert_item(
                    ItemSpec::new(&id)
                        .attr("category", c)
                        .attr("brand", format!("b{i}")),
                )
                .unwrap();
            ids.push(id);
        }
    }
    ids
}

fn engine_with(clock: &ManualClock, f: impl FnOnce(&mut Config)) -> Engine {
    let mut cfg = Config {
        shards: 2,
        seed: 11,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    f(&mut cfg);
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn ranking(engine: &Engine, user: &str, items: &[String]) -> Vec<String> {
    let d = engine
        .decide(DecideRequest::new(user, items.iter().cloned(), items.len()))
        .unwrap();
    d.items.into_iter().map(|p| p.item).collect()
}

fn scores(engine: &Engine, user: &str, items: &[String]) -> Vec<(String, u32)> {
    let d = engine
        .decide(DecideRequest::new(user, items.iter().cloned(), items.len()))
        .unwrap();
    d.items
        .into_iter()
        .map(|p| (p.item, p.score.to_bits()))
        .collect()
}

#[test]
fn clicks_on_one_category_lift_it_to_the_top_within_a_handful_of_events() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    let before = ranking(&engine, "alice", &items);
    for i in 0..4 {
        clock.advance_ms(2_000);
        engine
            .ingest(Event::new("alice", EventKind::Click).item(format!("garden-{i}")))
            .unwrap();
    }
    let after = ranking(&engine, "alice", &items);
    assert!(
        after[..5].iter().all(|i| i.starts_with("garden-")),
        "after 4 garden clicks the top 5 should be garden items: {after:?} (before: {before:?})"
    );
    // Even the garden item alice never clicked rises above every other category.
    let pos = after.iter().position(|i| i == "garden-4").unwrap();
    assert!(pos < 5, "{after:?}");
}

#[test]
fn another_users_state_and_ranking_are_untouched() {
    let clock = ManualClock::new(T0);
    // Global learning off: then nothing alice does may change bob's scores at all.
    let engine = engine_with(&clock, |c| c.model.global_learning_rate = 0.0);
    let items = catalog(&engine);
    engine
        .ingest(Event::new("bob", EventKind::Click).item("books-1"))
        .unwrap();
    let bob_before = scores(&engine, "bob", &items);
    let bob_state = engine.user("bob").unwrap().unwrap();
    for i in 0..5 {
        engine
            .ingest(Event::new("alice", EventKind::Click).item(format!("shoes-{i}")))
            .unwrap();
    }
    assert_eq!(scores(&engine, "bob", &items), bob_before);
    let bob_after = engine.user("bob").unwrap().unwrap();
    assert_eq!(bits(&bob_after.state), bits(&bob_state.state));
    assert_eq!(
        bits(&bob_after.personal_weights),
        bits(&bob_state.personal_weights)
    );
}

#[test]
fn with_global_learning_on_a_users_personal_state_is_still_their_own() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    ranking(&engine, "bob", &items);
    let bob = engine.user("bob").unwrap().unwrap();
    for i in 0..5 {
        engine
            .ingest(Event::new("alice", EventKind::Click).item(format!("shoes-{i}")))
            .unwrap();
    }
    let after = engine.user("bob").unwrap().unwrap();
    assert!(after.state.iter().all(|&x| x == 0.0));
    assert_eq!(bits(&after.personal_weights), bits(&bob.personal_weights));
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn scripted_run(policy: PolicyKind) -> (Vec<UserExport>, Vec<Vec<String>>) {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| {
        c.shards = 1;
        c.exploration.policy = policy;
    });
    let items = catalog(&engine);
    let mut rankings = Vec::new();
    for step in 0..60u64 {
        clock.advance_ms(1_500);
        let user = format!("u{}", step % 3);
        let item = &items[(step * 7 % 20) as usize];
        let kind = if step % 4 == 0 {
            EventKind::Dwell
        } else {
            EventKind::Click
        };
        let mut ev = Event::new(&user, kind)
            .item(item)
            .context("device", "mobile");
        if kind == EventKind::Dwell {
            ev = ev.value(3.0 + step as f64);
        }
        engine.ingest(ev).unwrap();
        if step % 5 == 0 {
            rankings.push(ranking(&engine, &user, &items));
        }
    }
    let exports = (0..3)
        .map(|u| engine.user(&format!("u{u}")).unwrap().unwrap())
        .collect();
    (exports, rankings)
}

#[test]
fn the_same_events_give_bit_identical_state() {
    for policy in [
        PolicyKind::Greedy,
        PolicyKind::EpsilonGreedy,
        PolicyKind::Softmax,
    ] {
        let (a, ra) = scripted_run(policy);
        let (b, rb) = scripted_run(policy);
        assert_eq!(ra, rb, "{policy:?}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(bits(&x.state), bits(&y.state), "{policy:?}");
            assert_eq!(
                bits(&x.personal_weights),
                bits(&y.personal_weights),
                "{policy:?}"
            );
            assert_eq!(x.training_steps, y.training_steps);
            assert!(x.training_steps > 0);
        }
    }
}

#[test]
fn a_click_inside_the_window_labels_the_decision() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    let d = engine
        .decide(DecideRequest::new("carol", items.iter().cloned(), 3))
        .unwrap();
    let shown = d.items[1].item.clone();
    clock.advance_ms(60_000);
    let ack = engine
        .ingest(Event::new("carol", EventKind::Click).item(&shown))
        .unwrap();
    assert!(ack.attributed && ack.trained);
    let export = engine.user("carol").unwrap().unwrap();
    let open = &export.open_decisions[0];
    assert_eq!(open.id, d.id);
    let labelled: Vec<_> = open.placements.iter().filter(|p| p.1.is_some()).collect();
    assert_eq!(labelled, vec![&(shown, Some(1.0))]);
    // A click on an item that was not shown attributes nothing.
    let other = items
        .iter()
        .find(|i| !d.items.iter().any(|p| &p.item == *i))
        .unwrap();
    let ack = engine
        .ingest(Event::new("carol", EventKind::Click).item(other))
        .unwrap();
    assert!(!ack.attributed);
    assert!(
        ack.trained,
        "a click is a clear outcome even without a decision"
    );
}

#[test]
fn explicit_rewards_and_their_errors() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    let d = engine
        .decide(DecideRequest::new("dan", items.iter().cloned(), 2))
        .unwrap();
    engine.reward(d.id, &d.items[0].item, 1.0).unwrap();
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().rewards_attributed_total, 1);
    let not_shown = items
        .iter()
        .find(|i| !d.items.iter().any(|p| &p.item == *i))
        .unwrap();
    assert!(matches!(
        engine.reward(d.id, not_shown, 1.0),
        Err(Error::NotShown { .. })
    ));
    let unknown: nudge::DecisionId = "0000ffffffffffff".parse().unwrap();
    assert_eq!(
        engine.reward(unknown, "x", 1.0),
        Err(Error::UnknownDecision(unknown))
    );
    assert!(matches!(
        engine.reward(d.id, &d.items[0].item, 2.0),
        Err(Error::Invalid { field: "value", .. })
    ));
    assert!(matches!(
        engine.reward(d.id, &d.items[0].item, f64::NAN),
        Err(Error::Invalid {
            field: "value",
            problem: Problem::NotFinite
        })
    ));
}

#[test]
fn expiry_trains_ignored_top_k_with_the_default_reward() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| {
        c.attribution.window_s = 60;
        c.attribution.train_ignored_top_k = 3;
    });
    let items = catalog(&engine);
    let d = engine
        .decide(DecideRequest::new("erin", items.iter().cloned(), 5))
        .unwrap();
    engine.reward(d.id, &d.items[0].item, 1.0).unwrap();
    let steps_before = engine.user("erin").unwrap().unwrap().training_steps;
    clock.advance_ms(61_000);
    engine.tick().unwrap();
    let export = engine.user("erin").unwrap().unwrap();
    assert!(export.open_decisions.is_empty());
    // Slots 2 and 3 were ignored and are in the top 3: two steps with reward 0.
    assert_eq!(export.training_steps, steps_before + 2);
    assert_eq!(engine.stats().total().decisions_expired_total, 1);
    assert_eq!(
        engine.reward(d.id, &d.items[0].item, 1.0),
        Err(Error::ExpiredDecision(d.id))
    );
    let late = engine
        .ingest(Event::new("erin", EventKind::Click).item(&d.items[1].item))
        .unwrap();
    assert!(!late.attributed);
}

fn invalid_field(r: Result<impl std::fmt::Debug, Error>) -> &'static str {
    match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn every_bad_input_gets_a_typed_error_and_touches_no_one() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| c.max_candidates = 50);
    let items = catalog(&engine);
    engine
        .ingest(Event::new("bystander", EventKind::Click).item("shoes-1"))
        .unwrap();
    let before = engine.user("bystander").unwrap().unwrap();
    let click = |u: &str| Event::new(u, EventKind::Click).item("shoes-1");
    let cases: Vec<(&str, Result<nudge::Ack, Error>)> = vec![
        ("user", engine.ingest(click(""))),
        ("user", engine.ingest(click(&"x".repeat(257)))),
        ("item", engine.ingest(Event::new("u", EventKind::Click))),
        (
            "item",
            engine.ingest(Event::new("u", EventKind::Click).item("")),
        ),
        (
            "value",
            engine.ingest(Event::new("u", EventKind::Dwell).item("shoes-1")),
        ),
        (
            "value",
            engine.ingest(
                Event::new("u", EventKind::Dwell)
                    .item("shoes-1")
                    .value(f64::NAN),
            ),
        ),
        ("value", engine.ingest(click("u").value(f64::INFINITY))),
        (
            "value",
            engine.ingest(Event::new("u", EventKind::Scroll).value(1.5)),
        ),
        (
            "value",
            engine.ingest(
                Event::new("u", EventKind::Rating)
                    .item("shoes-1")
                    .value(7.0),
            ),
        ),
        (
            "value",
            engine.ingest(Event::new("u", EventKind::Sentiment).value(-3.0)),
        ),
        (
            "value",
            engine.ingest(
                Event::new("u", EventKind::Dwell)
                    .item("shoes-1")
                    .value(-1.0),
            ),
        ),
        ("ts", engine.ingest(click("u").at(T0 + 5 * 60 * 1000 + 1))),
        ("context", engine.ingest(click("u").context("", "x"))),
    ];
    for (field, result) in cases {
        assert_eq!(invalid_field(result), field);
    }
    assert!(
        engine.ingest(click("u").at(T0 + 5 * 60 * 1000)).is_ok(),
        "5 min ahead is allowed"
    );
    let many: Vec<String> = (0..51).map(|i| format!("i{i}")).collect();
    assert_eq!(
        invalid_field(engine.decide(DecideRequest::new("u", many, 3))),
        "candidates"
    );
    let none: Vec<String> = Vec::new();
    assert_eq!(
        invalid_field(engine.decide(DecideRequest::new("u", none, 3))),
        "candidates"
    );
    assert_eq!(
        invalid_field(engine.decide(DecideRequest::new("u", items.clone(), 0))),
        "n"
    );
    let bad_vector = ItemSpec::new("v").vector(vec![1.0, f32::NAN]);
    assert_eq!(invalid_field(engine.upsert_item(bad_vector)), "vector");
    assert_eq!(invalid_field(engine.upsert_item(ItemSpec::new(""))), "item");
    let err = engine.event_kind("teleport").unwrap_err();
    assert_eq!(err.code(), "bad_request");
    assert!(err.to_string().contains("teleport"), "{err}");
    let mut ctx = DecideRequest::new("u", items.clone(), 3);
    for i in 0..40 {
        ctx = ctx.context(format!("k{i}"), "v");
    }
    assert_eq!(invalid_field(engine.decide(ctx)), "context");
    // Nothing above reached the bystander, and the engine still serves.
    let after = engine.user("bystander").unwrap().unwrap();
    assert_eq!(after.events_by_kind, before.events_by_kind);
    assert_eq!(bits(&after.state), bits(&before.state));
    assert!(engine.decide(DecideRequest::new("u", items, 3)).is_ok());
}

#[test]
fn event_aliases_resolve_to_built_in_kinds() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| {
        c.event_aliases
            .insert("add_to_cart".into(), "conversion".into());
    });
    assert_eq!(
        engine.event_kind("add_to_cart").unwrap(),
        EventKind::Conversion
    );
    assert_eq!(engine.event_kind("click").unwrap(), EventKind::Click);
}

/// Holds the shard thread inside a push until released, so the inbox can be filled for sure.
struct Gate {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    /// Signals `entered` on the first push, then blocks it until `release` receives.
    fn new(entered: mpsc::Sender<()>, release: mpsc::Receiver<()>) -> Self {
        Gate {
            entered: Mutex::new(Some(entered)),
            release: Mutex::new(release),
        }
    }
}

impl UpdateSink for Gate {
    fn push(&self, _: UserUpdate) {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            // Deliberately blocks the shard (the contract says never to): test only.
            let _ = self.release.lock().unwrap().recv();
        }
    }
}

/// Another thread holding a user's shard: it ingests one click by the user and stops inside
/// the push of a `Gate` subscribed to them until released, so callers queue behind it.
pub(crate) struct HeldShard {
    release: mpsc::Sender<()>,
    holder: std::thread::JoinHandle<Result<nudge::Ack, Error>>,
}

impl HeldShard {
    /// Returns once another thread holds `user`'s shard (its click is on `item`).
    pub(crate) fn hold(engine: &Engine, user: &str, item: &str) -> HeldShard {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        engine
            .subscribe(user, Arc::new(Gate::new(entered_tx, release_rx)))
            .unwrap();
        let holder = {
            let engine = engine.clone();
            let click = Event::new(user, EventKind::Click).item(item);
            std::thread::spawn(move || engine.ingest(click))
        };
        entered_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the holder reached the gate");
        HeldShard { release, holder }
    }

    /// Lets the holder finish; the result of its click.
    pub(crate) fn release(self) -> Result<nudge::Ack, Error> {
        self.release.send(()).unwrap();
        self.holder.join().unwrap()
    }
}

#[test]
fn a_flood_beyond_inbox_capacity_gets_busy_not_a_panic() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| {
        c.shards = 1;
        c.inbox_capacity = 8;
    });
    let held = HeldShard::hold(&engine, "held", "a");
    let fast = engine.clone().on_full(OnFull::Fail);
    let mut senders = Vec::new();
    let (mut busy, mut queued) = (0, 0);
    for i in 0..20 {
        let fast = fast.clone();
        let (tx, rx) = mpsc::channel();
        senders.push(std::thread::spawn(move || {
            let r = fast.ingest(Event::new(format!("f{i}"), EventKind::Click).item("a"));
            let _ = tx.send(());
            r
        }));
        // A refused call returns at once; an accepted one sits in the inbox of the held shard.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if rx.try_recv().is_ok() {
                busy += 1;
                break;
            }
            if engine.stats().shards[0].inbox_depth == queued + 1 {
                queued += 1;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "call {i} neither queued nor refused"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    assert_eq!(
        busy,
        20 - 8,
        "exactly the calls beyond the capacity are refused at once"
    );
    held.release().unwrap();
    let results: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Err(Error::Busy(_))))
            .count(),
        12
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 8);
    assert_eq!(engine.stats().total().busy_total, 12);
    assert!(engine
        .ingest(Event::new("after", EventKind::Click).item("a"))
        .is_ok());
}

#[test]
fn forget_erases_every_trace() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    engine
        .ingest(Event::new("gone", EventKind::Click).item("shoes-0"))
        .unwrap();
    let d = engine
        .decide(DecideRequest::new("gone", items.iter().cloned(), 3))
        .unwrap();
    assert!(engine.user("gone").unwrap().is_some());
    assert!(engine.forget("gone").unwrap());
    assert_eq!(engine.user("gone").unwrap(), None);
    assert!(!engine.forget("gone").unwrap());
    assert_eq!(
        engine.reward(d.id, &d.items[0].item, 1.0),
        Err(Error::ExpiredDecision(d.id))
    );
    assert_eq!(engine.user("never-seen").unwrap(), None);
}

#[test]
fn export_holds_what_the_engine_knows() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    catalog(&engine);
    engine
        .ingest(Event::new("fay", EventKind::Click).item("music-1"))
        .unwrap();
    clock.advance_ms(1000);
    engine
        .ingest(
            Event::new("fay", EventKind::Dwell)
                .item("music-1")
                .value(30.0),
        )
        .unwrap();
    engine
        .ingest(Event::new("fay", EventKind::Sentiment).value(-0.8))
        .unwrap();
    let e = engine.user("fay").unwrap().unwrap();
    assert_eq!(e.user, "fay");
    assert_eq!(e.first_seen_ms, T0);
    assert_eq!(e.last_seen_ms, T0 + 1000);
    assert_eq!(e.events_by_kind[EventKind::Click as usize], 1);
    assert_eq!(e.events_by_kind[EventKind::Dwell as usize], 1);
    assert_eq!(e.events_by_kind[EventKind::Sentiment as usize], 1);
    assert_eq!(e.state.len(), 32);
    assert!(e.state.iter().any(|&x| x != 0.0));
    assert!((e.signals.dwell_mean_s - 30.0).abs() < 1e-3);
    assert!(e.signals.sentiment_trend < -0.5);
    assert!(e.signals.clicks_per_hour > 0.0);
}

#[test]
fn an_absurd_dwell_is_filtered_and_counted() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    catalog(&engine);
    for i in 0..12 {
        clock.advance_ms(10_000);
        let ev = Event::new("gus", EventKind::Dwell)
            .item("books-1")
            .value(20.0 + i as f64);
        assert!(!engine.ingest(ev).unwrap().outlier);
    }
    let state = engine.user("gus").unwrap().unwrap();
    let ack = engine
        .ingest(
            Event::new("gus", EventKind::Dwell)
                .item("books-2")
                .value(80_000.0),
        )
        .unwrap();
    assert!(ack.outlier && !ack.trained);
    engine.flush().unwrap();
    let after = engine.user("gus").unwrap().unwrap();
    assert_eq!(after.signals.outliers_filtered, 1);
    assert_eq!(after.training_steps, state.training_steps);
    assert_eq!(bits(&after.state), bits(&state.state));
    assert_eq!(engine.stats().total().outliers_filtered_total, 1);
}

#[test]
fn explain_parts_sum_to_the_logit() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    engine
        .ingest(Event::new("hal", EventKind::Click).item("shoes-2"))
        .unwrap();
    let d = engine
        .decide(
            DecideRequest::new("hal", items, 3)
                .context("device", "tv")
                .explain(true),
        )
        .unwrap();
    for p in &d.items {
        let parts = p.explain.unwrap();
        let score = 1.0 / (1.0 + (-parts.logit()).exp());
        assert!((score - p.score).abs() < 1e-5, "{parts:?} vs {}", p.score);
    }
    assert!(
        d.items[0].explain.unwrap().state > 0.0,
        "the click shows in the state part"
    );
}

#[test]
fn inline_candidates_are_scored_without_joining_the_catalog() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    catalog(&engine);
    for i in 0..3 {
        engine
            .ingest(Event::new("ida", EventKind::Click).item(format!("shoes-{i}")))
            .unwrap();
    }
    let inline = nudge::Candidate::Inline(ItemSpec::new("new-boot").attr("category", "shoes"));
    let other = nudge::Candidate::Inline(ItemSpec::new("new-rake").attr("category", "garden"));
    let mut req = DecideRequest::new("ida", ["books-1"], 3).explain(true);
    req.candidates.push(inline);
    req.candidates.push(other);
    let d = engine.decide(req).unwrap();
    assert_eq!(d.items[0].item, "new-boot");
    assert_eq!(engine.item("new-boot").unwrap(), None);
    assert_eq!(engine.stats().catalog_items, 20);
}

#[test]
fn concurrent_ingest_matches_a_sequential_count() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    catalog(&engine);
    let users = 10;
    let threads = 4;
    let per_thread = 500;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let user = format!("c{}", (i * 7 + t) % users);
                    let kind = if i % 3 == 0 {
                        EventKind::Impression
                    } else {
                        EventKind::Click
                    };
                    engine
                        .ingest(Event::new(user, kind).item(format!("books-{}", i % 5)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut expected = vec![[0u64; 8]; users];
    for t in 0..threads {
        for i in 0..per_thread {
            let kind = if i % 3 == 0 {
                EventKind::Impression
            } else {
                EventKind::Click
            };
            expected[(i * 7 + t) % users][kind as usize] += 1;
        }
    }
    for (u, want) in expected.iter().enumerate() {
        let got = engine
            .user(&format!("c{u}"))
            .unwrap()
            .unwrap()
            .events_by_kind;
        assert_eq!(&got, want, "user c{u}");
    }
    engine.flush().unwrap();
    assert_eq!(
        engine.stats().total().events_total,
        (threads * per_thread) as u64
    );
}

#[test]
fn batches_keep_input_order_and_isolate_bad_events() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    catalog(&engine);
    let events = vec![
        Event::new("b1", EventKind::Click).item("shoes-1"),
        Event::new("", EventKind::Click).item("shoes-1"),
        Event::new("b2", EventKind::Click).item("shoes-2"),
        Event::new("b3", EventKind::Scroll).value(0.5),
    ];
    let results = engine.ingest_batch(events);
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    assert_eq!(invalid_field(results[1].clone()), "user");
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, 3);
}

#[test]
fn async_forms_work_on_a_tokio_runtime() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let items = catalog(&engine);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let ack = engine
            .ingest_async(Event::new("zed", EventKind::Click).item("music-2"))
            .await
            .unwrap();
        assert!(ack.trained);
        let d = engine
            .decide_async(DecideRequest::new("zed", items, 2))
            .await
            .unwrap();
        engine
            .reward_async(d.id, &d.items[0].item, 0.5, None)
            .await
            .unwrap();
        let acks = engine
            .ingest_batch_async(vec![Event::new("zed", EventKind::Skip).item("music-3")])
            .await;
        assert!(acks[0].is_ok());
        assert!(engine.user_async("zed").await.unwrap().is_some());
        assert!(engine.forget_async("zed").await.unwrap());
    });
}

#[test]
fn shutdown_drains_and_then_refuses() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |_| {});
    let events: Vec<Event> = (0..1000)
        .map(|i| Event::new(format!("s{i}"), EventKind::Click).item("x"))
        .collect();
    let acked = engine
        .ingest_batch(events)
        .into_iter()
        .filter(Result::is_ok)
        .count();
    engine.shutdown();
    assert_eq!(acked, 1000);
    assert_eq!(engine.stats().total().events_total, 1000);
    assert_eq!(
        engine.ingest(Event::new("late", EventKind::Click).item("x")),
        Err(Error::ShuttingDown)
    );
    engine.shutdown();
}

#[test]
fn config_loads_from_a_real_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nudge.toml");
    std::fs::write(&path, "shards = 3\n[model]\ndim = 16\nkappa = 0.5\n").unwrap();
    let cfg = Config::load(Some(&path)).unwrap();
    assert_eq!((cfg.shards, cfg.model.dim, cfg.model.kappa), (3, 16, 0.5));
    let engine = Engine::start(cfg).unwrap();
    assert_eq!(engine.shard_count(), 3);
    engine
        .ingest(Event::new("t", EventKind::Click).item("x"))
        .unwrap();
    assert_eq!(engine.user("t").unwrap().unwrap().state.len(), 16);
    std::fs::write(&path, "[model]\ndim = 1000\n").unwrap();
    assert!(Config::load(Some(&path)).unwrap_err().contains("model.dim"));
}

#[test]
fn the_resident_cap_evicts_and_counts() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| {
        c.shards = 1;
        c.max_users_per_shard = 10;
    });
    for i in 0..25 {
        clock.advance_ms(10);
        engine
            .ingest(Event::new(format!("cap{i}"), EventKind::Click).item("x"))
            .unwrap();
    }
    engine.flush().unwrap();
    let total = engine.stats().total();
    assert_eq!(total.resident_users, 10);
    assert_eq!(total.evictions_total, 15);
    // The most recent user is always resident: eviction picks among older ones.
    assert!(engine.user("cap24").unwrap().is_some());
}

#[test]
fn idle_users_are_passivated_on_tick() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| c.idle_evict_after_s = 60);
    engine
        .ingest(Event::new("sleepy", EventKind::Click).item("x"))
        .unwrap();
    clock.advance_ms(30_000);
    engine
        .ingest(Event::new("awake", EventKind::Click).item("x"))
        .unwrap();
    clock.advance_ms(31_000);
    engine.tick().unwrap();
    assert_eq!(engine.user("sleepy").unwrap(), None);
    assert!(engine.user("awake").unwrap().is_some());
    assert_eq!(engine.stats().total().evictions_total, 1);
}

#[test]
fn stats_count_open_decisions_until_their_window_closes() {
    let clock = ManualClock::new(T0);
    let engine = engine_with(&clock, |c| c.attribution.window_s = 60);
    let items = catalog(&engine);
    for user in ["o1", "o2", "o3"] {
        engine
            .decide(DecideRequest::new(user, items.iter().cloned(), 2))
            .unwrap();
    }
    engine.flush().unwrap();
    let total = engine.stats().total();
    assert_eq!(total.open_decisions, 3);
    assert_eq!(total.decisions_expired_total, 0);
    clock.advance_ms(61_000);
    engine.tick().unwrap();
    let total = engine.stats().total();
    assert_eq!(total.open_decisions, 0, "every window has closed");
    assert_eq!(total.decisions_expired_total, 3);
}

#[test]
fn global_learning_reaches_users_on_other_shards_after_mixing() {
    let clock = ManualClock::new(T0);
    // A mix interval far beyond the test's wall time: only the explicit ticks below mix.
    let interval_ms = 1_000_000;
    let engine = engine_with(&clock, |c| {
        c.shards = 2;
        c.mix_interval_ms = interval_ms;
        c.attribution.window_s = 86_400;
    });
    let items = catalog(&engine);
    let on = |shard: u16| {
        (0..100)
            .map(|i| format!("m{i}"))
            .find(|u| engine.shard_of(&nudge::UserId::new(u).unwrap()).0 == shard)
            .unwrap()
    };
    let (teacher, learner) = (on(0), on(1));
    let score_of = |user: &str, item: &str| {
        let d = engine
            .decide(DecideRequest::new(user, items.iter().cloned(), 20))
            .unwrap();
        d.items.iter().find(|p| p.item == item).unwrap().score
    };
    let before = score_of(&learner, "music-3");
    for _ in 0..20 {
        clock.advance_ms(1000);
        engine
            .ingest(Event::new(&teacher, EventKind::Click).item("music-3"))
            .unwrap();
    }
    // Without a mix the other shard has not seen it.
    assert_eq!(score_of(&learner, "music-3").to_bits(), before.to_bits());
    // Each shard mixes on its first tick and then once per interval; two rounds make sure
    // shard 1 pulls after shard 0 pushed, whatever order the shards ran in.
    for _ in 0..2 {
        clock.advance_ms(interval_ms + 1);
        engine.tick().unwrap();
    }
    let after = score_of(&learner, "music-3");
    assert!(after > before + 0.01, "{before} -> {after}");
    assert!(engine.stats().total().mixes_total >= 2);
}
