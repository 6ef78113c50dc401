//! `/files/*`: list, upload, download, delete and versions of the user's `default` folder.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes};
use cairn_protocol::api::{FileInfo, FileList, VersionInfo, VersionList};
use cairn_protocol::limits::PATH_BYTES_MAX;
use cairn_protocol::path::RelPath;
use cairn_store::ingest::{Ingested, ingest_reader_by};
use cairn_store::node::{BlockRef, DirEntry, EntryKind, FileNode, Name, Node};
use cairn_store::{BlockStore, ChunkConfig, NodeId, NodeStore};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::{ApiPath, ApiQuery, AppState, AuthUser, ClientIp, now_ms, rfc3339};
use crate::api::auth::audit_target;
use crate::commit::{commit_path, pending_refusal};
use crate::db::{self, FileRow};
use crate::limits::{
    DOWNLOAD_READ_AHEAD, LIST_PAGE_LEN_DEFAULT, LIST_PAGE_LEN_MAX, UPLOAD_CHANNEL_LEN_MAX,
};

/// The folder the REST API shows.
pub const DEFAULT_FOLDER: &str = "default";

/// `?limit=&cursor=` of `GET /files/`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Files per page (default 1,000, at most 10,000).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this path and the files under it (as a directory).
    pub prefix: Option<String>,
    /// Exactly this path, listed even when its latest version is a deletion (so its versions
    /// can be found and restored).
    pub path: Option<String>,
}

/// List the user's files in path order, a page at a time.
#[utoipa::path(get, path = "/files/", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = FileList), (status = 401, body = cairn_protocol::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<FileList>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(LIST_PAGE_LEN_DEFAULT)
        .clamp(1, LIST_PAGE_LEN_MAX);
    let folder = db::folder(&state.db, user.id, DEFAULT_FOLDER)
        .await?
        .ok_or(ApiError::NotFound("folder"))?;
    let after = query.cursor.unwrap_or_default();
    let filter = match (query.path, query.prefix) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "invalid_query",
                "pass either 'path' or 'prefix', not both".to_owned(),
            ));
        }
        (Some(path), None) => db::ListFilter::Exact(path),
        (None, Some(prefix)) => db::ListFilter::Under(prefix.trim_end_matches('/').to_owned()),
        (None, None) => db::ListFilter::All,
    };
    let mut rows =
        db::list_files(&state.db, folder.id, &after, &filter, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.path.clone())
    } else {
        None
    };
    Ok(Json(FileList {
        files: rows.iter().map(file_info).collect(),
        next_cursor,
    }))
}

/// Upload a file (multipart fields `path` and `file`); it is chunked, deduplicated and committed.
#[utoipa::path(post, path = "/files/upload", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "fields `path` (text) and `file` (bytes)"),
    responses((status = 201, body = FileInfo), (status = 400, body = cairn_protocol::api::ErrorBody),
              (status = 409, body = cairn_protocol::api::ErrorBody), (status = 413, body = cairn_protocol::api::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    mut multipart: Multipart,
) -> Result<impl IntoResponse, ApiError> {
    let mut path: Option<RelPath> = None;
    let mut ingested: Option<(Ingested, Uncharged)> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("path") => {
                let text = field.text().await.map_err(multipart_error)?;
                if text.len() > PATH_BYTES_MAX {
                    return Err(ApiError::BadRequest(
                        "invalid_path",
                        "a path must be at most 4096 bytes".to_owned(),
                    ));
                }
                path = Some(
                    RelPath::parse(&text)
                        .map_err(|e| ApiError::BadRequest("invalid_path", e.to_string()))?,
                );
            }
            Some("file") if ingested.is_some() => {
                return Err(ApiError::BadRequest(
                    "invalid_upload",
                    "send one 'file' field per upload".to_owned(),
                ));
            }
            Some("file") => {
                let budget = db::upload_budget(
                    &state.db,
                    user.id,
                    DEFAULT_FOLDER,
                    path.as_ref().map(RelPath::as_str),
                )
                .await?
                .ok_or(ApiError::NotFound("folder"))?;
                ingested =
                    Some(receive_file(&state, user.id, field, budget, path.is_some()).await?);
            }
            other => {
                let name = other
                    .unwrap_or("(unnamed)")
                    .chars()
                    .take(64)
                    .collect::<String>();
                return Err(ApiError::BadRequest(
                    "invalid_upload",
                    format!("unknown field '{name}'; send 'path' and 'file'"),
                ));
            }
        }
    }
    let path = path.ok_or_else(|| {
        ApiError::BadRequest("invalid_upload", "the 'path' field is missing".to_owned())
    })?;
    let (ingested, uncharged) = ingested.ok_or_else(|| {
        ApiError::BadRequest("invalid_upload", "the 'file' field is missing".to_owned())
    })?;
    let now = now_ms();
    let block_count = ingested.blocks.len() as u64;
    let node = FileNode::new(0o644, now.saturating_mul(1_000_000), ingested.blocks)
        .map_err(ApiError::internal)?;
    let size = node.size();
    let store = Arc::clone(&state.store);
    let (child, _) = tokio::task::spawn_blocking(move || store.put_node(&Node::File(node)))
        .await?
        .map_err(ApiError::internal)?;
    let entry = DirEntry {
        name: Name::new(path.file_name().as_bytes().to_vec()).map_err(ApiError::internal)?,
        kind: EntryKind::File,
        size,
        mtime_ns: now.saturating_mul(1_000_000),
        mode: 0o644,
        child,
    };
    state
        .metrics
        .blocks_received(block_count, ingested.new_blocks);
    let committed =
        commit_path(&state, user.id, DEFAULT_FOLDER, &path, Some(entry), "rest").await?;
    uncharged.committed();
    tracing::info!(user = user.id, path = %path, size, new_blocks = ingested.new_blocks, seq = committed.seq, "uploaded");
    Ok((StatusCode::CREATED, Json(file_info(&committed.file))))
}

