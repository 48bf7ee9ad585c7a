//! Revocation: logout closes that device's sockets; disabling a user closes all of theirs at
//! once; revoked and unknown tokens cannot open sockets; browsers need an allowed Origin.

use serde_json::json;

use crate::common::*;

#[actix_rt::test]
async fn logout_and_disable_close_live_sockets_at_once() {
    let mut node = Node::new("[server]\nallowed_origins = [\"https://chat.example.com\"]\n");
    node.add_user_offline("root", true);
    let bob_id = node.add_user_offline("bob", false);
    node.start().await;
    let root = login(&node, "root").await;
    let phone = login(&node, "bob").await;
    let laptop = login(&node, "bob").await;
    assert_ne!(phone, laptop, "a new token per login");
    let mut phone_ws = WsClient::connect(&node, &phone).await;
    let mut laptop_ws = WsClient::connect(&node, &laptop).await;

    tracing::info!("--- logout on the phone closes the phone's socket only");
    let (status, _) = http(&node, "POST", "/v1/auth/logout", Some(&phone), None).await;
    assert!(status == 200 || status == 204);
    assert_eq!(phone_ws.closed().await, Closed::Code(4401));
    laptop_ws.ping_pong().await;
    assert_eq!(
        WsClient::try_connect(&node, &phone).await.err(),
        Some(401),
        "revoked token cannot reconnect"
    );
    let (status, _) = http(&node, "GET", "/v1/me", Some(&phone), None).await;
    assert_eq!(status, 401);

    tracing::info!("--- disabling bob closes every socket he has");
    let (status, body) = http(
        &node,
        "POST",
        &format!("/v1/admin/users/{bob_id}/disable"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(laptop_ws.closed().await, Closed::Code(4403));
    let (status, body) = http(
        &node,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"username": "bob", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("account_disabled"))
    );

    tracing::info!("--- unknown tokens and foreign origins are refused at the handshake");
    assert_eq!(WsClient::try_connect(&node, "garbage").await.err(), Some(401));
    let foreign = awc::Client::new()
        .ws(node.ws_url())
        .bearer_auth(&root)
        .origin("https://evil.example")
        .connect()
        .await;
    assert!(matches!(foreign, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 403));
    let allowed = awc::Client::new()
        .ws(node.ws_url())
        .bearer_auth(&root)
        .origin("https://chat.example.com")
        .connect()
        .await;
    assert!(allowed.is_ok());
}

#[actix_rt::test]
async fn browsers_connect_with_a_short_lived_ticket() {
    let mut node = Node::new("");
    node.add_user_offline("alice", false);
    node.start().await;
    let token = login(&node, "alice").await;
    let (status, body) = http(&node, "POST", "/v1/auth/ws-ticket", Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["ticket"].as_str().unwrap();
    let url = format!("{}?ticket={}", node.ws_url(), ticket);
    let (_, mut framed) = awc::Client::new().ws(url).connect().await.expect("ticket accepted");
    use futures_util::StreamExt;
    let first = framed.next().await.unwrap().unwrap();
    assert!(matches!(first, awc::ws::Frame::Text(ref t) if String::from_utf8_lossy(t).contains("welcome")));
    let tampered = format!("{}?ticket={}x", node.ws_url(), ticket);
    assert!(awc::Client::new().ws(tampered).connect().await.is_err());
}
