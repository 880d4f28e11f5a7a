//! The checkpoint store: one redb file (`DIR/store.redb`) holding every stored user, each
//! shard's checkpointed state with the log position it covers, and the master copy of the
//! global model.
//!
//! redb was chosen over an LSM store (fjall, RocksDB): a checkpoint is one ACID write
//! transaction (all of a shard's dirty users, its state and its log position commit together
//! or not at all), a deleted record is gone from the B-tree at commit rather than shadowed by
//! a tombstone until some compaction, pages carry checksums, and it is pure Rust with no
//! background threads of its own.
//!
//! Writes happen on one thread (`Checkpointer`), which takes each shard's checkpoint as a
//! stream of jobs (`Begin`, `Users`…, `Finish`) and writes one shard's checkpoint at a time in
//! one transaction. Reads (a user loaded on first touch, the state at recovery) happen on any
//! thread: redb's readers see the last committed checkpoint and never wait for the writer.
//!
//! Values start with a format byte (`STORE_VERSION`); a value of another version is refused
//! by name. The encoding of the values is serde's, through postcard.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::error;

use crate::actor::UserActor;
use crate::persist::{PersistError, Position};

/// The format of every value in the store; any change to a stored type bumps it.
pub const STORE_VERSION: u8 = 4;

/// The format before, still read so that a deploy keeps its data directory: its values are
/// the same but for the experiments' tallies and arm tags (`decode_or_previous` converts
/// those; every other value of it is read as it is).
pub const PREVIOUS_STORE_VERSION: u8 = 3;

/// The store's file in a data directory.
pub const STORE_FILE: &str = "store.redb";

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const SHARDS: TableDefinition<u16, &[u8]> = TableDefinition::new("shards");
const MASTER: TableDefinition<u8, &[u8]> = TableDefinition::new("master");
/// The row of `MASTER` holding the segments (row 0 is the global model). A store written
/// before segments has no such row, and an older build never reads it: no version change.
const SEGMENTS_KEY: u8 = 1;
/// Open decisions, by id (whose top 16 bits name the shard).
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("decisions");

/// A user record to write (`Some`, encoded) or delete (`None`), by the user's key.
pub type UserWrite = (u64, Option<Arc<[u8]>>);

/// A value a shard hands over to be encoded on the checkpointer's thread rather than its own.
pub type Deferred<T> = Box<dyn FnOnce() -> T + Send>;

/// Rows encoded on the checkpointer's thread: `(key, Some(value))` to write, `(key, None)`
/// to delete.
pub type DeferredRows = Deferred<Vec<(u64, Option<Vec<u8>>)>>;

/// Encodes a value as the store keeps it: the format byte, then postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![STORE_VERSION];
    postcard::to_extend(value, out).expect("writing to a Vec cannot fail")
}

/// Decodes a value written by `encode` (or by the previous format, for a type whose layout
/// did not change since); `what` names it in the error.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    file: &Path,
    what: &str,
) -> Result<T, PersistError> {
    let corrupt = |why: String| PersistError::Corrupt {
        file: file.to_path_buf(),
        offset: 0,
        what: format!("{what}: {why}"),
    };
    match bytes.split_first() {
        Some((&(STORE_VERSION | PREVIOUS_STORE_VERSION), rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(format!("undecodable ({e})")))
        }
        Some((v, _)) => Err(corrupt(format!(
            "store format version {v}; this build reads {STORE_VERSION}"
        ))),
        None => Err(corrupt("an empty value".into())),
    }
}

/// `decode` for a type whose layout changed in this format: a value of the previous format
/// is read as `P` and converted by `convert`.
pub fn decode_or_previous<T: DeserializeOwned, P: DeserializeOwned>(
    bytes: &[u8],
    file: &Path,
    what: &str,
    convert: impl FnOnce(P) -> T,
) -> Result<T, PersistError> {
    match bytes.first() {
        Some(&PREVIOUS_STORE_VERSION) => decode::<P>(bytes, file, what).map(convert),
        _ => decode(bytes, file, what),
    }
}