/// How many bytes an upload may have before its commit is certain to exceed the quota: the
/// free space plus what the file it replaces holds. Without the path (sent after the file), the
/// whole quota: the commit still decides.
fn quota_room(budget: &db::UploadBudget, has_path: bool) -> u64 {
    let room = if has_path {
        budget
            .quota
            .saturating_sub(budget.used)
            .saturating_add(budget.replaced)
    } else {
        budget.quota
    };
    u64::try_from(room).unwrap_or(0)
}

/// Streams one multipart field into the chunker on a blocking thread, through a bounded
/// channel: memory stays flat, and a slow disk slows the upload instead of buffering it. An
/// upload that outgrows `room` (see [`quota_room`]) is refused as soon as it does, not after
/// it was all stored.
///
/// Stored blocks are charged as a QUIC upload's are: recorded as uploaded to the folder, batch
/// by batch (by a task beside the chunker, so it never waits for the database), and counted
/// against the owner's quota for uploads not yet committed, which the bytes received may not
/// outgrow. The commit takes the charge back; an upload broken off or refused before its commit
/// stays charged until the garbage collector expires it with its blocks, so failed uploads
/// cannot fill the disk either. The last batch (a small file's only one) is recorded only if
/// the upload fails (see [`Uncharged`]): its commit records it anyway, and a write per small
/// upload cost a third of the server's small-upload rate on SQLite.
async fn receive_file(
    state: &AppState,
    owner_id: i64,
    mut field: Field<'_>,
    budget: db::UploadBudget,
    has_path: bool,
) -> Result<(Ingested, Uncharged), ApiError> {
    let room = quota_room(&budget, has_path);
    let (folder_id, quota) = (budget.folder_id, budget.quota);
    // Other uploads' pending bytes, as last read.
    let mut others_pending = budget.pending;
    // What this upload's batches were charged so far.
    let charged = Arc::new(AtomicI64::new(0));
    let (charge_tx, mut charge_rx) = mpsc::unbounded_channel::<Vec<(String, i64)>>();
    let charger = {
        let (state, charged) = (state.clone(), Arc::clone(&charged));
        tokio::spawn(async move {
            while let Some(objects) = charge_rx.recv().await {
                let added =
                    db::add_uploaded(&state.db, owner_id, folder_id, &objects, &[], now_ms())
                        .await?;
                charged.fetch_add(added, Ordering::Relaxed);
            }
            Ok::<_, db::DbError>(())
        })
    };
    let (tx, rx) = mpsc::channel::<Option<Bytes>>(UPLOAD_CHANNEL_LEN_MAX);
    let task_state = state.clone();
    let task = tokio::task::spawn_blocking(move || {
        let state = task_state;
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        // The batch stored last, not charged yet.
        let mut held: Vec<(String, i64)> = Vec::new();
        let ingested = ingest_reader_by(
            reader,
            std::path::Path::new("upload"),
            &ChunkConfig::DEFAULT,
            |blocks| {
                let puts = state.store.put_many(blocks).map_err(ApiError::internal)?;
                let stored = puts
                    .iter()
                    .map(|p| (p.id.to_string(), i64::try_from(p.size).unwrap_or(i64::MAX)))
                    .collect();
                let previous = std::mem::replace(&mut held, stored);
                if !previous.is_empty() && charge_tx.send(previous).is_err() {
                    return Err(ApiError::internal("the upload's charging task ended"));
                }
                Ok::<_, ApiError>(puts)
            },
        );
        let uncharged = Uncharged {
            state,
            owner_id,
            folder_id,
            objects: held,
        };
        (ingested, uncharged)
    });
    let max = state.config.upload_size_max;
    let mut total: u64 = 0;
    let mut tx = Some(tx);
    let mut refused: Option<ApiError> = None;
    let received = loop {
        match field.chunk().await {
            Ok(Some(bytes)) => {
                total += bytes.len() as u64;
                if refused.is_some() {
                    // The rest of a refused upload is read and dropped, not stored: a server
                    // that answers before it has read the request makes many clients see a
                    // reset connection instead of the answer.
                    continue;
                }
                let received = i64::try_from(total).unwrap_or(i64::MAX);
                if total > max {
                    refused = Some(ApiError::TooLarge(
                        "upload_too_large",
                        format!("uploads are limited to {max} bytes"),
                    ));
                } else if total > room {
                    refused = Some(ApiError::TooLarge(
                        "quota_exceeded",
                        "this change would exceed your storage quota; delete files or ask for more space"
                            .to_owned(),
                    ));
                } else if others_pending.saturating_add(received) > quota {
                    // Commits and the collector may have released some since the last read;
                    // this upload's own charges are in the figure already. Read again only
                    // when the last figure no longer leaves room, not for every chunk.
                    let (pending, _) = db::pending_uploads(&state.db, owner_id).await?;
                    others_pending = pending - charged.load(Ordering::Relaxed);
                    if others_pending.saturating_add(received) > quota {
                        refused = Some(ApiError::TooLarge(
                            "quota_exceeded",
                            pending_refusal(others_pending, received, quota),
                        ));
                    }
                }
                if refused.is_some() {
                    // The chunker stops here.
                    tx = None;
                    continue;
                }
                if let Some(sender) = &tx
                    && sender.send(Some(bytes)).await.is_err()
                {
                    // The chunker stopped early; its error is reported below, once the rest is
                    // read and dropped (see above).
                    tx = None;
                }
            }
            Ok(None) => {
                if let Some(sender) = &tx {
                    // The end: without it the chunker sees a broken-off upload and stores no
                    // partial batch.
                    let _ = sender.send(None).await;
                }
                break refused.map_or(Ok(()), Err);
            }
            Err(err) => break Err(refused.unwrap_or_else(|| multipart_error(err))),
        }
    };
    drop(tx);
    let (ingested, uncharged) = task.await?;
    // Every batch before the last is charged before the answer.
    charger.await??;
    received?;
    Ok((ingested?, uncharged))
}

