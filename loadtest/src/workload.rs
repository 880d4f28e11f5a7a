//! The workload: a seeded, documented model of people using a recommender, turned into a
//! stream of requests. It owns the catalog, the users' hidden tastes, and the session script;
//! it does not know JSON, sockets or time (ops are numbered, not timed; `driver` times them).
//!
//! **Definition** (also in `docs/loadtest.md`):
//! - *Catalog*: `items` items `i0…`, in `C = clamp(items / K, 1, 20)` categories (item `j` is in
//!   category `j mod C`, and its rank inside the category, `j div C`, is its popularity rank).
//!   Each item has the attribute `category=cN` and a 32-dim unit vector: its category's random
//!   centroid plus noise. The catalog is loaded before the run (`Op::Item`).
//! - *Users*: `users` users `u0…`; activity is Zipf-distributed with `s = 1.1` (rank 1 is the
//!   most active). Each user has a hidden taste vector (a favourite category's centroid plus
//!   noise) and a device (`mobile`, `desktop`, `tablet`), both derived from the seed and the id.
//!   With several streams (connections), stream `c` owns users `u ≡ c (mod streams)`, so no two
//!   connections race on a user.
//! - *Mix*: each op is a decision with probability `1 − event_share` (default 0.2) and an event
//!   otherwise. An event is the next due session follow-up, or, when none is due, a browsing
//!   event (click 50%, dwell 30%, impression 20%) by a Zipf-drawn user on an item of their
//!   favourite category (half the time) or a popular item.
//! - *Session*: a decision over `K` candidates (`K/2` consecutive popular items of the user's
//!   favourite category and `K/2` of another category), top `n` shown. `lag` ops later (so the
//!   reply has arrived) its follow-ups are queued: a scroll (depth 0.1–1), then for each shown
//!   slot `j`, a click with probability `σ(5·taste·x − 2.5) / √(1+j)`; each click brings a dwell
//!   (`e^(1 + 2·like + 0.5·N)` s), and with probability `0.3·like⁺` a conversion (value 5–100)
//!   and an explicit reward of 1.0 on the decision. Clicks, dwells and conversions name the
//!   decision. So clicks follow the hidden taste, and the engine has something real to learn.
//! - A session whose reply is missing when due (an error, or still in flight), or whose user
//!   has made 12 newer decisions since (the engine keeps 16 open per user), is *unresolved*:
//!   its clicks go to the best-liked candidates without naming the decision. The same check
//!   runs again when a queued follow-up is sent. Counted, not hidden.
//!
//! Same seed, same replies ⇒ the same ops, bit for bit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use nudge::rng::{splitmix64, Rng};
use nudge::EventKind;
use std::sync::Mutex;

use crate::zipf::Zipf;

/// Width of item vectors and tastes.
pub const DIM: usize = 32;

/// The Zipf exponent of user activity.
pub const USER_ZIPF_S: f64 = 1.1;

/// The Zipf exponent of item popularity inside a category.
pub const ITEM_ZIPF_S: f64 = 0.9;

/// Most follow-up ops waiting, in multiples of the lag; past this the oldest (whose decisions
/// are the likeliest to have closed) are dropped, and counted.
const MAX_QUEUED_FOLLOWUPS_PER_LAG: usize = 4;

/// How many newer decisions a user may have made before a session's decision is treated as
/// possibly closed by the engine (which keeps 16 open per user by default).
const MAX_NEWER_DECISIONS: u32 = 12;

/// The knobs of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Seed of everything.
    pub seed: u64,
    /// Number of users.
    pub users: u32,
    /// Number of catalog items.
    pub items: u32,
    /// Candidates per decision (`K`).
    pub candidates: u16,
    /// Items shown per decision (`n`).
    pub top: u16,
    /// Share of ops that are events (the rest are decisions).
    pub event_share: f64,
    /// Ops between a decision and its follow-ups.
    pub lag: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            users: 1_000_000,
            items: 100_000,
            candidates: 100,
            top: 10,
            event_share: 0.8,
            lag: 1024,
        }
    }
}

