//! Learning from a plain event stream (issue 10): events with no decision before them, as a
//! tracking pipeline sends them; impressions as implicit decisions; untracked previews; a
//! history imported with its own timestamps and then served at the present time.

use nudge::{
    Config, DecideRequest, DecisionId, Engine, Error, Event, EventKind, ItemSpec, ManualClock,
    PolicyKind,
};

/// 2024-11-21, when the imported history starts.
const T0: u64 = 1_732_200_000_000;
/// 100 days later, when it is imported (its events are all in the past).
const IMPORTED: u64 = T0 + 100 * 86_400_000;

fn engine(clock: &ManualClock) -> Engine {
    let mut cfg = Config {
        shards: 1,
        seed: 5,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Forty items with no attributes: only what users do can tell them apart.
fn catalog(engine: &Engine) -> Vec<String> {
    let ids: Vec<String> = (0..40).map(|i| format!("film-{i}")).collect();
    for id in &ids {
        engine.upsert_item(ItemSpec::new(id)).unwrap();
    }
    ids
}

fn rating(user: &str, item: &str, stars: f64, ts_ms: u64) -> Event {
    Event::new(user, EventKind::Rating)
        .item(item)
        .value(stars)
        .at(ts_ms)
}

/// 60 users each rate film-(2k) and then film-(2k+1), a few seconds apart, on different days.
fn sequels(engine: &Engine) -> u64 {
    let mut ts = T0;
    for u in 0..60 {
        let k = u % 10;
        let user = format!("fan{u}");
        engine
            .ingest(rating(&user, &format!("film-{}", 2 * k), 4.0, ts))
            .unwrap();
        engine
            .ingest(rating(
                &user,
                &format!("film-{}", 2 * k + 1),
                5.0,
                ts + 5_000,
            ))
            .unwrap();
        ts += 3_600_000;
    }
    ts
}

fn top(engine: &Engine, user: &str, items: &[String], ts_ms: Option<u64>) -> Vec<String> {
    let mut req = DecideRequest::new(user, items.iter().cloned(), 3);
    req.ts_ms = ts_ms;
    engine
        .decide(req.track(false))
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.item)
        .collect()
}

#[test]
fn issue10_events_alone_teach_which_items_go_together() {
    let clock = ManualClock::new(IMPORTED);
    let engine = engine(&clock);
    let items = catalog(&engine);
    let end = sequels(&engine);
    // A new user rates film-6: its sequel film-7 comes first, from events alone.
    engine
        .ingest(rating("newcomer", "film-6", 5.0, end))
        .unwrap();
    let candidates: Vec<String> = items.iter().filter(|i| *i != "film-6").cloned().collect();
    assert_eq!(
        top(&engine, "newcomer", &candidates, Some(end))[0],
        "film-7"
    );
    // Not "everything is liked": a film nobody touched scores well below the sequel.
    let d = engine
        .decide(
            DecideRequest::new("newcomer", ["film-7", "film-39"], 2)
                .at(end)
                .explain(true)
                .track(false),
        )
        .unwrap();
    assert_eq!(d.items[0].item, "film-7");
    assert!(
        d.items[0].score - d.items[1].score > 0.2,
        "{:?}",
        d.items.iter().map(|p| p.score).collect::<Vec<_>>()
    );
    let explain = d.items[0].explain.unwrap();
    assert!(explain.cooccurrence > 0.0, "{explain:?}");
}

#[test]
fn issue10_an_untracked_decision_leaves_nothing_behind() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    let items = catalog(&engine);
    let d = engine
        .decide(DecideRequest::new("u", items.clone(), 5).track(false))
        .unwrap();
    assert_eq!(d.id, DecisionId::UNTRACKED);
    assert_eq!(d.items.len(), 5);
    let export = engine.user("u").unwrap().unwrap();
    assert!(export.open_decisions.is_empty());
    assert!(matches!(
        engine.reward(d.id, &d.items[0].item, 1.0),
        Err(Error::UnknownDecision(_))
    ));
    // A click on a previewed item is not attributed to the preview.
    let ack = engine
        .ingest(Event::new("u", EventKind::Click).item(&d.items[0].item))
        .unwrap();
    assert!(!ack.attributed);
}