/// Blocks an upload stored and has not charged to its owner yet: if this is dropped before
/// [`Uncharged::committed`] (the upload failed, or its request was dropped), they are recorded
/// as uploaded to the folder and charged, as every other batch was.
struct Uncharged {
    state: AppState,
    owner_id: i64,
    folder_id: i64,
    objects: Vec<(String, i64)>,
}

impl Uncharged {
    /// The commit recorded the blocks as the folder's: nothing to charge.
    fn committed(mut self) {
        self.objects.clear();
    }
}

impl Drop for Uncharged {
    fn drop(&mut self) {
        if self.objects.is_empty() {
            return;
        }
        let objects = std::mem::take(&mut self.objects);
        let (state, owner_id, folder_id) = (self.state.clone(), self.owner_id, self.folder_id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                owner_id,
                blocks = objects.len(),
                "a failed upload's blocks were not charged: no runtime"
            );
            return;
        };
        runtime.spawn(async move {
            if let Err(err) =
                db::add_uploaded(&state.db, owner_id, folder_id, &objects, &[], now_ms()).await
            {
                tracing::warn!(%err, owner_id, "a failed upload's blocks were not charged");
            }
        });
    }
}

/// A blocking `Read` over chunks arriving on a channel, ended by `None`. A channel closed
/// without it (the upload was refused or broken off) is an error, so the chunker stops without
/// storing the blocks it holds.
struct ChannelReader {
    rx: mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Some(bytes)) => self.current = bytes,
                Some(None) => self.ended = true,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload ended before its last byte",
                    ));
                }
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge("upload_too_large", err.body_text());
    }
    ApiError::BadRequest("invalid_multipart", err.body_text())
}

