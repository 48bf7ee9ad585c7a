//! HTTPS and WSS with rustls, using the certificate `roost cert dev` makes.

use crate::common::*;

#[actix_rt::test]
async fn https_and_wss_with_a_development_certificate() {
    let mut node = Node::new_tls();
    node.add_user_offline("alice", false);
    node.start().await;
    let (status, body) = http(&node, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
    let token = login(&node, "alice").await;
    let mut ws = WsClient::connect(&node, &token).await;
    ws.ping_pong().await;
    assert_eq!(ws.welcome["user"]["username"], "alice");

    tracing::info!("--- plain HTTP to the TLS port is refused");
    let plain = awc::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", node.port))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
