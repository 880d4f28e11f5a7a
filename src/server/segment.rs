//! Segment-compatible ingestion: `POST /v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`
//! and `/v1/batch` in the shapes of Segment's HTTP Tracking API, so existing SDKs and
//! pipelines (Segment, RudderStack) can point at nudge unchanged.
//!
//! It owns: HTTP Basic auth with the write key as user name (401 when configured and wrong),
//! gzip bodies, Segment's size limits (32 KB per call, 500 KB per batch: 413 for a body over
//! its limit, 400 for an oversized call inside a batch), deduplication by `messageId` over a
//! bounded window, Segment's clock-skew correction, and the mapping table
//! (`SegmentConfig::mappings`) from event names and properties to nudge events. A request is
//! validated whole before anything is ingested.

use std::io::Read as _;
use std::time::Instant;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use futures_util::StreamExt as _;

use super::http::{json, post, status_of, with_parser};
use super::metrics::{MetricOp, Transport};
use super::session::dispatch;
use super::Shared;
use crate::api::{Event, EventKind};
use crate::config::SegmentConfig;
use crate::engine::Engine;
use crate::error::{Error, ErrorCode};
use crate::wire::{write_error, CallType, Reply, ReqId, SegmentCall, WireError};

/// Mounts the Segment routes.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/v1/track", web::post().to(track)))
        .service(post("/v1/page", web::post().to(page)))
        .service(post("/v1/screen", web::post().to(screen)))
        .service(post("/v1/identify", web::post().to(identify)))
        .service(post("/v1/batch", web::post().to(batch)));
}

async fn track(r: HttpRequest, p: web::Payload, s: web::Data<Shared>) -> HttpResponse {
    handle(&r, p, &s, Some(CallType::Track)).await
}
async fn page(r: HttpRequest, p: web::Payload, s: web::Data<Shared>) -> HttpResponse {
    handle(&r, p, &s, Some(CallType::Page)).await
}
async fn screen(r: HttpRequest, p: web::Payload, s: web::Data<Shared>) -> HttpResponse {
    handle(&r, p, &s, Some(CallType::Screen)).await
}
async fn identify(r: HttpRequest, p: web::Payload, s: web::Data<Shared>) -> HttpResponse {
    handle(&r, p, &s, Some(CallType::Identify)).await
}
async fn batch(r: HttpRequest, p: web::Payload, s: web::Data<Shared>) -> HttpResponse {
    handle(&r, p, &s, None).await
}

/// Why a Segment request failed (its code owns its status).
struct Failure(WireError);

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    shared: &Shared,
    call: Option<CallType>,
) -> HttpResponse {
    let started = Instant::now();
    let op = match call {
        Some(CallType::Track) => MetricOp::Track,
        Some(CallType::Page) => MetricOp::Page,
        Some(CallType::Screen) => MetricOp::Screen,
        Some(_) => MetricOp::Identify,
        None => MetricOp::SegmentBatch,
    };
    let result = ingest(req, payload, shared, call).await;
    let (code, response) = match result {
        Ok(summary) => (None, json(StatusCode::OK, summary)),
        Err(Failure(error)) => {
            let mut out = b"{\"success\":false,".to_vec();
            let mut e = Vec::new();
            write_error(&mut e, &ReqId::None, &error);
            out.extend_from_slice(&e[1..]);
            let code = error.code();
            let mut resp = json(status_of(Some(code)), out);
            if code == ErrorCode::Unauthorized {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"nudge\""),
                );
            }
            (Some(code), resp)
        }
    };
    shared
        .metrics
        .record(Transport::Segment, op, code, started, 1);
    response
}