/// Counters of the store, for `stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Checkpoints committed.
    pub checkpoints_total: AtomicU64,
    /// Users written by checkpoints.
    pub users_written_total: AtomicU64,
    /// Users deleted by checkpoints (erasures).
    pub users_deleted_total: AtomicU64,
    /// Bytes of the last checkpoint's values.
    pub last_checkpoint_bytes: AtomicU64,
    /// Wall time of the last checkpoint's transaction, from `Begin` to commit (ms).
    pub last_checkpoint_ms: AtomicU64,
    /// When the last checkpoint committed (Unix ms; 0: never in this run).
    pub last_checkpoint_unix_ms: AtomicU64,
    /// Users loaded from the store on first touch.
    pub loads_total: AtomicU64,
    /// Users moved out of memory (by the resident cap or the idle timer).
    pub passivations_total: AtomicU64,
    /// Checkpoints that failed (the log is then kept).
    pub failures_total: AtomicU64,
    /// The longest a shard stopped serving to begin a checkpoint, in this run (µs).
    pub max_checkpoint_pause_us: AtomicU64,
    /// Requests refused because bringing their user into memory would have parked more
    /// than `durability.max_parked_bytes` (back-pressure from the store).
    pub parked_refusals_total: AtomicU64,
}

/// The checkpoint store.
pub struct Store {
    /// Readers and the checkpointer share it; `rewrite` swaps it (a reader of the old one
    /// keeps it open until it is done).
    db: RwLock<Arc<Database>>,
    path: PathBuf,
    counters: Arc<StoreCounters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. A file redb cannot read is refused,
    /// naming it.
    pub fn open(dir: &Path) -> Result<Store, PersistError> {
        Self::open_repairing(dir, false).map(|(store, _)| store)
    }