/// The catalog and the users' hidden traits: shared, read-only, by every stream.
#[derive(Debug)]
pub struct Workload {
    /// The configuration it was built from.
    pub cfg: WorkloadConfig,
    /// Number of categories.
    pub categories: u32,
    /// Item vectors, `DIM` per item, unit length, rounded to 4 decimals.
    vectors: Vec<f32>,
    /// Category centroids, `DIM` per category.
    centroids: Vec<f32>,
}

/// The wire names of the devices.
pub const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut s = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(32);
    splitmix64(&mut s)
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Workload {
    /// Builds the catalog from `cfg` (deterministic in `cfg.seed`).
    pub fn new(cfg: WorkloadConfig) -> Result<Self, String> {
        if cfg.users == 0 || cfg.items == 0 || cfg.candidates < 2 || cfg.top == 0 {
            return Err("users, items and top must be positive and candidates at least 2".into());
        }
        if cfg.items < 2 * cfg.candidates as u32 {
            return Err(format!(
                "items ({}) must be at least 2 × candidates",
                cfg.items
            ));
        }
        if cfg.top > cfg.candidates {
            return Err("top must not exceed candidates".into());
        }
        if !(0.0..=1.0).contains(&cfg.event_share) {
            return Err("the event share must be in 0..=1".into());
        }
        let categories = (cfg.items / cfg.candidates as u32).clamp(1, 20);
        let mut rng = Rng::new(mix(cfg.seed, 1, 0));
        let mut centroids = vec![0f32; categories as usize * DIM];
        for c in centroids.chunks_mut(DIM) {
            c.iter_mut().for_each(|x| *x = rng.normal() as f32);
            normalize(c);
        }
        let mut vectors = vec![0f32; cfg.items as usize * DIM];
        for (j, v) in vectors.chunks_mut(DIM).enumerate() {
            let c = &centroids[(j % categories as usize) * DIM..][..DIM];
            for (x, m) in v.iter_mut().zip(c) {
                *x = 0.8 * m + 0.6 * rng.normal() as f32 / (DIM as f32).sqrt();
            }
            normalize(v);
            v.iter_mut().for_each(|x| *x = (*x * 1e4).round() / 1e4);
        }
        Ok(Workload {
            cfg,
            categories,
            vectors,
            centroids,
        })
    }

    /// The item's category index.
    pub fn category(&self, item: u32) -> u32 {
        item % self.categories
    }

    /// The item's vector.
    pub fn vector(&self, item: u32) -> &[f32] {
        &self.vectors[item as usize * DIM..][..DIM]
    }

    /// Items in category `c`.
    fn category_size(&self, c: u32) -> u32 {
        (self.cfg.items - c).div_ceil(self.categories)
    }

    /// The item of popularity rank `rank` (0-based, wrapping) in category `c`.
    fn item_at(&self, c: u32, rank: u32) -> u32 {
        (rank % self.category_size(c)) * self.categories + c
    }

    /// The user's device index into `DEVICES`.
    pub fn device(&self, user: u32) -> usize {
        (mix(self.cfg.seed, 2, user as u64) % 3) as usize
    }

    /// The one event that makes `user` resident before a run (`--prefill`): a scroll, which
    /// names no item. Not an impression: an impression that names no decision opens an
    /// implicit one, which would stay open for the attribution window and count in the
    /// server's memory as if the run had made it.
    pub fn prefill_event(&self, user: u32) -> EventOp {
        EventOp {
            user,
            kind: EventKind::Scroll,
            item: None,
            value: Some(0.5),
            decision: None,
        }
    }

    /// The user's favourite category.
    pub fn favourite(&self, user: u32) -> u32 {
        (mix(self.cfg.seed, 3, user as u64) % self.categories as u64) as u32
    }

    /// The user's hidden taste: a unit vector near their favourite category's centroid.
    pub fn taste(&self, user: u32) -> [f32; DIM] {
        let mut rng = Rng::new(mix(self.cfg.seed, 4, user as u64));
        let c = &self.centroids[self.favourite(user) as usize * DIM..][..DIM];
        let mut t = [0f32; DIM];
        for (x, m) in t.iter_mut().zip(c) {
            *x = 0.7 * m + 0.7 * rng.normal() as f32 / (DIM as f32).sqrt();
        }
        normalize(&mut t);
        t
    }
}

