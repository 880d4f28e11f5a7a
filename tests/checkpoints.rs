//! Checkpoints and passivation (issue 11, items 3–6): the store behind the log. Real files in
//! temporary directories. A checkpoint deletes the log it covers and recovery starts from it;
//! an evicted user leaves memory and comes back equal; an erased user's id is nowhere in the
//! data directory after the next checkpoint; a damaged store refuses to start, naming it.

use std::path::Path;

use nudge::{
    Config, DecideRequest, Engine, Event, EventKind, FsyncPolicy, ItemSpec, ManualClock, UserExport,
};

const T0: u64 = 1_732_200_000_000;

fn engine(dir: &Path, clock: &ManualClock, shards: usize, cap: usize) -> Engine {
    let mut cfg = Config {
        shards,
        seed: 11,
        max_users_per_shard: cap,
        ..Config::default()
    };
    // Exports are compared across restarts that replay the log: a user's segment is read
    // from centroids that the log does not carry (docs/segments.md), so segments are off.
    cfg.segments.k = 0;
    cfg.durability.fsync = FsyncPolicy::No;
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .data_dir(dir)
        .build()
        .unwrap()
}

/// A few events and a decision for each of `users` users named `prefix-N`.
fn teach(engine: &Engine, clock: &ManualClock, prefix: &str, users: usize) {
    teach_with(engine, clock, prefix, users, true)
}

/// `teach`, with or without the decisions (an open decision goes on training its user as
/// its placements count as ignored, in memory or not).
fn teach_with(engine: &Engine, clock: &ManualClock, prefix: &str, users: usize, decide: bool) {
    for i in 0..8 {
        engine
            .upsert_item(ItemSpec::new(format!("item-{i}")).attr("category", format!("c{}", i % 3)))
            .unwrap();
    }
    for u in 0..users {
        let user = format!("{prefix}-{u}");
        for k in 0..3 {
            clock.advance_ms(500);
            let item = format!("item-{}", (u + k) % 8);
            engine
                .ingest(Event::new(&user, EventKind::Click).item(&item))
                .unwrap();
        }
        if !decide {
            continue;
        }
        let items: Vec<String> = (0..8).map(|i| format!("item-{i}")).collect();
        engine.decide(DecideRequest::new(&user, items, 3)).unwrap();
    }
}

fn export(engine: &Engine, user: &str) -> String {
    let u: UserExport = engine.user(user).unwrap().expect(user);
    format!("{u:?}")
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("wal")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[test]
fn a_checkpoint_deletes_the_log_it_covers_and_recovery_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg_segments = None;
    {
        let e = engine(dir.path(), &clock, 2, 1000);
        teach(&e, &clock, "a", 40);
        let before = segments(dir.path());
        e.checkpoint().unwrap();
        let after = segments(dir.path());
        // Each shard's older segments are gone; a fresh one (its header) is left.
        assert!(
            after.iter().all(|p| !before.contains(p)),
            "{before:?} {after:?}"
        );
        assert_eq!(after.len(), 2);
        teach(&e, &clock, "b", 10);
        cfg_segments.replace(export(&e, "a-3") + &export(&e, "b-7"));
        e.shutdown_without_checkpoint();
    }
    let e = engine(dir.path(), &clock, 2, 1000);
    let replayed = e.stats().durability.unwrap().recovered_records;
    // Only what came after the checkpoint (10 users × 4 inputs and the restarts' records)
    // is replayed; the 40 users before it come from the store.
    assert!((40..80).contains(&replayed), "{replayed} records replayed");
    assert_eq!(
        cfg_segments.unwrap(),
        export(&e, "a-3") + &export(&e, "b-7")
    );
    let d = e.stats().durability.unwrap();
    assert!(
        d.checkpoints_total == 0,
        "a fresh run has not checkpointed yet"
    );
    // The users of the checkpoint; the ten after it were replayed from the log into memory.
    assert_eq!(d.stored_users, 40);
}

