//! Prometheus metrics at `GET /metrics` (text format 0.0.4), per instance.
//!
//! Counters and histograms are updated where the work happens: [`track_http`] (a middleware)
//! for requests, latencies and HTTP body bytes; the QUIC handlers for block bytes; the upload
//! paths for blocks; [`crate::jobs`] for jobs. Gauges that are cheaper to read than to keep
//! (queue depth) are read at scrape time.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Copy)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms to ~33 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 16))
    }
}

/// This instance's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, LatencyBuckets>,
    bytes_in: Family<TransportLabels, Counter>,
    bytes_out: Family<TransportLabels, Counter>,
    blocks: Family<KindLabels, Counter>,
    commits: Family<KindLabels, Counter>,
    jobs: Family<JobLabels, Counter>,
    jobs_submitted: Family<KindLabels, Counter>,
    queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    clients: Family<KindLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by method and route",
            latency.clone(),
        );
        let bytes_in = Family::<TransportLabels, Counter>::default();
        registry.register(
            "received_bytes",
            "Bytes received: HTTP request bodies; block payloads over QUIC",
            bytes_in.clone(),
        );
        let bytes_out = Family::<TransportLabels, Counter>::default();
        registry.register(
            "sent_bytes",
            "Bytes sent: HTTP response bodies; block payloads over QUIC",
            bytes_out.clone(),
        );
        let blocks = Family::<KindLabels, Counter>::default();
        registry.register(
            "blocks_received",
            "Blocks received from clients; kind=new were not in the store yet",
            blocks.clone(),
        );
        let commits = Family::<KindLabels, Counter>::default();
        registry.register(
            "commits",
            "Commits by outcome (accepted, conflict)",
            commits.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Background jobs run by this instance, by kind and result",
            jobs.clone(),
        );
        let jobs_submitted = Family::<KindLabels, Counter>::default();
        registry.register(
            "jobs_submitted",
            "Periodic jobs this instance claimed and submitted",
            jobs_submitted.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "job_queue_depth",
            "Jobs waiting in the queue (RabbitMQ: the shared queue)",
            queue_depth.clone(),
        );
        let clients = Family::default();
        registry.register(
            "connected_clients",
            "Clients connected to this instance (WebSocket, QUIC)",
            clients.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            blocks,
            commits,
            jobs,
            jobs_submitted,
            queue_depth,
            clients,
        }
    }
}

/// Keeps a connected-clients gauge up while alive.
#[derive(Debug)]
pub struct ClientGuard(Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Counts block payload bytes received over QUIC.
    pub fn quic_received(&self, bytes: u64) {
        self.bytes_in
            .get_or_create(&TransportLabels { transport: "quic" })
            .inc_by(bytes);
    }

    /// Counts block payload bytes sent over QUIC.
    pub fn quic_sent(&self, bytes: u64) {
        self.bytes_out
            .get_or_create(&TransportLabels { transport: "quic" })
            .inc_by(bytes);
    }

    /// Counts blocks received (any transport), `new` of them new to the store.
    pub fn blocks_received(&self, total: u64, new: u64) {
        self.blocks
            .get_or_create(&KindLabels { kind: "new" })
            .inc_by(new);
        self.blocks
            .get_or_create(&KindLabels { kind: "known" })
            .inc_by(total.saturating_sub(new));
    }

    /// Counts a commit's outcome.
    pub fn commit(&self, accepted: bool) {
        let kind = if accepted { "accepted" } else { "conflict" };
        self.commits.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a finished job.
    pub fn job_finished(&self, kind: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.jobs.get_or_create(&JobLabels { kind, result }).inc();
    }

    /// Counts a submitted periodic job.
    pub fn job_submitted(&self, kind: &'static str) {
        self.jobs_submitted
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a connected client of `kind` (`websocket`, `quic`) until the guard drops.
    pub fn client_connected(&self, kind: &'static str) -> ClientGuard {
        let gauge = self.clients.get_or_create_owned(&KindLabels { kind });
        gauge.inc();
        ClientGuard(gauge)
    }

    /// The metrics in the Prometheus text format.
    ///
    /// # Errors
    /// Formatting failed (never with a `String`).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8192);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`: this instance's metrics in the Prometheus text format.
pub async fn handler(State(state): State<AppState>) -> Response {
    if let Some(depth) = state.jobs.depth().await {
        state
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Middleware: counts each request by route and status, times it to the response head, and
/// counts body bytes in both directions as they stream.
pub async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let metrics = state.clone();
    let request = request.map(|body| {
        let counter = metrics
            .metrics
            .bytes_in
            .get_or_create_owned(&TransportLabels { transport: "http" });
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.inc_by(data.len() as u64);
            }
            frame
        }))
    });
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    let counter = state
        .metrics
        .bytes_out
        .get_or_create_owned(&TransportLabels { transport: "http" });
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.inc_by(data.len() as u64);
            }
            frame
        }))
    })
}