/// An event to send.
#[derive(Clone, Debug, PartialEq)]
pub struct EventOp {
    /// The user index.
    pub user: u32,
    /// The kind.
    pub kind: EventKind,
    /// The item index, if any.
    pub item: Option<u32>,
    /// The numeric value, if any.
    pub value: Option<f32>,
    /// The decision it answers, if known.
    pub decision: Option<u64>,
}

/// A decision to ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct DecideOp {
    /// The stream-local session number (≥ 1) the reply is posted under.
    pub session: u64,
    /// The user index.
    pub user: u32,
    /// Candidate item indices.
    pub candidates: Vec<u32>,
    /// How many to show.
    pub n: u16,
}

/// An explicit reward.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardOp {
    /// The user index (for targets that key state by user).
    pub user: u32,
    /// The decision.
    pub decision: u64,
    /// The rewarded item index.
    pub item: u32,
    /// The reward.
    pub value: f32,
}

/// One request of the workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Load catalog item `i` (before the run).
    Item(u32),
    /// An event.
    Event(EventOp),
    /// A decision.
    Decide(DecideOp),
    /// A reward.
    Reward(RewardOp),
    /// Several events in one request (`--batch`; made by the driver, never by a `Generator`).
    Batch(Vec<EventOp>),
}

/// What a decision showed: its id and the shown item indices, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct Shown {
    /// The decision id.
    pub decision: u64,
    /// The shown items.
    pub items: Vec<u32>,
}

/// Counters of one generator.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct GeneratorStats {
    /// Sessions started (decisions generated).
    pub sessions: u64,
    /// Sessions whose follow-ups used the decision's reply.
    pub resolved: u64,
    /// Sessions whose reply was missing or possibly closed when due.
    pub unresolved: u64,
    /// Browsing events generated because no follow-up was due.
    pub browsing: u64,
    /// Follow-ups dropped because too many were queued.
    pub dropped_followups: u64,
    /// Follow-ups whose decision went stale while queued (reference stripped, reward dropped).
    pub stale_followups: u64,
}

/// Where a stream's reader posts decision replies for its generator to pick up: a ring of
/// slots indexed by session number. A reply that arrives after its session was due finds its
/// slot reused later and is simply overwritten.
#[derive(Debug)]
pub struct Board {
    /// Guarded by a mutex shared by exactly two tasks (the connection's writer and reader).
    slots: Mutex<Vec<(u64, Option<Shown>)>>,
}

impl Board {
    /// A board with `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Board {
            slots: Mutex::new(vec![(0, None); capacity.max(1)]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Option<Shown>)>> {
        // A poisoned lock only means another task panicked; the slots are still plain data.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts the reply of `session`.
    pub fn post(&self, session: u64, shown: Shown) {
        let mut slots = self.lock();
        let n = slots.len();
        slots[(session % n as u64) as usize] = (session, Some(shown));
    }

    /// Takes the reply of `session`, if it was posted and not overwritten.
    pub fn take(&self, session: u64) -> Option<Shown> {
        let mut slots = self.lock();
        let n = slots.len();
        let slot = &mut slots[(session % n as u64) as usize];
        if slot.0 == session {
            slot.0 = 0;
            slot.1.take()
        } else {
            None
        }
    }
}

struct Pending {
    due: u64,
    session: u64,
    user: u32,
    ordinal: u32,
    candidates: Vec<u32>,
}

/// One stream of ops (one connection's), deterministic in the seed, the stream index and the
/// replies posted to its `Board`.
pub struct Generator {
    w: Arc<Workload>,
    stream: u32,
    streams: u32,
    rng: Rng,
    users: Zipf,
    ranks: Vec<Zipf>,
    op_index: u64,
    next_session: u64,
    pending: VecDeque<Pending>,
    /// Follow-ups with their session's user ordinal (to re-check staleness when sent).
    followups: VecDeque<(Op, u32)>,
    decisions_by_user: HashMap<u32, u32>,
    board: Arc<Board>,
    /// What it generated.
    pub stats: GeneratorStats,
}

impl Generator {
    /// Stream `stream` of `streams`.
    pub fn new(w: Arc<Workload>, stream: u32, streams: u32) -> Self {
        assert!(stream < streams);
        let per_stream = (w.cfg.users / streams).max(1);
        let ranks = (0..w.categories).map(|c| Zipf::new(w.category_size(c) as u64, ITEM_ZIPF_S));
        let lag = w.cfg.lag.max(1) as usize;
        Generator {
            rng: Rng::new(mix(w.cfg.seed, 5, stream as u64)),
            users: Zipf::new(per_stream as u64, USER_ZIPF_S),
            ranks: ranks.collect(),
            board: Arc::new(Board::new(2 * lag + 64)),
            w,
            stream,
            streams,
            op_index: 0,
            next_session: 1,
            pending: VecDeque::new(),
            followups: VecDeque::new(),
            decisions_by_user: HashMap::new(),
            stats: GeneratorStats::default(),
        }
    }

