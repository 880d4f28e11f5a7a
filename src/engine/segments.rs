//! The engine's segment calls (issue 14, item 4; `docs/segments.md`): every segment with
//! what each shard knows of it merged (`segments`), and naming one (`name_segment`). The
//! centroids themselves are the `SegmentMaster`'s; a shard reads them, never this.

use crate::api::SegmentReport;
use crate::config::OnFull;
use crate::engine::definitions;
use crate::engine::pending::Pending;
use crate::engine::Engine;
use crate::error::{Error, Problem};
use crate::ids::ShardId;
use crate::model::segments::NameError;
use crate::persist::definitions::Definition;
use crate::shard::Msg;

impl Engine {
    /// Every segment: id, name, resident users last assigned to it, top items, mean
    /// features, summed over shards (empty while there are no centroids, or with
    /// `segments.k = 0`).
    pub fn segments(&self) -> Result<Vec<SegmentReport>, Error> {
        let mut merged = Vec::new();
        for part in self.submit_segments() {
            merge(&mut merged, part.wait()?);
        }
        Ok(self.named(merged))
    }

    /// `segments`, as a future.
    pub async fn segments_async(&self) -> Result<Vec<SegmentReport>, Error> {
        let mut merged = Vec::new();
        for part in self.submit_segments() {
            merge(&mut merged, part.await?);
        }
        Ok(self.named(merged))
    }

    fn submit_segments(&self) -> Vec<Pending<Vec<SegmentReport>>> {
        if self.inner.segments.is_none() {
            return Vec::new();
        }
        (0..self.shard_count())
            .map(|s| self.submit_with(ShardId(s as u16), OnFull::Wait, Msg::Segments))
            .collect()
    }

    /// The names as the master has them now (a shard's snapshot may be a tick older).
    fn named(&self, mut merged: Vec<SegmentReport>) -> Vec<SegmentReport> {
        if let Some(master) = &self.inner.segments {
            let now = master.snapshot();
            for r in &mut merged {
                if let Some(slot) = now.slot_of(r.id) {
                    r.name = now.name(slot).cloned();
                    r.weight = now.weight(slot);
                }
            }
        }
        merged.sort_by_key(|r| r.id);
        merged
    }

    /// Names the segment `segment` (its id in decimal, or its current name) `name`; returns
    /// its id. The name stays with the segment as its centroid moves; with a data directory
    /// it is stored (fsynced) before the call returns, and is back after a restart (one that
    /// cannot be stored is refused, `unavailable`). Refused (`bad_request`, field `segment`
    /// or `name`) for an unknown segment, a name another segment has, or a name that is
    /// empty, longer than 128 bytes or all digits (it would read as an id).
    pub fn name_segment(&self, segment: &str, name: &str) -> Result<u32, Error> {
        let Some(master) = &self.inner.segments else {
            let why = "segments are off (segments.k = 0)".to_string();
            return Err(Error::invalid("segment", Problem::Rejected(why)));
        };
        let mut log = self.inner.definitions.lock();
        let refused = |e| name_refused(segment, name, e);
        let id = master.check_name(segment, name).map_err(refused)?;
        let record = Definition::SegmentNamed {
            id,
            name: name.to_string(),
        };
        definitions::store(&mut log, &record)?;
        // Checked above; only a name changes a segment's label, and names change under the
        // lock held here.
        master.name(segment, name).map_err(refused)
    }
}

/// The error for a name refused.
fn name_refused(segment: &str, name: &str, e: NameError) -> Error {
    match e {
        NameError::Unknown => Error::invalid(
            "segment",
            Problem::Rejected(format!("no segment has the id or name `{segment}`")),
        ),
        NameError::Taken => Error::invalid(
            "name",
            Problem::Rejected(format!("another segment is named `{name}`")),
        ),
        NameError::Bad => {
            Error::invalid("name", Problem::Malformed("1 to 128 bytes, not all digits"))
        }
    }
}

/// Adds one shard's reports to `merged`, segment by segment (by id).
fn merge(merged: &mut Vec<SegmentReport>, part: Vec<SegmentReport>) {
    for r in part {
        match merged.iter_mut().find(|m| m.id == r.id) {
            Some(m) => m.merge(&r),
            None => merged.push(r),
        }
    }
}
