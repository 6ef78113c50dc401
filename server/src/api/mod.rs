//! The HTTP surface: router, shared state, extractors. Handlers live in the submodules; only
//! [`error`] knows status codes.

pub mod auth;
pub mod error;
pub mod files;
pub mod folders;
pub mod openapi;
pub mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use cairn_store::NodeId;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::TokenKeys;
use crate::config::ServerConfig;
use crate::db::Db;
use crate::events::EventBus;
use crate::limits::JSON_BODY_SIZE_MAX;
use crate::ratelimit::RateLimiter;
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// Metadata.
    pub db: Db,
    /// Blocks and tree nodes.
    pub store: Arc<crate::blocks::Blocks>,
    /// Access token keys.
    pub keys: TokenKeys,
    /// Login and refresh limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// Real-time events.
    pub bus: Arc<dyn EventBus>,
    /// The configuration.
    pub config: ServerConfig,
    /// Id of the empty directory (every new folder's root).
    pub empty_root: NodeId,
    /// Bounds CPU-heavy work (password hashing) to the number of cores.
    pub cpu: Semaphore,
    /// One lock per folder being committed to: commits to a folder queue here instead of racing
    /// on the head's compare-and-swap (measured: 200 clients racing lost 40% of uploads to
    /// exhausted retries). The CAS stays, for other server instances.
    pub folder_locks: crate::commit::FolderLocks,
    /// The QUIC endpoint's published facts, when it runs.
    pub quic: Option<cairn_protocol::api::SyncInfo>,
    /// Background jobs: where they are submitted and who runs them.
    pub jobs: crate::jobs::Jobs,
    /// This instance's Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The router with every route of the API.
pub fn router(state: AppState) -> Router {
    let upload_limit = usize::try_from(state.config.upload_size_max.saturating_add(64 * 1024))
        .unwrap_or(usize::MAX);
    Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/files/", get(files::list))
        .route("/files/upload", post(files::upload).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/files/{file_id}/download", get(files::download))
        .route("/files/{file_id}", delete(files::remove))
        .route("/files/{file_id}/versions", get(files::versions))
        .route("/folders", get(folders::list).post(folders::create))
        .route("/folders/{name}/commits", get(folders::commits))
        .route("/sync/changes", get(sync::changes))
        .route("/sync/heartbeat", post(sync::heartbeat))
        .route("/sync/info", get(sync::info))
        .route("/ws/sync/{client_id}", get(sync::websocket))
        .route("/health", get(sync::health))
        .route("/ready", get(sync::ready))
        .route("/live", get(sync::live))
        .route("/metrics", get(crate::metrics::handler))
        .route("/openapi.json", get(openapi::document))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_http,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_SIZE_MAX))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Unix time in milliseconds (the shell's clock; core functions take `now` as an argument).
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 text of a Unix-ms time.
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

/// JSON body whose rejections become [`ApiError`]s (and so `{error: {...}}` bodies).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

/// A path parameter whose rejections become [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// A query string whose rejections become [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// The caller's IP address, for rate limits and the audit log.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(ClientIp(ip))
    }
}

/// The authenticated caller, from `Authorization: Bearer <access token>`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Token expiry, Unix seconds.
    pub expires_at: u64,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthorized("missing bearer token; log in first".to_owned())
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".to_owned())
        })?;
        authenticate(state, token)
    }
}

/// Checks an access token.
///
/// # Errors
/// [`ApiError::Unauthorized`] for anything but a valid, unexpired access token.
pub fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let claims = state.keys.verify(token).map_err(|why| {
        ApiError::Unauthorized(format!("invalid access token ({why}); log in again"))
    })?;
    let id = claims
        .sub
        .parse()
        .map_err(|_| ApiError::Unauthorized("invalid access token subject".to_owned()))?;
    Ok(AuthUser {
        id,
        name: claims.name,
        expires_at: claims.exp,
    })
}