#[test]
fn an_evicted_user_leaves_memory_and_comes_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = engine(dir.path(), &clock, 1, 8);
    teach_with(&e, &clock, "u", 8, false);
    let before: Vec<String> = (0..8).map(|u| export(&e, &format!("u-{u}"))).collect();
    // Twenty more users push the first eight out of memory (the resident cap is 8).
    teach(&e, &clock, "v", 20);
    let s = e.stats().total();
    assert!(s.resident_users <= 8 && s.evictions_total >= 20, "{s:?}");
    for (u, want) in before.iter().enumerate() {
        assert_eq!(
            &export(&e, &format!("u-{u}")),
            want,
            "u-{u} after passivation"
        );
    }
    // The same after a checkpoint has stored them and a restart emptied memory.
    e.checkpoint().unwrap();
    e.shutdown();
    drop(e);
    let e = engine(dir.path(), &clock, 1, 8);
    assert_eq!(e.stats().total().resident_users, 0, "users load lazily");
    for (u, want) in before.iter().enumerate() {
        assert_eq!(
            &export(&e, &format!("u-{u}")),
            want,
            "u-{u} after a restart"
        );
    }
    assert!(e.stats().durability.unwrap().loads_total >= 8);
}

/// Every byte of every file under `dir`.
pub fn everything(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn holding<'a>(files: &'a [(std::path::PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<&'a Path> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p.as_path())
        .collect()
}

#[test]
fn an_erased_user_is_nowhere_in_the_data_directory_after_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = engine(dir.path(), &clock, 2, 4);
    teach(&e, &clock, "keep", 12);
    teach(&e, &clock, "erase-me-4f1c9", 1);
    // Stored, evicted and written again: the user is in the store and the log.
    e.checkpoint().unwrap();
    teach(&e, &clock, "erase-me-4f1c9", 1);
    teach(&e, &clock, "later", 12);
    let id = b"erase-me-4f1c9-0";
    assert!(!holding(&everything(dir.path()), id).is_empty());
    assert!(e.forget("erase-me-4f1c9-0").unwrap());
    e.checkpoint().unwrap();
    let files = everything(dir.path());
    assert_eq!(holding(&files, id), Vec::<&Path>::new(), "the id is gone");
    let d = e.stats().durability.unwrap();
    assert_eq!((d.users_deleted_total, d.stored_users), (1, 24), "{d:?}");
    assert!(e.user("erase-me-4f1c9-0").unwrap().is_none());
    assert!(e.user("keep-3").unwrap().is_some());
    // And it stays gone after a crash-like stop and a restart.
    e.shutdown_without_checkpoint();
    drop(e);
    let e = engine(dir.path(), &clock, 2, 4);
    assert!(e.user("erase-me-4f1c9-0").unwrap().is_none());
    assert!(e.user("later-5").unwrap().is_some());
}

/// Overwrites the store's header (redb's magic number and its god byte); returns the
/// damaged file's bytes.
fn damage_header(dir: &Path) -> Vec<u8> {
    let path = dir.join("store.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[..64] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    bytes
}

/// One shard on `dir` again, with or without `repair`.
fn restart(dir: &Path, clock: &ManualClock, repair: bool) -> Result<Engine, nudge::StartError> {
    let mut cfg = Config {
        shards: 1,
        seed: 11,
        ..Config::default()
    };
    cfg.durability.fsync = FsyncPolicy::No;
    Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .data_dir(dir)
        .repair(repair)
        .build()
}

#[test]
fn a_damaged_store_refuses_to_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = engine(dir.path(), &clock, 1, 1000);
    teach(&e, &clock, "u", 30);
    e.shutdown();
    drop(e);
    damage_header(dir.path());
    let err = restart(dir.path(), &clock, false)
        .err()
        .expect("started on a damaged store")
        .to_string();
    assert!(err.contains("store.redb"), "{err}");
    assert!(
        err.contains("--repair"),
        "the error names the way out: {err}"
    );
}

/// `repair` on a store redb cannot open: the file is moved aside (kept, named), an empty
/// store takes its place, and the log that remains (what came after the last checkpoint) is
/// replayed. What only the store held is not restored.
#[test]
fn repair_moves_a_damaged_store_aside_and_replays_the_log_that_remains() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let e = engine(dir.path(), &clock, 1, 1000);
        teach_with(&e, &clock, "stored", 10, false);
        e.checkpoint().unwrap();
        teach_with(&e, &clock, "logged", 5, false);
        e.shutdown_without_checkpoint();
    }
    let bytes = damage_header(dir.path());
    let e = restart(dir.path(), &clock, true).expect("repair starts on a damaged store");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("store.redb.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept, named");
    let moved = std::fs::read(dir.path().join(&aside[0])).unwrap();
    assert_eq!(moved, bytes, "moved as it was");
    for u in 0..5 {
        let user = format!("logged-{u}");
        let got = e.user(&user).unwrap().expect(&user);
        let events: u64 = got.events_by_kind.iter().sum();
        assert_eq!(events, 3, "{user}: its three clicks, replayed from the log");
    }
    assert!(
        e.user("stored-3").unwrap().is_none(),
        "only the damaged store held it"
    );
    // The fresh store takes checkpoints again.
    e.checkpoint().unwrap();
    assert_eq!(e.stats().durability.unwrap().stored_users, 5);
}

