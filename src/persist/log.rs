//! The write-ahead log of one shard, behind the small [`ShardLog`] interface: "replay from
//! position P, then append batches; everything before a checkpoint's P may be dropped".
//!
//! [`SegmentLog`] is the local implementation: a directory of segment files named by the log
//! position of their first byte (`00000000000000000000.wal`), each a 16-byte header (`NUDGEWAL`,
//! the format version, zero) followed by records framed as `[len: u32 LE][crc: u32 LE]
//! [payload]`, where `crc` is the CRC32C of the length's four bytes and the payload. A batch
//! (one shard drain) is one `write`; a segment past `segment_bytes` is closed and the next
//! batch starts a new one. Positions are bytes since the log began, so a position names a
//! segment and an offset in it.
//!
//! Fsync follows the policy: `Always` syncs in `append_batch` before it returns; `Everysec`
//! leaves it to a flusher thread that syncs the current and any just-closed segment about once
//! a second; `No` never syncs.
//!
//! It does not know what a record means (`codec` does) nor when to checkpoint (`shard`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::warn;

use crate::config::FsyncPolicy;
use crate::persist::PersistError;

/// A byte position in a shard's log.
pub type Position = u64;

/// Magic at the start of every segment.
const MAGIC: &[u8; 8] = b"NUDGEWAL";
/// The segment format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Segment header bytes.
pub const HEADER_BYTES: u64 = 16;
/// Record frame bytes before the payload.
pub const FRAME_BYTES: usize = 8;
/// Largest record accepted on read; a longer length is corruption, not a record.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Records framed for [`ShardLog::append_batch`]: length, checksum, payload, back to back.
#[derive(Default, Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    records: u64,
    /// Where the record being encoded starts.
    open_at: Option<usize>,
}

impl Batch {
    /// Starts a record and returns the buffer to encode its payload into; `finish` closes it.
    pub fn begin(&mut self) -> &mut Vec<u8> {
        debug_assert!(self.open_at.is_none(), "a record is already open");
        self.open_at = Some(self.bytes.len());
        self.bytes.extend_from_slice(&[0; FRAME_BYTES]);
        &mut self.bytes
    }

    /// Closes the record `begin` opened: writes its length and checksum.
    pub fn finish(&mut self) {
        let at = self.open_at.take().expect("begin before finish");
        let len = (self.bytes.len() - at - FRAME_BYTES) as u32;
        let len_bytes = len.to_le_bytes();
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &self.bytes[at + FRAME_BYTES..]);
        self.bytes[at..at + 4].copy_from_slice(&len_bytes);
        self.bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        self.records += 1;
    }

    /// Framed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Records in the batch.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records = 0;
        self.open_at = None;
    }
}

/// Counters of one log, shared with readers (`stats`, `/metrics`).
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Fsyncs by duration: `fsync_buckets[i]` counts those of at most `FSYNC_BUCKETS_US[i]`
    /// µs and more than the bucket before (the last bucket also takes the slower ones).
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS_US.len()],
    /// Bytes appended.
    pub bytes_total: AtomicU64,
    /// Records appended.
    pub records_total: AtomicU64,
    /// Fsyncs done.
    pub fsyncs_total: AtomicU64,
    /// Microseconds spent in fsync, summed.
    pub fsync_us_total: AtomicU64,
    /// The slowest fsync so far, in microseconds.
    pub fsync_us_max: AtomicU64,
    /// Set while the last write or fsync failed (disk full, I/O error); cleared by the next
    /// one that succeeds.
    pub failing: AtomicBool,
}

/// Upper bounds (µs) of the fsync latency histogram's buckets.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