    /// Opens the store in `dir`; with `repair`, first checks every page's checksum (redb
    /// rolls a damaged last commit back to the one before, if that one is whole), and a file
    /// that cannot be opened or repaired is moved aside and replaced by an empty store.
    /// Returns what repair did, if anything.
    pub fn open_repairing(
        dir: &Path,
        repair: bool,
    ) -> Result<(Store, Option<String>), PersistError> {
        let path = dir.join(STORE_FILE);
        // A rewrite a crash interrupted: the old file is whole, the copy is not.
        let _ = std::fs::remove_file(path.with_extension("redb.rewrite"));
        let opened = Database::create(&path).and_then(|mut db| {
            let clean = !repair || db.check_integrity()?;
            Ok((db, clean))
        });
        let (db, repaired) = match opened {
            Ok((db, true)) => (db, None),
            Ok((db, false)) => {
                let did = format!(
                    "{}: damaged pages found; redb rolled it back to its last intact commit \
                     (the log replays from that checkpoint's position if it is still there)",
                    path.display()
                );
                (db, Some(did))
            }
            Err(e) if repair => {
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let aside = path.with_extension(format!("redb.damaged-{unix_ms}"));
                std::fs::rename(&path, &aside).map_err(|e| PersistError::io(&path, e))?;
                crate::persist::log::sync_dir(dir);
                let db = Database::create(&path).map_err(|e| PersistError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    what: format!("a fresh checkpoint store cannot be created: {e}"),
                })?;
                let did = format!(
                    "{} cannot be read ({e}); moved it to {} and started with an empty store: \
                     what only it held (users, open decisions and shard states as of the last \
                     checkpoint) is not restored, and the log that remains is replayed onto \
                     empty state. The moved file may hold users erased since; delete it once \
                     inspected",
                    path.display(),
                    aside.display()
                );
                (db, Some(did))
            }
            Err(e) => {
                return Err(PersistError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    what: format!(
                        "the checkpoint store cannot be opened: {e} (`--repair` moves it aside \
                         and starts from the log that remains)"
                    ),
                })
            }
        };
        let store = Store {
            db: RwLock::new(Arc::new(db)),
            path,
            counters: Arc::default(),
        };
        // Create the tables, so readers never meet a missing one.
        let txn = store.db.read().begin_write().map_err(|e| store.err(e))?;
        {
            txn.open_table(USERS).map_err(|e| store.err(e))?;
            txn.open_table(SHARDS).map_err(|e| store.err(e))?;
            txn.open_table(MASTER).map_err(|e| store.err(e))?;
            txn.open_table(DECISIONS).map_err(|e| store.err(e))?;
        }
        txn.commit().map_err(|e| store.err(e))?;
        Ok((store, repaired))
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's counters.
    pub fn counters(&self) -> &Arc<StoreCounters> {
        &self.counters
    }

    fn err(&self, e: impl std::fmt::Display) -> PersistError {
        PersistError::Corrupt {
            file: self.path.clone(),
            offset: 0,
            what: e.to_string(),
        }
    }

    /// A reader of the stored users as of the last committed checkpoint. It keeps seeing
    /// that snapshot: a shard keeps one between its own checkpoints (its users change in the
    /// store only through them), which makes a load one B-tree lookup.
    pub fn users(self: &Arc<Store>) -> Result<UserReader, PersistError> {
        let db = self.db.read().clone();
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(USERS).map_err(|e| self.err(e))?;
        Ok(UserReader {
            store: self.clone(),
            db,
            table,
        })
    }

    /// Stored users (all shards).
    pub fn user_count(&self) -> Result<u64, PersistError> {
        let txn = self.db.read().begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(USERS).map_err(|e| self.err(e))?;
        table.len().map_err(|e| self.err(e))
    }

    /// Shard `shard`'s last checkpoint: the log position it covers and its state.
    pub fn shard(&self, shard: u16) -> Result<Option<(Position, Vec<u8>)>, PersistError> {
        let txn = self.db.read().begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SHARDS).map_err(|e| self.err(e))?;
        let Some(v) = table.get(shard).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let bytes = v.value();
        if bytes.len() < 8 {
            return Err(self.err(format!("shard {shard}'s checkpoint record is truncated")));
        }
        let pos = Position::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        Ok(Some((pos, bytes[8..].to_vec())))
    }

    /// Shard `shard`'s open decisions as of its last checkpoint, by id.
    pub fn decisions(&self, shard: u16) -> Result<Vec<(u64, Vec<u8>)>, PersistError> {
        let txn = self.db.read().begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(DECISIONS).map_err(|e| self.err(e))?;
        let first = (shard as u64) << 48;
        let range = table
            .range(first..=(first | 0xffff_ffff_ffff))
            .map_err(|e| self.err(e))?;
        range
            .map(|row| {
                let (k, v) = row.map_err(|e| self.err(e))?;
                Ok((k.value(), v.value().to_vec()))
            })
            .collect()
    }

    /// The master copy of the global model, as of the latest checkpoint.
    pub fn master(&self) -> Result<Option<Vec<u8>>, PersistError> {
        self.master_row(0)
    }

    /// The segments' centroids and names (`model::segments::SavedSegments`), as of the
    /// latest checkpoint.
    pub fn segments(&self) -> Result<Option<Vec<u8>>, PersistError> {
        self.master_row(SEGMENTS_KEY)
    }

    fn master_row(&self, key: u8) -> Result<Option<Vec<u8>>, PersistError> {
        let txn = self.db.read().begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(MASTER).map_err(|e| self.err(e))?;
        let found = table.get(key).map_err(|e| self.err(e))?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    /// Copies every live record to a fresh file and puts it in place of this one, so that
    /// nothing deleted (an erased user) lingers in a free page: redb's own `compact` moves
    /// pages but leaves freed ones as they were. Loads go on from the old file during the
    /// copy and wait only for the swap. The checkpointer runs it after a checkpoint that
    /// deleted users; a crash during it leaves the old file, and the copy is removed at start.
    pub fn rewrite(&self) -> Result<(), PersistError> {
        let tmp = self.path.with_extension("redb.rewrite");
        let io = |e| PersistError::io(&tmp, e);
        let _ = std::fs::remove_file(&tmp);
        let fresh = Database::create(&tmp).map_err(|e| self.err(e))?;
        {
            let db = self.db.read();
            let from = db.begin_read().map_err(|e| self.err(e))?;
            let to = fresh.begin_write().map_err(|e| self.err(e))?;
            copy_table(&from, &to, USERS).map_err(|e| self.err(e))?;
            copy_table(&from, &to, SHARDS).map_err(|e| self.err(e))?;
            copy_table(&from, &to, MASTER).map_err(|e| self.err(e))?;
            copy_table(&from, &to, DECISIONS).map_err(|e| self.err(e))?;
            to.commit().map_err(|e| self.err(e))?;
        }
        let mut db = self.db.write();
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            crate::persist::log::sync_dir(dir);
        }
        // The old file (already unlinked by the rename) closes once its last reader is done.
        *db = Arc::new(fresh);
        Ok(())
    }
}

