//! The HTTP front end (actix-web): the protocol's ops as routes, health checks and
//! `/metrics`; it also mounts the WebSocket (`/v1/ws`) and Segment (`/v1/track`, …) routes.
//!
//! Routes: `POST /v1/events` (one object, an array, or NDJSON), `POST /v1/decide`,
//! `POST /v1/tone`, `POST /v1/consent`, `POST /v1/reward`, `POST /v1/templates`,
//! `GET`/`PUT`/`DELETE /v1/items/{id}`, `GET`/`DELETE /v1/users/{id}`, `GET`/`PUT /v1/triggers`,
//! `GET /v1/segments`, `PUT /v1/segments/{segment}`, `GET /v1/stats`, `GET /livez` (and
//! `/healthz`), `GET /readyz`, `GET /metrics`, and the dashboard (`GET /`). Bodies are
//! the TCP ops' JSON without `op`; replies are the same JSON as on TCP, with the HTTP status
//! its error code owns (`ErrorCode::http_status`). Each request runs through a `session` of
//! its own (the same one TCP and WebSocket run per connection): this module only frames.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::{error::DispatchError, HttpService};
use actix_service::{fn_service, map_config, IntoServiceFactory as _, ServiceFactoryExt as _};
use actix_web::dev::AppConfig;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse};

use super::deadline::DeadlineStream;
use super::http_errors::{json_errors, no_route, only};
use super::metrics::Transport;
use super::session::Session;
use super::{segment, ws, Shared};
use crate::error::{Error, ErrorCode, Problem};
use crate::wire::{
    write_events_summary, write_reply, Op, OpKind, Parser, Rejected, Reply, ReqId, Request,
    WireError,
};

thread_local! {
    /// One parser per actix worker thread (workers are single-threaded).
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new());
}

/// Runs `f` with this thread's parser.
pub(super) fn with_parser<T>(f: impl FnOnce(&mut Parser) -> T) -> T {
    PARSER.with(|p| f(&mut p.borrow_mut()))
}

/// Builds the actix server on `listener`; it runs once spawned or awaited.
///
/// Built from actix's parts rather than `HttpServer` so that each connection's socket is a
/// `DeadlineStream` (the request deadline, `request_timeout_ms`), which `HttpServer` cannot
/// wrap.
pub(super) fn server(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
) -> std::io::Result<actix_web::dev::Server> {
    let workers = shared.cfg.http_workers;
    let grace = shared.cfg.shutdown_timeout_s;
    let timeout = Duration::from_millis(shared.cfg.request_timeout_ms);
    let max_body = shared.cfg.max_body_bytes;
    let data = web::Data::from(shared);
    Ok(actix_server::Server::build()
        .listen("nudge-http", listener, move || {
            let data = data.clone();
            let metrics = data.metrics.clone();
            let stop = data.stop.clone();
            let app = App::new()
                .wrap(json_errors(max_body))
                .app_data(data.clone())
                .configure(|c| routes(c, max_body));
            let accept = fn_service(move |io: actix_web::rt::net::TcpStream| {
                // Replies leave as soon as they are written: with Nagle's algorithm on, a
                // reply written in two pieces waited for the client's next request to carry
                // the ACK of the first (a decision's p50 at a fixed rate was the connection's
                // send interval, 0.5–0.8 ms).
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                let io = DeadlineStream::new(io, timeout, metrics.clone());
                std::future::ready(Ok::<_, DispatchError>((io, peer)))
            });
            accept.and_then(
                HttpService::build()
                    // Idle keep-alive connections close at shutdown without waiting.
                    .graceful_shutdown_signal(move || {
                        let mut stop = stop.clone();
                        async move {
                            let _ = stop.wait_for(|s| *s).await;
                        }
                    })
                    .h1(map_config(
                        app.into_factory()
                            .map_err(|e: actix_web::Error| e.error_response()),
                        |_| AppConfig::default(),
                    )),
            )
        })?
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(grace)
        .run())
}