    /// Where the reader posts decision replies for this stream.
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// The workload.
    pub fn workload(&self) -> &Arc<Workload> {
        &self.w
    }

    fn draw_user(&mut self) -> u32 {
        let rank = self.users.sample(&mut self.rng) as u32 - 1;
        rank * self.streams + self.stream
    }

    fn draw_popular(&mut self, c: u32) -> u32 {
        self.ranks[c as usize].sample(&mut self.rng) as u32 - 1
    }

    /// The next op.
    pub fn next_op(&mut self) -> Op {
        self.op_index += 1;
        while self.pending.front().is_some_and(|p| p.due <= self.op_index) {
            let p = self.pending.pop_front().expect("front exists");
            self.expand(p);
        }
        if self.rng.next_f64() >= self.w.cfg.event_share {
            return Op::Decide(self.new_session());
        }
        while let Some((op, ordinal)) = self.followups.pop_front() {
            if let Some(op) = self.fresh(op, ordinal) {
                return op;
            }
        }
        self.stats.browsing += 1;
        self.browse()
    }

    /// `op` as it may still be sent: a reference to a decision the engine may have closed
    /// (the user made too many newer ones while it waited in the queue) is stripped from an
    /// event, and a reward to it is dropped.
    fn fresh(&mut self, op: Op, ordinal: u32) -> Option<Op> {
        let user = match &op {
            Op::Event(e) if e.decision.is_some() => e.user,
            Op::Reward(r) => r.user,
            _ => return Some(op),
        };
        let newer = self.decisions_by_user.get(&user).map_or(0, |n| n - ordinal);
        if newer < MAX_NEWER_DECISIONS {
            return Some(op);
        }
        self.stats.stale_followups += 1;
        match op {
            Op::Event(e) => Some(Op::Event(EventOp {
                decision: None,
                ..e
            })),
            _ => None,
        }
    }

    fn new_session(&mut self) -> DecideOp {
        let user = self.draw_user();
        let k = self.w.cfg.candidates as u32;
        let fav = self.w.favourite(user);
        let other = (fav + 1 + self.rng.below(self.w.categories.max(2) as usize - 1) as u32)
            % self.w.categories;
        let mut candidates = Vec::with_capacity(k as usize);
        let first = self.draw_popular(fav);
        candidates.extend((0..k / 2).map(|j| self.w.item_at(fav, first + j)));
        // With one category, the second half continues the first window: still distinct,
        // because a category holds at least K items.
        let (c2, start2) = if other == fav {
            (fav, first + k / 2)
        } else {
            (other, self.draw_popular(other))
        };
        candidates.extend((0..k - k / 2).map(|j| self.w.item_at(c2, start2 + j)));
        let session = self.next_session;
        self.next_session += 1;
        self.stats.sessions += 1;
        let ordinal = self.decisions_by_user.entry(user).or_insert(0);
        *ordinal += 1;
        self.pending.push_back(Pending {
            due: self.op_index + self.w.cfg.lag as u64,
            session,
            user,
            ordinal: *ordinal,
            candidates: candidates.clone(),
        });
        DecideOp {
            session,
            user,
            candidates,
            n: self.w.cfg.top,
        }
    }

