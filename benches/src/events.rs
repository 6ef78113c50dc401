//! `cairn-bench event-latency`: how long a change committed through one server instance takes
//! to reach a WebSocket client of another instance (through Redis), next to a client of the
//! instance that committed it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

/// Arguments of `cairn-bench event-latency`.
#[derive(Debug, clap::Args)]
pub(crate) struct LatencyArgs {
    /// The instance that receives the uploads.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    publish: String,
    /// The other instance, whose WebSocket client waits for the events.
    #[arg(long)]
    subscribe: String,
    /// Access token (Bearer).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: String,
    /// Uploads (one at a time).
    #[arg(long, default_value_t = 200)]
    samples: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    samples: u32,
    /// Upload request sent → its event on a client of the publishing instance.
    local_p50_ms: f64,
    local_p99_ms: f64,
    /// Upload request sent → its event on a client of the other instance.
    remote_p50_ms: f64,
    remote_p99_ms: f64,
    /// Per upload: remote event time minus local event time (the cost of the hop through
    /// Redis).
    hop_p50_ms: f64,
    hop_p99_ms: f64,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) fn latency(args: &LatencyArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let report = runtime.block_on(run(args))?;
    crate::measure::emit(&report, args.json, || {
        vec![
            format!("{} uploads, one at a time", report.samples),
            format!(
                "event on the same instance: p50 {:.2} ms, p99 {:.2} ms",
                report.local_p50_ms, report.local_p99_ms
            ),
            format!(
                "event on the other instance: p50 {:.2} ms, p99 {:.2} ms",
                report.remote_p50_ms, report.remote_p99_ms
            ),
            format!(
                "cross-instance hop: p50 {:.2} ms, p99 {:.2} ms",
                report.hop_p50_ms, report.hop_p99_ms
            ),
        ]
    })
}

async fn connect(base: &str, token: &str, client_id: &str) -> Result<Socket> {
    let url = format!(
        "{}/ws/sync/{client_id}?token={token}",
        base.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("WebSocket to {base}"))?;
    Ok(socket)
}

/// Waits for the `file_changed` event of `path`; returns when it arrived.
async fn arrival(socket: &mut Socket, path: &str) -> Result<Instant> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .with_context(|| format!("no event for {path} within 10 s"))?
            .context("the WebSocket closed")??;
        let Message::Text(text) = message else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&text)?;
        if event["type"] == "file_changed" && event["change"]["path"] == path {
            return Ok(Instant::now());
        }
    }
}

async fn run(args: &LatencyArgs) -> Result<LatencyReport> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let client = reqwest::Client::new();
    let publish = args.publish.trim_end_matches('/');
    let mut local = connect(publish, &args.token, "bench-local").await?;
    let mut remote = connect(&args.subscribe, &args.token, "bench-remote").await?;
    let run_id = std::process::id();
    let (mut to_local, mut to_remote, mut hop) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.samples {
        let path = format!("latency/{run_id}/{i}.txt");
        let form = reqwest::multipart::Form::new()
            .text("path", path.clone())
            .part(
                "file",
                reqwest::multipart::Part::bytes(format!("{path}\n").into_bytes()),
            );
        let sent = Instant::now();
        let upload = client
            .post(format!("{publish}/files/upload"))
            .bearer_auth(&args.token)
            .multipart(form)
            .send();
        let (response, at_local, at_remote) = tokio::join!(
            upload,
            arrival(&mut local, &path),
            arrival(&mut remote, &path)
        );
        let status = response?.status();
        if !status.is_success() {
            bail!("upload {i} answered {status}");
        }
        let (at_local, at_remote) = (at_local?, at_remote?);
        to_local.push(at_local - sent);
        to_remote.push(at_remote - sent);
        hop.push(at_remote.saturating_duration_since(at_local));
    }
    let pct = crate::http::percentile_ms;
    Ok(LatencyReport {
        samples: args.samples,
        local_p50_ms: pct(&mut to_local, 50),
        local_p99_ms: pct(&mut to_local, 99),
        remote_p50_ms: pct(&mut to_remote, 50),
        remote_p99_ms: pct(&mut to_remote, 99),
        hop_p50_ms: pct(&mut hop, 50),
        hop_p99_ms: pct(&mut hop, 99),
    })
}