/// Every route of the HTTP front end; a path that is no route answers `404`, a route asked
/// with another method `405` (both with the JSON error).
fn routes(cfg: &mut web::ServiceConfig, max_body: usize) {
    let get = |path: &str, to| web::resource(path).route(to).default_service(only("GET"));
    cfg.app_data(web::PayloadConfig::new(max_body))
        .service(post("/v1/events", web::post().to(events)))
        .service(post("/v1/decide", web::post().to(decide)))
        .service(post("/v1/tone", web::post().to(tone)))
        .service(post("/v1/consent", web::post().to(consent)))
        .service(post("/v1/reward", web::post().to(reward)))
        .service(post("/v1/templates", web::post().to(template)))
        .service(
            web::resource("/v1/items/{id}")
                .route(web::get().to(get_item))
                .route(web::put().to(put_item))
                .route(web::delete().to(delete_item))
                .default_service(only("GET, PUT, DELETE")),
        )
        .service(
            web::resource("/v1/users/{id}")
                .route(web::get().to(get_user))
                .route(web::delete().to(delete_user))
                .default_service(only("GET, DELETE")),
        )
        .service(
            web::resource("/v1/experiments")
                .route(web::get().to(list_experiments))
                .route(web::post().to(create_experiment))
                .default_service(only("GET, POST")),
        )
        .service(
            web::resource("/v1/experiments/{name}")
                .route(web::get().to(experiment_results))
                .route(web::put().to(update_experiment))
                .route(web::delete().to(stop_experiment))
                .default_service(only("GET, PUT, DELETE")),
        )
        .service(post(
            "/v1/experiments/{name}/promote",
            web::post().to(promote_experiment),
        ))
        .service(post(
            "/v1/experiment-versions/{version}",
            web::post().to(restore_experiments),
        ))
        .service(
            web::resource("/v1/triggers")
                .route(web::get().to(get_triggers))
                .route(web::put().to(put_triggers))
                .default_service(only("GET, PUT")),
        )
        .service(get("/v1/segments", web::get().to(list_segments)))
        .service(
            web::resource("/v1/segments/{segment}")
                .route(web::put().to(name_segment))
                .default_service(only("PUT")),
        )
        .service(get("/v1/stats", web::get().to(stats)))
        .service(get("/v1/ws", web::get().to(ws::handler)))
        .service(get("/livez", web::get().to(live)))
        .service(get("/healthz", web::get().to(live)))
        .service(get("/readyz", web::get().to(ready)))
        .service(get("/metrics", web::get().to(metrics)))
        .configure(segment::routes)
        .configure(super::dashboard::routes)
        .default_service(no_route());
}

/// A `POST`-only resource.
pub(super) fn post(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(only("POST"))
}

/// The HTTP status of a reply: `200`, or its error code's (the code owns it).
pub(super) fn status_of(code: Option<ErrorCode>) -> StatusCode {
    let status = code.map_or(200, ErrorCode::http_status);
    // Every status in the table is a valid one; 500 if that ever broke.
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(super) fn json(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// What an HTTP request gives the session: a parsed body, or a reply the route knew already.
enum Input {
    Parsed(Result<Request, Rejected>),
    Ready(Reply),
}

/// Runs one request of the route for `op` through a session of its own and frames its reply
/// as the body.
async fn one(
    shared: web::Data<Shared>,
    op: OpKind,
    input: Input,
    started: Instant,
) -> HttpResponse {
    let mut session = Session::new(shared.into_inner(), Transport::Http).for_route(op);
    match input {
        Input::Parsed(parsed) => session.request(parsed, started),
        Input::Ready(reply) => session.ready(ReqId::None, op, reply, started),
    }
    let mut out = Vec::with_capacity(256);
    let mut status = StatusCode::OK;
    session
        .answer_all(|id, reply| {
            status = match reply {
                // A user the engine holds nothing of: `null`, and the route says so.
                Reply::User(None) => StatusCode::NOT_FOUND,
                _ => status_of(reply.error_code()),
            };
            write_reply(&mut out, &id, &reply);
        })
        .await;
    json(status, out)
}

/// Parses a body as one op of `kind` and runs it.
async fn one_op(shared: web::Data<Shared>, body: web::Bytes, kind: OpKind) -> HttpResponse {
    let started = Instant::now();
    let mut input = body.to_vec();
    let parsed = with_parser(|p| p.parse(&mut input, Some(kind)));
    one(shared, kind, Input::Parsed(parsed), started).await
}

/// Runs an op the route built from its URL.
async fn url_op(shared: web::Data<Shared>, op: Op) -> HttpResponse {
    let kind = op.kind();
    let request = Request {
        id: ReqId::None,
        op,
    };
    one(shared, kind, Input::Parsed(Ok(request)), Instant::now()).await
}

async fn events(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let started = Instant::now();
    let parsed = with_parser(|p| p.parse_events(&body));
    let mut session = Session::new(shared.into_inner(), Transport::Http).for_route(OpKind::Event);
    for request in parsed {
        session.request(request, started);
    }
    let mut results: Vec<(ReqId, Reply)> = Vec::new();
    session
        .answer_all(|id, reply| results.push((id, reply)))
        .await;
    let mut out = Vec::with_capacity(64);
    write_events_summary(&mut out, &results);
    let status = match results.iter().find_map(|(_, r)| r.error_code()) {
        Some(code) if results.iter().all(|(_, r)| r.error_code().is_some()) => {
            status_of(Some(code))
        }
        _ if results.is_empty() => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    json(status, out)
}

async fn decide(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::Decide).await
}

async fn consent(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::Consent).await
}

async fn tone(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::Tone).await
}

