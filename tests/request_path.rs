//! Issue 12: the run-to-completion request path. Many threads on one shard and one user at
//! once (order per submitter, nothing lost, replies to the right callers, no deadlock), a
//! panic inside one message, and an async caller that waits without spinning.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine_api::HeldShard;
use nudge::{
    Config, DecideRequest, Engine, Error, Event, EventKind, ItemSpec, ManualClock, PolicyKind,
    UpdateSink, UserUpdate,
};

const T0: u64 = 1_732_200_000_000;
const THREADS: u64 = 4;
const ROUNDS: u64 = 400;

fn engine(clock: &ManualClock, shards: usize) -> Engine {
    let mut cfg = Config {
        shards,
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

/// Records the event time of every update pushed, per user.
#[derive(Default)]
struct Recorder(Mutex<HashMap<String, Vec<u64>>>);

impl UpdateSink for Recorder {
    fn push(&self, update: UserUpdate) {
        self.0
            .lock()
            .unwrap()
            .entry(update.user)
            .or_default()
            .push(update.ts_ms);
    }
}

#[test]
fn many_threads_on_one_shard_keep_each_submitters_order_and_lose_nothing() {
    let clock = ManualClock::new(T0 + 3_600_000);
    // One shard: every thread contends for it.
    let engine = engine(&clock, 1);
    for i in 0..(THREADS * 10) {
        engine.upsert_item(ItemSpec::new(format!("i{i}"))).unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    engine.subscribe("shared", recorder.clone()).unwrap();
    for t in 0..THREADS {
        engine
            .subscribe(&format!("own-{t}"), recorder.clone())
            .unwrap();
    }
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                // This thread's candidates: a decision's reply must name only these.
                let mine: Vec<String> = (0..10).map(|k| format!("i{}", t * 10 + k)).collect();
                for r in 0..ROUNDS {
                    // Times tell the submitter (ts mod THREADS) and its order (ts / THREADS).
                    let ts = T0 + r * THREADS + t;
                    let item = &mine[(r % 10) as usize];
                    for user in [format!("own-{t}"), "shared".to_string()] {
                        let ack = engine
                            .ingest(Event::new(user, EventKind::Click).item(item).at(ts))
                            .unwrap();
                        assert!(!ack.outlier);
                    }
                    if r % 4 == 0 {
                        let d = engine
                            .decide(DecideRequest::new(
                                format!("own-{t}"),
                                mine.iter().cloned(),
                                3,
                            ))
                            .unwrap();
                        assert_eq!(d.items.len(), 3);
                        assert!(
                            d.items.iter().all(|p| mine.contains(&p.item)),
                            "thread {t} got another caller's decision: {:?}",
                            d.items
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    engine.flush().unwrap();
    let stats = engine.stats().total();
    assert_eq!(stats.events_total, THREADS * ROUNDS * 2, "no event lost");
    assert_eq!(stats.decisions_total, THREADS * ROUNDS / 4);
    let pushed = recorder.0.lock().unwrap();
    for t in 0..THREADS {
        let own = &pushed[&format!("own-{t}")];
        let want: Vec<u64> = (0..ROUNDS).map(|r| T0 + r * THREADS + t).collect();
        assert_eq!(own, &want, "user own-{t}: every event, in its order");
        let from_t: Vec<u64> = pushed["shared"]
            .iter()
            .copied()
            .filter(|ts| (ts - T0) % THREADS == t)
            .collect();
        assert_eq!(
            from_t, want,
            "shared user: thread {t}'s events in its order"
        );
    }
    let shared = engine.user("shared").unwrap().unwrap();
    assert_eq!(
        shared.events_by_kind[EventKind::Click as usize],
        THREADS * ROUNDS
    );
}

#[test]
fn many_async_tasks_on_two_shards_get_their_own_replies() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(&clock, 2);
    for i in 0..20 {
        engine.upsert_item(ItemSpec::new(format!("i{i}"))).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    // Eight tasks on two worker threads: the shards are contended.
                    let mut ok = 0;
                    for r in 0..200u64 {
                        let user = format!("u{}", (t * 7 + r) % 16);
                        let ev = Event::new(user, EventKind::Click)
                            .item(format!("i{}", r % 20))
                            .at(T0 + r);
                        engine.ingest_async(ev).await.unwrap();
                        ok += 1;
                    }
                    let d = engine
                        .decide_async(DecideRequest::new(
                            format!("u{t}"),
                            (0..20).map(|i| format!("i{i}")),
                            5,
                        ))
                        .await
                        .unwrap();
                    assert_eq!(d.items.len(), 5);
                    ok
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 8 * 200);
    });
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, 8 * 200);
}

/// A sink that panics for one user: an embedder's bug reached from inside a shard.
struct Boom;

impl UpdateSink for Boom {
    fn push(&self, update: UserUpdate) {
        if update.user == "boom" {
            panic!("injected: the sink for `boom` panicked");
        }
    }
}

#[test]
fn a_panic_in_one_message_answers_internal_and_leaves_the_shard_and_other_users_intact() {
    let clock = ManualClock::new(T0 + 3_600_000);
    // One shard, so the panicking user and the bystander share it.
    let engine = engine(&clock, 1);
    for i in 0..5 {
        engine.upsert_item(ItemSpec::new(format!("i{i}"))).unwrap();
    }
    for r in 0..5 {
        engine
            .ingest(Event::new("bystander", EventKind::Click).item(format!("i{r}")))
            .unwrap();
        engine
            .ingest(Event::new("boom", EventKind::Click).item(format!("i{r}")))
            .unwrap();
    }
    let before = engine.user("bystander").unwrap().unwrap();
    let internal = |err: Error| {
        match &err {
            Error::Internal(text) => assert!(text.contains("injected"), "{text}"),
            other => panic!("expected an internal error, got {other:?}"),
        }
        assert_eq!(err.code(), "internal");
    };
    // `boom` has state, so subscribing pushes at once (issue 16): that push panics, and the
    // subscribe answers `internal`, its user reset.
    internal(engine.subscribe("boom", Arc::new(Boom)).unwrap_err());
    assert!(engine.user("boom").unwrap().is_none());
    // Now without state, the subscription opens quietly; the next event's push panics.
    engine.subscribe("boom", Arc::new(Boom)).unwrap();
    internal(
        engine
            .ingest(Event::new("boom", EventKind::Click).item("i0"))
            .unwrap_err(),
    );
    // The shard serves on; the bystander is untouched, bit for bit.
    assert_eq!(engine.user("bystander").unwrap().unwrap(), before);
    let d = engine
        .decide(DecideRequest::new(
            "bystander",
            (0..5).map(|i| format!("i{i}")),
            2,
        ))
        .unwrap();
    assert_eq!(d.items.len(), 2);
    // The panicking user's actor was reset and its subscription dropped: it starts afresh.
    assert!(engine.user("boom").unwrap().is_none());
    engine
        .ingest(Event::new("boom", EventKind::Click).item("i1"))
        .unwrap();
    let boom = engine.user("boom").unwrap().unwrap();
    assert_eq!(boom.events_by_kind[EventKind::Click as usize], 1);
    let stats = engine.stats();
    assert_eq!(stats.total().panics_total, 2);
    assert!(
        !stats.total().failed,
        "a per-message panic does not fail the shard"
    );
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn an_async_caller_waiting_on_a_busy_shard_is_woken_not_spinning() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(&clock, 1);
    engine.upsert_item(ItemSpec::new("a")).unwrap();
    let held = HeldShard::hold(&engine, "held", "a");
    // The shard is held: an async ingest queues, and its task must sleep until woken.
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let start = thread_cpu();
            let result = rt.block_on(async {
                engine
                    .ingest_async(Event::new("waiter", EventKind::Click).item("a"))
                    .await
            });
            let _ = done_tx.send(());
            (result, thread_cpu() - start)
        })
    };
    // Wait in real time while the task is parked behind the held shard.
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        done_rx.try_recv().is_err(),
        "the queued call cannot finish while the shard is held"
    );
    held.release().unwrap();
    let (result, cpu) = waiter.join().unwrap();
    result.unwrap();
    // Spinning or yielding in a loop would burn the whole 400 ms; sleeping costs almost none.
    assert!(
        cpu < Duration::from_millis(40),
        "the waiting task used {cpu:?} of CPU in 400 ms"
    );
    assert_eq!(engine.stats().total().events_total, 2);
}

