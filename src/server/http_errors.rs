//! `http_errors`: every HTTP error reply in the protocol's JSON error shape.
//!
//! The handlers write their own errors; this module covers what actix answers before a
//! handler runs: no such route (`404`), a route that exists for other methods (`405` with
//! `Allow`), and extractor refusals such as a body over `max_body_bytes` (`413`), which actix
//! writes as plain text and the `ErrorHandlers` middleware here rewrites. Statuses come from
//! the error's code (`ErrorCode::http_status`), except where HTTP itself has said otherwise
//! (actix's refusals keep actix's status; the WebSocket handshake's oversized headers `431`).

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpResponse};

use super::http::{json, status_of};
use crate::wire::{write_error, ReqId, WireError};

/// A reply with the JSON error shape and the status of its code.
pub(super) fn error_reply(error: &WireError) -> HttpResponse {
    error_reply_as(status_of(Some(error.code())), error)
}

/// A reply with the JSON error shape and `status`, which HTTP has decided already.
pub(super) fn error_reply_as(status: StatusCode, error: &WireError) -> HttpResponse {
    let mut out = Vec::with_capacity(128);
    write_error(&mut out, &ReqId::None, error);
    json(status, out)
}

/// The app's default service: `404` for a path that is no route.
pub(super) fn no_route() -> actix_web::Route {
    web::to(|req: actix_web::HttpRequest| async move {
        let path = req.path().to_string();
        error_reply(&WireError::NoRoute { path })
    })
}

/// A resource's default service: `405` naming the methods it answers, in `Allow` as well.
pub(super) fn only(allow: &'static str) -> actix_web::Route {
    web::to(move |req: actix_web::HttpRequest| async move {
        let method = req.method().to_string();
        let mut resp = error_reply(&WireError::MethodNotAllowed { method, allow });
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        resp
    })
}

/// Rewrites an error reply that is not JSON (actix's own, from an extractor) into the JSON
/// error shape; `max_body_bytes` names the limit in a `413`.
pub(super) fn json_errors<B: MessageBody + 'static>(max_body_bytes: usize) -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(move |res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let error = match status {
            StatusCode::PAYLOAD_TOO_LARGE => WireError::TooLarge {
                limit: max_body_bytes,
            },
            StatusCode::NOT_FOUND => WireError::NoRoute {
                path: res.request().path().to_string(),
            },
            _ => WireError::BadRequest(format!(
                "the HTTP request was refused: {}",
                status.canonical_reason().unwrap_or("error")
            )),
        };
        let (req, _) = res.into_parts();
        let reply = error_reply_as(status, &error);
        let res = ServiceResponse::new(req, reply).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}
