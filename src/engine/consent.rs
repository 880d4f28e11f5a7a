//! `Engine::set_consent` and `Engine::consent` (issue 15): one message to the user's shard,
//! which records the choice (durably, by key) and erases what it must (`shard/consent.rs`).

use crate::consent::{Consent, ConsentUpdate};
use crate::engine::pending::Pending;
use crate::engine::Engine;
use crate::error::Error;
use crate::shard::Msg;

impl Engine {
    fn submit_consent(&self, id: &str, update: ConsentUpdate) -> Pending<(Consent, bool)> {
        match self.user_id(id) {
            Ok(user) => self.submit(self.shard_of(&user), |r| Msg::Consent(user, update, r)),
            Err(e) => Pending::failed(e),
        }
    }

    /// Changes the purposes `update` names and keeps the others; returns the consent in
    /// force and whether anything was erased (see `set_consent`).
    pub fn update_consent(
        &self,
        id: &str,
        update: ConsentUpdate,
    ) -> Result<(Consent, bool), Error> {
        self.submit_consent(id, update).wait()
    }

    /// `update_consent`, as a future.
    pub async fn update_consent_async(
        &self,
        id: &str,
        update: ConsentUpdate,
    ) -> Result<(Consent, bool), Error> {
        self.submit_consent(id, update).await
    }

    /// Records what `id` allows; it applies from their next request. Denying personalization
    /// or storage erases what the engine holds of them (memory, open decisions, the store);
    /// the reply waits for the log, as `forget`'s does. Returns whether anything was erased.
    pub fn set_consent(&self, id: &str, consent: Consent) -> Result<bool, Error> {
        Ok(self
            .submit_consent(id, ConsentUpdate::to(consent))
            .wait()?
            .1)
    }

    /// `set_consent`, as a future.
    pub async fn set_consent_async(&self, id: &str, consent: Consent) -> Result<bool, Error> {
        Ok(self.submit_consent(id, ConsentUpdate::to(consent)).await?.1)
    }

    /// What `id` allows (the configured default until they said otherwise).
    pub fn consent(&self, id: &str) -> Result<Consent, Error> {
        Ok(self.submit_consent(id, ConsentUpdate::default()).wait()?.0)
    }

    /// `consent`, as a future.
    pub async fn consent_async(&self, id: &str) -> Result<Consent, Error> {
        Ok(self.submit_consent(id, ConsentUpdate::default()).await?.0)
    }
}