#[test]
fn users_streamed_through_a_small_cap_while_checkpoints_run_all_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        shards: 2,
        seed: 3,
        max_users_per_shard: 20,
        ..Config::default()
    };
    cfg.durability.fsync = FsyncPolicy::No;
    cfg.durability.checkpoint_interval_s = 1;
    let e = Engine::builder()
        .config(cfg)
        .data_dir(dir.path())
        .build()
        .unwrap();
    e.upsert_item(ItemSpec::new("item")).unwrap();
    // New users for at least four seconds and until two timer checkpoints have committed
    // (a loaded machine makes a checkpoint slower; bounded at a minute), so that checkpoints
    // begin, copy and commit while users are evicted and parked.
    let started = std::time::Instant::now();
    let secs = |s| std::time::Duration::from_secs(s);
    let committed = || e.stats().durability.unwrap().checkpoints_total;
    let mut n = 0;
    while (started.elapsed() < secs(4) || committed() < 2) && started.elapsed() < secs(60) {
        let batch = (n..n + 50)
            .map(|u| Event::new(format!("s-{u}"), EventKind::Click).item("item"))
            .collect();
        for r in e.ingest_batch(batch) {
            r.unwrap();
        }
        n += 50;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let d = e.stats().durability.unwrap();
    assert!(d.checkpoints_total >= 2, "{d:?}");
    let missing: Vec<usize> = (0..n)
        .filter(|u| e.user(&format!("s-{u}")).unwrap().is_none())
        .collect();
    assert_eq!(
        missing.len(),
        0,
        "of {n} users, {} missing {:?}… {:?}",
        missing.len(),
        &missing[..missing.len().min(10)],
        e.stats().durability
    );
}

/// Open decisions are checkpointed a row each, incrementally: those opened, changed or
/// closed since the last checkpoint. After a restart every decision open at the crash is
/// open again with what it had earned, and one closed before it stays closed.
#[test]
fn open_decisions_survive_incremental_checkpoints_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let items: Vec<String> = (0..8).map(|i| format!("item-{i}")).collect();
    let decide = |e: &Engine, user: &str| {
        e.decide(DecideRequest::new(user, items.clone(), 3))
            .unwrap()
    };
    let (kept, rewarded, late, closed, open_before);
    {
        let e = engine(dir.path(), &clock, 2, 1000);
        teach_with(&e, &clock, "u", 4, false);
        kept = decide(&e, "u-0");
        rewarded = decide(&e, "u-1");
        closed = decide(&e, "u-2");
        e.checkpoint().unwrap();
        // After the first checkpoint: one stored decision is rewarded, and another is
        // closed early by newer decisions of its user past the per-user cap.
        let item = &rewarded.items[0].item;
        e.reward(rewarded.id, item, 1.0).unwrap();
        for _ in 0..Config::default().attribution.max_open_per_user {
            decide(&e, "u-2");
        }
        e.checkpoint().unwrap();
        // And one opened after the last checkpoint, known only to the log.
        late = decide(&e, "u-3");
        open_before = e.stats().total().open_decisions;
        e.shutdown_without_checkpoint();
    }
    let e = engine(dir.path(), &clock, 2, 1000);
    assert_eq!(e.stats().total().open_decisions, open_before);
    // Stored before the first checkpoint and untouched since: still open.
    e.reward(kept.id, &kept.items[0].item, 1.0).unwrap();
    // Rewarded between the checkpoints: the store has the reward, so a second is refused.
    let again = e.reward(rewarded.id, &rewarded.items[0].item, 1.0);
    assert!(
        matches!(again, Err(nudge::Error::AlreadyRewarded { .. })),
        "{again:?}"
    );
    // Closed between the checkpoints: its row was deleted and it stays closed.
    let gone = e.reward(closed.id, &closed.items[0].item, 1.0);
    assert!(
        matches!(gone, Err(nudge::Error::ExpiredDecision(_))),
        "{gone:?}"
    );
    // Opened after the last checkpoint: replayed from the log.
    e.reward(late.id, &late.items[0].item, 1.0).unwrap();
}