async fn reward(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::Reward).await
}

/// `POST /v1/templates`: the `template` op (register, read or roll back; issue 15).
async fn template(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::Template).await
}

async fn get_item(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let started = Instant::now();
    // Reading the catalog is no protocol op; counted under `item`.
    let reply = match shared.engine.item(&id) {
        Ok(Some(spec)) => Reply::Item(Some(spec)),
        Ok(None) => Reply::Failed(WireError::Engine(crate::Error::UnknownItem(id.clone()))),
        Err(e) => Reply::Failed(e.into()),
    };
    one(shared, OpKind::Item, Input::Ready(reply), started).await
}

async fn put_item(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let mut input = body.to_vec();
    let parsed = with_parser(|p| p.parse_item(&mut input, &id)).map(|spec| Request {
        id: ReqId::None,
        op: Op::Item(spec),
    });
    one(shared, OpKind::Item, Input::Parsed(parsed), started).await
}

async fn delete_item(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    url_op(shared, Op::RemoveItem(id.into_inner())).await
}

async fn get_user(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    url_op(shared, Op::User(id.into_inner())).await
}

async fn delete_user(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    url_op(shared, Op::Forget(id.into_inner())).await
}

/// `GET /v1/triggers`: the threshold triggers in force.
async fn get_triggers(shared: web::Data<Shared>) -> HttpResponse {
    url_op(shared, Op::Triggers(None)).await
}

/// `PUT /v1/triggers` with `{"triggers":[…]}`: replaces them (the `triggers` op's body).
async fn put_triggers(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::Triggers).await
}

async fn list_experiments(shared: web::Data<Shared>) -> HttpResponse {
    url_op(shared, Op::Experiments).await
}

async fn create_experiment(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    one_op(shared, body, OpKind::CreateExperiment).await
}

async fn experiment_results(shared: web::Data<Shared>, name: web::Path<String>) -> HttpResponse {
    url_op(shared, Op::ExperimentResults(name.into_inner())).await
}

/// `PUT /v1/experiments/{name}` with `{"experiment":{…},"reason":…}` changes what may change
/// of a running experiment (the `update_experiment` op); the body's name must be the URL's.
async fn update_experiment(
    shared: web::Data<Shared>,
    name: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let mut input = body.to_vec();
    let kind = OpKind::UpdateExperiment;
    let parsed = with_parser(|p| p.parse(&mut input, Some(kind)));
    let parsed = parsed.and_then(|request| match &request.op {
        Op::UpdateExperiment { experiment, .. } if experiment.name != *name => Err(Rejected {
            id: request.id,
            error: WireError::Engine(Error::invalid(
                "name",
                Problem::Malformed("the experiment named in the URL"),
            )),
        }),
        _ => Ok(request),
    });
    one(shared, kind, Input::Parsed(parsed), started).await
}

/// `POST /v1/experiments/{name}/promote` with `{"arm":…,"reason":…}`.
async fn promote_experiment(
    shared: web::Data<Shared>,
    name: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let name = serde_json::Value::String(name.into_inner());
    with_url_fields(shared, body, OpKind::PromoteExperiment, [("name", name)]).await
}

