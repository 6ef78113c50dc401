//! Operations endpoints: liveness, readiness and Prometheus metrics.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Engine, TestServer, bytes};

crate::both_databases!(live_ready_and_metrics);

/// The value of the sample `name` (with its labels, as printed) in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn live_ready_and_metrics(engine: Engine) {
    let server = TestServer::start(engine).await;
    let live = server
        .client
        .get(server.url("/live"))
        .send()
        .await
        .expect("request");
    assert_eq!(live.status(), StatusCode::OK);
    let ready = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), StatusCode::OK);
    let report: Value = ready.json().await.expect("json");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["database"], "ok");
    assert_eq!(report["store"], "ok");
    assert!(
        report.get("rabbitmq").is_none(),
        "jobs run in-process: {report}"
    );

    let (token, _) = server.user("ann").await;
    let data = bytes(700_000, 5);
    let uploaded = server.upload(&token, "a.bin", data.clone()).await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let file: Value = uploaded.json().await.expect("json");
    let download = server
        .get(&token, &format!("/files/{}/download", file["id"]))
        .await;
    assert_eq!(download.bytes().await.expect("body").len(), data.len());
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws/sync/metrics-test?token={token}",
        server.base.replacen("http", "ws", 1)
    ))
    .await
    .expect("websocket");

    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4"))
    );
    let page = response.text().await.expect("text");
    let count = |name: &str| sample(&page, name).unwrap_or_else(|| panic!("{name} in {page}"));
    assert_eq!(
        count(r#"cairn_http_requests_total{method="POST",route="/files/upload",status="201"}"#),
        1.0
    );
    assert_eq!(
        count(r#"cairn_http_requests_total{method="GET",route="/ready",status="200"}"#),
        1.0
    );
    assert!(count(r#"cairn_received_bytes_total{transport="http"}"#) >= 700_000.0);
    assert!(count(r#"cairn_sent_bytes_total{transport="http"}"#) >= 700_000.0);
    assert!(count(r#"cairn_blocks_received_total{kind="new"}"#) >= 1.0);
    assert!(count(r#"cairn_commits_total{kind="accepted"}"#) >= 1.0);
    assert_eq!(count(r#"cairn_connected_clients{kind="websocket"}"#), 1.0);
    assert_eq!(count("cairn_job_queue_depth"), 0.0);
    assert!(
        page.contains(
            r#"cairn_http_request_duration_seconds_bucket{method="POST",route="/files/upload",le="#
        ),
        "{page}"
    );

    // The gauge follows the socket.
    socket.close(None).await.expect("close");
    drop(socket);
    let mut clients = 1.0;
    for _ in 0..100 {
        let page = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text");
        clients = sample(&page, r#"cairn_connected_clients{kind="websocket"}"#).unwrap_or(-1.0);
        if clients == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(clients, 0.0);
}
