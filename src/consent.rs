//! Consent (issue 15): what a user allows nudge to do with what they do.
//!
//! Two purposes, as consent-management platforms name them: **personalization** (the user's
//! behaviour may shape what they are shown) and **storage** (what nudge learns about them may
//! be kept on disk). Denying personalization erases what the engine holds of the user and
//! keeps nothing more: their events are acknowledged and not applied, their decisions use the
//! global model only and open nothing. Denying storage erases what is on disk and keeps the
//! user in memory only from then on: their events move their own state and features (not
//! the shared model, which is durable), their decisions are previews that nothing records,
//! and a restart or an eviction forgets them. A consent change takes effect on the user's
//! next request; the choice itself is kept (durably, by the user's 64-bit key, not the id),
//! so that a restart does not quietly grant it again. `docs/consent.md` has the whole story.

use serde::{Deserialize, Serialize};

/// What one user allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The user's behaviour may shape what they are shown.
    pub personalization: bool,
    /// What is learned about the user may reach the disk.
    pub storage: bool,
}

impl Consent {
    /// Everything allowed.
    pub const GRANTED: Consent = Consent {
        personalization: true,
        storage: true,
    };

    /// The consent as two bits (personalization, storage), for the log and the checkpoint.
    pub fn bits(self) -> u8 {
        self.personalization as u8 | (self.storage as u8) << 1
    }

    /// The consent `bits` wrote.
    pub fn from_bits(bits: u8) -> Consent {
        Consent {
            personalization: bits & 1 != 0,
            storage: bits & 2 != 0,
        }
    }

    /// Whether the engine may keep per-user state at all.
    pub fn keeps_state(self) -> bool {
        self.personalization
    }

    /// Whether everything about the user may be kept as usual.
    pub fn is_full(self) -> bool {
        self.personalization && self.storage
    }
}

/// A change to a user's consent: each purpose given is set, the others stay as they are
/// (both `None`: a read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsentUpdate {
    /// Personalization, if it changes.
    pub personalization: Option<bool>,
    /// Storage, if it changes.
    pub storage: Option<bool>,
}

impl ConsentUpdate {
    /// Sets both purposes.
    pub fn to(consent: Consent) -> Self {
        ConsentUpdate {
            personalization: Some(consent.personalization),
            storage: Some(consent.storage),
        }
    }

    /// `current` with this update applied.
    pub fn applied_to(self, current: Consent) -> Consent {
        Consent {
            personalization: self.personalization.unwrap_or(current.personalization),
            storage: self.storage.unwrap_or(current.storage),
        }
    }
}

/// Consent defaults and limits (`[consent]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsentConfig {
    /// Whether a user who never said otherwise allows personalization.
    pub personalization: bool,
    /// Whether a user who never said otherwise allows storage.
    pub storage: bool,
    /// The most memory-only users (storage denied) a shard keeps; past it the least
    /// recently active eighth is forgotten.
    pub max_memory_only_users: usize,
    /// When not empty, every user id is replaced by `p-` and the first 32 hex digits of its
    /// HMAC-SHA256 under this key before it reaches memory, the log or the disk.
    pub pseudonymize_key: String,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            personalization: true,
            storage: true,
            max_memory_only_users: 100_000,
            pseudonymize_key: String::new(),
        }
    }
}

impl ConsentConfig {
    /// The consent of a user who never said otherwise.
    pub fn default_consent(&self) -> Consent {
        Consent {
            personalization: self.personalization,
            storage: self.storage,
        }
    }

    /// The id the engine keeps for a user who sent `text`: `text` itself (validated), or its
    /// pseudonym when a key is configured (the pseudonym of a valid id is a valid id).
    pub fn user_id(&self, text: String) -> Result<crate::ids::UserId, crate::error::Error> {
        let id = crate::ids::UserId::from_string(text)?;
        if self.pseudonymize_key.is_empty() {
            return Ok(id);
        }
        let mac = hmac_sha256(self.pseudonymize_key.as_bytes(), id.as_str().as_bytes());
        let hex: String = mac[..16].iter().map(|b| format!("{b:02x}")).collect();
        crate::ids::UserId::from_string(format!("p-{hex}"))
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_memory_only_users == 0 {
            return Err("`consent.max_memory_only_users` must be at least 1".into());
        }
        Ok(())
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_and_pseudonyms_are_stable_valid_ids() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let cfg = ConsentConfig {
            pseudonymize_key: "secret".into(),
            ..ConsentConfig::default()
        };
        let a = cfg.user_id("alice".into()).unwrap();
        assert_eq!(a, cfg.user_id("alice".into()).unwrap());
        assert!(a.as_str().starts_with("p-") && a.as_str().len() == 34);
        assert!(!a.as_str().contains("alice"));
        assert_ne!(a, cfg.user_id("bob".into()).unwrap());
        assert!(
            cfg.user_id(String::new()).is_err(),
            "the original is still validated"
        );
        let plain = ConsentConfig::default().user_id("alice".into()).unwrap();
        assert_eq!(plain.as_str(), "alice");
    }

    #[test]
    fn bits_round_trip() {
        for p in [false, true] {
            for s in [false, true] {
                let c = Consent {
                    personalization: p,
                    storage: s,
                };
                assert_eq!(Consent::from_bits(c.bits()), c);
            }
        }
        assert!(Consent::GRANTED.is_full());
    }
}