/// `POST /v1/experiment-versions/{version}` (an optional body gives the `reason`) brings
/// every experiment back to that audit version (the `restore_experiments` op).
async fn restore_experiments(
    shared: web::Data<Shared>,
    version: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let version = match version.parse::<u64>() {
        Ok(v) => serde_json::Value::from(v),
        Err(_) => serde_json::Value::String(version.into_inner()),
    };
    let kind = OpKind::RestoreExperiments;
    with_url_fields(shared, body, kind, [("version", version)]).await
}

/// Runs the op of `kind` whose fields are the body's (an object, or empty) plus the ones the
/// URL names; a body that gives one of those fields another value is refused, naming it.
async fn with_url_fields<const N: usize>(
    shared: web::Data<Shared>,
    body: web::Bytes,
    kind: OpKind,
    fields: [(&'static str, serde_json::Value); N],
) -> HttpResponse {
    let started = Instant::now();
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(object)) => object,
            // Not an object: the parser names the problem as it would on any route.
            _ => return one_op(shared, body, kind).await,
        }
    };
    for (field, value) in fields {
        if object.get(field).is_some_and(|given| *given != value) {
            let error = Error::invalid(field, Problem::Malformed("the value in the URL"));
            let rejected = Rejected {
                id: ReqId::None,
                error: WireError::Engine(error),
            };
            return one(shared, kind, Input::Parsed(Err(rejected)), started).await;
        }
        object.insert(field.to_string(), value);
    }
    let mut input = serde_json::to_vec(&object).expect("a JSON map serializes");
    let parsed = with_parser(|p| p.parse(&mut input, Some(kind)));
    one(shared, kind, Input::Parsed(parsed), started).await
}

/// `DELETE /v1/experiments/{name}` stops it (stopped experiments stay readable); no reason
/// can be given on this route, `stop_experiment` in a body takes one.
async fn stop_experiment(shared: web::Data<Shared>, name: web::Path<String>) -> HttpResponse {
    let op = Op::StopExperiment {
        name: name.into_inner(),
        reason: String::new(),
    };
    url_op(shared, op).await
}

async fn list_segments(shared: web::Data<Shared>) -> HttpResponse {
    let op = Op::Segments {
        segment: None,
        name: None,
    };
    url_op(shared, op).await
}

/// `PUT /v1/segments/{segment}` with `{"name":…}` names the segment (its id or current name).
async fn name_segment(
    shared: web::Data<Shared>,
    segment: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let mut input = body.to_vec();
    let parsed = with_parser(|p| p.parse(&mut input, Some(OpKind::Segments)));
    let parsed = parsed.map(|mut request| {
        if let Op::Segments { segment: s, .. } = &mut request.op {
            *s = Some(segment.into_inner());
        }
        request
    });
    one(shared, OpKind::Segments, Input::Parsed(parsed), started).await
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    url_op(shared, Op::Stats).await
}

async fn live() -> HttpResponse {
    json(StatusCode::OK, b"{\"ok\":true}".to_vec())
}

async fn ready(shared: web::Data<Shared>) -> HttpResponse {
    // A data directory that cannot be written refuses state changes: not ready, though
    // decisions and reads still answer from memory.
    let stats = shared.engine.stats();
    if stats.shards.iter().any(|s| s.failed) {
        // A panic escaped a shard-wide step: its state may be inconsistent.
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"ready\":false,\"shard\":\"failed\"}".to_vec(),
        );
    }
    let storage = stats.durability.map_or(true, |d| d.writable);
    if !storage {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"ready\":false,\"storage\":\"unavailable\"}".to_vec(),
        );
    }
    if shared.ready.load(Ordering::Acquire) {
        json(StatusCode::OK, b"{\"ready\":true}".to_vec())
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"ready\":false}".to_vec(),
        )
    }
}

async fn metrics(shared: web::Data<Shared>) -> HttpResponse {
    let mut stats = shared.engine.stats();
    // Per-segment gauges need every shard's part; a failure leaves them out.
    stats.segments = shared.engine.segments_async().await.unwrap_or_default();
    let text = shared.metrics.render(&stats);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}
