//! Writes live micro-segments (issue 14, item 4; `docs/segments.md`): a user's or a
//! decision's `segment`, and the `segments` list of the `segments` op and of `stats`. Not to
//! be confused with `segment.rs`, the Segment-compatible ingestion.

use super::json::{key, write_f64, write_str, write_u64};
use crate::api::{SegmentLabel, SegmentReport};

/// Appends `"segment":{"id":…,"name":…}` (`null` without one), preceded by a comma.
pub(super) fn label(out: &mut Vec<u8>, segment: Option<&SegmentLabel>) {
    out.extend_from_slice(b",\"segment\":");
    let Some(s) = segment else {
        return out.extend_from_slice(b"null");
    };
    out.extend_from_slice(b"{\"id\":");
    write_u64(out, u64::from(s.id));
    out.extend_from_slice(b",\"name\":");
    match &s.name {
        Some(n) => write_str(out, n),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Appends `"segments":[…]`: per segment its id, name, size, weight, top items and mean
/// features.
pub(super) fn list(out: &mut Vec<u8>, all: &[SegmentReport]) {
    key(out, "segments");
    out.push(b'[');
    for (i, s) in all.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_u64(out, u64::from(s.id));
        out.extend_from_slice(b",\"name\":");
        match &s.name {
            Some(n) => write_str(out, n),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"size\":");
        write_u64(out, s.size);
        out.extend_from_slice(b",\"weight\":");
        write_f64(out, s.weight);
        out.extend_from_slice(b",\"top_items\":[");
        for (j, (item, count)) in s.top_items.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"item\":");
            write_str(out, item);
            out.extend_from_slice(b",\"count\":");
            write_f64(out, *count);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"mean_features\":{");
        let sampled = s.mean_features.iter().filter(|f| f.2 > 0.0);
        for (j, (feature, mean, _)) in sampled.enumerate() {
            if j > 0 {
                out.push(b',');
            }
            key(out, feature.name());
            write_f64(out, *mean);
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
}