#[cfg(feature = "server")]
#[test]
fn over_tcp_a_panicking_request_answers_internal_and_the_server_stays_ready() {
    use crate::server_support::{http, parse_prometheus, serve, Lines};
    let engine = Engine::builder().shards(1).seed(3).build().unwrap();
    engine.upsert_item(ItemSpec::new("i0")).unwrap();
    engine.subscribe("boom", Arc::new(Boom)).unwrap();
    let (_engine, server) = serve(engine, |_| {});
    let mut lines = Lines::connect(server.tcp_addr().unwrap());
    let reply = lines.call(r#"{"id":1,"op":"event","user":"boom","type":"click","item":"i0"}"#);
    assert_eq!(reply["error"]["code"], "internal", "{reply}");
    // The same connection and shard serve the next request.
    let reply = lines.call(r#"{"id":2,"op":"event","user":"calm","type":"click","item":"i0"}"#);
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["id"], 2, "{reply}");
    let http_addr = server.http_addr().unwrap();
    let ready = http(http_addr, "GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status, 200,
        "a contained panic leaves the server ready"
    );
    let metrics = http(http_addr, "GET", "/metrics", &[], b"");
    let series = parse_prometheus(std::str::from_utf8(&metrics.body).unwrap());
    assert_eq!(series["nudge_panics_total"], 1.0);
    assert_eq!(series["nudge_shards_failed"], 0.0);
    server.shutdown();
}

#[test]
fn work_a_holder_leaves_queued_is_finished_by_the_sweeper() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let mut cfg = Config {
        shards: 1,
        seed: 5,
        // A submitter drains at most 4 others' messages before it returns to its caller.
        drain_batch: 4,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    let engine = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap();
    engine.upsert_item(ItemSpec::new("a")).unwrap();
    let held = HeldShard::hold(&engine, "held", "a");
    // 100 callers queue behind the holder; it will drain 4 of them, the sweeper the rest.
    let queued: Vec<_> = (0..100)
        .map(|i| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                engine.ingest(Event::new(format!("q{i}"), EventKind::Click).item("a"))
            })
        })
        .collect();
    while engine.stats().shards[0].inbox_depth < 100 {
        std::thread::sleep(Duration::from_millis(1));
    }
    held.release().unwrap();
    for q in queued {
        q.join().unwrap().unwrap();
    }
    engine.flush().unwrap();
    assert_eq!(engine.stats().total().events_total, 101);
    assert_eq!(engine.stats().shards[0].inbox_depth, 0);
}

#[test]
fn subscribe_async_behind_a_busy_shard_leaves_its_executor_free() {
    let clock = ManualClock::new(T0 + 3_600_000);
    let engine = engine(&clock, 1);
    engine.upsert_item(ItemSpec::new("a")).unwrap();
    let held = HeldShard::hold(&engine, "held", "a");
    // One executor thread: the subscription queues behind the held shard, and a timer task on
    // the same thread must still run (the old session waited for the shard on that thread).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Released from another thread, so a blocking subscribe fails this test instead of hanging.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        held.release()
    });
    let (subscribed, timer_ran_first) = rt.block_on(async {
        let sink: Arc<dyn nudge::UpdateSink> = Arc::new(Recorder::default());
        let subscribing = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.subscribe_async("other", sink).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let timer_ran_first = !subscribing.is_finished();
        (subscribing.await.unwrap(), timer_ran_first)
    });
    assert!(
        timer_ran_first,
        "the timer ran while the subscription waited for the shard"
    );
    let id = subscribed.expect("the subscription is registered once the shard is free");
    releaser.join().unwrap().unwrap();
    engine.unsubscribe("other", id).unwrap();
}
