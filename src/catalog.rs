//! The item catalog: the engine's authoritative copy of every item's features, read-mostly.
//!
//! Upserts compute features once, on the caller's thread, store them here and broadcast the
//! same `Arc` to every shard, which keeps its own map next to its learned item parameters: a
//! shard never takes this catalog's locks. The locks here (16 stripes) only serve readers
//! outside the shards (`Engine::item`) and writers.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::model::global::KeyMap;
use crate::model::ItemFeatures;

const STRIPES: usize = 16;

/// Every catalog item, by key.
pub struct Catalog {
    stripes: Vec<RwLock<KeyMap<Arc<ItemFeatures>>>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            stripes: (0..STRIPES)
                .map(|_| RwLock::new(KeyMap::default()))
                .collect(),
        }
    }
}

impl Catalog {
    fn stripe(&self, key: u64) -> &RwLock<KeyMap<Arc<ItemFeatures>>> {
        &self.stripes[(key >> 60) as usize % STRIPES]
    }

    /// The item, if present.
    pub fn get(&self, key: u64) -> Option<Arc<ItemFeatures>> {
        self.stripe(key).read().get(&key).cloned()
    }

    /// Inserts or replaces an item; returns whether it was new.
    pub fn insert(&self, item: Arc<ItemFeatures>) -> bool {
        self.stripe(item.id.key())
            .write()
            .insert(item.id.key(), item)
            .is_none()
    }

    /// Removes an item; returns whether it was present.
    pub fn remove(&self, key: u64) -> bool {
        self.stripe(key).write().remove(&key).is_some()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.read().len()).sum()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