/// `?version=N` of a download.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// A version number from `/files/{id}/versions`; the current version when absent.
    pub version: Option<u64>,
}

/// Stream a file's content (current or `?version=N`); honours a single `Range`.
#[utoipa::path(get, path = "/files/{file_id}/download", params(("file_id" = i64, Path), DownloadQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "application/octet-stream"), (status = 206), (status = 404, body = cairn_protocol::api::ErrorBody),
              (status = 416, body = cairn_protocol::api::ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(file_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = db::file_for_owner(&state.db, user.id, file_id)
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    let hash = match query.version {
        Some(version) => {
            let row = db::version(
                &state.db,
                file.id,
                i64::try_from(version).unwrap_or(i64::MAX),
            )
            .await?;
            row.filter(|v| v.deleted == 0)
                .ok_or(ApiError::NotFound("version"))?
                .hash
        }
        None if file.deleted != 0 => return Err(ApiError::NotFound("file")),
        None => file.hash.clone(),
    };
    let node_id: NodeId = hash.parse().map_err(ApiError::internal)?;
    let store = Arc::clone(&state.store);
    let node = tokio::task::spawn_blocking(move || store.get_node(&node_id))
        .await?
        .map_err(ApiError::internal)?;
    let Node::File(node) = node else {
        return Err(ApiError::internal(format!(
            "node {node_id} of file {file_id} is not a file"
        )));
    };
    let size = node.size();
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match range_header {
        None => None,
        Some(text) => Some(parse_range(text, size).ok_or(ApiError::RangeNotSatisfiable(size))?),
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    let pieces = pieces(node.blocks(), start, length);
    let store = Arc::clone(&state.store);
    let stream = futures_util::stream::iter(pieces)
        .map(move |(id, skip, take)| {
            let store = Arc::clone(&store);
            async move {
                let data = tokio::task::spawn_blocking(move || store.get(&id))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(|err| {
                        tracing::error!(error = %err, "download failed mid-stream");
                        std::io::Error::other(err)
                    })?;
                if data.len() < skip + take {
                    // The file node claims more bytes than the block holds (commits check new
                    // blocks' lengths; this guards what was stored before they did).
                    tracing::error!(block = %id, "a file node claims more than its block holds");
                    return Err(std::io::Error::other(format!(
                        "block {id} is shorter than its file node says"
                    )));
                }
                Ok::<_, std::io::Error>(Bytes::from(data).slice(skip..skip + take))
            }
        })
        .buffered(DOWNLOAD_READ_AHEAD);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        headers.insert(header::ETAG, etag);
    }
    let file_name = file
        .path
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .replace(['"', '\\'], "_");
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// Parses a single `bytes=` range into inclusive `(start, end)` within `size`; `None` when it
/// cannot be satisfied (multiple ranges are not supported and count as unsatisfiable).
pub fn parse_range(text: &str, size: u64) -> Option<(u64, u64)> {
    let spec = text.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let len: u64 = suffix.parse().ok()?;
            if len == 0 {
                return None;
            }
            (size.saturating_sub(len), size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

/// Which part of which block covers bytes `start .. start + length`.
fn pieces(
    blocks: &[BlockRef],
    start: u64,
    length: u64,
) -> Vec<(cairn_store::BlockId, usize, usize)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let end = start + length;
    for block in blocks {
        let block_end = offset + u64::from(block.len);
        if block_end > start && offset < end {
            let skip = start.saturating_sub(offset);
            let take = block_end.min(end) - offset - skip;
            out.push((
                block.id,
                usize::try_from(skip).unwrap_or(0),
                usize::try_from(take).unwrap_or(0),
            ));
        }
        offset = block_end;
        if offset >= end {
            break;
        }
    }
    out
}

/// Delete a file; its versions stay in the history.
#[utoipa::path(delete, path = "/files/{file_id}", params(("file_id" = i64, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = cairn_protocol::api::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    ApiPath(file_id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let file = owned_file(&state, &user, &ip, "delete", file_id).await?;
    if file.deleted != 0 {
        return Err(ApiError::NotFound("file"));
    }
    let path = RelPath::parse(&file.path).map_err(ApiError::internal)?;
    // In the file's own folder (its id may come from any folder's change events).
    let folder = db::folder_name(&state.db, file.folder_id)
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    commit_path(&state, user.id, &folder, &path, None, "rest").await?;
    let target = format!("file {file_id} '{}'", file.path);
    audit_target(
        &state,
        Some(user.id),
        &user.name,
        &ip,
        "delete",
        &target,
        "ok",
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A file's versions, newest first (deletions included).
#[utoipa::path(get, path = "/files/{file_id}/versions", params(("file_id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = VersionList), (status = 404, body = cairn_protocol::api::ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(file_id): ApiPath<i64>,
) -> Result<Json<VersionList>, ApiError> {
    let file = db::file_for_owner(&state.db, user.id, file_id)
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    let rows = db::versions(&state.db, file.id).await?;
    let versions = rows
        .into_iter()
        .map(|v| VersionInfo {
            version: u64::try_from(v.version).unwrap_or(0),
            size: u64::try_from(v.size).unwrap_or(0),
            hash: v.hash,
            created_at: rfc3339(v.created_at),
            deleted: v.deleted != 0,
            device: v.device,
        })
        .collect();
    Ok(Json(VersionList { versions }))
}

/// The caller's file `file_id`, or 404. A request for another user's existing file is audited
/// as an authorization failure; the caller cannot tell it from a missing one.
async fn owned_file(
    state: &AppState,
    user: &AuthUser,
    ip: &str,
    action: &str,
    file_id: i64,
) -> Result<FileRow, ApiError> {
    if let Some(file) = db::file_for_owner(&state.db, user.id, file_id).await? {
        return Ok(file);
    }
    if db::file_exists(&state.db, file_id).await? {
        tracing::warn!(user = user.id, file_id, action, "authorization failure");
        audit_target(
            state,
            Some(user.id),
            &user.name,
            ip,
            action,
            &format!("file {file_id}"),
            "denied: not the owner",
        )
        .await;
    }
    Err(ApiError::NotFound("file"))
}

/// The REST view of a file row.
pub fn file_info(row: &FileRow) -> FileInfo {
    FileInfo {
        id: row.id,
        path: row.path.clone(),
        size: u64::try_from(row.size).unwrap_or(0),
        hash: row.hash.clone(),
        version: u64::try_from(row.version).unwrap_or(0),
        modified_at: rfc3339(row.modified_at),
        deleted: row.deleted != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let check =
            |text, size, expect| assert_eq!(parse_range(text, size), expect, "{text} of {size}");
        check("bytes=0-99", 1000, Some((0, 99)));
        check("bytes=900-", 1000, Some((900, 999)));
        check("bytes=-100", 1000, Some((900, 999)));
        check("bytes=-5000", 1000, Some((0, 999)));
        check("bytes=990-2000", 1000, Some((990, 999)));
        check("bytes=1000-", 1000, None);
        check("bytes=5-4", 1000, None);
        check("bytes=-0", 1000, None);
        check("bytes=0-1,5-6", 1000, None);
        check("items=0-1", 1000, None);
        check("bytes=0-0", 0, None);
    }

    #[test]
    fn pieces_cover_the_range() {
        let id = cairn_store::BlockId::of(b"x");
        let blocks = [
            BlockRef { id, len: 10 },
            BlockRef { id, len: 10 },
            BlockRef { id, len: 5 },
        ];
        assert_eq!(
            pieces(&blocks, 0, 25),
            vec![(id, 0, 10), (id, 0, 10), (id, 0, 5)]
        );
        assert_eq!(pieces(&blocks, 8, 5), vec![(id, 8, 2), (id, 0, 3)]);
        assert_eq!(pieces(&blocks, 22, 3), vec![(id, 2, 3)]);
        assert!(pieces(&blocks, 0, 0).is_empty());
    }
}