/// Back-pressure from the store: once the evicted users waiting for a checkpoint reach
/// `durability.max_parked_bytes`, a request that would bring another user into memory (and so
/// evict one more) is refused with `unavailable`, unlogged, until a checkpoint has stored
/// them. Memory stays bounded however fast new users arrive, and every retried user is kept.
#[test]
fn users_arriving_faster_than_the_store_takes_them_are_refused_not_piled_up() {
    // A lost reply hangs a caller forever: the body runs under a watchdog.
    let (done, finished) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        refused_not_piled_up();
        done.send(()).unwrap();
    });
    if finished
        .recv_timeout(std::time::Duration::from_secs(300))
        .is_err()
    {
        assert!(body.is_finished(), "no answer in 300 s: a reply was lost");
    }
    body.join().unwrap();
}

fn refused_not_piled_up() {
    const LIMIT: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = Config {
        shards: 1,
        seed: 5,
        max_users_per_shard: 4,
        ..Config::default()
    };
    cfg.durability.fsync = FsyncPolicy::No;
    cfg.durability.checkpoint_interval_s = 3600;
    cfg.durability.max_parked_bytes = LIMIT;
    let e = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .data_dir(dir.path())
        .build()
        .unwrap();
    e.upsert_item(ItemSpec::new("item-0")).unwrap();
    let (mut refused, mut max_parked) = (0u64, 0u64);
    for u in 0..200 {
        let user = format!("u-{u}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            clock.advance_ms(10);
            let click = Event::new(&user, EventKind::Click).item("item-0");
            // Odd users go as a batch of one: a batch whose every event is refused must
            // still be answered (it logs nothing, so no write releases its reply).
            let result = match u % 2 {
                0 => e.ingest(click),
                _ => e.ingest_batch(vec![click]).pop().expect("one result"),
            };
            match result {
                Ok(_) => break,
                Err(nudge::Error::Unavailable(why)) => {
                    assert!(why.contains("max_parked_bytes"), "{why}");
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{user} still refused after 60 s: the parked users are never stored"
                    );
                    refused += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(other) => panic!("{user}: {other}"),
            }
        }
        max_parked = max_parked.max(e.stats().total().parked_bytes);
    }
    assert!(
        refused > 0,
        "200 new users outran a checkpoint at least once"
    );
    // At most one eviction past the limit: the request admitted just under it.
    assert!(
        max_parked < 2 * LIMIT,
        "parked bytes reached {max_parked} (limit {LIMIT})"
    );
    let d = e.stats().durability.unwrap();
    assert_eq!(d.parked_refusals_total, refused);
    for u in (0..200).step_by(17) {
        let user = format!("u-{u}");
        let got = e.user(&user).unwrap().expect(&user);
        let events: u64 = got.events_by_kind.iter().sum();
        assert_eq!(
            events, 1,
            "{user}: its click, once (a refused try was not applied)"
        );
    }
}
