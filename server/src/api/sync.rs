//! `/sync/*`, the WebSocket and `/health`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_protocol::api::{
    ChangeList, Event, Head, Health, HeartbeatRequest, HeartbeatResponse, SyncInfo,
};
use cairn_store::BlockStore;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use super::files::DEFAULT_FOLDER;
use super::{ApiJson, ApiPath, ApiQuery, AppState, AuthUser, authenticate, now_ms, rfc3339};
use crate::db::{self, FolderRow};
use crate::events::UserEvent;
use crate::limits::{
    CHANGES_PAGE_LEN_MAX, CLIENT_ID_LEN_MAX, WS_HEARTBEAT_INTERVAL, WS_MESSAGE_SIZE_MAX,
};

/// `?since=SEQ` of `GET /sync/changes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Return changes after this commit (0 for everything).
    pub since: Option<u64>,
}

/// Changes to the `default` folder since a commit.
#[utoipa::path(get, path = "/sync/changes", params(ChangesQuery), security(("bearer" = [])),
    responses((status = 200, body = ChangeList), (status = 401, body = cairn_protocol::api::ErrorBody)))]
pub async fn changes(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<ChangeList>, ApiError> {
    let folder = default_folder(&state, user.id).await?;
    let since = i64::try_from(query.since.unwrap_or(0)).unwrap_or(i64::MAX);
    let mut rows = db::changes(
        &state.db,
        folder.id,
        since,
        i64::from(CHANGES_PAGE_LEN_MAX) + 1,
    )
    .await?;
    let more = rows.len() > CHANGES_PAGE_LEN_MAX as usize;
    rows.truncate(CHANGES_PAGE_LEN_MAX as usize);
    let changes = rows
        .into_iter()
        .map(|r| cairn_protocol::api::Change {
            seq: u64::try_from(r.seq).unwrap_or(0),
            id: r.id,
            path: r.path,
            version: u64::try_from(r.version).unwrap_or(0),
            deleted: r.deleted != 0,
            size: u64::try_from(r.size).unwrap_or(0),
            hash: r.hash,
        })
        .collect();
    Ok(Json(ChangeList {
        changes,
        head: head_of(&folder),
        more,
    }))
}

/// Report a client's liveness and status; answers with the folder head.
#[utoipa::path(post, path = "/sync/heartbeat", request_body = HeartbeatRequest, security(("bearer" = [])),
    responses((status = 200, body = HeartbeatResponse), (status = 400, body = cairn_protocol::api::ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_client_id(&request.client_id)?;
    let status = request.status.unwrap_or_else(|| "idle".to_owned());
    if status.chars().count() > 64 {
        return Err(ApiError::BadRequest(
            "invalid_status",
            "a status is at most 64 characters".to_owned(),
        ));
    }
    let now = now_ms();
    db::heartbeat(&state.db, user.id, &request.client_id, &status, now).await?;
    let folder = default_folder(&state, user.id).await?;
    let (used_bytes, quota_bytes) = db::usage(&state.db, user.id).await?;
    Ok(Json(HeartbeatResponse {
        head: head_of(&folder),
        server_time: rfc3339(now),
        used_bytes,
        quota_bytes,
    }))
}

/// `?token=` for WebSocket clients that cannot set headers.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// Real-time events for the user: head changes, file changes, conflicts, heartbeats.
pub async fn websocket(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_client_id(&client_id)?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let token = bearer.or(query.token).ok_or_else(|| {
        ApiError::Unauthorized(
            "missing token: send 'Authorization: Bearer' or '?token='".to_owned(),
        )
    })?;
    let user = authenticate(&state, &token)?;
    // Subscribed before the client hears the upgrade: whatever it reads from the server after
    // it connected, no event committed since is missed.
    let feed = Feed {
        events: state.bus.subscribe(),
        // Only gaps from now on close this socket.
        gaps: state.bus.gaps().map(|mut gaps| {
            gaps.mark_unchanged();
            gaps
        }),
    };
    Ok(upgrade
        .max_message_size(WS_MESSAGE_SIZE_MAX)
        .on_upgrade(move |socket| events_task(state, user, client_id, feed, socket)))
}

/// One socket's subscription to the bus.
struct Feed {
    events: broadcast::Receiver<UserEvent>,
    gaps: Option<watch::Receiver<u64>>,
}

async fn events_task(
    state: AppState,
    user: AuthUser,
    client_id: String,
    feed: Feed,
    socket: WebSocket,
) {
    let _connected = state.metrics.client_connected("websocket");
    if let Err(err) = events(feed, &user, socket).await {
        tracing::debug!(user = user.id, client = %client_id, error = %err, "websocket closed");
    }
}

/// Forwards the user's events until the client leaves, falls behind, events were lost on their
/// way to this instance, or the token expires. Each of these ends in a close frame saying why;
/// the 4xxx codes but 4001 mean "reconnect and resync with /sync/changes".
async fn events(feed: Feed, user: &AuthUser, mut socket: WebSocket) -> Result<(), axum::Error> {
    let Feed {
        mut events,
        mut gaps,
    } = feed;
    let mut heartbeat = tokio::time::interval(WS_HEARTBEAT_INTERVAL);
    let expires_in = Duration::from_secs(user.expires_at)
        .saturating_sub(Duration::from_millis(u64::try_from(now_ms()).unwrap_or(0)));
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) if event.user_id == user.id => send(&mut socket, &event.event).await?,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Bounded queue: a client this slow is dropped and resyncs from /sync/changes.
                    return close(&mut socket, 4008, "too slow; resync with /sync/changes").await;
                }
                Err(RecvError::Closed) => return close(&mut socket, 1001, "server shutting down").await,
            },
            gap = async { gaps.as_mut()?.changed().await.ok() }, if gaps.is_some() => {
                if gap.is_none() {
                    gaps = None;
                    continue;
                }
                return close(&mut socket, 4009, "events were lost on the way to this server; resync with /sync/changes").await;
            }
            _ = heartbeat.tick() => send(&mut socket, &Event::Heartbeat { server_time: rfc3339(now_ms()) }).await?,
            () = &mut expiry => return close(&mut socket, 4001, "access token expired; reconnect with a new one").await,
            incoming = socket.recv() => match incoming {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
            },
        }
    }
}

