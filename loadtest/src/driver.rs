//! The run: drives the workload against a target, open loop (a constant-rate schedule;
//! latency counted from each request's *intended* send time, wrk2's correction for
//! coordinated omission) or closed loop (`pipeline` requests in flight per connection).
//! Per connection, one writer task generates, encodes and sends; one reader task matches
//! replies to requests in order and records latencies. In the open loop the writers sleep
//! until `pace`'s thread says requests are due, then send every due request at once. It owns
//! the run's phases (catalog, prefill, warm-up, measured window, drain) and the bookkeeping;
//! the schedule's arithmetic, the workload, the framing and the report live elsewhere.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout_at};

use crate::client::{self, Receiver, Sender, Target};
use crate::pace::{Due, Pacer, Schedule};
use crate::probe::Probe;
use crate::report::{OpKind, RunResult};
use crate::stall::{self, StallSpec};
use crate::timeline::{Recorder, Timeline, TimelineSpec};
use crate::wire::Reply;
use crate::workload::{Board, Generator, GeneratorStats, Op, Workload, WorkloadConfig};

/// Open or closed loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// A constant total rate (requests per second), spread evenly over the connections.
    Open {
        /// Requests per second, all connections together.
        rate: f64,
    },
    /// Each connection keeps `pipeline` requests in flight.
    Closed {
        /// Requests in flight per connection.
        pipeline: u32,
    },
}

/// The pacer's default tick: well under the default late threshold (1 ms), and at 20k
/// requests/s still four requests per wake rather than one.
pub const DEFAULT_PACE_TICK: Duration = Duration::from_micros(200);

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Where to send.
    pub target: Target,
    /// Open or closed loop.
    pub load: Load,
    /// Connections (each with its own workload stream).
    pub connections: u32,
    /// Measured time.
    pub duration: Duration,
    /// Time before the measured part, excluded from the results.
    pub warmup: Duration,
    /// The workload.
    pub workload: WorkloadConfig,
    /// Load the catalog before the run.
    pub load_catalog: bool,
    /// Before the run (and its warm-up), send one event per user so that every user is
    /// resident when the measured window starts (a soak's memory then shows growth, not
    /// users arriving).
    pub prefill: bool,
    /// Pause a process mid-run (the stall self-test).
    pub stall: Option<StallSpec>,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// A send later than this behind its schedule counts as late (open loop).
    pub late_threshold: Duration,
    /// How long to wait for outstanding replies after the schedule ends.
    pub drain_timeout: Duration,
    /// Events per request: consecutive events are sent as one batch (1: no batching).
    pub batch: u32,
    /// Write per-interval percentiles, rate and RSS to a CSV file (the soak run).
    pub timeline: Option<TimelineSpec>,
    /// Open loop: the pacer wakes at most once per tick; requests due within one tick leave
    /// together (see `pace`).
    pub pace_tick: Duration,
}

impl RunSpec {
    /// A spec with the defaults: closed loop, one connection, pipeline 1, 5 s, no warmup.
    pub fn new(target: Target, workload: WorkloadConfig) -> Self {
        RunSpec {
            target,
            load: Load::Closed { pipeline: 1 },
            connections: 1,
            duration: Duration::from_secs(5),
            warmup: Duration::ZERO,
            workload,
            load_catalog: true,
            prefill: false,
            stall: None,
            progress: false,
            late_threshold: Duration::from_millis(1),
            drain_timeout: Duration::from_secs(10),
            batch: 1,
            timeline: None,
            pace_tick: DEFAULT_PACE_TICK,
        }
    }
}

/// Counters the progress line and the timeline read.
#[derive(Default)]
pub(crate) struct Progress {
    sent: AtomicU64,
    done: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Measured sends that left later than the late threshold.
    pub(crate) late: AtomicU64,
}

/// One request waiting for its reply.
struct InFlight {
    kind: OpKind,
    intended: Instant,
    sent: Instant,
    session: u64,
    measured: bool,
}

