//! REST API: the route table of the public listener and the handlers, one file per resource.
//!
//! Handlers are thin: they parse the request into engine or auth calls and turn the answer into
//! `crate::wire` types; every rule lives in `auth` or the engine. Every failure is a JSON
//! `ApiError`, including malformed path segments and query strings, which actix would otherwise
//! answer in plain text; JSON body errors are configured with the body size limit by the server.
//!
//! Routes are registered as individual resources with full paths, not as a `/v1` scope, so other
//! modules (WebSocket, health) can add their own `/v1/...` routes without one scope shadowing
//! another. Literal segments (`/groups`, `/direct`) are registered before `{id}` patterns.

pub mod accounts;
pub mod admin;
pub mod conversations;
pub mod extract;
pub mod health;

use actix_web::web;
use actix_web::Resource;

use crate::error::ApiError;

/// Default page size of list endpoints.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size of list endpoints.
pub const MAX_LIMIT: usize = 200;

/// Register every REST route of the public listener.
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    use self::accounts as acc;
    use self::admin as adm;
    use self::conversations as conv;

    cfg.service(resource("/v1/auth/register").route(web::post().to(acc::register_user)))
        .service(resource("/v1/auth/login").route(web::post().to(acc::create_session)))
        .service(resource("/v1/auth/logout").route(web::post().to(acc::delete_session)))
        .service(resource("/v1/auth/ws-ticket").route(web::post().to(acc::create_ws_ticket)))
        .service(resource("/v1/me").route(web::get().to(acc::get_me)))
        .service(
            resource("/v1/admin/users")
                .route(web::post().to(adm::create_user))
                .route(web::get().to(adm::list_users)),
        )
        .service(resource("/v1/admin/users/{id}/disable").route(web::post().to(adm::disable_user)))
        .service(resource("/v1/admin/users/{id}/enable").route(web::post().to(adm::enable_user)))
        .service(resource("/v1/conversations").route(web::get().to(conv::list_conversations)))
        .service(resource("/v1/conversations/groups").route(web::post().to(conv::create_group)))
        .service(resource("/v1/conversations/direct").route(web::post().to(conv::open_direct)))
        .service(
            resource("/v1/conversations/{id}")
                .route(web::get().to(conv::get_conversation))
                .route(web::patch().to(conv::rename_conversation)),
        )
        .service(resource("/v1/conversations/{id}/members").route(web::post().to(conv::add_members)))
        .service(
            resource("/v1/conversations/{id}/members/{user}")
                .route(web::delete().to(conv::remove_member)),
        )
        .service(
            resource("/v1/conversations/{id}/members/{user}/role")
                .route(web::put().to(conv::set_member_role)),
        )
        .service(resource("/v1/conversations/{id}/leave").route(web::post().to(conv::leave_conversation)))
        .service(resource("/v1/conversations/{id}/events").route(web::get().to(conv::list_events)))
        .service(resource("/v1/conversations/{id}/messages").route(web::post().to(conv::send_message)))
        .service(resource("/v1/conversations/{id}/receipts").route(web::post().to(conv::post_receipt)))
        .service(resource("/v1/users/{id}").route(web::get().to(conv::get_user)))
        .service(resource("/v1/presence").route(web::get().to(conv::get_presence)));
}

/// A resource whose path and query extraction errors are JSON `invalid_field` errors.
fn resource(path: &str) -> Resource {
    let path_config = web::PathConfig::default()
        .error_handler(|error, _req| ApiError::invalid(format!("bad path segment: {error}")).into());
    let query_config = web::QueryConfig::default()
        .error_handler(|error, _req| ApiError::invalid(format!("bad query string: {error}")).into());
    web::resource(path).app_data(path_config).app_data(query_config)
}

/// A page size: `DEFAULT_LIMIT` when absent, else 1 to `MAX_LIMIT`.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}"))),
    }
}

