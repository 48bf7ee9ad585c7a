//! Operations basics seen from outside: health, readiness, metrics, and config commands.

use std::process::Command;

use crate::common::*;

#[actix_rt::test]
async fn health_readiness_and_metrics() {
    let mut node = Node::new("");
    node.add_user_offline("alice", false);
    node.start().await;
    let (status, body) = http(&node, "GET", "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = http(&node, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    let token = login(&node, "alice").await;
    let _ws = WsClient::connect(&node, &token).await;
    let mut resp = node.client().get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("roost_api_ws_connections"),
        "connections gauge present:\n{text}"
    );
    assert!(
        text.contains("_bucket{"),
        "histograms have buckets (aggregatable across nodes)"
    );
}

#[test]
fn checkconfig_rejects_unknown_keys_and_accepts_genconfig_output() {
    let dir = tempfile::tempdir().unwrap();
    let roost = env!("CARGO_BIN_EXE_roost");
    let generated = dir.path().join("roost.toml");
    let out = Command::new(roost)
        .args(["genconfig", "--output"])
        .arg(&generated)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ok = Command::new(roost)
        .args(["checkconfig", "--config"])
        .arg(&generated)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten_adress = \"127.0.0.1:9000\"\n").unwrap();
    let out = Command::new(roost)
        .args(["checkconfig", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("listen_adress"), "names the unknown key: {said}");
}

#[actix_rt::test]
async fn health_and_metrics_move_to_the_internal_listener() {
    let mut node = Node::with_internal_listener();
    node.start().await;
    let internal = |path: &str| node.internal_url(path);
    let client = awc::Client::new();
    assert_eq!(
        client.get(internal("/metrics")).send().await.unwrap().status().as_u16(),
        200
    );
    assert_eq!(
        client.get(internal("/healthz")).send().await.unwrap().status().as_u16(),
        200
    );
    let (status, _) = http(&node, "GET", "/metrics", None, None).await;
    assert_eq!(status, 404, "metrics are not exposed on the public listener");
}

#[actix_rt::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let mut node = Node::new("[server]\nheartbeat_secs = 1\nclient_timeout_secs = 2\n");
    node.add_user_offline("alice", false);
    node.start().await;
    let token = login(&node, "alice").await;
    let (_, mut framed) = awc::Client::new()
        .ws(node.ws_url())
        .bearer_auth(&token)
        .connect()
        .await
        .unwrap();
    // Read nothing (so no pong is sent) for longer than the timeout, then look at what came.
    actix_rt::time::sleep(std::time::Duration::from_millis(3500)).await;
    use futures_util::StreamExt;
    let mut close_code = None;
    while let Ok(Some(Ok(frame))) = actix_rt::time::timeout(std::time::Duration::from_secs(5), framed.next()).await {
        if let awc::ws::Frame::Close(reason) = frame {
            close_code = reason.map(|r| u16::from(r.code));
            break;
        }
    }
    assert_eq!(close_code, Some(4408));
}
