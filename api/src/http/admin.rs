//! Administration endpoints: create, list, disable and enable accounts. Server admins only
//! ([`AdminUser`]); every change is logged with the acting admin for the audit trail.

use actix_web::web;
use actix_web::HttpResponse;
use roost_engine::ids::UserId;
use serde::Deserialize;
use serde::Serialize;

use super::extract::AdminUser;
use super::page_limit;
use crate::auth::NewAccount;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;
use crate::wire::WireUser;

/// Body of `POST /v1/admin/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub display_name: Option<String>,
    pub password: String,
    #[serde(default)]
    pub admin: bool,
}

/// Query of `GET /v1/admin/users`.
#[derive(Debug, Deserialize)]
pub struct ListUsersQuery {
    /// Return users with ids after this one (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListUsersResponse {
    pub users: Vec<WireUser>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// # `POST /v1/admin/users`
///
/// Create an account. Answers `201` with the user.
pub async fn create_user(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let CreateUserRequest {
        username,
        display_name,
        password,
        admin: make_admin,
    } = body.into_inner();
    let account = NewAccount {
        username,
        display_name,
        password,
        admin: make_admin,
    };
    let user = state.auth.create_user(account).await?;
    tracing::info!(admin = %admin.user.id, user = %user.id, make_admin, "Admin created a user.");
    Ok(HttpResponse::Created().json(WireUser::from(&user)))
}

/// # `GET /v1/admin/users?after=&limit=`
///
/// Users ordered by id.
pub async fn list_users(
    state: web::Data<AppState>,
    _admin: AdminUser,
    query: web::Query<ListUsersQuery>,
) -> Result<web::Json<ListUsersResponse>, ApiError> {
    let limit = page_limit(query.limit)?;
    let users = state.engine.store().list_users(query.after.map(UserId), limit).await?;
    let next_after = users.last().filter(|_| users.len() == limit).map(|u| u.id.0);
    Ok(web::Json(ListUsersResponse {
        users: users.iter().map(WireUser::from).collect(),
        next_after,
    }))
}

/// # `POST /v1/admin/users/{id}/disable`
///
/// Disable an account: its sessions end and its WebSockets close at once.
pub async fn disable_user(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    path: web::Path<u64>,
) -> Result<web::Json<WireUser>, ApiError> {
    let user = UserId(path.into_inner());
    if user == admin.user.id {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "administrators cannot disable themselves",
        ));
    }
    let record = state.auth.set_disabled(user, true).await?;
    tracing::info!(admin = %admin.user.id, %user, "Admin disabled a user.");
    Ok(web::Json(WireUser::from(&record)))
}

/// # `POST /v1/admin/users/{id}/enable`
pub async fn enable_user(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    path: web::Path<u64>,
) -> Result<web::Json<WireUser>, ApiError> {
    let user = UserId(path.into_inner());
    let record = state.auth.set_disabled(user, false).await?;
    tracing::info!(admin = %admin.user.id, %user, "Admin enabled a user.");
    Ok(web::Json(WireUser::from(&record)))
}
