//! `/folders`: the user's sync roots and their history (snapshots).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_protocol::api::{
    CommitInfo, CommitList, CreateFolderRequest, FolderInfo, FolderList, Head, valid_folder_name,
};
use serde::Deserialize;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery, AppState, AuthUser, now_ms, rfc3339};
use crate::db::{self, DbError, FolderSummaryRow};
use crate::limits::{COMMITS_PAGE_LEN_DEFAULT, COMMITS_PAGE_LEN_MAX, FOLDERS_PER_USER_MAX};

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn folder_info(row: FolderSummaryRow) -> FolderInfo {
    FolderInfo {
        name: row.name,
        uid: row.uid,
        head: Head {
            seq: unsigned(row.head_seq),
            root: row.head_root,
        },
        files: unsigned(row.files),
        bytes: unsigned(row.bytes),
        created_at: rfc3339(row.created_at),
    }
}

/// The user's folders.
#[utoipa::path(get, path = "/folders", security(("bearer" = [])),
    responses((status = 200, body = FolderList), (status = 401, body = cairn_protocol::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<FolderList>, ApiError> {
    let rows = db::folders(&state.db, user.id).await?;
    Ok(Json(FolderList {
        folders: rows.into_iter().map(folder_info).collect(),
    }))
}

/// Creates an empty folder.
#[utoipa::path(post, path = "/folders", request_body = CreateFolderRequest, security(("bearer" = [])),
    responses((status = 201, body = FolderInfo), (status = 400, body = cairn_protocol::api::ErrorBody),
        (status = 409, body = cairn_protocol::api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<CreateFolderRequest>,
) -> Result<(StatusCode, Json<FolderInfo>), ApiError> {
    if !valid_folder_name(&request.name) {
        return Err(ApiError::BadRequest(
            "invalid_folder_name",
            "a folder name has 1 to 64 characters: letters, digits, '.', '_' or '-', and does not start with '.'"
                .to_owned(),
        ));
    }
    let existing = db::folders(&state.db, user.id).await?;
    if existing.len() >= FOLDERS_PER_USER_MAX {
        return Err(ApiError::Conflict(
            "too_many_folders",
            format!("a user may have at most {FOLDERS_PER_USER_MAX} folders"),
        ));
    }
    let now = now_ms();
    let root = state.empty_root.to_string();
    let uid = match db::create_folder(&state.db, user.id, &request.name, &root, now).await {
        Ok(uid) => uid,
        Err(DbError::Conflict) => {
            return Err(ApiError::Conflict(
                "folder_exists",
                format!("you already have a folder called '{}'", request.name),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    tracing::info!(user = user.id, folder = %request.name, "folder created");
    Ok((
        StatusCode::CREATED,
        Json(FolderInfo {
            name: request.name,
            uid,
            head: Head { seq: 0, root },
            files: 0,
            bytes: 0,
            created_at: rfc3339(now),
        }),
    ))
}

/// `?before=SEQ&limit=N` of `GET /folders/{name}/commits`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CommitsQuery {
    /// Only commits older than this seq (default: from the head).
    pub before: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<u32>,
}

/// A folder's commits (snapshots), newest first.
#[utoipa::path(get, path = "/folders/{name}/commits", params(("name" = String, Path, description = "folder name"), CommitsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = CommitList), (status = 404, body = cairn_protocol::api::ErrorBody)))]
pub async fn commits(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<CommitsQuery>,
) -> Result<Json<CommitList>, ApiError> {
    let folder = db::folder(&state.db, user.id, &name)
        .await?
        .ok_or(ApiError::NotFound("folder"))?;
    let limit = query
        .limit
        .unwrap_or(COMMITS_PAGE_LEN_DEFAULT)
        .clamp(1, COMMITS_PAGE_LEN_MAX);
    let before = query
        .before
        .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let mut rows = db::commits(&state.db, folder.id, before, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(Json(CommitList {
        commits: rows
            .into_iter()
            .map(|r| CommitInfo {
                seq: unsigned(r.seq),
                root: r.root,
                parent_seq: unsigned(r.parent_seq),
                device: r.device,
                created_at: rfc3339(r.created_at),
                files: unsigned(r.files),
                bytes: unsigned(r.bytes),
            })
            .collect(),
        more,
    }))
}
