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