    /// Queues a due session's follow-ups, from its reply when usable.
    fn expand(&mut self, p: Pending) {
        if self.w.cfg.event_share == 0.0 {
            // Decisions only: follow-ups would never be sent.
            let _ = self.board.take(p.session);
            return;
        }
        let shown = self.board.take(p.session);
        let newer = self
            .decisions_by_user
            .get(&p.user)
            .map_or(0, |n| n - p.ordinal);
        let mut rng = Rng::new(mix(
            self.w.cfg.seed,
            6,
            (self.stream as u64) << 40 | p.session,
        ));
        let taste = self.w.taste(p.user);
        let (decision, shown_items) = match shown {
            Some(s) if newer < MAX_NEWER_DECISIONS => {
                self.stats.resolved += 1;
                (Some(s.decision), s.items)
            }
            _ => {
                self.stats.unresolved += 1;
                // The user browses the candidates they like best instead.
                let mut by_like: Vec<(f32, u32)> = p
                    .candidates
                    .iter()
                    .map(|&i| (dot(&taste, self.w.vector(i)), i))
                    .collect();
                by_like.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                (
                    None,
                    by_like
                        .iter()
                        .take(self.w.cfg.top as usize)
                        .map(|x| x.1)
                        .collect(),
                )
            }
        };
        let user = p.user;
        let mut ops = vec![Op::Event(EventOp {
            user,
            kind: EventKind::Scroll,
            item: None,
            value: Some(round3(0.1 + 0.9 * rng.next_f64() as f32)),
            decision: None,
        })];
        for (slot, &item) in shown_items.iter().enumerate() {
            let like = dot(&taste, self.w.vector(item));
            let p_click = sigmoid(5.0 * like - 2.5) / (1.0 + slot as f32).sqrt();
            if rng.next_f64() as f32 >= p_click {
                continue;
            }
            let event = |kind, value| {
                Op::Event(EventOp {
                    user,
                    kind,
                    item: Some(item),
                    value,
                    decision,
                })
            };
            ops.push(event(EventKind::Click, None));
            let dwell = (1.0 + 2.0 * like + 0.5 * rng.normal() as f32)
                .exp()
                .min(600.0);
            ops.push(event(EventKind::Dwell, Some(round3(dwell))));
            if (rng.next_f64() as f32) < 0.3 * like.max(0.0) {
                ops.push(event(
                    EventKind::Conversion,
                    Some(round3(5.0 + 95.0 * rng.next_f64() as f32)),
                ));
                if let Some(decision) = decision {
                    ops.push(Op::Reward(RewardOp {
                        user,
                        decision,
                        item,
                        value: 1.0,
                    }));
                }
            }
        }
        for op in ops {
            if self.followups.len()
                >= MAX_QUEUED_FOLLOWUPS_PER_LAG * self.w.cfg.lag.max(16) as usize
            {
                self.followups.pop_front();
                self.stats.dropped_followups += 1;
            }
            self.followups.push_back((op, p.ordinal));
        }
    }

    fn browse(&mut self) -> Op {
        let user = self.draw_user();
        let c = if self.rng.next_f64() < 0.5 {
            self.w.favourite(user)
        } else {
            self.rng.below(self.w.categories as usize) as u32
        };
        let rank = self.draw_popular(c);
        let item = self.w.item_at(c, rank);
        let roll = self.rng.next_f64();
        let (kind, value) = if roll < 0.5 {
            (EventKind::Click, None)
        } else if roll < 0.8 {
            (
                EventKind::Dwell,
                Some(round3(
                    (1.0 + 1.5 * self.rng.normal() as f32).exp().min(600.0),
                )),
            )
        } else {
            (EventKind::Impression, None)
        };
        Op::Event(EventOp {
            user,
            kind,
            item: Some(item),
            value,
            decision: None,
        })
    }
}

fn round3(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}