/// A snapshot of the stored users (`Store::users`).
pub struct UserReader {
    store: Arc<Store>,
    /// The file it reads (kept open across a `rewrite`).
    db: Arc<Database>,
    table: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl UserReader {
    /// Whether it still reads the store's current file (false after a `rewrite`).
    pub fn is_current(&self) -> bool {
        Arc::ptr_eq(&self.db, &self.store.db.read())
    }

    /// The stored user with this key.
    pub fn get(&self, key: u64) -> Result<Option<UserActor>, PersistError> {
        let s = &self.store;
        let Some(v) = self.table.get(key).map_err(|e| s.err(e))? else {
            return Ok(None);
        };
        let user = decode(v.value(), &s.path, "a user record")?;
        s.counters.loads_total.fetch_add(1, Ordering::Relaxed);
        Ok(Some(user))
    }

    /// Whether a user with this key is stored.
    pub fn has(&self, key: u64) -> Result<bool, PersistError> {
        Ok(self
            .table
            .get(key)
            .map_err(|e| self.store.err(e))?
            .is_some())
    }
}

fn copy_table<K: redb::Key + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<K, &[u8]>,
) -> Result<(), Box<redb::Error>> {
    let src = from.open_table(table).map_err(|e| Box::new(e.into()))?;
    let mut dst = to.open_table(table).map_err(|e| Box::new(e.into()))?;
    for entry in src.iter().map_err(|e| Box::new(e.into()))? {
        let (k, v) = entry.map_err(|e| Box::new(e.into()))?;
        dst.insert(k.value(), v.value())
            .map_err(|e| Box::new(e.into()))?;
    }
    Ok(())
}

/// One step of a shard's checkpoint, sent to the checkpointer thread.
pub enum Job {
    /// Starts shard `shard`'s checkpoint at `position`: its state, the master's, and the
    /// first user writes (erasures and users already out of memory).
    Begin {
        /// The shard.
        shard: u16,
        /// The log position the checkpoint covers (everything before it).
        position: Position,
        /// The shard's state, to encode.
        state: Deferred<Vec<u8>>,
        /// The master copy of the global model, to encode (when there is one).
        master: Deferred<Option<Vec<u8>>>,
        /// The segments' centroids and names, to encode (when segments are on).
        segments: Deferred<Option<Vec<u8>>>,
        /// Deletions first, then users.
        users: Vec<UserWrite>,
        /// The open decisions opened, changed or closed since the shard's last checkpoint.
        decisions: DeferredRows,
    },
    /// More users of the shard's checkpoint.
    Users {
        /// The shard.
        shard: u16,
        /// The users.
        users: Vec<UserWrite>,
    },
    /// The end of the shard's checkpoint: commit it.
    Finish {
        /// The shard.
        shard: u16,
    },
}

impl Job {
    fn shard(&self) -> u16 {
        match self {
            Job::Begin { shard, .. } | Job::Users { shard, .. } | Job::Finish { shard } => *shard,
        }
    }
}

