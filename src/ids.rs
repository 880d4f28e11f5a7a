//! Validated identifiers: `UserId`, `ItemId`, `DecisionId`, `ShardId`, and the fixed, seeded
//! hash that turns ids into keys.
//!
//! Ids are validated once, here, at the edge; everything inward takes the newtypes. The hash is
//! xxh3 with a fixed seed, so keys (and so shard placement and feature indices) are stable across
//! runs, machines and restarts. This module does not know about shards' contents or JSON.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Problem};

/// Longest user or item id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The seed of every id and feature hash. Changing it reshuffles users across shards and
/// invalidates learned hashed features: never change it for a running deployment.
pub const HASH_SEED: u64 = 0x6e75_6467_6521_2024;

/// Fixed, seeded 64-bit hash of some bytes (xxh3).
#[inline]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, HASH_SEED)
}

/// Checks a user or item id: 1 to `MAX_ID_BYTES` bytes, no ASCII control character (NUL,
/// newline, escape…: they break logs, terminals and line protocols downstream).
pub(crate) fn validate_id(field: &'static str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid(field, Problem::Empty));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            Problem::TooLong { max: MAX_ID_BYTES },
        ));
    }
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(Error::invalid(
            field,
            Problem::Malformed("text without control characters"),
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            text: Box<str>,
            key: u64,
        }

        impl $name {
            /// Validates `text` (1 to 256 bytes, no control characters) and computes its
            /// stable key.
            pub fn new(text: &str) -> Result<Self, Error> {
                validate_id($field, text)?;
                Ok(Self { text: text.into(), key: stable_hash(text.as_bytes()) })
            }
            /// Validates an owned `text`, reusing its allocation when it has no spare capacity.
            pub fn from_string(text: String) -> Result<Self, Error> {
                validate_id($field, &text)?;
                let key = stable_hash(text.as_bytes());
                Ok(Self { text: text.into_boxed_str(), key })
            }
            /// The id as given.
            pub fn as_str(&self) -> &str {
                &self.text
            }
            /// The stable 64-bit key of the id.
            pub fn key(&self) -> u64 {
                self.key
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.text, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }
    };
}

string_id!(
    /// A user's id: an opaque UTF-8 string of 1 to 256 bytes, with its stable key.
    UserId,
    "user"
);
string_id!(
    /// An item's id: an opaque UTF-8 string of 1 to 256 bytes, with its stable key.
    ItemId,
    "item"
);

/// Index of a shard thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// A decision's id. The top 16 bits name the owning shard, so a reward is routed straight to
/// it; the rest is a per-shard sequence number mixed with the engine's start nonce, so ids from
/// two runs do not collide. Shown on the wire as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId(pub u64);

impl DecisionId {
    /// The id of an untracked decision (a preview): no shard ever issues it, so a reward
    /// naming it is refused as unknown.
    pub const UNTRACKED: DecisionId = DecisionId(u64::MAX);

    /// Builds the id of the `sequence`-th decision of `shard`.
    pub fn new(shard: ShardId, sequence: u64) -> Self {
        DecisionId(((shard.0 as u64) << 48) | (sequence & 0xffff_ffff_ffff))
    }
    /// The shard that owns this decision.
    pub fn shard(self) -> ShardId {
        ShardId((self.0 >> 48) as u16)
    }
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for DecisionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() != 16 {
            return Err(Error::invalid(
                "decision",
                Problem::Malformed("16 hex digits"),
            ));
        }
        u64::from_str_radix(s, 16)
            .map(DecisionId)
            .map_err(|_| Error::invalid("decision", Problem::Malformed("16 hex digits")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_id_round_trips_and_names_its_shard() {
        let id = DecisionId::new(ShardId(3), 0x1234);
        assert_eq!(id.shard(), ShardId(3));
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<DecisionId>().unwrap(), id);
        assert!("xyz".parse::<DecisionId>().is_err());
    }

    #[test]
    fn ids_are_validated() {
        assert!(UserId::new("").is_err());
        assert!(UserId::new(&"x".repeat(257)).is_err());
        assert!(UserId::new(&"x".repeat(256)).is_ok());
        assert_eq!(UserId::new("u1").unwrap().key(), stable_hash(b"u1"));
    }
}