async fn send(socket: &mut WebSocket, event: &Event) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).map_err(axum::Error::new)?;
    socket.send(Message::Text(Utf8Bytes::from(text))).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await
}

/// The status of every dependency: database, block store, and Redis and RabbitMQ when
/// configured; 503 when one fails.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Response {
    ready(State(state)).await
}

/// Readiness: 200 when this instance can serve (every dependency answers), else 503 with the
/// report; a load balancer sends traffic only to ready instances.
#[utoipa::path(get, path = "/ready", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (healthy, body) = report(&state).await;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Liveness: the process serves requests. No dependency is consulted, so an orchestrator
/// restarts the instance only when it is stuck, not when PostgreSQL is down.
#[utoipa::path(get, path = "/live", responses((status = 200, description = "the process serves requests")))]
pub async fn live() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Checks every dependency: (all healthy, the report).
async fn report(state: &AppState) -> (bool, Health) {
    let database = match state.db.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(err) => format!("error: {err}"),
    };
    let store = Arc::clone(&state.store);
    let empty = state.empty_root.into();
    let store = match tokio::task::spawn_blocking(move || store.has(&empty)).await {
        Ok(Ok(true)) => "ok".to_owned(),
        Ok(Ok(false)) => "error: the empty directory node is missing".to_owned(),
        Ok(Err(err)) => format!("error: {err}"),
        Err(err) => format!("error: {err}"),
    };
    let redis = state.bus.health();
    let rabbitmq = state.jobs.health();
    let healthy = database == "ok"
        && store == "ok"
        && redis.as_deref().is_none_or(|r| r == "ok")
        && rabbitmq.as_deref().is_none_or(|r| r == "ok");
    let body = Health {
        status: if healthy { "ok" } else { "degraded" }.to_owned(),
        database,
        store,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        quic: if state.quic.is_some() {
            "ok"
        } else {
            "disabled"
        }
        .to_owned(),
        redis,
        rabbitmq,
    };
    (healthy, body)
}

async fn default_folder(state: &AppState, user_id: i64) -> Result<FolderRow, ApiError> {
    db::folder(&state.db, user_id, DEFAULT_FOLDER)
        .await?
        .ok_or(ApiError::NotFound("folder"))
}

fn head_of(folder: &FolderRow) -> Head {
    Head {
        seq: u64::try_from(folder.head_seq).unwrap_or(0),
        root: folder.head_root.clone(),
    }
}

fn check_client_id(client_id: &str) -> Result<(), ApiError> {
    let ok = (1..=CLIENT_ID_LEN_MAX).contains(&client_id.len())
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::BadRequest(
            "invalid_client_id",
            "a client id has 1 to 64 characters: letters, digits, '.', '_' or '-'".to_owned(),
        ));
    }
    Ok(())
}

/// Where the QUIC sync endpoint listens and which certificate to pin (no authentication: a
/// client needs it before it logs in, and it is what a TLS handshake would show anyway).
#[utoipa::path(get, path = "/sync/info", responses((status = 200, body = SyncInfo), (status = 404, body = cairn_protocol::api::ErrorBody)))]
pub async fn info(State(state): State<AppState>) -> Result<Json<SyncInfo>, ApiError> {
    state.quic.clone().map(Json).ok_or(ApiError::NotFound(
        "QUIC sync endpoint (it is turned off on this server)",
    ))
}