#[test]
fn issue10_an_impression_without_a_click_trains_as_ignored_by_event_time() {
    let clock = ManualClock::new(T0);
    let engine = engine(&clock);
    catalog(&engine);
    let shown = |item: &str, ts| {
        engine
            .ingest(
                Event::new("reader", EventKind::Impression)
                    .item(item)
                    .at(ts),
            )
            .unwrap()
    };
    shown("film-1", T0);
    shown("film-2", T0);
    // A click on film-1 five seconds later is attributed to its impression.
    let ack = engine
        .ingest(
            Event::new("reader", EventKind::Click)
                .item("film-1")
                .at(T0 + 5_000),
        )
        .unwrap();
    assert!(ack.attributed && ack.trained);
    let steps = |e: &Engine| e.user("reader").unwrap().unwrap().training_steps;
    let before = steps(&engine);
    // The wall clock moving changes nothing: attribution follows the events' own times.
    clock.set_ms(T0 + 86_400_000);
    engine.flush().unwrap();
    assert_eq!(steps(&engine), before);
    // An event 31 s later (from anyone on the shard) moves event time past `ignored_after_s`:
    // film-2, never clicked, trains once as ignored.
    engine
        .ingest(
            Event::new("other", EventKind::Sentiment)
                .value(0.1)
                .at(T0 + 31_000),
        )
        .unwrap();
    assert_eq!(steps(&engine), before + 1);
    let export = engine.user("reader").unwrap().unwrap();
    assert_eq!(
        export.open_decisions.len(),
        2,
        "both stay open for late clicks"
    );
}

#[test]
fn issue10_a_history_imported_with_its_timestamps_serves_well_at_the_present_time() {
    let clock = ManualClock::new(IMPORTED);
    let engine = engine(&clock);
    let items = catalog(&engine);
    // film-20 is the hit of the imported month: every user rated it.
    let mut ts = T0;
    for u in 0..30 {
        engine
            .ingest(rating(&format!("viewer{u}"), "film-20", 5.0, ts))
            .unwrap();
        engine
            .ingest(rating(
                &format!("viewer{u}"),
                &items[u % 20],
                3.0,
                ts + 1_000,
            ))
            .unwrap();
        ts += 86_400_000;
    }
    let at_history_end = top(&engine, "stranger", &items, Some(ts));
    // A year later, decided "now" (no `ts`): the history has not drained away.
    clock.set_ms(IMPORTED + 365 * 86_400_000);
    let now = top(&engine, "stranger", &items, None);
    assert_eq!(now[0], "film-20");
    assert_eq!(now, at_history_end);
    // The hit's popularity term is what it was at the history's end, not decayed by the year.
    let bias = |ts_ms: Option<u64>| {
        let mut req = DecideRequest::new("stranger", ["film-20"], 1).explain(true);
        req.ts_ms = ts_ms;
        engine.decide(req.track(false)).unwrap().items[0]
            .explain
            .unwrap()
            .bias
    };
    let (then, later) = (bias(Some(ts)), bias(None));
    assert!((then - later).abs() < 1e-4, "{then} vs {later}");
}

#[test]
fn issue10_a_reward_takes_its_own_time() {
    let clock = ManualClock::new(IMPORTED);
    let engine = engine(&clock);
    let items = catalog(&engine);
    let d = engine
        .decide(DecideRequest::new("u", items.clone(), 3).at(T0))
        .unwrap();
    // Replayed from a history: the reward ten seconds after its decision is attributed.
    engine
        .reward_at(d.id, &d.items[0].item, 1.0, Some(T0 + 10_000))
        .unwrap();
    let export = engine.user("u").unwrap().unwrap();
    assert_eq!(export.open_decisions[0].placements[0].1, Some(1.0));
    // A reward from the future is refused, naming `ts`.
    let err = engine
        .reward_at(d.id, &d.items[1].item, 1.0, Some(IMPORTED + 3_600_000))
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "ts", .. }), "{err:?}");
}

#[test]
fn issue10_shards_share_what_their_users_touch_together() {
    let clock = ManualClock::new(IMPORTED);
    let mut cfg = Config {
        shards: 2,
        seed: 5,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    let engine = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap();
    let items = catalog(&engine);
    let shard = |user: &str| engine.shard_of(&nudge::UserId::new(user).unwrap());
    // The fans all live on one shard; the newcomer on the other.
    let fans: Vec<String> = (0..400)
        .map(|u| format!("fan{u}"))
        .filter(|u| shard(u).0 == 0)
        .take(30)
        .collect();
    let newcomer = (0..400)
        .map(|u| format!("new{u}"))
        .find(|u| shard(u).0 == 1)
        .unwrap();
    let mut ts = T0;
    for fan in &fans {
        engine.ingest(rating(fan, "film-6", 4.0, ts)).unwrap();
        engine
            .ingest(rating(fan, "film-7", 5.0, ts + 5_000))
            .unwrap();
        ts += 3_600_000;
    }
    // Mixes hand shard 0's co-occurrences to shard 1: two rounds, since the shards mix in
    // any order (the manual clock moves so that a mix is due each time).
    for _ in 0..2 {
        clock.advance_ms(1_000);
        engine.tick().unwrap();
    }
    engine.ingest(rating(&newcomer, "film-6", 5.0, ts)).unwrap();
    let d = engine
        .decide(
            DecideRequest::new(&newcomer, ["film-7", "film-30"], 2)
                .at(ts)
                .explain(true)
                .track(false),
        )
        .unwrap();
    assert_eq!(d.items[0].item, "film-7");
    assert!(
        d.items[0].explain.unwrap().cooccurrence > 0.0,
        "{:?}",
        d.items[0]
    );
    let _ = items;
}