async fn ingest(
    req: &HttpRequest,
    payload: web::Payload,
    shared: &Shared,
    call: Option<CallType>,
) -> Result<Vec<u8>, Failure> {
    let cfg = &shared.cfg.segment;
    authorize(req, cfg)?;
    let limit = if call.is_some() {
        cfg.max_event_bytes
    } else {
        cfg.max_batch_bytes
    };
    let mut body = read_body(req, payload, limit).await?;
    let bad = Failure;
    let calls = with_parser(|p| p.parse_segment(&mut body, call)).map_err(bad)?;
    if let Some((i, c)) = calls
        .iter()
        .enumerate()
        .find(|(_, c)| c.bytes > cfg.max_event_bytes)
    {
        return Err(bad(WireError::BadRequest(format!(
            "call {i} is {} bytes, over the {} byte limit per call",
            c.bytes, cfg.max_event_bytes
        ))));
    }
    let received_ms = shared.engine.now_ms();
    let mut mapped = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        let events = map_call(cfg, &shared.engine, c, received_ms)
            .map_err(|e| bad(WireError::BadRequest(format!("call {i}: {e}"))))?;
        mapped.push(events);
    }
    consent(&shared.engine, cfg, &calls).await.map_err(bad)?;
    let mut summary = Summary::default();
    let mut events = Vec::new();
    let mut owners = Vec::new();
    for (i, evs) in mapped.into_iter().enumerate() {
        if evs.is_empty() {
            summary.ignored += 1;
        }
        owners.extend(std::iter::repeat(i).take(evs.len()));
        events.extend(evs);
    }
    let replies = dispatch::ingest_many(&shared.engine, events).await;
    // A call whose every event was a duplicate (its `messageId` already applied) counts as
    // deduplicated; a partly applied retry counts its new events.
    let mut duplicates = vec![0usize; calls.len()];
    let mut per_call = vec![0usize; calls.len()];
    for (owner, reply) in owners.iter().zip(&replies) {
        per_call[*owner] += 1;
        match reply {
            Reply::Failed(e) => summary.errors.push((*owner, e.clone())),
            Reply::Acked(ack) if ack.duplicate => duplicates[*owner] += 1,
            _ => summary.events += 1,
        }
    }
    summary.deduplicated = per_call
        .iter()
        .zip(&duplicates)
        .filter(|(n, d)| **n > 0 && n == d)
        .count() as u64;
    let m = &shared.metrics;
    m.segment_deduplicated_total
        .fetch_add(summary.deduplicated, std::sync::atomic::Ordering::Relaxed);
    m.segment_ignored_total
        .fetch_add(summary.ignored, std::sync::atomic::Ordering::Relaxed);
    if let Some((_, e)) = summary.errors.first() {
        if summary.events == 0 {
            return Err(Failure(e.clone()));
        }
    }
    Ok(summary.write())
}

