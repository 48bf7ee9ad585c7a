//! Account and session endpoints: register, log in, log out, who am I, WebSocket tickets.
//!
//! The session token is returned once, by `POST /v1/auth/login`, and then sent as
//! `Authorization: Bearer <token>`. Browsers exchange it for a short-lived ticket before opening
//! a WebSocket, since they cannot set headers there.

use actix_web::web;
use actix_web::HttpRequest;
use actix_web::HttpResponse;
use serde::Deserialize;
use serde::Serialize;

use super::extract::client_ip;
use super::extract::Authed;
use crate::auth::NewAccount;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;
use crate::wire::WireUser;

/// Body of `POST /v1/auth/register`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub display_name: Option<String>,
    pub password: String,
}

/// Body of `POST /v1/auth/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// A label for this device ("web", "iphone"); shown in session lists.
    pub device: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The bearer token; shown only here.
    pub token: String,
    /// When the session ends, Unix milliseconds.
    pub expires_at: i64,
    pub user: WireUser,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WsTicketResponse {
    /// Pass as `?ticket=` when opening the WebSocket.
    pub ticket: String,
    pub expires_in_secs: u64,
}

/// # `POST /v1/auth/register`
///
/// Self-registration, when the operator has switched it on. Answers `201` with the user.
pub async fn register_user(
    state: web::Data<AppState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.auth.registration_open {
        return Err(ApiError::new(
            ErrorCode::RegistrationClosed,
            "self-registration is switched off; ask an administrator for an account",
        ));
    }
    let RegisterRequest {
        username,
        display_name,
        password,
    } = body.into_inner();
    let account = NewAccount {
        username,
        display_name,
        password,
        admin: false,
    };
    let user = state.auth.create_user(account).await?;
    Ok(HttpResponse::Created().json(WireUser::from(&user)))
}

/// # `POST /v1/auth/login`
///
/// Exchange a username and password for a session token.
pub async fn create_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<web::Json<LoginResponse>, ApiError> {
    let LoginRequest {
        username,
        password,
        device,
    } = body.into_inner();
    let device = device.unwrap_or_default();
    let outcome = state
        .auth
        .login(
            &username,
            &password,
            device,
            client_ip(&req, &state.config.server.trusted_proxies),
        )
        .await?;
    Ok(web::Json(LoginResponse {
        token: outcome.token,
        expires_at: outcome.session.expires_at,
        user: WireUser::from(&outcome.user),
    }))
}

/// # `POST /v1/auth/logout`
///
/// End the calling session; its WebSockets close at once. Answers `204`.
pub async fn delete_session(state: web::Data<AppState>, Authed(me): Authed) -> Result<HttpResponse, ApiError> {
    state.auth.logout(&me.session).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// # `GET /v1/me`
pub async fn get_me(Authed(me): Authed) -> web::Json<WireUser> {
    web::Json(WireUser::from(&me.user))
}

/// # `POST /v1/auth/ws-ticket`
///
/// A short-lived ticket for opening a WebSocket from a browser.
pub async fn create_ws_ticket(state: web::Data<AppState>, Authed(me): Authed) -> web::Json<WsTicketResponse> {
    web::Json(WsTicketResponse {
        ticket: state.auth.issue_ws_ticket(&me),
        expires_in_secs: state.auth.ws_ticket_ttl_secs(),
    })
}
