//! REST request and response bodies: the JSON contract of `../shared/design.md`.
//!
//! Fields may be added, never renamed. Requests refuse unknown fields, so a typo is an error
//! rather than a silently ignored setting. Secrets are newtypes whose `Debug` is `[redacted]`.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! secret {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[redacted]")
            }
        }
    };
}

secret!(
    /// A password as typed by the user.
    Password
);
secret!(
    /// A short-lived JWT access token.
    AccessToken
);
secret!(
    /// A long-lived opaque refresh token.
    RefreshToken
);

/// `POST /auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 64 characters: letters, digits, `.`, `_`, `-`.
    pub username: String,
    /// Contact address.
    pub email: String,
    /// At least 8 characters.
    pub password: Password,
}

/// A user, as `POST /auth/register` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    /// The user's id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Contact address.
    pub email: String,
}

/// `POST /auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: Password,
}

/// `POST /auth/refresh` and `POST /auth/logout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: RefreshToken,
}

/// Tokens from login and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// Bearer token for `Authorization: Bearer ...`.
    pub access_token: AccessToken,
    /// Single-use token for `POST /auth/refresh`; the answer carries its replacement.
    pub refresh_token: RefreshToken,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// One file of the user's `default` folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// Stable per path across versions.
    pub id: i64,
    /// Path inside the folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The file's tree node id (BLAKE3 over its metadata and block list), hex.
    pub hash: String,
    /// Version number, counting from 1.
    pub version: u64,
    /// When this version was committed (RFC 3339).
    pub modified_at: String,
    /// True when the latest version deleted the file (only listed with `?path=`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// `GET /files/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileList {
    /// Files in path order.
    pub files: Vec<FileInfo>,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    /// Version number, counting from 1.
    pub version: u64,
    /// Size in bytes (0 for a deletion).
    pub size: u64,
    /// Tree node id, hex (empty for a deletion).
    pub hash: String,
    /// When it was committed (RFC 3339).
    pub created_at: String,
    /// True when this version deleted the file.
    pub deleted: bool,
    /// The device that committed it.
    pub device: String,
}

/// `GET /files/{id}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionList {
    /// Newest first.
    pub versions: Vec<VersionInfo>,
}

/// A folder head: the last commit's sequence number and root node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Head {
    /// Commit sequence number; 0 before the first commit.
    pub seq: u64,
    /// Root directory node id, hex.
    pub root: String,
}

/// One changed file in `GET /sync/changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// The commit that made the change.
    pub seq: u64,
    /// The file's id.
    pub id: i64,
    /// Its path.
    pub path: String,
    /// The file's version number after the change.
    pub version: u64,
    /// True when the change deleted the file.
    pub deleted: bool,
    /// Size after the change.
    pub size: u64,
    /// Node id after the change (empty for a deletion).
    pub hash: String,
}

/// `GET /sync/changes?since=SEQ`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeList {
    /// Changes with `seq > since`, oldest first.
    pub changes: Vec<Change>,
    /// The folder's head now.
    pub head: Head,
    /// True when more changes remain: ask again with `since` = the last change's `seq`.
    pub more: bool,
}

/// `POST /sync/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The device's stable id (1 to 64 characters).
    pub client_id: String,
    /// Free-form status (`idle`, `syncing`, ...), at most 64 characters.
    #[serde(default)]
    pub status: Option<String>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// The `default` folder's head, so a client knows whether to sync.
    pub head: Head,
    /// Server time (RFC 3339).
    pub server_time: String,
    /// Bytes the user's files take (all folders, current versions).
    #[serde(default)]
    pub used_bytes: i64,
    /// The user's storage quota, bytes.
    #[serde(default)]
    pub quota_bytes: i64,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// `ok` or what is wrong with the database.
    pub database: String,
    /// `ok` or what is wrong with the block store.
    pub store: String,
    /// Server version.
    pub version: String,
    /// `ok` when the QUIC sync endpoint listens, `disabled` when it was turned off.
    #[serde(default)]
    pub quic: String,
    /// `ok` or what is wrong with the link to Redis; absent when the server runs without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `ok` or what is wrong with the link to RabbitMQ; absent when jobs run in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<String>,
}

