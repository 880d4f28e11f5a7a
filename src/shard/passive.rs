//! The users of a shard that are not in memory: the passivated users a checkpoint has not
//! stored yet (kept encoded), the erasures it has not applied yet, and the store behind them.
//!
//! A user leaves memory (the resident cap, the idle timer) without losing anything: if the
//! store does not already hold its latest state, its encoded state waits here until the next
//! checkpoint writes it. A user missing from memory is looked up here first, then in the
//! store. Entries are numbered (`gen`) so that a committed checkpoint removes exactly what it
//! wrote. Without a store (an in-memory engine) nothing is parked: an evicted user is dropped,
//! as it always was in memory.

use std::sync::Arc;

use tracing::error;

use crate::actor::UserActor;
use crate::error::Error;
use crate::model::global::KeyMap;
use crate::persist::store::{self, Store, UserReader, UserWrite};
use crate::persist::PersistError;

/// What one parked user costs besides its encoded bytes (map entry, `Arc` header).
const PARKED_OVERHEAD: usize = 48;

/// Users out of memory, and the store.
#[derive(Default)]
pub struct Passive {
    store: Option<Arc<Store>>,
    /// A snapshot of the stored users, kept until this shard's next checkpoint commits (the
    /// only thing that changes its users in the store).
    reader: Option<UserReader>,
    /// Passivated users the store does not hold yet: key → (gen, encoded state).
    parked: KeyMap<(u64, Arc<[u8]>)>,
    /// Bytes of the parked states.
    parked_bytes: usize,
    /// Erased users the store may still hold: key → gen.
    erased: KeyMap<u64>,
    /// The last number given to an entry.
    gen: u64,
}

impl Passive {
    /// A tier backed by `store` (none: in memory).
    pub fn new(store: Option<Arc<Store>>) -> Self {
        Passive {
            store,
            ..Passive::default()
        }
    }

    /// Whether a checkpoint store backs this tier.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Keeps an evicted user's encoded state until a checkpoint stores it (it replaces
    /// whatever the store holds, so a pending erasure of an earlier life is moot).
    pub fn park(&mut self, key: u64, encoded: Arc<[u8]>) {
        let gen = self.next_gen();
        self.erased.remove(&key);
        self.parked_bytes += encoded.len() + PARKED_OVERHEAD;
        if let Some((_, old)) = self.parked.insert(key, (gen, encoded)) {
            self.parked_bytes -= old.len() + PARKED_OVERHEAD;
        }
    }

    fn unpark(&mut self, key: u64) -> Option<Arc<[u8]>> {
        let (_, bytes) = self.parked.remove(&key)?;
        self.parked_bytes -= bytes.len() + PARKED_OVERHEAD;
        Some(bytes)
    }

    /// Counts a user moved out of memory.
    pub fn count_passivation(&self) {
        if let Some(s) = &self.store {
            s.counters()
                .passivations_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes the user out of this tier: its parked state (then `true`: the store does not
    /// hold it yet), or the store's. An erased user is not found. A store that cannot be read
    /// is an error (the caller must not create the user afresh over a stored one).
    pub fn take(&mut self, key: u64) -> Result<Option<(UserActor, bool)>, Error> {
        if let Some(bytes) = self.unpark(key) {
            let user = store::decode(&bytes, std::path::Path::new("(memory)"), "a parked user")
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            return Ok(Some((user, true)));
        }
        if self.erased.contains_key(&key) {
            return Ok(None);
        }
        let found = match self.reader() {
            Ok(Some(r)) => r.get(key),
            Ok(None) => return Ok(None),
            Err(e) => Err(e),
        };
        found.map(|u| u.map(|u| (u, false))).map_err(|e| {
            error!("loading a user: {e}");
            self.reader = None;
            Error::Unavailable(e.to_string())
        })
    }

    /// The snapshot reader, opened if needed (`None` without a store).
    fn reader(&mut self) -> Result<Option<&UserReader>, PersistError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        if !self.reader.as_ref().is_some_and(UserReader::is_current) {
            self.reader = Some(store.users()?);
        }
        Ok(self.reader.as_ref())
    }

    /// Erases the user from this tier (and, at the next checkpoint, from the store); true if
    /// it was here or stored.
    pub fn erase(&mut self, key: u64) -> bool {
        let parked = self.unpark(key).is_some();
        let stored = !self.erased.contains_key(&key)
            && match self.reader() {
                Ok(Some(r)) => r.has(key).unwrap_or_else(|e| {
                    error!("erasing a user: {e}");
                    // Unknown: erase it to be safe.
                    true
                }),
                Ok(None) => false,
                Err(e) => {
                    error!("erasing a user: {e}");
                    true
                }
            };
        if self.store.is_some() {
            let gen = self.next_gen();
            self.erased.insert(key, gen);
        }
        parked || stored
    }

    /// What a checkpoint starting now must write besides the resident users: every erasure,
    /// then every parked user. Returns them with the number that `committed` takes back.
    pub fn for_checkpoint(&self) -> (Vec<UserWrite>, u64) {
        let mut out: Vec<UserWrite> = self.erased.keys().map(|&k| (k, None)).collect();
        out.extend(self.parked.iter().map(|(&k, (_, v))| (k, Some(v.clone()))));
        (out, self.gen)
    }

    /// A checkpoint that took entries up to `gen` committed: they are in the store now.
    pub fn committed(&mut self, gen: u64) {
        let mut freed = 0;
        self.parked.retain(|_, (g, v)| {
            let keep = *g > gen;
            if !keep {
                freed += v.len() + PARKED_OVERHEAD;
            }
            keep
        });
        self.parked_bytes -= freed;
        self.erased.retain(|_, g| *g > gen);
        // What it stored is seen from the next snapshot on.
        self.reader = None;
    }

    /// Parked users (encoded, out of memory).
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Bytes held by parked users (kept as they come and go: read on every tick).
    pub fn parked_bytes(&self) -> usize {
        self.parked_bytes
    }
}
