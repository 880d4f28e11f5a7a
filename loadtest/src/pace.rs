//! The open loop's clock: the schedule (when each request is due) and the pacer, one
//! dedicated OS thread that sleeps precisely (`std::thread::sleep`, which is `clock_nanosleep`
//! on Linux: tens of µs late, where tokio's timer rounds up to the next millisecond) and tells
//! each connection's writer how many of its requests are due. Writers wait for that count
//! instead of spinning, and a writer that wakes with several requests due sends them all in
//! one write; latency is still counted from each request's intended time (by the reader).
//!
//! The pacer wakes at the next request's due time, but at most once per `tick`: at high rates
//! the requests due within one tick leave together (a tick of 200 µs at 20k requests/s is
//! four requests per wake, at most 200 µs behind their schedule plus the wake-up).
//!
//! It owns *when* requests leave; it does not generate, send or measure them (`driver` does).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The longest the pacer sleeps at once, so that dropping it never waits long.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// When each request of an open-loop run is due, as offsets from the run's start.
///
/// Request `j` (counting all connections together) is due `j / rate` seconds after the start
/// and belongs to connection `j mod connections`, as that connection's request
/// `j div connections`; requests due at or after `end` are not sent. Pure arithmetic on
/// nanosecond offsets, so it can be checked without a clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second, all connections together.
    rate: f64,
    /// Connections the requests are dealt over.
    connections: u64,
    /// Requests due before the end (the run's length in requests).
    total: u64,
}

impl Schedule {
    /// The schedule of `rate` requests/s over `connections` for `length` (warm-up included).
    pub fn new(rate: f64, connections: u32, length: Duration) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
        let mut s = Schedule {
            rate,
            connections: connections.max(1) as u64,
            total: u64::MAX,
        };
        let end_ns = length.as_nanos().min(u64::MAX as u128) as u64;
        // The requests due strictly before the end.
        s.total = if end_ns == 0 { 0 } else { s.due(end_ns - 1) };
        s
    }

    /// Requests in the whole run, all connections.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When request `j` (all connections counted together) is due, ns after the start.
    pub fn offset_ns(&self, j: u64) -> u64 {
        (j as f64 * 1e9 / self.rate) as u64
    }

    /// How many requests are due at `t_ns` after the start (those whose offset is at most
    /// `t_ns`), at most `total`.
    pub fn due(&self, t_ns: u64) -> u64 {
        // The float estimate, corrected so it agrees exactly with `offset_ns`.
        let mut n = (t_ns as f64 * self.rate / 1e9) as u64 + 1;
        while self.offset_ns(n) <= t_ns {
            n += 1;
        }
        while n > 0 && self.offset_ns(n - 1) > t_ns {
            n -= 1;
        }
        n.min(self.total)
    }

    /// How many of the first `n` requests belong to connection `conn`.
    pub fn of_connection(&self, conn: u32, n: u64) -> u64 {
        let c = conn as u64;
        if n > c {
            (n - c).div_ceil(self.connections)
        } else {
            0
        }
    }

    /// When connection `conn`'s request `i` is due, ns after the start.
    pub fn connection_offset_ns(&self, conn: u32, i: u64) -> u64 {
        self.offset_ns(i * self.connections + conn as u64)
    }

    /// When the pacer, awake at `now_ns`, should wake next: when the first request not yet
    /// due is, but no sooner than one `tick_ns` from now. `None` once every request is due.
    pub fn next_wake_ns(&self, now_ns: u64, tick_ns: u64) -> Option<u64> {
        let n = self.due(now_ns);
        (n < self.total).then(|| self.offset_ns(n).max(now_ns.saturating_add(tick_ns)))
    }
}

/// What the pacer thread and the writers share.
struct Shared {
    schedule: Schedule,
    start: Instant,
    /// Per connection: how many of its requests are due (only grows).
    due: Vec<AtomicU64>,
    /// Per connection: woken when its count grows (`notify_one` keeps a permit when the writer
    /// is not waiting yet, so no wake-up is lost between its check and its wait).
    wake: Vec<Notify>,
    /// Set when the pacer is dropped: the thread ends at its next wake.
    stop: AtomicBool,
}

/// The pacing thread of an open-loop run; dropping it stops the thread and joins it.
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer's view of the pacer: its requests' due times and how many are due now.
#[derive(Clone)]
pub struct Due {
    shared: Arc<Shared>,
    conn: u32,
}

impl Pacer {
    /// Starts the thread for `schedule`, with offsets counted from `start`, waking at most
    /// once per `tick`.
    pub fn start(
        schedule: Schedule,
        connections: u32,
        start: Instant,
        tick: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            schedule,
            start,
            due: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..connections).map(|_| Notify::new()).collect(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let tick_ns = tick.as_nanos().min(u64::MAX as u128) as u64;
        let thread = std::thread::Builder::new()
            .name("loadtest-pacer".into())
            .spawn(move || pace(&s, tick_ns))?;
        Ok(Pacer {
            shared,
            thread: Some(thread),
        })
    }

    /// The handle connection `conn`'s writer waits on.
    pub fn due(&self, conn: u32) -> Due {
        Due {
            shared: self.shared.clone(),
            conn,
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panic in the pacer has already been printed; nothing more to do with it.
            let _ = t.join();
        }
    }
}

/// The pacer thread: publish what is due, sleep until the next request (or one tick).
fn pace(s: &Shared, tick_ns: u64) {
    let now = Instant::now();
    if now < s.start {
        std::thread::sleep(s.start - now);
    }
    while !s.stop.load(Ordering::Relaxed) {
        let now_ns = s.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let n = s.schedule.due(now_ns);
        for (c, (due, wake)) in s.due.iter().zip(&s.wake).enumerate() {
            let k = s.schedule.of_connection(c as u32, n);
            if k > due.load(Ordering::Relaxed) {
                due.store(k, Ordering::Release);
                wake.notify_one();
            }
        }
        let Some(wake_ns) = s.schedule.next_wake_ns(now_ns, tick_ns) else {
            return;
        };
        std::thread::sleep(Duration::from_nanos(wake_ns - now_ns).min(MAX_SLEEP));
    }
}

impl Due {
    /// The schedule the pacer follows.
    pub fn schedule(&self) -> &Schedule {
        &self.shared.schedule
    }

    /// This connection's requests in the whole run.
    pub fn total(&self) -> u64 {
        let s = &self.shared.schedule;
        s.of_connection(self.conn, s.total())
    }

    /// When this connection's request `i` is due.
    pub fn intended(&self, i: u64) -> Instant {
        let ns = self.shared.schedule.connection_offset_ns(self.conn, i);
        self.shared.start + Duration::from_nanos(ns)
    }

    /// Waits until more than `sent` of this connection's requests are due; returns how many
    /// are.
    pub async fn more_than(&self, sent: u64) -> u64 {
        let c = self.conn as usize;
        loop {
            let n = self.shared.due[c].load(Ordering::Acquire);
            if n > sent {
                return n;
            }
            self.shared.wake[c].notified().await;
        }
    }
}
