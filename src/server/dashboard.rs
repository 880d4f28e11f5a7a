//! The live dashboard (issue 13, item 5): `GET /` serves one page, its HTML, CSS and script
//! embedded in the binary (`dashboard.html`, no build step); `GET /v1/dashboard` answers one
//! snapshot and `GET /v1/dashboard/stream` sends one every second as Server-Sent Events.
//!
//! A snapshot is the request rate and latency quantiles over the last interval (differences
//! of the server's counters), the engine's `stats` and each running or stopped experiment's
//! results, the last two written by the protocol's own reply writers (`wire::write_reply`),
//! so the page reads the same fields as `stats` and `experiment_results` replies.

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};

use super::metrics::Totals;
use super::Shared;
use crate::wire::{write_reply, Reply, ReqId};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// How often the stream sends a snapshot.
const EVERY: Duration = Duration::from_secs(1);

/// The dashboard's routes.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let get = |path: &str, to| {
        web::resource(path)
            .route(to)
            .default_service(super::http_errors::only("GET"))
    };
    cfg.service(get("/", web::get().to(page)))
        .service(get("/v1/dashboard", web::get().to(one)))
        .service(get("/v1/dashboard/stream", web::get().to(stream)));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// The counters a snapshot's rates are measured from.
struct Since {
    at: Instant,
    totals: Totals,
}

async fn one(shared: web::Data<Shared>) -> HttpResponse {
    let since = Since {
        at: Instant::now(),
        totals: shared.metrics.totals(),
    };
    let body = snapshot(&shared, &since).await;
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

async fn stream(shared: web::Data<Shared>) -> HttpResponse {
    let since = Since {
        at: Instant::now(),
        totals: shared.metrics.totals(),
    };
    let events = futures_util::stream::unfold((shared, since), |(shared, since)| async move {
        let mut stop = shared.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            // The server is shutting down: end the stream so the connection can close.
            _ = stop.wait_for(|s| *s) => return None,
        }
        let mut frame = b"data: ".to_vec();
        frame.extend_from_slice(&snapshot(&shared, &since).await);
        frame.extend_from_slice(b"\n\n");
        let next = Since {
            at: Instant::now(),
            totals: shared.metrics.totals(),
        };
        let chunk = Ok::<_, actix_web::Error>(web::Bytes::from(frame));
        Some((chunk, (shared, next)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events)
}

/// One snapshot as JSON: `{"ts_ms","requests_per_s","latency_p50_s","latency_p99_s",
/// "stats":{…},"experiments":[{…}]}`.
async fn snapshot(shared: &Shared, since: &Since) -> Vec<u8> {
    let now = shared.metrics.totals();
    let secs = since.at.elapsed().as_secs_f64().max(1e-3);
    let rate = now.requests.saturating_sub(since.totals.requests) as f64 / secs;
    let engine = &shared.engine;
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"ts_ms\":");
    out.extend_from_slice(engine.now_ms().to_string().as_bytes());
    out.extend_from_slice(format!(",\"requests_per_s\":{rate:.1}").as_bytes());
    for (name, q) in [("latency_p50_s", 0.5), ("latency_p99_s", 0.99)] {
        let v = now.quantile_since(&since.totals, q);
        let v = v.map_or("null".to_string(), |s| format!("{s}"));
        out.extend_from_slice(format!(",\"{name}\":{v}").as_bytes());
    }
    out.extend_from_slice(b",\"stats\":");
    let mut stats = engine.stats();
    // As the `stats` op does: segments are read from the shards, not from counters.
    stats.segments = engine.segments_async().await.unwrap_or_default();
    let stats = Reply::Stats(Box::new(stats));
    write_reply(&mut out, &ReqId::None, &stats);
    out.extend_from_slice(b",\"experiments\":[");
    let experiments = engine.experiments();
    for (i, (spec, _)) in experiments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match engine.experiment_results_async(&spec.name).await {
            Ok(r) => write_reply(
                &mut out,
                &ReqId::None,
                &Reply::ExperimentResults(Box::new(r)),
            ),
            Err(_) => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"]}");
    out
}