/// Applies the consent the calls carry (`context.consent.categoryPreferences`, the two
/// categories `cfg` names), in call order, before any of their events.
async fn consent(
    engine: &crate::Engine,
    cfg: &SegmentConfig,
    calls: &[SegmentCall],
) -> Result<(), WireError> {
    let prefix = "consent.categoryPreferences.";
    for c in calls {
        let Some(user) = &c.user else { continue };
        let category = |name: &str| {
            let path = format!("{prefix}{name}");
            let value = c.context.iter().find(|(k, _)| *k == path);
            value.map(|(_, v)| v == "true")
        };
        let update = crate::consent::ConsentUpdate {
            personalization: category(&cfg.consent_personalization),
            storage: category(&cfg.consent_storage),
        };
        if update != crate::consent::ConsentUpdate::default() {
            engine.update_consent_async(user, update).await?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Summary {
    events: u64,
    deduplicated: u64,
    ignored: u64,
    errors: Vec<(usize, WireError)>,
}

impl Summary {
    fn write(&self) -> Vec<u8> {
        let mut out = format!(
            "{{\"success\":true,\"events\":{},\"deduplicated\":{},\"ignored\":{},\"errors\":[",
            self.events, self.deduplicated, self.ignored
        )
        .into_bytes();
        for (n, (i, e)) in self.errors.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("{{\"call\":{i},").as_bytes());
            let mut one = Vec::new();
            write_error(&mut one, &ReqId::None, e);
            out.extend_from_slice(&one[1..]);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

fn authorize(req: &HttpRequest, cfg: &SegmentConfig) -> Result<(), Failure> {
    if cfg.write_key.is_empty() {
        return Ok(());
    }
    let unauthorized = || Failure(Error::Unauthorized.into());
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(unauthorized)?;
    let value = value.to_str().map_err(|_| unauthorized())?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let user = decoded.split(|&b| b == b':').next().unwrap_or_default();
    if user == cfg.write_key.as_bytes() {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

/// Reads the body (at most `limit` bytes, after gunzip when `Content-Encoding: gzip`).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure(WireError::TooLarge { limit });
    let mut raw = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Failure(WireError::BadRequest(e.to_string())))?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large());
        }
        raw.extend_from_slice(&chunk);
    }
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(&raw[..]);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Failure(WireError::BadRequest(format!("bad gzip body: {e}"))))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// The event time under Segment's clock-skew correction: when the client sent `sentAt`, the
/// time is `receivedAt - (sentAt - originalTimestamp)` (or `timestamp` when there is no
/// `originalTimestamp`), so a client clock that is off shifts nothing. Without `sentAt`, the
/// client's time as given; without any time, `receivedAt`.
/// `None` when the result is before 1970 (an uncorrected pre-1970 time).
pub(super) fn corrected_ts(c: &SegmentCall, received_ms: u64) -> Option<u64> {
    let client = c.original_timestamp_ms.or(c.timestamp_ms);
    let ms = match (c.sent_at_ms, client) {
        (Some(sent), Some(at)) => {
            let delay = sent as i128 - at as i128;
            received_ms as i128 - delay
        }
        (_, Some(at)) => at as i128,
        (_, None) => received_ms as i128,
    };
    u64::try_from(ms).ok()
}

/// Maps one call to nudge events through the table (none for identify and unmapped calls).
fn map_call(
    cfg: &SegmentConfig,
    engine: &Engine,
    c: &SegmentCall,
    received_ms: u64,
) -> Result<Vec<Event>, String> {
    let user = c
        .user
        .as_deref()
        .ok_or("`userId` or `anonymousId` is required")?;
    let name = match c.call {
        CallType::Track => c.name.as_deref().ok_or("a track call needs `event`")?,
        CallType::Page => cfg.page_event.as_str(),
        CallType::Screen => cfg.screen_event.as_str(),
        CallType::Identify | CallType::Other => return Ok(Vec::new()),
    };
    let mapping = cfg.mappings.iter().find(|m| m.event == name);
    let item_property = mapping
        .and_then(|m| m.item_property.as_deref())
        .unwrap_or(&cfg.item_property);
    let item = c.property(item_property).map(|v| v.text());
    let ts = corrected_ts(c, received_ms)
        .ok_or("the event time is before 1970 and no `sentAt` corrects it")?;
    let context: Vec<(String, String)> = cfg
        .context
        .iter()
        .filter_map(|(key, path)| {
            c.context
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, v)| (key.clone(), v.clone()))
        })
        .collect();
    let base = |kind: EventKind| Event {
        user: user.to_string(),
        kind,
        item: item.clone(),
        value: None,
        ts_ms: Some(ts),
        context: context.clone(),
        decision: None,
        event_id: None,
    };
    let mut events = Vec::new();
    if let Some(m) = mapping {
        let kind = engine.event_kind(&m.kind).map_err(|e| e.to_string())?;
        if kind.needs_item() && item.is_none() {
            return Err(format!(
                "`{name}` maps to `{}` and needs property `{item_property}`",
                kind.name()
            ));
        }
        let mut e = base(kind);
        if let Some(p) = &m.value_property {
            e.value = c.property(p).and_then(|v| v.number());
        }
        events.push(e);
    }
    let dwell = (!cfg.dwell_property.is_empty())
        .then(|| c.property(&cfg.dwell_property))
        .flatten()
        // A dwell that is not a number becomes an event the engine refuses, so the call's
        // `errors` entry names it instead of the dwell vanishing.
        .map(|v| v.number().unwrap_or(f64::NAN));
    let already_dwell = events.iter().any(|e| e.kind == EventKind::Dwell);
    if let (Some(seconds), Some(_), false) = (dwell, &item, already_dwell) {
        let mut e = base(EventKind::Dwell);
        e.value = Some(seconds);
        events.push(e);
    }
    // `messageId` is the engine's idempotency key: a retried call is applied once, across
    // restarts too (the shard's log keeps the keys). A call that maps to several events
    // gives each its own key.
    if let Some(id) = &c.message_id {
        for (k, e) in events.iter_mut().enumerate() {
            e.event_id = Some(match k {
                0 => id.clone(),
                k => format!("{id}#{k}"),
            });
        }
    }
    Ok(events)
}