/// When the measured window is.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    hard_deadline: Instant,
}

/// What one writer saw.
#[derive(Default)]
struct WriterResult {
    sent_measured: u64,
    late: u64,
    send_lag_ns: Option<Histogram<u64>>,
    generator: GeneratorStats,
    error: Option<String>,
    /// The sending half, kept open until the reader is done: closing it early makes some
    /// servers (actix-web) drop replies still in flight.
    sender: Option<Sender>,
}

/// What one reader saw.
pub(crate) struct ReaderResult {
    pub corrected: Vec<Histogram<u64>>,
    pub uncorrected: Vec<Histogram<u64>>,
    pub ok: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    pub acked_events_total: u64,
    pub acked_events_measured: u64,
    pub completed_measured: u64,
}

impl ReaderResult {
    /// No requests seen yet: one empty histogram and counter per op kind.
    fn empty() -> Self {
        ReaderResult {
            corrected: OpKind::ALL.iter().map(|_| histogram()).collect(),
            uncorrected: OpKind::ALL.iter().map(|_| histogram()).collect(),
            ok: vec![0; OpKind::ALL.len()],
            errors: BTreeMap::new(),
            acked_events_total: 0,
            acked_events_measured: 0,
            completed_measured: 0,
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 ns to 1 hour, 3 significant digits: the bounds cannot be invalid.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

fn kind_of(op: &Op) -> (OpKind, u64) {
    match op {
        Op::Event(_) | Op::Item(_) => (OpKind::Event, 0),
        Op::Decide(d) => (OpKind::Decide, d.session),
        Op::Reward(_) => (OpKind::Reward, 0),
        Op::Batch(_) => (OpKind::Batch, 0),
    }
}

/// Runs `spec` and returns the raw results (the caller builds the report).
pub async fn run(spec: &RunSpec) -> anyhow::Result<RunResult> {
    if spec.batch > 1 && matches!(spec.target, Target::Redis(_)) {
        anyhow::bail!("--batch is not supported for Redis: pipelining is its batching");
    }
    let workload = Arc::new(Workload::new(spec.workload.clone()).map_err(anyhow::Error::msg)?);
    if spec.load_catalog {
        client::load_catalog(&spec.target, &workload).await?;
    }
    if spec.prefill {
        let began = Instant::now();
        let refused = client::prefill(&spec.target, &workload).await?;
        eprintln!(
            "prefill: one event for each of {} users in {:.1} s, {refused} refused",
            spec.workload.users,
            began.elapsed().as_secs_f64()
        );
    }
    let mut conns = Vec::with_capacity(spec.connections as usize);
    for _ in 0..spec.connections {
        conns.push(client::connect(&spec.target).await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let window = Window {
        start,
        measure_from: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
        hard_deadline: start + spec.warmup + spec.duration + spec.drain_timeout,
    };
    let pacer = match spec.load {
        Load::Open { rate } => {
            let schedule = Schedule::new(rate, spec.connections, window.end - window.start);
            let tick = spec.pace_tick;
            Some(Pacer::start(
                schedule,
                spec.connections,
                window.start,
                tick,
            )?)
        }
        Load::Closed { .. } => None,
    };
    let progress = Arc::new(Progress::default());
    let mut timeline = spec.timeline.clone().map(Timeline::create).transpose()?;
    if let Some(t) = &mut timeline {
        t.set_probe(Probe::connect(&spec.target).await?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (c, (tx, rx)) in conns.into_iter().enumerate() {
        let generator = Generator::new(workload.clone(), c as u32, spec.connections);
        let board = generator.board();
        let permits = match spec.load {
            Load::Closed { pipeline } => Some(Arc::new(Semaphore::new(pipeline.max(1) as usize))),
            Load::Open { .. } => None,
        };
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let w = ConnWriter {
            spec: spec.clone(),
            conn: c as u32,
            generator,
            tx,
            pending: pending_tx,
            permits: permits.clone(),
            stash: None,
            window,
            progress: progress.clone(),
            due: pacer.as_ref().map(|p| p.due(c as u32)),
        };
        writers.push(tokio::spawn(w.run()));
        let reader = read_replies(
            rx,
            pending_rx,
            board,
            permits,
            progress.clone(),
            timeline.as_mut().map(Timeline::recorder),
            stop_rx.clone(),
        );
        readers.push(tokio::spawn(reader));
    }
    let ticker = spec
        .progress
        .then(|| tokio::spawn(print_progress(progress.clone(), window)));
    let staller = spec
        .stall
        .clone()
        .map(|s| tokio::spawn(stall::run(s, window.measure_from)));
    let timeline = timeline.map(|t| {
        let run = t.run(progress.clone(), window.measure_from, window.end);
        tokio::spawn(run)
    });
    let mut writer_results = Vec::new();
    for w in writers {
        writer_results.push(w.await?);
    }
    drop(pacer);
    let stopper = tokio::spawn(async move {
        sleep_until(window.hard_deadline.into()).await;
        let _ = stop_tx.send(true);
    });
    let mut reader_results = Vec::new();
    for r in readers {
        reader_results.push(r.await?);
    }
    stopper.abort();
    for w in &mut writer_results {
        if let Some(mut tx) = w.sender.take() {
            tx.close().await;
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let stall_report = match staller {
        Some(s) => Some(s.await??),
        None => None,
    };
    if let Some(t) = timeline {
        t.await??;
    }
    merge(spec, writer_results, reader_results, stall_report)
}

fn merge(
    spec: &RunSpec,
    writers: Vec<WriterResult>,
    readers: Vec<ReaderResult>,
    stall: Option<stall::StallReport>,
) -> anyhow::Result<RunResult> {
    let mut total = ReaderResult::empty();
    for r in readers {
        for k in 0..OpKind::ALL.len() {
            total.corrected[k].add(&r.corrected[k])?;
            total.uncorrected[k].add(&r.uncorrected[k])?;
            total.ok[k] += r.ok[k];
        }
        for (code, n) in r.errors {
            *total.errors.entry(code).or_default() += n;
        }
        total.acked_events_total += r.acked_events_total;
        total.acked_events_measured += r.acked_events_measured;
        total.completed_measured += r.completed_measured;
    }
    let mut send_lag = histogram();
    let mut generator = GeneratorStats::default();
    let (mut sent_measured, mut late) = (0, 0);
    let mut writer_errors = Vec::new();
    for w in writers {
        sent_measured += w.sent_measured;
        late += w.late;
        if let Some(h) = &w.send_lag_ns {
            send_lag.add(h)?;
        }
        let g = &w.generator;
        generator.sessions += g.sessions;
        generator.resolved += g.resolved;
        generator.unresolved += g.unresolved;
        generator.browsing += g.browsing;
        generator.dropped_followups += g.dropped_followups;
        generator.stale_followups += g.stale_followups;
        if let Some(e) = w.error {
            writer_errors.push(e);
        }
    }
    Ok(RunResult {
        spec: spec.clone(),
        reader: total,
        sent_measured,
        late,
        send_lag,
        generator,
        writer_errors,
        stall,
    })
}

struct ConnWriter {
    spec: RunSpec,
    conn: u32,
    generator: Generator,
    tx: Sender,
    pending: mpsc::UnboundedSender<Vec<InFlight>>,
    permits: Option<Arc<Semaphore>>,
    /// A non-event op met while filling a batch: it is the next request.
    stash: Option<Op>,
    window: Window,
    progress: Arc<Progress>,
    /// Open loop: when this connection's requests are due (the pacer's count).
    due: Option<Due>,
}

/// Most requests written in one go.
const MAX_BATCH: usize = 64;

impl ConnWriter {
    /// The next request: one op, or with `--batch`, a run of consecutive events.
    fn next_request(&mut self) -> Op {
        let first = match self.stash.take() {
            Some(op) => op,
            None => self.generator.next_op(),
        };
        let batch = self.spec.batch as usize;
        let Op::Event(first) = first else {
            return first;
        };
        if batch <= 1 {
            return Op::Event(first);
        }
        let mut events = Vec::with_capacity(batch);
        events.push(first);
        while events.len() < batch {
            match self.generator.next_op() {
                Op::Event(e) => events.push(e),
                other => {
                    self.stash = Some(other);
                    break;
                }
            }
        }
        Op::Batch(events)
    }

    async fn run(mut self) -> WriterResult {
        let mut result = WriterResult {
            send_lag_ns: Some(histogram()),
            ..Default::default()
        };
        let outcome = match self.spec.load {
            Load::Open { .. } => self.open_loop(&mut result).await,
            Load::Closed { .. } => self.closed_loop(&mut result).await,
        };
        if let Err(e) = outcome {
            result.error = Some(format!("connection {}: {e:#}", self.conn));
        }
        result.sender = Some(self.tx);
        result.generator = self.generator.stats.clone();
        result
    }

    async fn open_loop(&mut self, result: &mut WriterResult) -> anyhow::Result<()> {
        let due = self.due.take().expect("an open loop has a pacer");
        let total = due.total();
        let (mut i, mut next_id) = (0u64, 1u64);
        let (mut ops, mut flights, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        let lag_hist = result.send_lag_ns.as_mut().expect("set by run");
        while i < total {
            // Sleeps (no spinning) until the pacer says a request is due; then sends every
            // request due by now, each timed from its own intended send time.
            let due_now = due.more_than(i).await;
            let now = Instant::now();
            ops.clear();
            while i < due_now && ops.len() < MAX_BATCH {
                let intended = due.intended(i);
                let lag = now.saturating_duration_since(intended);
                let measured = intended >= self.window.measure_from;
                if measured {
                    result.sent_measured += 1;
                    lag_hist.saturating_record(lag.as_nanos().max(1) as u64);
                    if lag > self.spec.late_threshold {
                        result.late += 1;
                        self.progress.late.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let op = self.next_request();
                let (kind, session) = kind_of(&op);
                flights.push(InFlight {
                    kind,
                    intended,
                    sent: now,
                    session,
                    measured,
                });
                ops.push(op);
                i += 1;
            }
            self.send(&mut ops, &mut flights, &mut next_id, &mut buf)
                .await?;
        }
        Ok(())
    }

    async fn closed_loop(&mut self, result: &mut WriterResult) -> anyhow::Result<()> {
        let permits = self.permits.clone().expect("closed loop has permits");
        let (mut ops, mut flights, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        let mut next_id = 1u64;
        loop {
            let Ok(permit) = timeout_at(self.window.end.into(), permits.acquire()).await else {
                return Ok(());
            };
            permit?.forget();
            let mut n = 1;
            while n < MAX_BATCH {
                match permits.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                n += 1;
            }
            let now = Instant::now();
            if now >= self.window.end {
                return Ok(());
            }
            let measured = now >= self.window.measure_from;
            ops.clear();
            for _ in 0..n {
                let op = self.next_request();
                let (kind, session) = kind_of(&op);
                flights.push(InFlight {
                    kind,
                    intended: now,
                    sent: now,
                    session,
                    measured,
                });
                ops.push(op);
            }
            if measured {
                result.sent_measured += n as u64;
            }
            self.send(&mut ops, &mut flights, &mut next_id, &mut buf)
                .await?;
        }
    }

    async fn send(
        &mut self,
        ops: &mut [Op],
        flights: &mut Vec<InFlight>,
        next_id: &mut u64,
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let n = ops.len() as u64;
        // Hand the bookkeeping to the reader before the bytes leave, so no reply can overtake it.
        self.pending
            .send(std::mem::take(flights))
            .map_err(|_| anyhow::anyhow!("reader gone"))?;
        let w = self.generator.workload().clone();
        let sent = timeout_at(
            self.window.hard_deadline.into(),
            self.tx.send(ops, *next_id, &w, buf),
        );
        match sent.await {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("the target accepted nothing until the drain deadline"),
        }
        *next_id += n;
        self.progress.sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

async fn read_replies(
    mut rx: Receiver,
    mut pending: mpsc::UnboundedReceiver<Vec<InFlight>>,
    board: Arc<Board>,
    permits: Option<Arc<Semaphore>>,
    progress: Arc<Progress>,
    timeline: Option<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> ReaderResult {
    let mut r = ReaderResult::empty();
    let mut local: VecDeque<InFlight> = VecDeque::new();
    loop {
        if local.is_empty() {
            tokio::select! {
                batch = pending.recv() => match batch {
                    Some(b) => local.extend(b),
                    None => break,
                },
                _ = stop.changed() => break,
            }
            continue;
        }
        let reply = tokio::select! {
            reply = rx.recv() => reply,
            _ = stop.changed() => break,
        };
        let now = Instant::now();
        while let Ok(b) = pending.try_recv() {
            local.extend(b);
        }
        let Some(f) = local.pop_front() else { break };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                let code = format!("io: {e}");
                *r.errors.entry(code).or_default() += 1 + local.len() as u64;
                local.clear();
                break;
            }
        };
        progress.done.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &permits {
            p.add_permits(1);
        }
        let k = f.kind as usize;
        match reply {
            Reply::Ack => {
                if f.kind == OpKind::Event {
                    r.acked_events_total += 1;
                    r.acked_events_measured += f.measured as u64;
                }
            }
            Reply::Decision(shown) => board.post(f.session, shown),
            Reply::Batch { acked, errors } => {
                r.acked_events_total += acked as u64;
                if f.measured {
                    r.acked_events_measured += acked as u64;
                }
                for code in &errors {
                    *r.errors.entry(code.clone()).or_default() += 1;
                }
                progress
                    .errors
                    .fetch_add(errors.len() as u64, Ordering::Relaxed);
                // A single op refused inside a summary is a failed request.
                if f.kind != OpKind::Batch && !errors.is_empty() {
                    continue;
                }
            }
            Reply::Error(code) => {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                *r.errors.entry(code).or_default() += 1;
                continue;
            }
        }
        r.ok[k] += 1;
        if f.measured {
            r.completed_measured += 1;
            let corrected_ns = (now - f.intended).as_nanos().max(1) as u64;
            r.corrected[k].saturating_record(corrected_ns);
            if let Some(t) = &timeline {
                t.record(k, corrected_ns);
            }
            r.uncorrected[k].saturating_record((now - f.sent).as_nanos().max(1) as u64);
        }
    }
    // Whatever is still waiting got no reply before the deadline.
    while let Ok(b) = pending.try_recv() {
        local.extend(b);
    }
    if !local.is_empty() {
        *r.errors.entry("timeout".into()).or_default() += local.len() as u64;
    }
    r
}

async fn print_progress(p: Arc<Progress>, window: Window) {
    let mut tick = tokio::time::interval_at(
        (window.start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last_done = 0;
    loop {
        tick.tick().await;
        let elapsed = window.start.elapsed().as_secs_f64();
        let total = (window.end - window.start).as_secs_f64();
        let done = p.done.load(Ordering::Relaxed);
        eprintln!(
            "[{:>5.1}/{:.0} s{}] sent {} done {} ({}/s) errors {}",
            elapsed.min(total),
            total,
            if Instant::now() < window.measure_from {
                " warmup"
            } else {
                ""
            },
            p.sent.load(Ordering::Relaxed),
            done,
            done - last_done,
            p.errors.load(Ordering::Relaxed),
        );
        last_done = done;
    }
}