/// `GET /sync/info`: where the QUIC sync endpoint listens and the certificate to pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncInfo {
    /// The address the endpoint is bound to (`0.0.0.0:P` means: the HTTP host, port P).
    pub quic_addr: String,
    /// The endpoint's UDP port.
    pub quic_port: u16,
    /// `blake3:<hex>` of the endpoint's certificate, pinned by clients at login.
    pub fingerprint: String,
    /// Whether the certificate was generated by the server (self-signed: pin it) or configured.
    pub self_signed: bool,
}

/// One folder of the user's: a named sync root with its own history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderInfo {
    /// The folder's name (`default` always exists).
    pub name: String,
    /// The folder's identity: random, never reused, unlike its name (a folder deleted and
    /// created again is another folder). A client binds a sync root's state to it. Empty from
    /// a server older than this field.
    #[serde(default)]
    pub uid: String,
    /// The head: last commit and its root.
    pub head: Head,
    /// Live files at the head.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// When the folder was created (RFC 3339).
    pub created_at: String,
}

/// `GET /folders`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderList {
    /// Folders by name.
    pub folders: Vec<FolderInfo>,
}

/// `POST /folders`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateFolderRequest {
    /// 1 to 64 characters: letters, digits, `.`, `_` or `-`, not starting with `.`.
    pub name: String,
}

/// One commit (snapshot) of a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitInfo {
    /// Sequence number, counting from 1.
    pub seq: u64,
    /// Root directory node id, hex.
    pub root: String,
    /// The commit it was made on (0 for the first).
    pub parent_seq: u64,
    /// The device that made it.
    pub device: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Live files in the snapshot.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// `GET /folders/{name}/commits`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitList {
    /// Newest first.
    pub commits: Vec<CommitInfo>,
    /// Pass the last seq as `?before=` for older commits.
    pub more: bool,
}

/// Valid folder names: 1 to 64 characters, letters, digits, `.`, `_` or `-`, not starting
/// with `.` (safe in URL paths and file names on every platform).
#[must_use]
pub fn valid_folder_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Machine- and human-readable error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable code, e.g. `not_found`, `invalid_path`, `rate_limited`.
    pub code: String,
    /// One line for a person, with a hint after `;`.
    pub message: String,
}

/// A real-time event on `/ws/sync/{client_id}`, as JSON with a `type` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A folder's head moved.
    HeadChanged {
        /// Folder name.
        folder: String,
        /// New sequence number.
        seq: u64,
        /// New root node id, hex.
        root: String,
    },
    /// A file changed in a folder.
    FileChanged {
        /// Folder name.
        folder: String,
        /// The change.
        change: Change,
    },
    /// Two devices changed the same file; the server kept both versions.
    Conflict {
        /// Folder name.
        folder: String,
        /// The path.
        path: String,
        /// Where the losing version is kept.
        kept_as: String,
    },
    /// Sent periodically so a client can tell a dead connection from a quiet one.
    Heartbeat {
        /// Server time (RFC 3339).
        server_time: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_unknown_fields_refused() {
        let login: LoginRequest =
            serde_json::from_str(r#"{"username":"ann","password":"hunter22"}"#).expect("valid");
        assert_eq!(
            format!("{login:?}"),
            r#"LoginRequest { username: "ann", password: [redacted] }"#
        );
        let err =
            serde_json::from_str::<LoginRequest>(r#"{"username":"a","password":"b","admin":true}"#)
                .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `admin`"), "{err}");
    }

    #[test]
    fn events_are_tagged() {
        let event = Event::HeadChanged {
            folder: "default".into(),
            seq: 3,
            root: "ab".into(),
        };
        assert_eq!(
            serde_json::to_string(&event).expect("serialize"),
            r#"{"type":"head_changed","folder":"default","seq":3,"root":"ab"}"#
        );
    }
}
