//! The WebSocket: authenticated at the upgrade, events within moments of a commit.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Engine, TestServer};

crate::both_databases!(events_arrive_after_a_commit, upgrade_needs_a_token);

async fn events_arrive_after_a_commit(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (ann, _) = server.user("ann").await;
    let (bob, _) = server.user("bob").await;
    let url = format!(
        "{}/ws/sync/laptop-1",
        server.base.replace("http://", "ws://")
    );
    let mut request = url.clone().into_client_request().expect("request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {ann}").parse().expect("header"),
    );
    let (mut ann_socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect with a header");
    let (mut bob_socket, _) = tokio_tungstenite::connect_async(format!("{url}?token={bob}"))
        .await
        .expect("connect with ?token=");
    // Skip the heartbeat sent at connect.
    next_event(&mut ann_socket, "heartbeat").await;
    next_event(&mut bob_socket, "heartbeat").await;

    let started = Instant::now();
    assert_eq!(
        server
            .upload(&ann, "notes.txt", b"hello".to_vec())
            .await
            .status(),
        StatusCode::CREATED
    );
    let head = next_event(&mut ann_socket, "head_changed").await;
    let latency = started.elapsed();
    assert_eq!(
        (head["folder"].as_str(), head["seq"].as_u64()),
        (Some("default"), Some(1))
    );
    let file = next_event(&mut ann_socket, "file_changed").await;
    assert_eq!(file["change"]["path"], "notes.txt");
    assert!(latency < Duration::from_secs(2), "event after {latency:?}");
    // Bob hears nothing about ann's folder.
    let quiet = tokio::time::timeout(Duration::from_millis(300), bob_socket.next()).await;
    assert!(quiet.is_err(), "bob received {quiet:?}");
}

async fn upgrade_needs_a_token(engine: Engine) {
    let server = TestServer::start(engine).await;
    let url = format!(
        "{}/ws/sync/laptop-1",
        server.base.replace("http://", "ws://")
    );
    let refused = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect_err("no token");
    assert!(refused.to_string().contains("401"), "{refused}");
    let forged = tokio_tungstenite::connect_async(format!("{url}?token=abc.def.ghi"))
        .await
        .expect_err("bad token");
    assert!(forged.to_string().contains("401"), "{forged}");
}

async fn next_event<S>(socket: &mut S, kind: &str) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout(deadline, socket.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("message");
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).expect("event JSON");
            if event["type"] == kind {
                return event;
            }
        }
    }
}
