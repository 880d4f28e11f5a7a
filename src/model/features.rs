//! Feature maps: signed feature hashing (Weinberger et al. 2009) of item attributes and of
//! context pairs into `d` dimensions, and normalization of dense item vectors.
//!
//! Each feature goes to two signed buckets with weight `1/√2` each (two hash functions taken
//! from one 64-bit hash). At `d = 32` a single bucket makes two of four categories collide
//! about one time in five; with two, a full collision needs both to match (≈ 1/d²) and a
//! partial one only halves the similarity.
//!
//! Everything here is a pure function of its input and the fixed hash seed, so the same item or
//! context maps to the same features on every shard, run and machine. Computed at the edge
//! (on the caller's thread), never on a shard's hot path.

use crate::ids::{stable_hash, ItemId, HASH_SEED};
use crate::model::math::{normalize, scale};
use crate::rng::splitmix64;

/// A sparse vector of hashed features: `(index, value)` pairs, indices below `d`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseVec {
    /// The non-zero entries (an index may repeat; entries add up).
    pub entries: Vec<(u32, f32)>,
}

impl SparseVec {
    /// `⟨self, dense⟩`.
    #[inline]
    pub fn dot(&self, dense: &[f32]) -> f32 {
        self.entries
            .iter()
            .map(|&(i, v)| v * dense[i as usize])
            .sum()
    }
}

/// One item's fixed features, shared (behind `Arc`) by the catalog and every shard.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemFeatures {
    /// The item's id.
    pub id: ItemId,
    /// Its attributes, as given.
    pub attrs: Vec<(String, String)>,
    /// Its dense vector, as given.
    pub vector: Option<Box<[f32]>>,
    /// `φ_i`: hashed attributes plus the projected vector, unit length (zero if neither).
    pub phi: Box<[f32]>,
    /// The initial learned embedding `e_i`, a seeded function of the id.
    pub e0: Box<[f32]>,
}

/// The feature space of one engine: its width and the scale of initial item embeddings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureSpace {
    /// Width `d`.
    pub dim: usize,
    /// Standard deviation of the initial learned item embedding.
    pub item_embedding_init: f32,
}

impl FeatureSpace {
    /// The two signed buckets of one `key=value` feature: `(index, ±1/√2)` each.
    #[inline]
    pub fn buckets(&self, key: &str, value: &str) -> [(u32, f32); 2] {
        let key_hash = stable_hash(key.as_bytes());
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(value.as_bytes(), key_hash ^ HASH_SEED);
        let d = self.dim as u64;
        let w = std::f32::consts::FRAC_1_SQRT_2;
        let sign = |bit: u64| if (h >> bit) & 1 == 0 { w } else { -w };
        [
            (((h & 0xffff_ffff) % d) as u32, sign(63)),
            (((h >> 32 & 0x7fff_ffff) % d) as u32, sign(31)),
        ]
    }

    /// The hashed context vector (unscaled): two signed buckets per pair.
    pub fn context(&self, pairs: &[(String, String)]) -> SparseVec {
        SparseVec {
            entries: pairs.iter().flat_map(|(k, v)| self.buckets(k, v)).collect(),
        }
    }

    /// Builds an item's features from its attributes and optional dense vector.
    pub fn item(
        &self,
        id: ItemId,
        attrs: Vec<(String, String)>,
        vector: Option<Vec<f32>>,
    ) -> ItemFeatures {
        let d = self.dim;
        let mut hashed = vec![0.0f32; d];
        for (k, v) in &attrs {
            for (i, s) in self.buckets(k, v) {
                hashed[i as usize] += s;
            }
        }
        normalize(&mut hashed);
        let mut dense = vec![0.0f32; d];
        if let Some(v) = &vector {
            if v.len() == d {
                dense.copy_from_slice(v);
            } else {
                // Project other widths by signed hashing of the coordinate index.
                for (j, x) in v.iter().enumerate() {
                    let h = stable_hash(&(j as u64).to_le_bytes());
                    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                    dense[(h % d as u64) as usize] += sign * x;
                }
            }
            normalize(&mut dense);
        }
        let mut phi: Vec<f32> = hashed.iter().zip(&dense).map(|(a, b)| a + b).collect();
        normalize(&mut phi);
        let e0 = self.initial_embedding(id.key());
        ItemFeatures {
            id,
            attrs,
            vector: vector.map(Vec::into_boxed_slice),
            phi: phi.into_boxed_slice(),
            e0,
        }
    }

    /// The seeded initial learned embedding of an item key: small Gaussian-like noise that
    /// breaks the symmetry between items (the same on every shard).
    pub fn initial_embedding(&self, item_key: u64) -> Box<[f32]> {
        let mut state = item_key ^ HASH_SEED;
        let mut e: Vec<f32> = (0..self.dim)
            .map(|_| {
                // Sum of four uniforms: close enough to a normal, and cheap.
                let mut s = 0.0f32;
                for _ in 0..4 {
                    s += (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                }
                s * (12.0f32 / 4.0).sqrt()
            })
            .collect();
        scale(&mut e, self.item_embedding_init / (self.dim as f32).sqrt());
        e.into_boxed_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::math::norm;

    fn space() -> FeatureSpace {
        FeatureSpace {
            dim: 32,
            item_embedding_init: 0.1,
        }
    }

    #[test]
    fn items_are_unit_length_and_stable() {
        let id = ItemId::new("i1").unwrap();
        let a = space().item(id.clone(), vec![("category".into(), "shoes".into())], None);
        let b = space().item(id, vec![("category".into(), "shoes".into())], None);
        assert_eq!(a, b);
        assert!((norm(&a.phi) - 1.0).abs() < 1e-5);
        let empty = space().item(ItemId::new("i2").unwrap(), vec![], None);
        assert_eq!(norm(&empty.phi), 0.0);
    }

    #[test]
    fn other_widths_are_projected() {
        let f = space().item(ItemId::new("i").unwrap(), vec![], Some(vec![1.0; 100]));
        assert!((norm(&f.phi) - 1.0).abs() < 1e-5);
    }
}