/// What a shard learns of its checkpoints: the latest committed position (`u64::MAX`: none
/// yet) and the latest failure.
#[derive(Debug)]
pub struct Committed {
    position: AtomicU64,
    /// Checkpoints of this shard committed (a shard waits for the count to move).
    count: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl Default for Committed {
    fn default() -> Self {
        Committed {
            position: AtomicU64::new(u64::MAX),
            count: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }
}

impl Committed {
    /// The position of the latest committed checkpoint, if any.
    pub fn position(&self) -> Option<Position> {
        let p = self.position.load(Ordering::Acquire);
        (p != u64::MAX).then_some(p)
    }

    /// Checkpoints committed so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Takes the latest failure, if one happened since the last call.
    pub fn take_failure(&self) -> Option<String> {
        self.failure.lock().take()
    }
}

/// The checkpointer: one thread writing checkpoints to the store, one shard at a time.
pub struct Checkpointer {
    store: Arc<Store>,
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    committed: Vec<Arc<Committed>>,
}

impl Checkpointer {
    /// Starts the thread for `shards` shards.
    pub fn spawn(store: Arc<Store>, shards: usize) -> Result<Arc<Checkpointer>, PersistError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let committed: Vec<Arc<Committed>> = (0..shards).map(|_| Arc::default()).collect();
        let thread = std::thread::Builder::new()
            .name("nudge-checkpoint".into())
            .spawn({
                let (store, committed) = (store.clone(), committed.clone());
                move || {
                    lower_priority();
                    write_loop(&store, &committed, rx)
                }
            })
            .map_err(|e| PersistError::io(store.path(), e))?;
        Ok(Arc::new(Checkpointer {
            store,
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            committed,
        }))
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What shard `shard` learns of its checkpoints.
    pub fn committed(&self, shard: u16) -> &Arc<Committed> {
        &self.committed[shard as usize]
    }

    /// Queues one step of a checkpoint (dropped after `stop`).
    pub fn send(&self, job: Job) {
        if let Some(tx) = &*self.jobs.lock() {
            let _ = tx.send(job);
        }
    }

    /// Whether the thread is still running (it stops only when told, or if it panicked).
    pub fn alive(&self) -> bool {
        self.thread
            .lock()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Lets the thread finish what it was sent, and waits for it.
    pub fn stop(&self) {
        self.jobs.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Joined, so that the store's file is closed once the engine is gone.
        self.stop();
    }
}

/// One shard's checkpoint being written.
struct Open {
    shard: u16,
    position: Position,
    txn: redb::WriteTransaction,
    started: Instant,
    bytes: u64,
    written: u64,
    deleted: u64,
}

/// The checkpointer's nice value: on a core it shares with shards and I/O threads, they run
/// first and it takes the time they leave (a checkpoint of a million users is seconds of
/// CPU; at equal priority it took a fair share of the shards' core).
const CHECKPOINTER_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (on Linux a thread's nice value is its
/// own); elsewhere, or if refused, it runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        let r = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, CHECKPOINTER_NICE)
        };
        if r != 0 {
            tracing::warn!(
                "the checkpointer runs at normal priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn write_loop(store: &Store, committed: &[Arc<Committed>], jobs: Receiver<Job>) {
    let mut open: Option<Open> = None;
    // Jobs of other shards that arrived while one shard's checkpoint was open, in order.
    let mut backlog: VecDeque<Job> = VecDeque::new();
    loop {
        let queued = match &open {
            None => backlog.pop_front(),
            Some(o) => backlog
                .iter()
                .position(|j| j.shard() == o.shard)
                .and_then(|i| backlog.remove(i)),
        };
        let job = match queued {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                // Stopped: an unfinished checkpoint's transaction is dropped (aborted).
                Err(_) => return,
            },
        };
        if open.as_ref().is_some_and(|o| o.shard != job.shard()) {
            backlog.push_back(job);
            continue;
        }
        apply(store, committed, &mut open, job);
    }
}

/// Applies one job to the open checkpoint; a failure aborts it and is reported to its shard.
fn apply(store: &Store, committed: &[Arc<Committed>], open: &mut Option<Open>, job: Job) {
    let c = &store.counters;
    let shard = job.shard();
    let result = (|| -> Result<(), PersistError> {
        match job {
            Job::Begin {
                shard,
                position,
                state,
                master,
                segments,
                users,
                decisions,
            } => {
                let txn = store.db.read().begin_write().map_err(|e| store.err(e))?;
                let mut o = Open {
                    shard,
                    position,
                    txn,
                    started: Instant::now(),
                    bytes: 0,
                    written: 0,
                    deleted: 0,
                };
                {
                    let mut shards = o.txn.open_table(SHARDS).map_err(|e| store.err(e))?;
                    let mut value = position.to_le_bytes().to_vec();
                    value.extend_from_slice(&state());
                    o.bytes += value.len() as u64;
                    shards
                        .insert(shard, value.as_slice())
                        .map_err(|e| store.err(e))?;
                    if let Some(m) = master() {
                        let mut t = o.txn.open_table(MASTER).map_err(|e| store.err(e))?;
                        t.insert(0u8, m.as_slice()).map_err(|e| store.err(e))?;
                        o.bytes += m.len() as u64;
                    }
                    if let Some(s) = segments() {
                        let mut t = o.txn.open_table(MASTER).map_err(|e| store.err(e))?;
                        t.insert(SEGMENTS_KEY, s.as_slice())
                            .map_err(|e| store.err(e))?;
                        o.bytes += s.len() as u64;
                    }
                }
                write_users(store, &mut o, users)?;
                {
                    let mut table = o.txn.open_table(DECISIONS).map_err(|e| store.err(e))?;
                    for (id, value) in decisions() {
                        match value {
                            Some(v) => {
                                o.bytes += v.len() as u64 + 8;
                                table.insert(id, v.as_slice()).map_err(|e| store.err(e))?;
                            }
                            None => {
                                table.remove(id).map_err(|e| store.err(e))?;
                            }
                        }
                    }
                }
                *open = Some(o);
                Ok(())
            }
            Job::Users { shard, users } => match open {
                Some(o) if o.shard == shard => write_users(store, o, users),
                // The checkpoint failed earlier: its remaining jobs are dropped.
                _ => Ok(()),
            },
            Job::Finish { shard } => {
                let Some(o) = open.take().filter(|o| o.shard == shard) else {
                    return Ok(());
                };
                let (position, started) = (o.position, o.started);
                let (bytes, written, deleted) = (o.bytes, o.written, o.deleted);
                o.txn.commit().map_err(|e| store.err(e))?;
                c.checkpoints_total.fetch_add(1, Ordering::Relaxed);
                c.users_written_total.fetch_add(written, Ordering::Relaxed);
                c.users_deleted_total.fetch_add(deleted, Ordering::Relaxed);
                c.last_checkpoint_bytes.store(bytes, Ordering::Relaxed);
                c.last_checkpoint_ms
                    .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                c.last_checkpoint_unix_ms.store(now, Ordering::Relaxed);
                // Deleted users must not linger in free pages. A failed rewrite does not undo
                // the committed checkpoint; the next one that deletes tries again.
                if deleted > 0 {
                    if let Err(e) = store.rewrite() {
                        error!("rewriting the store after an erasure: {e}");
                        c.failures_total.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let done = &committed[shard as usize];
                done.position.store(position, Ordering::Release);
                done.count.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
        }
    })();
    if let Err(e) = result {
        error!("checkpoint: {e}");
        c.failures_total.fetch_add(1, Ordering::Relaxed);
        // The failed checkpoint's transaction is dropped (aborted); its shard keeps its log.
        *open = None;
        let done = &committed[shard as usize];
        *done.failure.lock() = Some(e.to_string());
        done.count.fetch_add(1, Ordering::AcqRel);
    }
}

fn write_users(store: &Store, o: &mut Open, users: Vec<UserWrite>) -> Result<(), PersistError> {
    let mut table = o.txn.open_table(USERS).map_err(|e| store.err(e))?;
    for (key, value) in users {
        match value {
            Some(v) => {
                o.bytes += v.len() as u64 + 8;
                o.written += 1;
                table.insert(key, &*v).map_err(|e| store.err(e))?;
            }
            None => {
                if table.remove(key).map_err(|e| store.err(e))?.is_some() {
                    o.deleted += 1;
                }
            }
        }
    }
    Ok(())
}

/// Rewrites every value of the store at `path` through `f(table, value)`: a store as an older
/// build wrote it, for the tests of reading one.
#[cfg(test)]
pub(crate) fn rewrite_values(path: &Path, mut f: impl FnMut(&str, &[u8]) -> Vec<u8>) {
    let db = Database::open(path).unwrap();
    let tx = db.begin_write().unwrap();
    macro_rules! rewrite {
        ($table:expr, $name:expr) => {{
            let mut t = tx.open_table($table).unwrap();
            let rows: Vec<_> = (t.iter().unwrap())
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            for (k, v) in rows {
                t.insert(k, f($name, &v).as_slice()).unwrap();
            }
        }};
    }
    rewrite!(USERS, "users");
    rewrite!(SHARDS, "shards");
    rewrite!(MASTER, "master");
    rewrite!(DECISIONS, "decisions");
    tx.commit().unwrap();
}
