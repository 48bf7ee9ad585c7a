//! Bad input: each case gets its documented error code (or close code), the connection stays
//! open where that is safe, nothing panics, and no acknowledged message is lost.

use std::io::Read;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use awc::ws;
use serde_json::json;

use crate::common::*;

async fn setup(extra: &str) -> (Node, String, String, u64) {
    let mut node = Node::new(extra);
    node.add_user_offline("alice", false);
    let bob = node.add_user_offline("bob", false);
    node.add_user_offline("mallory", false);
    node.start().await;
    let alice = login(&node, "alice").await;
    let mallory = login(&node, "mallory").await;
    let conversation = open_direct(&node, &alice, bob).await;
    (node, alice, mallory, conversation)
}

async fn error_code(ws: &mut WsClient, reference: &str) -> String {
    let reply = ws.reply_to(reference).await;
    assert_eq!(reply["type"], "error", "{reply}");
    reply["code"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn malformed_frames_get_codes_and_the_connection_stays_open() {
    let (node, alice, mallory, conversation) = setup("").await;
    let mut ws = WsClient::connect(&node, &alice).await;
    let acked = ws
        .send_message(conversation, "kept", "acknowledged before the garbage")
        .await;

    ws.send_raw(ws::Message::Text("{this is not json".into())).await;
    let reply = ws.next_of("error").await;
    assert_eq!(reply["code"], "malformed_json");

    ws.send(json!({"type": "teleport", "ref": "t"})).await;
    assert_eq!(error_code(&mut ws, "t").await, "unknown_type");

    ws.send(json!({"type": "send", "ref": "w", "conversation": "seven", "client_msg_id": "x", "body": {"text": "hi"}}))
        .await;
    assert_eq!(error_code(&mut ws, "w").await, "invalid_field");

    ws.send(json!({"type": "send", "ref": "id", "conversation": conversation, "client_msg_id": "has space", "body": {"text": "hi"}})).await;
    assert_eq!(error_code(&mut ws, "id").await, "invalid_field");

    ws.send(
        json!({"type": "send", "ref": "nf", "conversation": 987654, "client_msg_id": "x1", "body": {"text": "hi"}}),
    )
    .await;
    assert_eq!(error_code(&mut ws, "nf").await, "not_found");

    let big = "x".repeat(16 * 1024 + 1);
    ws.send(json!({"type": "send", "ref": "big", "conversation": conversation, "client_msg_id": "x2", "body": {"text": big}})).await;
    assert_eq!(error_code(&mut ws, "big").await, "body_too_large");

    ws.send_raw(ws::Message::Binary(bytes::Bytes::from_static(b"\x00\x01")))
        .await;
    assert_eq!(ws.next_of("error").await["code"], "unsupported_frame");

    tracing::info!("--- duplicate client_msg_id is not an error: the original seq");
    ws.send(json!({"type": "send", "ref": "dup", "conversation": conversation, "client_msg_id": "kept", "body": {"text": "again"}})).await;
    let dup = ws.reply_to("dup").await;
    assert_eq!(
        (dup["seq"].as_u64(), dup["duplicate"].as_bool()),
        (Some(acked), Some(true))
    );

    tracing::info!("--- still open after all of that");
    ws.ping_pong().await;

    tracing::info!("--- a non-member cannot send into the conversation");
    let mut intruder = WsClient::connect(&node, &mallory).await;
    intruder.send(json!({"type": "send", "ref": "m", "conversation": conversation, "client_msg_id": "m1", "body": {"text": "hi"}})).await;
    assert_eq!(error_code(&mut intruder, "m").await, "not_member");
    let path = format!("/v1/conversations/{conversation}/events");
    let (status, body) = http(&node, "GET", &path, Some(&mallory), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_member")));

    tracing::info!("--- the acknowledged message is still there");
    let (_, page) = http(
        &node,
        "GET",
        &format!("/v1/conversations/{conversation}/events?after=0"),
        Some(&alice),
        None,
    )
    .await;
    assert!(page["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["seq"].as_u64() == Some(acked)));
}

#[actix_rt::test]
async fn oversized_frames_close_with_1009() {
    let (node, alice, _, _) = setup("[limits]\nmax_frame_bytes = 20480\n").await;
    let mut ws = WsClient::connect(&node, &alice).await;
    ws.send_raw(ws::Message::Text("x".repeat(21_000).into())).await;
    assert_eq!(ws.closed().await, Closed::Code(1009));
}

#[actix_rt::test]
async fn frame_rate_limit_answers_rate_limited() {
    // 1 frame/s (burst 2): the 30 frames are refused mostly even if a busy machine spreads
    // their handling over several seconds (at 5/s, a stall of one second let 15 through).
    let (node, alice, _, _) = setup("[limits]\nframes_per_sec = 1\n").await;
    let mut ws = WsClient::connect(&node, &alice).await;
    for i in 0..30 {
        ws.send(json!({"type": "ping", "ref": format!("p{i}")})).await;
    }
    let mut limited = 0;
    for i in 0..30 {
        let reply = ws.reply_to(&format!("p{i}")).await;
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited");
            assert!(reply["retry_after_ms"].as_u64().is_some());
            limited += 1;
        }
    }
    assert!(
        limited >= 15,
        "a burst of 30 at 1/s (burst 2) is mostly refused, got {limited}"
    );
}

#[actix_rt::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    let (node, alice, _, _) = setup("").await;
    let mut stream = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {alice}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        response.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&response).starts_with("HTTP/1.1 101"),
        "upgrade accepted"
    );
    // A masked text frame whose payload is not UTF-8.
    let payload = [0xffu8, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).unwrap();
    // Read frames until the close frame; its first two payload bytes are the code.
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let close_code = loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "connection ended without a close frame");
        all.extend_from_slice(&buf[..n]);
        if let Some(code) = find_close_code(&all) {
            break code;
        }
    };
    assert_eq!(close_code, 1007);
}

/// Walk unmasked server frames and return the close code if a close frame is complete.
fn find_close_code(data: &[u8]) -> Option<u16> {
    let mut i = 0;
    while i + 2 <= data.len() {
        let opcode = data[i] & 0x0f;
        let mut len = (data[i + 1] & 0x7f) as usize;
        let mut header = 2;
        if len == 126 {
            if i + 4 > data.len() {
                return None;
            }
            len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
            header = 4;
        } else if len == 127 {
            return None;
        }
        if i + header + len > data.len() {
            return None;
        }
        if opcode == 0x8 && len >= 2 {
            return Some(u16::from_be_bytes([data[i + header], data[i + header + 1]]));
        }
        i += header + len;
    }
    None
}

#[actix_rt::test]
async fn rest_bad_input_gets_json_errors() {
    let (node, alice, _, _) = setup("[limits]\nmax_request_body_bytes = 24576\n").await;
    let client = awc::Client::new();
    let mut resp = client
        .post(node.url("/v1/conversations/groups"))
        .bearer_auth(&alice)
        .insert_header(("content-type", "application/json"))
        .send_body("{\"name\": ")
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), body["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );

    let huge = json!({"name": "x".repeat(30_000), "members": []});
    let (status, body) = http(&node, "POST", "/v1/conversations/groups", Some(&alice), Some(huge)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let (status, body) = http(&node, "GET", "/v1/conversations/abc/events", Some(&alice), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_field")));

    let (status, body) = http(&node, "GET", "/v1/conversations", Some("not-a-token"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));

    let (status, body) = http(&node, "GET", "/v1/nowhere", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    let (status, _) = http(&node, "GET", "/v1/conversations/1/events?limit=500", Some(&alice), None).await;
    assert_eq!(status, 400);
}
