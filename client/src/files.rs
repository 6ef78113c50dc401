//! Authenticated REST calls of a [`Session`]: folders and their commits (snapshots), and the
//! `default` folder's files (list, upload, download, delete, versions).
//!
//! Every call refreshes the access token when needed and retries once after a 401 (the token
//! may have been revoked or expired in flight). Uploads stream from the file and downloads
//! stream to a temporary file beside the destination, renamed into place only when complete.

use std::path::Path;
use std::time::Duration;

use cairn_protocol::api::{
    CommitList, CreateFolderRequest, FileInfo, FileList, FolderInfo, FolderList, HeartbeatRequest,
    HeartbeatResponse, VersionList,
};
use reqwest::{Body, RequestBuilder, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::rest::{Answer, RestError, Session};

/// Largest JSON list read (a page of 10,000 files is about 2 MiB).
const LIST_SIZE_MAX: usize = 32 * 1024 * 1024;

/// How long one transfer may take in all (the client's 30 s default is for small calls).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Files per page asked of `GET /files/`.
const PAGE_LEN: u32 = 10_000;

impl Session {
    /// Sends an authenticated request built by `build`, refreshing the token and retrying once
    /// after a 401.
    async fn authed(
        &self,
        path: &str,
        limit: usize,
        build: impl Fn(&reqwest::Client) -> Result<RequestBuilder, RestError>,
    ) -> Result<Answer, RestError> {
        let mut retried = false;
        loop {
            let token = self.access_token().await?;
            let request = build(&self.rest().http)?.bearer_auth(&token.0);
            let answer = self.rest().send_limited(request, path, limit).await?;
            if answer.status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.invalidate().await;
                continue;
            }
            return Ok(answer);
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RestError> {
        let url = self.rest().url(path);
        let answer = self
            .authed(path, LIST_SIZE_MAX, |http| Ok(http.get(&url)))
            .await?;
        if answer.status == StatusCode::OK {
            return self.rest().decode(path, &answer.body);
        }
        Err(self.rest().failure(path, &answer))
    }

    /// `GET /folders`.
    ///
    /// # Errors
    /// Transport and session errors.
    pub async fn folders(&self) -> Result<Vec<FolderInfo>, RestError> {
        Ok(self.get_json::<FolderList>("/folders").await?.folders)
    }

    /// `POST /sync/heartbeat` as device `device` with status `status`: tells the server this
    /// device is alive, and answers with the default folder's head and the user's storage use.
    ///
    /// # Errors
    /// Transport and session errors; a device name the server refuses.
    pub async fn heartbeat(
        &self,
        device: &str,
        status: &str,
    ) -> Result<HeartbeatResponse, RestError> {
        let path = "/sync/heartbeat";
        let url = self.rest().url(path);
        let body = HeartbeatRequest {
            client_id: device.to_owned(),
            status: Some(status.to_owned()),
        };
        let answer = self
            .authed(path, LIST_SIZE_MAX, |http| Ok(http.post(&url).json(&body)))
            .await?;
        if answer.status == StatusCode::OK {
            return self.rest().decode(path, &answer.body);
        }
        Err(self.rest().failure(path, &answer))
    }

    /// The folder called `name`, created (empty) when the user has none of that name.
    ///
    /// # Errors
    /// An invalid name ([`RestError::Refused`], `invalid_folder_name`); transport errors.
    pub async fn ensure_folder(&self, name: &str) -> Result<FolderInfo, RestError> {
        if let Some(folder) = self.folders().await?.into_iter().find(|f| f.name == name) {
            return Ok(folder);
        }
        let path = "/folders";
        let url = self.rest().url(path);
        let body = CreateFolderRequest {
            name: name.to_owned(),
        };
        let answer = self
            .authed(path, LIST_SIZE_MAX, |http| Ok(http.post(&url).json(&body)))
            .await?;
        match answer.status {
            StatusCode::CREATED => self.rest().decode(path, &answer.body),
            // Created by another process in between.
            StatusCode::CONFLICT => self
                .folders()
                .await?
                .into_iter()
                .find(|f| f.name == name)
                .ok_or_else(|| self.rest().failure(path, &answer)),
            _ => Err(self.rest().failure(path, &answer)),
        }
    }

    /// Every commit of folder `name`, newest first.
    ///
    /// # Errors
    /// [`RestError::Refused`] (404) when there is no such folder.
    pub async fn commits(&self, name: &str) -> Result<CommitList, RestError> {
        let mut all = CommitList {
            commits: Vec::new(),
            more: false,
        };
        loop {
            let before = all
                .commits
                .last()
                .map(|c| format!("&before={}", c.seq))
                .unwrap_or_default();
            let page: CommitList = self
                .get_json(&format!("/folders/{name}/commits?limit=1000{before}"))
                .await?;
            let more = page.more && !page.commits.is_empty();
            all.commits.extend(page.commits);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Files of the `default` folder, all pages: every live file, or those at or under
    /// `prefix` (a file or a directory).
    ///
    /// # Errors
    /// Transport and session errors.
    pub async fn list_files(&self, prefix: Option<&str>) -> Result<Vec<FileInfo>, RestError> {
        let filter = prefix
            .map(|p| format!("&prefix={}", urlencoding(p)))
            .unwrap_or_default();
        self.list_pages(&filter).await
    }

    /// The file at exactly `path`, live or deleted.
    ///
    /// # Errors
    /// Transport and session errors.
    pub async fn file_at(&self, path: &str) -> Result<Option<FileInfo>, RestError> {
        let filter = format!("&path={}", urlencoding(path));
        Ok(self.list_pages(&filter).await?.into_iter().next())
    }

    async fn list_pages(&self, filter: &str) -> Result<Vec<FileInfo>, RestError> {
        let mut files = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let at = cursor
                .as_deref()
                .map(|c| format!("&cursor={}", urlencoding(c)))
                .unwrap_or_default();
            let page: FileList = self
                .get_json(&format!("/files/?limit={PAGE_LEN}{filter}{at}"))
                .await?;
            files.extend(page.files);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(files),
            }
        }
    }

    /// Uploads the file at `local` as `remote` in the `default` folder.
    ///
    /// # Errors
    /// The file cannot be read; the server refuses it (too large, over quota, bad path).
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<FileInfo, RestError> {
        let path = "/files/upload";
        let url = self.rest().url(path);
        let answer = self
            .authed(path, LIST_SIZE_MAX, |http| {
                let file = std::fs::File::open(local).map_err(|e| local_error(local, &e))?;
                let len = file.metadata().map_err(|e| local_error(local, &e))?.len();
                let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
                let part =
                    reqwest::multipart::Part::stream_with_length(Body::wrap_stream(stream), len)
                        .file_name("upload");
                let form = reqwest::multipart::Form::new()
                    .text("path", remote.to_owned())
                    .part("file", part);
                Ok(http.post(&url).multipart(form).timeout(TRANSFER_TIMEOUT))
            })
            .await?;
        if answer.status == StatusCode::CREATED {
            return self.rest().decode(path, &answer.body);
        }
        Err(self.rest().failure(path, &answer))
    }

    /// Downloads file `id` (its `version`, or the current one) to `dest`, through a temporary
    /// file in the same directory, fsynced and renamed over `dest`. Calls `progress` with the
    /// bytes received so far and the total.
    ///
    /// # Errors
    /// The server refuses (404: no such file or version); the destination cannot be written.
    pub async fn download(
        &self,
        id: i64,
        version: Option<u64>,
        dest: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, RestError> {
        let path = match version {
            Some(v) => format!("/files/{id}/download?version={v}"),
            None => format!("/files/{id}/download"),
        };
        let mut retried = false;
        let mut response = loop {
            let token = self.access_token().await?;
            let response = self
                .rest()
                .http
                .get(self.rest().url(&path))
                .bearer_auth(&token.0)
                .timeout(TRANSFER_TIMEOUT)
                .send()
                .await
                .map_err(|e| self.rest().transport(&e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.invalidate().await;
                continue;
            }
            break response;
        };
        if response.status() != StatusCode::OK {
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default().to_vec();
            return Err(self.rest().failure(
                &path,
                &Answer {
                    status,
                    headers,
                    body,
                },
            ));
        }
        let total = response.content_length().unwrap_or(0);
        let (file, temp) = temp_beside(dest)?.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut done = 0u64;
        let result: Result<(), RestError> = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.rest().transport(&e))?
            {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| local_error(&temp, &e))?;
                done += chunk.len() as u64;
                progress(done, total);
            }
            if total != 0 && done != total {
                return Err(RestError::Unexpected {
                    server: self.rest().server().to_owned(),
                    path: path.clone(),
                    detail: format!("the download stopped after {done} of {total} bytes"),
                });
            }
            file.sync_all().await.map_err(|e| local_error(&temp, &e))?;
            Ok(())
        }
        .await;
        // On failure the temp goes with `temp`.
        result?;
        temp.persist(dest)
            .map_err(|e| local_error(dest, &e.error))?;
        Ok(done)
    }

    /// `DELETE /files/{id}` (the file stays in its version history).
    ///
    /// # Errors
    /// 404 when there is no such live file.
    pub async fn delete_file(&self, id: i64) -> Result<(), RestError> {
        let path = format!("/files/{id}");
        let url = self.rest().url(&path);
        let answer = self
            .authed(&path, LIST_SIZE_MAX, |http| Ok(http.delete(&url)))
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(self.rest().failure(&path, &answer))
    }

    /// `GET /files/{id}/versions`, newest first.
    ///
    /// # Errors
    /// 404 when there is no such file.
    pub async fn versions(&self, id: i64) -> Result<VersionList, RestError> {
        self.get_json(&format!("/files/{id}/versions")).await
    }
}

fn local_error(path: &Path, err: &std::io::Error) -> RestError {
    RestError::Local(format!("'{}': {err}", path.display()))
}

/// A new hidden temp file in `dest`'s directory (so the rename stays on one filesystem): a
/// random name, created anew (never through a link another user planted in a shared folder),
/// with the permissions a plain create gives; removed when dropped unless persisted.
fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile, RestError> {
    use std::os::unix::fs::PermissionsExt as _;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(&format!(".{name}.cairn-part-"))
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| local_error(dest, &e))
}

/// Percent-encodes a query value (everything but unreserved characters).
fn urlencoding(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(urlencoding("a b/ü&x=1"), "a%20b/%C3%BC%26x%3D1");
        assert_eq!(urlencoding("plain-name_1.txt"), "plain-name_1.txt");
    }

    #[test]
    fn temp_files_stay_beside_their_destination_and_never_follow_a_planted_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("file.txt");
        let temp = temp_beside(&dest).expect("temp");
        assert_eq!(temp.path().parent(), Some(dir.path()));
        assert!(
            temp.path()
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".file.txt.cairn-part-"))
        );
        // Another user's link at the old, predictable name is left alone.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").expect("write");
        let planted = dir
            .path()
            .join(format!(".file.txt.cairn-part-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        let other = temp_beside(&dest).expect("temp");
        assert_ne!(other.path(), planted);
        drop(other);
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
    }
}