impl LogCounters {
    fn fsynced(&self, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(FSYNC_BUCKETS_US.len() - 1);
        self.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.fsyncs_total.fetch_add(1, Ordering::Relaxed);
        self.fsync_us_total.fetch_add(us, Ordering::Relaxed);
        self.fsync_us_max.fetch_max(us, Ordering::Relaxed);
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayReport {
    /// Records handed to the callback.
    pub records: u64,
    /// Where a torn tail was cut, if one was: the file and the offset in it.
    pub cut: Option<(PathBuf, u64)>,
    /// Where `repair` moved a corrupt rest aside, if it did.
    pub moved_aside: Vec<PathBuf>,
}

/// A shard's log: replay once from a checkpoint's position, then append.
pub trait ShardLog: Send {
    /// Hands every record from `from` on to `apply`, in order, and leaves the log ready to
    /// append after the last good one.
    fn replay(
        &mut self,
        from: Position,
        apply: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<ReplayReport, PersistError>;
    /// Writes a batch (durable only after a sync). Returns the position after it.
    fn append_batch(&mut self, batch: &Batch) -> Result<Position, PersistError>;
    /// Makes everything appended so far durable (used at shutdown and checkpoints).
    fn sync(&mut self) -> Result<(), PersistError>;
    /// A sync of everything appended so far that another thread can run later, and the
    /// segment it covers (a later sync of the same segment covers an earlier one).
    fn deferred_sync(&mut self) -> Result<(Position, DeferredSync), PersistError>;
    /// The position after the last appended record.
    fn end(&self) -> Position;
    /// Starts a new segment at the end (unless the current one is empty) and returns the end:
    /// a checkpoint at that position can then drop every older segment whole.
    fn roll(&mut self) -> Result<Position, PersistError>;
    /// Drops whatever lies wholly before `position` (a checkpoint covers it).
    fn discard_before(&mut self, position: Position) -> Result<(), PersistError>;
    /// The log's counters.
    fn counters(&self) -> Arc<LogCounters>;
}

/// A sync to run on another thread (see [`ShardLog::deferred_sync`]).
pub type DeferredSync = Box<dyn FnOnce() -> Result<(), PersistError> + Send>;

/// Options of a [`SegmentLog`].
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// Keep the valid prefix and move a corrupt rest aside instead of refusing.
    pub repair: bool,
}

/// Files the flusher thread syncs.
#[derive(Default)]
struct FlushShared {
    current: Mutex<Option<File>>,
    closed: Mutex<Vec<File>>,
    stop: AtomicBool,
    counters: Arc<LogCounters>,
}

/// The local, segmented log of one shard.
pub struct SegmentLog {
    dir: PathBuf,
    opts: SegmentOptions,
    /// Segment bases, oldest first; the last is the one appended to.
    segments: Vec<Position>,
    file: Option<File>,
    /// Bytes in the current segment.
    len: u64,
    shared: Arc<FlushShared>,
    flusher: Option<JoinHandle<()>>,
}

fn segment_name(base: Position) -> String {
    format!("{base:020}.wal")
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`. Nothing is read until `replay`.
    pub fn open(dir: &Path, opts: SegmentOptions) -> Result<SegmentLog, PersistError> {
        fs::create_dir_all(dir).map_err(|e| PersistError::io(dir, e))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| PersistError::io(dir, e))? {
            let name = entry.map_err(|e| PersistError::io(dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_suffix(".wal").and_then(|b| b.parse().ok()) {
                segments.push(base);
            }
        }
        segments.sort_unstable();
        let shared = Arc::new(FlushShared::default());
        let flusher = if opts.fsync == FsyncPolicy::Everysec {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name("nudge-wal-flush".into())
                .spawn(move || flush_loop(&shared))
                .map_err(|e| PersistError::io(dir, e))?;
            Some(thread)
        } else {
            None
        };
        Ok(SegmentLog {
            dir: dir.to_path_buf(),
            opts,
            segments,
            file: None,
            len: 0,
            shared,
            flusher,
        })
    }

    fn path(&self, base: Position) -> PathBuf {
        self.dir.join(segment_name(base))
    }

    /// Starts a new segment at `base` and makes it the current one.
    fn start_segment(&mut self, base: Position) -> Result<(), PersistError> {
        let path = self.path(base);
        let io = |e| PersistError::io(&path, e);
        let mut header = [0u8; HEADER_BYTES as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        fs::write(&path, header).map_err(io)?;
        // Append mode: after a failed write is cut back (`append_batch`), the next write goes
        // to the new end rather than leaving a hole.
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        if self.opts.fsync != FsyncPolicy::No {
            file.sync_all().map_err(io)?;
            sync_dir(&self.dir);
        }
        self.install(file, HEADER_BYTES)?;
        if self.segments.last() != Some(&base) {
            self.segments.push(base);
        }
        Ok(())
    }

    /// Makes `file` (of `len` bytes) the current segment; the previous one goes to the flusher.
    fn install(&mut self, file: File, len: u64) -> Result<(), PersistError> {
        // Only the `everysec` flusher needs a handle on the segments; `always` has synced a
        // closed segment already, and `no` never syncs.
        if self.flusher.is_some() {
            let clone = file
                .try_clone()
                .map_err(|e| PersistError::io(&self.dir, e))?;
            let old = self.shared.current.lock().replace(clone);
            if let Some(old) = old {
                self.shared.closed.lock().push(old);
            }
        }
        self.file = Some(file);
        self.len = len;
        Ok(())
    }

    fn base(&self) -> Position {
        self.segments.last().copied().unwrap_or(0)
    }

    /// Reads one segment from `start` (an offset in it), applying records; returns the offset
    /// of the first byte that is not a good record and why it is not.
    fn scan(
        &self,
        path: &Path,
        bytes: &[u8],
        start: u64,
        apply: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        count: &mut u64,
    ) -> Result<(u64, Option<&'static str>), PersistError> {
        if (bytes.len() as u64) < HEADER_BYTES {
            return Ok((0, Some("a short segment header")));
        }
        if &bytes[..8] != MAGIC {
            return Ok((0, Some("a bad segment header")));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(PersistError::Corrupt {
                file: path.to_path_buf(),
                offset: 8,
                what: format!("log format version {version}; this build reads {FORMAT_VERSION}"),
            });
        }
        let mut at = start.max(HEADER_BYTES) as usize;
        while at < bytes.len() {
            let Some(frame) = bytes.get(at..at + FRAME_BYTES) else {
                return Ok((at as u64, Some("a short record header")));
            };
            let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
            if len == 0 || len > MAX_RECORD_BYTES {
                return Ok((at as u64, Some("an impossible record length")));
            }
            let Some(payload) = bytes.get(at + FRAME_BYTES..at + FRAME_BYTES + len) else {
                return Ok((at as u64, Some("a record cut short")));
            };
            if crc32c::crc32c_append(crc32c::crc32c(&frame[..4]), payload) != crc {
                return Ok((at as u64, Some("a checksum mismatch")));
            }
            apply(payload).map_err(|what| PersistError::Corrupt {
                file: path.to_path_buf(),
                offset: at as u64,
                what,
            })?;
            *count += 1;
            at += FRAME_BYTES + len;
        }
        Ok((at as u64, None))
    }

    /// Cuts the bad rest of a segment: a torn tail is truncated; corruption before the end is
    /// refused, or with `repair` moved aside with every later segment.
    fn cut(
        &mut self,
        index: usize,
        bytes: &[u8],
        offset: u64,
        why: &str,
        report: &mut ReplayReport,
    ) -> Result<(), PersistError> {
        let base = self.segments[index];
        let path = self.path(base);
        let last = index + 1 == self.segments.len();
        // A crash mid-write leaves a partial record, or zeros, at the very end.
        let rest = &bytes[offset as usize..];
        let torn = last
            && (rest.iter().all(|&b| b == 0)
                || frame_reaches_end(rest)
                || rest.len() < FRAME_BYTES);
        if !torn && !self.opts.repair {
            return Err(PersistError::Corrupt {
                file: path,
                offset,
                what: format!("{why} in the middle of the log (start with --repair to keep the valid prefix and move the rest aside)"),
            });
        }
        if !torn {
            let aside = self
                .dir
                .join(format!("{}.corrupt-at-{offset}", segment_name(base)));
            fs::write(&aside, rest).map_err(|e| PersistError::io(&aside, e))?;
            report.moved_aside.push(aside);
            for later in self.segments.drain(index + 1..).collect::<Vec<_>>() {
                let from = self.path(later);
                let to = self.dir.join(format!("{}.corrupt", segment_name(later)));
                fs::rename(&from, &to).map_err(|e| PersistError::io(&from, e))?;
                report.moved_aside.push(to);
            }
            warn!(file = %path.display(), offset, "{why}: --repair kept the valid prefix and moved the rest aside");
        } else {
            warn!(file = %path.display(), offset, "torn tail ({why}): cut at the last valid record");
            report.cut = Some((path.clone(), offset));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| PersistError::io(&path, e))?;
        file.set_len(offset)
            .map_err(|e| PersistError::io(&path, e))?;
        file.sync_all().map_err(|e| PersistError::io(&path, e))?;
        Ok(())
    }
}

/// Whether the frame at the start of `rest` claims a record that runs to or past the end.
fn frame_reaches_end(rest: &[u8]) -> bool {
    let Some(frame) = rest.get(..4) else {
        return true;
    };
    let len = u32::from_le_bytes(frame.try_into().expect("4 bytes")) as usize;
    FRAME_BYTES + len >= rest.len()
}

impl ShardLog for SegmentLog {
    fn replay(
        &mut self,
        from: Position,
        apply: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<ReplayReport, PersistError> {
        let mut report = ReplayReport::default();
        let mut index = 0;
        let mut end = None;
        while index < self.segments.len() {
            let base = self.segments[index];
            let next = self.segments.get(index + 1).copied();
            let path = self.path(base);
            if next.is_some_and(|n| n <= from) {
                index += 1;
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| PersistError::io(&path, e))?;
            let start = from.saturating_sub(base);
            let (offset, bad) = self.scan(&path, &bytes, start, apply, &mut report.records)?;
            if let Some(why) = bad {
                self.cut(index, &bytes, offset, why, &mut report)?;
                end = Some((base, offset));
                break;
            }
            if let Some(n) = next {
                if base + bytes.len() as u64 != n {
                    return Err(PersistError::Corrupt {
                        file: path,
                        offset: bytes.len() as u64,
                        what: format!(
                            "the segment ends at position {} but the next starts at {n}",
                            base + bytes.len() as u64
                        ),
                    });
                }
            }
            end = Some((base, bytes.len() as u64));
            index += 1;
        }
        match end {
            Some((base, len)) if len >= HEADER_BYTES => {
                let path = self.path(base);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| PersistError::io(&path, e))?;
                self.install(file, len)?;
            }
            // A segment whose header was torn: write it again.
            Some((base, _)) => self.start_segment(base)?,
            None => self.start_segment(from)?,
        }
        Ok(report)
    }

    fn append_batch(&mut self, batch: &Batch) -> Result<Position, PersistError> {
        if batch.is_empty() {
            return Ok(self.end());
        }
        if self.len >= self.opts.segment_bytes {
            let next = self.end();
            self.start_segment(next)?;
        }
        let path = self.path(self.base());
        let file = self.file.as_mut().expect("replay opens the log");
        let c = &self.shared.counters;
        if let Err(e) = file.write_all(batch.bytes()) {
            // A partial write (disk full) would leave a torn record in the middle of the log
            // once later writes succeed: cut it off, so the log ends at its last good record.
            let _ = file.set_len(self.len);
            c.failing.store(true, Ordering::Relaxed);
            return Err(PersistError::io(&path, e));
        }
        self.len += batch.bytes().len() as u64;
        c.bytes_total
            .fetch_add(batch.bytes().len() as u64, Ordering::Relaxed);
        c.records_total
            .fetch_add(batch.records(), Ordering::Relaxed);
        c.failing.store(false, Ordering::Relaxed);
        Ok(self.end())
    }

    fn sync(&mut self) -> Result<(), PersistError> {
        if let Some(file) = &self.file {
            let started = Instant::now();
            file.sync_data()
                .map_err(|e| PersistError::io(&self.dir, e))?;
            self.shared.counters.fsynced(started);
        }
        for f in self.shared.closed.lock().drain(..) {
            f.sync_data().map_err(|e| PersistError::io(&self.dir, e))?;
        }
        Ok(())
    }

    fn deferred_sync(&mut self) -> Result<(Position, DeferredSync), PersistError> {
        let path = self.path(self.base());
        let file = match &self.file {
            Some(f) => Some(f.try_clone().map_err(|e| PersistError::io(&path, e))?),
            None => None,
        };
        let counters = self.shared.counters.clone();
        let sync = move || {
            let Some(file) = file else {
                return Ok(());
            };
            let started = Instant::now();
            match file.sync_data() {
                Ok(()) => {
                    counters.fsynced(started);
                    Ok(())
                }
                Err(e) => {
                    counters.failing.store(true, Ordering::Relaxed);
                    Err(PersistError::io(&path, e))
                }
            }
        };
        Ok((self.base(), Box::new(sync)))
    }

    fn end(&self) -> Position {
        self.base() + self.len
    }

    fn roll(&mut self) -> Result<Position, PersistError> {
        let end = self.end();
        if self.len > HEADER_BYTES {
            self.start_segment(end)?;
        }
        Ok(end)
    }

    fn discard_before(&mut self, position: Position) -> Result<(), PersistError> {
        // A segment can go when the next one starts at or before `position`.
        while self.segments.len() > 1 && self.segments[1] <= position {
            let base = self.segments.remove(0);
            let path = self.path(base);
            fs::remove_file(&path).map_err(|e| PersistError::io(&path, e))?;
        }
        sync_dir(&self.dir);
        Ok(())
    }

    fn counters(&self) -> Arc<LogCounters> {
        self.shared.counters.clone()
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.flusher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The `Everysec` flusher: about once a second, sync the current segment and any closed one.
fn flush_loop(shared: &FlushShared) {
    let period = Duration::from_secs(1);
    loop {
        std::thread::park_timeout(period);
        let stopping = shared.stop.load(Ordering::Acquire);
        let closed: Vec<File> = shared.closed.lock().drain(..).collect();
        for f in closed {
            if let Err(e) = f.sync_data() {
                warn!("fsync of a closed log segment failed: {e}");
            }
        }
        let current = shared
            .current
            .lock()
            .as_ref()
            .and_then(|f| f.try_clone().ok());
        if let Some(f) = current {
            let started = Instant::now();
            match f.sync_data() {
                Ok(()) => shared.counters.fsynced(started),
                Err(e) => warn!("fsync of the log failed: {e}"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Syncs a directory so that a created, renamed or removed entry survives a power loss.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
