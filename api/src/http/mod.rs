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
//!
//! The internal listener serves [`health`] and the cluster admin routes of [`cluster`], never
//! these public ones.

pub mod accounts;
pub mod admin;
pub mod cluster;
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
        .service(resource("/v1/conversations/{id}/members/{user}").route(web::delete().to(conv::remove_member)))
        .service(resource("/v1/conversations/{id}/members/{user}/role").route(web::put().to(conv::set_member_role)))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix_web::http::StatusCode;
    use actix_web::test as actix_test;
    use actix_web::test::TestRequest;
    use actix_web::App;
    use roost_engine::store::memory::MemoryStore;
    use serde_json::json;
    use serde_json::Value;

    use super::*;
    use crate::auth::create_account;
    use crate::auth::NewAccount;
    use crate::config::AuthConfig;
    use crate::config::NodeConfig;
    use crate::state::AppState;

    /// Call the app and return the status and the JSON body (`null` when empty).
    macro_rules! call {
        ($app:expr, $req:expr) => {{
            let response = actix_test::call_service(&$app, $req.to_request()).await;
            let status = response.status();
            let body = actix_test::read_body(response).await;
            let json: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).expect("a JSON body")
            };
            (status, json)
        }};
    }

    fn node_config() -> NodeConfig {
        let mut config = NodeConfig::default();
        config.server.engine_workers = 1;
        config.auth = AuthConfig {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            ..AuthConfig::default()
        };
        config
    }

    async fn state_with_admin(config: NodeConfig) -> AppState {
        let store = Arc::new(MemoryStore::new());
        let root = NewAccount {
            username: "root".into(),
            display_name: None,
            password: "root password".into(),
            admin: true,
        };
        create_account(store.as_ref(), &config.auth, root)
            .await
            .expect("bootstrap admin");
        crate::server::build_state(
            Arc::new(config),
            store,
            std::sync::Arc::new(roost_engine::presence::LocalPresence::start()),
            roost_engine::remote::Topology::standalone(),
        )
    }

    fn post(path: &str, token: &str, body: Value) -> TestRequest {
        TestRequest::post()
            .uri(path)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .set_json(body)
    }

    fn get(path: &str, token: &str) -> TestRequest {
        TestRequest::get()
            .uri(path)
            .insert_header(("Authorization", format!("Bearer {token}")))
    }

    #[actix_web::test]
    async fn accounts_admin_and_conversations_story() {
        let state = state_with_admin(node_config()).await;
        let app = actix_test::init_service(
            App::new()
                .app_data(web::Data::new(state))
                .app_data(crate::server::json_config(64 * 1024))
                .configure(configure_public),
        )
        .await;

        // --- Registration is closed by default; the admin logs in.
        let register = TestRequest::post()
            .uri("/v1/auth/register")
            .set_json(json!({"username": "eve", "password": "long enough"}));
        let (status, body) = call!(app, register);
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::FORBIDDEN, &json!("registration_closed"))
        );
        let login = json!({"username": "root", "password": "root password", "device": "test"});
        let (status, body) = call!(app, TestRequest::post().uri("/v1/auth/login").set_json(login));
        assert_eq!(status, StatusCode::OK, "{body}");
        let root = body["token"].as_str().expect("token").to_owned();
        assert_eq!(body["user"]["admin"], true);

        // --- The admin creates bob; bob logs in and may not use admin routes.
        let bob = json!({"username": "Bob", "password": "bob password", "display_name": "Bob B."});
        let (status, body) = call!(app, post("/v1/admin/users", &root, bob));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let bob_id = body["id"].as_u64().expect("id");
        let login = json!({"username": "bob", "password": "bob password"});
        let (_, body) = call!(app, TestRequest::post().uri("/v1/auth/login").set_json(login));
        let bob = body["token"].as_str().expect("token").to_owned();
        let (status, body) = call!(app, get("/v1/admin/users", &bob));
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::FORBIDDEN, &json!("forbidden"))
        );
        let (status, body) = call!(app, get("/v1/admin/users?limit=1", &root));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["users"].as_array().map(Vec::len), Some(1));
        let after = body["next_after"].as_u64().expect("more pages");
        let (_, body) = call!(app, get(&format!("/v1/admin/users?after={after}&limit=1"), &root));
        assert_eq!(body["users"][0]["username"], "bob");

        // --- Missing or bad credentials, bad ids and bad queries are JSON errors.
        let (status, body) = call!(app, TestRequest::get().uri("/v1/me"));
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
        );
        let (status, body) = call!(app, get("/v1/conversations/abc", &bob));
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_field"))
        );
        let (status, body) = call!(app, get("/v1/admin/users?limit=x", &root));
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_field"))
        );

        // --- Bob creates a group with root and sends over REST, idempotently.
        let group = json!({"name": "ops", "members": [1]});
        let (status, body) = call!(app, post("/v1/conversations/groups", &bob, group));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_u64().expect("id");
        let send = json!({"client_msg_id": "m1", "body": {"text": "hello"}});
        let (status, first) = call!(
            app,
            post(&format!("/v1/conversations/{id}/messages"), &bob, send.clone())
        );
        assert_eq!(status, StatusCode::OK, "{first}");
        let (_, again) = call!(app, post(&format!("/v1/conversations/{id}/messages"), &bob, send));
        assert_eq!(
            (again["seq"].clone(), again["duplicate"].clone()),
            (first["seq"].clone(), json!(true))
        );
        let rename = TestRequest::patch()
            .uri(&format!("/v1/conversations/{id}"))
            .insert_header(("Authorization", format!("Bearer {bob}")))
            .set_json(json!({"name": "ops-team"}));
        let (status, body) = call!(app, rename);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["seq"].as_u64().is_some());

        // --- History pages both ways; the conversation shows up in root's list.
        let (_, newest) = call!(app, get(&format!("/v1/conversations/{id}/events?limit=2"), &root));
        let seqs: Vec<u64> = newest["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        assert_eq!((seqs, &newest["limited"]), (vec![3, 2], &json!(true)));
        let (_, forward) = call!(app, get(&format!("/v1/conversations/{id}/events?after=1"), &root));
        assert_eq!(forward["events"][0]["kind"], "message");
        assert_eq!(forward["limited"], false);
        let both = format!("/v1/conversations/{id}/events?after=1&before=3");
        let (status, _) = call!(app, get(&both, &root));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = call!(app, get(&format!("/v1/conversations/{id}/events?limit=0"), &root));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, list) = call!(app, get("/v1/conversations", &root));
        assert_eq!(list[0]["conversation"]["name"], "ops-team");
        assert_eq!(list[0]["unread"], 1);
        let (_, receipt) = call!(
            app,
            post(&format!("/v1/conversations/{id}/receipts"), &root, json!({"read": 2}))
        );
        assert_eq!(
            (receipt["read"].clone(), receipt["delivered"].clone()),
            (json!(2), json!(2))
        );

        // --- Directory and presence.
        let (_, user) = call!(app, get(&format!("/v1/users/{bob_id}"), &root));
        assert_eq!(user["display_name"], "Bob B.");
        let (_, presence) = call!(app, get(&format!("/v1/presence?users={bob_id},1,{bob_id}"), &root));
        assert_eq!(presence["users"].as_array().map(Vec::len), Some(2));
        let (status, _) = call!(app, get("/v1/presence?users=1,x", &root));
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // --- A ticket for the browser, then disabling bob ends his session.
        let (_, ticket) = call!(app, post("/v1/auth/ws-ticket", &bob, json!({})));
        assert!(ticket["ticket"].as_str().is_some_and(|t| !t.is_empty()));
        let (status, body) = call!(
            app,
            post(&format!("/v1/admin/users/{bob_id}/disable"), &root, json!({}))
        );
        assert_eq!((status, &body["disabled"]), (StatusCode::OK, &json!(true)));
        let (status, _) = call!(app, get("/v1/me", &bob));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call!(app, post("/v1/admin/users/1/disable", &root, json!({})));
        assert_eq!(status, StatusCode::FORBIDDEN, "admins cannot disable themselves");

        // --- Logout revokes the token.
        let (status, _) = call!(app, post("/v1/auth/logout", &root, json!({})));
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call!(app, get("/v1/me", &root));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[actix_web::test]
    async fn open_registration_creates_plain_users() {
        let mut config = node_config();
        config.auth.registration_open = true;
        let state = state_with_admin(config).await;
        let app =
            actix_test::init_service(App::new().app_data(web::Data::new(state)).configure(configure_public)).await;
        let register = json!({"username": "carol", "password": "carol password"});
        let (status, body) = call!(
            app,
            TestRequest::post().uri("/v1/auth/register").set_json(register.clone())
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["admin"], false);
        let (status, body) = call!(app, TestRequest::post().uri("/v1/auth/register").set_json(register));
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::CONFLICT, &json!("conflict"))
        );
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).expect("default"), DEFAULT_LIMIT);
        assert_eq!(page_limit(Some(200)).expect("max"), 200);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(201)).is_err());
    }
}
