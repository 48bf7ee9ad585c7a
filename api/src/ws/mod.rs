//! The WebSocket endpoint `GET /v1/ws`: checks origin, version and credentials, then hands the
//! connection to a [`conn::WsSession`] actor.
//!
//! Native clients authenticate with `Authorization: Bearer <token>`; browsers, which cannot set
//! headers on a WebSocket, first get a short-lived ticket from `POST /v1/auth/ws-ticket` and
//! connect with `?ticket=...`.

pub mod conn;
pub mod limiter;
pub mod order;

use actix_web::http::header;
use actix_web::web;
use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web_actors::ws;
use serde::Deserialize;

use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;
use crate::wire::PROTOCOL_VERSION;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/ws", web::get().to(open_socket));
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketQuery {
    ticket: Option<String>,
    v: Option<u32>,
}

/// # `GET /v1/ws`
async fn open_socket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "node is shutting down; connect to another node",
        ));
    }
    if state.lifecycle.has_left() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "node has left the cluster; connect to another node",
        ));
    }
    let query = web::Query::<SocketQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?
        .into_inner();
    if query.v.is_some_and(|v| v != PROTOCOL_VERSION) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedVersion,
            format!("this server speaks protocol v{PROTOCOL_VERSION}"),
        ));
    }
    check_origin(&req, &state.config.server.allowed_origins)?;
    let authed = match (bearer_token(&req), query.ticket.as_deref()) {
        (Some(token), _) => state.auth.authenticate(token).await?,
        (None, Some(ticket)) => state.auth.redeem_ws_ticket(ticket).await?,
        (None, None) => return Err(ApiError::unauthorized()),
    };
    let session = conn::WsSession::new(state.get_ref().clone(), authed);
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(state.config.limits.max_frame_bytes)
        .start()
        .map_err(|e| ApiError::invalid(format!("not a WebSocket handshake: {e}")))
}

/// Browsers always send Origin; it must match the allowlist exactly. Native clients send none.
fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| a == origin) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            format!("origin `{origin}` is not allowed"),
        ))
    }
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn origin_allowlist_is_exact() {
        let allowed = vec!["https://chat.example.com".to_owned()];
        let native = TestRequest::default().to_http_request();
        assert!(check_origin(&native, &allowed).is_ok());
        let good = TestRequest::default()
            .insert_header((header::ORIGIN, "https://chat.example.com"))
            .to_http_request();
        assert!(check_origin(&good, &allowed).is_ok());
        for bad in ["https://chat.example.com.evil.io", "null", "http://chat.example.com"] {
            let req = TestRequest::default()
                .insert_header((header::ORIGIN, bad))
                .to_http_request();
            let err = check_origin(&req, &allowed).expect_err("rejected");
            assert_eq!(err.code, ErrorCode::OriginNotAllowed);
        }
    }
}
