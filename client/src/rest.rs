//! The REST client: register, login, refresh, logout and `GET /sync/info`, plus [`Session`],
//! which turns the saved refresh token into access tokens and saves each rotated token at once.
//!
//! Every failure is a [`RestError`] whose message is one line saying what to do. This module
//! speaks plain `http://` only: the workspace builds `reqwest` without TLS for now, and the
//! sync traffic itself is QUIC with a pinned certificate. File transfers are not here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_protocol::api::{
    AccessToken, ErrorBody, LoginRequest, RefreshRequest, RefreshToken, RegisterRequest, SyncInfo,
    TokenResponse, UserInfo,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};

use crate::config::{ConfigError, ConfigLock};

/// How long to wait for a TCP connection. A server on a LAN answers in milliseconds; 10 s
/// covers a slow VPN without making a typo'd address hang for minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request may take. Login hashes a password with Argon2id (~50 ms) behind a
/// CPU semaphore, so 30 s leaves room for a busy server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body read, in bytes. Every body this module reads (tokens, a user, an error)
/// is under 1 KiB; 64 KiB bounds a misdirected request to some other web server.
pub const RESPONSE_SIZE_MAX: usize = 64 * 1024;

/// An access token is refreshed this long before it expires, so a request started with it does
/// not arrive after expiry.
pub const ACCESS_TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// What went wrong talking to the server. Each message is one line ending in a hint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// The server URL cannot be used.
    #[error("invalid server URL '{url}'; {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it, and what to use instead.
        reason: String,
    },
    /// The server's TLS certificate is not trusted (HTTPS).
    #[error(
        "the server at {server} is not trusted: {cause}; if its certificate comes from a private CA, set SSL_CERT_FILE to that CA's certificate (PEM)"
    )]
    Untrusted {
        /// The server's base URL.
        server: String,
        /// What the certificate check said.
        cause: String,
    },
    /// No connection could be made.
    #[error("cannot reach the server at {server}: {cause}; is it running?")]
    Unreachable {
        /// The server's base URL.
        server: String,
        /// The innermost cause (e.g. "connection refused").
        cause: String,
    },
    /// The server did not answer in time.
    #[error("the server at {server} did not answer within {} s; is it overloaded?", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// The server's base URL.
        server: String,
    },
    /// Login refused the username and password.
    #[error("wrong username or password")]
    WrongCredentials,
    /// The refresh token was refused: expired, revoked, or used twice.
    #[error("your session has ended; run `cairn user login` again")]
    SessionEnded,
    /// The config holds no server or no refresh token.
    #[error("not logged in; run `cairn user login --server URL --username U`")]
    NotLoggedIn,
    /// Rate limited by the server.
    #[error("too many attempts; wait {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the server accepts another attempt.
        retry_after_secs: u64,
    },
    /// The server has no such endpoint (it answered 404 without an error body).
    #[error("the server at {server} does not offer {path}; it may be older than this client")]
    NotSupported {
        /// The server's base URL.
        server: String,
        /// The missing endpoint.
        path: String,
    },
    /// The server refused the request and said why.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's stable error code, e.g. `taken`, `weak_password`.
        code: String,
        /// The server's one-line message.
        message: String,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {server}{path}: {detail}")]
    Unexpected {
        /// The server's base URL.
        server: String,
        /// The endpoint.
        path: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// Reading or saving the config (the rotated refresh token).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A local file of a transfer could not be read or written.
    #[error("{0}")]
    Local(String),
}

/// A client for one server's REST API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RestClient {
    pub(crate) http: reqwest::Client,
    server: String,
}

/// Access tokens for the logged-in user of one config directory.
///
/// Each refresh rotates the refresh token; the new one is saved before the access token is
/// handed out, under the config directory's lock, so two processes (a sync daemon and a
/// one-off command) never present the same refresh token twice, which the server would treat
/// as theft and answer by ending the session.
#[derive(Debug)]
pub struct Session {
    rest: RestClient,
    config_dir: PathBuf,
    // A tokio mutex because it is held across the refresh request: concurrent callers in this
    // process wait for that one refresh instead of each spending a refresh token.
    cached: tokio::sync::Mutex<Option<CachedAccess>>,
}

#[derive(Debug)]
struct CachedAccess {
    token: AccessToken,
    refresh_at: Instant,
}

impl RestError {
    /// A stable machine-readable code for `--json` output.
    pub fn code(&self) -> &str {
        match self {
            RestError::InvalidUrl { .. } => "invalid_url",
            RestError::Unreachable { .. } => "unreachable",
            RestError::Untrusted { .. } => "untrusted_certificate",
            RestError::Timeout { .. } => "timeout",
            RestError::WrongCredentials => "wrong_credentials",
            RestError::SessionEnded => "session_ended",
            RestError::NotLoggedIn => "not_logged_in",
            RestError::RateLimited { .. } => "rate_limited",
            RestError::NotSupported { .. } => "not_supported",
            RestError::Refused { code, .. } => code,
            RestError::Unexpected { .. } => "unexpected_answer",
            RestError::Config(_) => "config",
            RestError::Local(_) => "local",
        }
    }
}

impl RestClient {
    /// A client for the server at `server` (see [`normalize_server_url`]).
    ///
    /// # Errors
    /// [`RestError::InvalidUrl`] when the URL cannot be used.
    pub fn new(server: &str) -> Result<RestClient, RestError> {
        let server = normalize_server_url(server)?;
        let tls = tls_config(&[b"http/1.1"]).map_err(|reason| RestError::InvalidUrl {
            url: server.clone(),
            reason,
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| RestError::InvalidUrl {
                url: server.clone(),
                reason: format!("cannot build an HTTP client: {}", root_cause(&err)),
            })?;
        Ok(RestClient { http, server })
    }

    /// The server's base URL, normalized (no trailing `/`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `POST /auth/register`.
    ///
    /// # Errors
    /// [`RestError::Refused`] with the server's message for a taken name (409) or a weak
    /// password (400); transport errors as [`RestError::Unreachable`] and friends.
    pub async fn register(&self, request: &RegisterRequest) -> Result<UserInfo, RestError> {
        let path = "/auth/register";
        let answer = self.send(self.post(path).json(request), path).await?;
        if answer.status == StatusCode::CREATED {
            return self.decode(path, &answer.body);
        }
        Err(self.failure(path, &answer))
    }

    /// `POST /auth/login`.
    ///
    /// # Errors
    /// [`RestError::WrongCredentials`] on 401, [`RestError::RateLimited`] on 429.
    pub async fn login(&self, request: &LoginRequest) -> Result<TokenResponse, RestError> {
        let path = "/auth/login";
        let answer = self.send(self.post(path).json(request), path).await?;
        match answer.status {
            StatusCode::OK => self.decode(path, &answer.body),
            StatusCode::UNAUTHORIZED => Err(RestError::WrongCredentials),
            _ => Err(self.failure(path, &answer)),
        }
    }

    /// `POST /auth/refresh`: trades `refresh_token` for new tokens. The old token is spent even
    /// when the answer is lost on the way back, so save the new one before anything else.
    ///
    /// # Errors
    /// [`RestError::SessionEnded`] on 401.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenResponse, RestError> {
        let path = "/auth/refresh";
        let body = RefreshRequest {
            refresh_token: refresh_token.clone(),
        };
        let answer = self.send(self.post(path).json(&body), path).await?;
        match answer.status {
            StatusCode::OK => self.decode(path, &answer.body),
            StatusCode::UNAUTHORIZED => Err(RestError::SessionEnded),
            _ => Err(self.failure(path, &answer)),
        }
    }

    /// `POST /auth/logout`: revokes the token's whole family. Idempotent at the server.
    ///
    /// # Errors
    /// Transport errors, or the server's refusal.
    pub async fn logout(&self, refresh_token: &RefreshToken) -> Result<(), RestError> {
        let path = "/auth/logout";
        let body = RefreshRequest {
            refresh_token: refresh_token.clone(),
        };
        let answer = self.send(self.post(path).json(&body), path).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(self.failure(path, &answer))
    }

    /// `GET /sync/info` (no authentication): the QUIC endpoint and certificate fingerprint to
    /// pin. [`quic_addr_for`] turns its address into one to connect to.
    ///
    /// # Errors
    /// [`RestError::NotSupported`] when the server has no such endpoint; [`RestError::Refused`]
    /// (404, `not_found`) when its QUIC endpoint is turned off; otherwise as the other calls.
    pub async fn sync_info(&self) -> Result<SyncInfo, RestError> {
        let path = "/sync/info";
        let answer = self.send(self.http.get(self.url(path)), path).await?;
        if answer.status == StatusCode::OK {
            return self.decode(path, &answer.body);
        }
        if answer.status == StatusCode::NOT_FOUND
            && serde_json::from_slice::<ErrorBody>(&answer.body).is_err()
        {
            return Err(RestError::NotSupported {
                server: self.server.clone(),
                path: path.to_owned(),
            });
        }
        Err(self.failure(path, &answer))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(self.url(path))
    }

    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        path: &str,
    ) -> Result<Answer, RestError> {
        self.send_limited(request, path, RESPONSE_SIZE_MAX).await
    }

    /// [`RestClient::send`] reading at most `limit` bytes of body.
    pub(crate) async fn send_limited(
        &self,
        request: RequestBuilder,
        path: &str,
        limit: usize,
    ) -> Result<Answer, RestError> {
        let mut response = request.send().await.map_err(|err| self.transport(&err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| self.transport(&err))? {
            if body.len() + chunk.len() > limit {
                return Err(RestError::Unexpected {
                    server: self.server.clone(),
                    path: path.to_owned(),
                    detail: format!("the answer is over {limit} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub(crate) fn transport(&self, err: &reqwest::Error) -> RestError {
        if err.is_timeout() {
            RestError::Timeout {
                server: self.server.clone(),
            }
        } else {
            let cause = root_cause(err);
            if cause.contains("certificate") {
                RestError::Untrusted {
                    server: self.server.clone(),
                    cause,
                }
            } else {
                RestError::Unreachable {
                    server: self.server.clone(),
                    cause,
                }
            }
        }
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<T, RestError> {
        serde_json::from_slice(body).map_err(|err| RestError::Unexpected {
            server: self.server.clone(),
            path: path.to_owned(),
            detail: format!("invalid JSON: {err}"),
        })
    }

    /// The error for an answer none of the endpoint's own cases covered.
    pub(crate) fn failure(&self, path: &str, answer: &Answer) -> RestError {
        classify_failure(
            &self.server,
            path,
            answer.status,
            &answer.headers,
            &answer.body,
        )
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Session {
    /// A session for the user logged in under `config_dir`, whose config is `config`.
    ///
    /// # Errors
    /// [`RestError::NotLoggedIn`] when `config` has no server or refresh token;
    /// [`RestError::InvalidUrl`] for a bad saved server.
    pub fn new(config_dir: &Path, config: &crate::config::Config) -> Result<Session, RestError> {
        let (Some(server), Some(_)) = (&config.server, &config.refresh_token) else {
            return Err(RestError::NotLoggedIn);
        };
        Ok(Session {
            rest: RestClient::new(server)?,
            config_dir: config_dir.to_path_buf(),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The REST client for the session's server.
    pub fn rest(&self) -> &RestClient {
        &self.rest
    }

    /// A valid access token: the cached one, or a new one from a refresh (whose rotated refresh
    /// token is saved before this returns).
    ///
    /// # Errors
    /// [`RestError::SessionEnded`] when the server refuses the refresh token (the token is then
    /// forgotten locally); [`RestError::NotLoggedIn`] when another process logged out; transport
    /// and config errors.
    pub async fn access_token(&self) -> Result<AccessToken, RestError> {
        let mut cached = self.cached.lock().await;
        if let Some(access) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(access.token.clone());
        }
        let tokens = self.refresh_and_save().await?;
        let lifetime = Duration::from_secs(tokens.expires_in).saturating_sub(ACCESS_TOKEN_MARGIN);
        *cached = Some(CachedAccess {
            token: tokens.access_token.clone(),
            refresh_at: Instant::now() + lifetime,
        });
        Ok(tokens.access_token)
    }

    /// Forgets the cached access token, so the next [`Session::access_token`] refreshes. Call it
    /// after the server refused an access token (401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn refresh_and_save(&self) -> Result<TokenResponse, RestError> {
        let dir = self.config_dir.clone();
        // The lock is held across the request: another process that wants to refresh waits and
        // then reads the token saved here, instead of presenting the one this refresh spends.
        let (lock, config) = blocking(move || {
            let lock = ConfigLock::acquire(&dir)?;
            let config = lock.load()?;
            Ok((lock, config))
        })
        .await?;
        let token = match (&config.server, &config.refresh_token) {
            (Some(server), Some(token))
                if normalize_server_url(server).ok().as_deref() == Some(self.rest.server()) =>
            {
                token.clone()
            }
            // Logged out, or logged in elsewhere, since this session started.
            _ => return Err(RestError::NotLoggedIn),
        };
        let refreshed = self.rest.refresh(&token).await;
        let mut config = config;
        match &refreshed {
            Ok(tokens) => config.refresh_token = Some(tokens.refresh_token.clone()),
            // The token is dead for good; keeping it would only fail the same way later.
            Err(RestError::SessionEnded) => config.refresh_token = None,
            Err(_) => return refreshed,
        }
        blocking(move || lock.save(&config)).await?;
        refreshed
    }
}

/// The TLS settings of every HTTPS and WSS connection to a server: rustls with the ring
/// provider (as QUIC's), certificates checked by the platform's verifier against the system's
/// roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` add others on Linux), offering `alpn`.
///
/// # Errors
/// The platform verifier cannot be set up: one line.
pub fn tls_config(alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(std::sync::Arc::clone(&provider))
        .map_err(|e| format!("cannot check server certificates: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Checks and normalizes a server base URL: `http(s)://host[:port][/prefix]`, without a
/// trailing `/`, query or fragment.
///
/// # Errors
/// [`RestError::InvalidUrl`] with what to write instead.
pub fn normalize_server_url(url: &str) -> Result<String, RestError> {
    let invalid = |reason: &str| RestError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = Url::parse(url.trim()).map_err(|_| invalid("write it like http://HOST:PORT"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        _ => return Err(invalid("write it like https://HOST or http://HOST:PORT")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host; write it like http://HOST:PORT"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(invalid("give only the scheme, host, port and path"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Whether `server` (a normalized base URL) is plain `http://` to a host other than this
/// machine: passwords and tokens would cross a network unencrypted.
pub fn is_unencrypted_remote(server: &str) -> bool {
    let Ok(url) = Url::parse(server) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => host != "localhost",
    }
}

/// The address to reach the QUIC endpoint at, as `host:port`. A server bound to every interface
/// (`0.0.0.0:P`, `[::]:P`) is reached at the host of its HTTP URL, port P; an address bound to
/// one interface is used as the server gave it.
pub fn quic_addr_for(server: &str, info: &SyncInfo) -> String {
    let unspecified = info
        .quic_addr
        .parse::<std::net::SocketAddr>()
        .map_or(true, |addr| addr.ip().is_unspecified());
    let host = Url::parse(server)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned));
    match host {
        Some(host) if unspecified => format!("{host}:{}", info.quic_port),
        _ => info.quic_addr.clone(),
    }
}

/// The error for a failed answer: 429 with its wait, the server's `{error: {code, message}}`,
/// or a description of whatever else came back.
fn classify_failure(
    server: &str,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> RestError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after_secs = headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(60);
        return RestError::RateLimited { retry_after_secs };
    }
    match parsed {
        Some(body) => RestError::Refused {
            status: status.as_u16(),
            code: body.error.code,
            message: one_line(&body.error.message),
        },
        None => RestError::Unexpected {
            server: server.to_owned(),
            path: path.to_owned(),
            detail: format!("HTTP {status}"),
        },
    }
}

/// The innermost cause of an error chain, lowercased at the start: reqwest's own message is a
/// generic "error sending request", and the useful part ("connection refused") is at the root.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = one_line(&cause.to_string());
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConfigError> + Send + 'static,
) -> Result<T, RestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ConfigError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(err.to_string()),
        })?
        .map_err(RestError::from)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn server_urls() {
        let ok = |url: &str, expect: &str| {
            assert_eq!(normalize_server_url(url).expect(url), expect);
        };
        ok("http://127.0.0.1:8000", "http://127.0.0.1:8000");
        ok("http://127.0.0.1:8000/", "http://127.0.0.1:8000");
        ok(" http://host/prefix/ ", "http://host/prefix");
        ok("https://cairn.example.org/", "https://cairn.example.org");
        for bad in [
            "127.0.0.1:8000",
            "ftp://host",
            "http://",
            "http://host/?a=b",
            "",
        ] {
            let err = normalize_server_url(bad).expect_err(bad);
            assert!(matches!(err, RestError::InvalidUrl { .. }), "{bad}: {err}");
        }
        assert!(is_unencrypted_remote("http://cairn.lan:8000"));
        assert!(is_unencrypted_remote("http://192.168.1.5:8000"));
        assert!(!is_unencrypted_remote("http://127.0.0.1:8000"));
        assert!(!is_unencrypted_remote("http://localhost:8000"));
        assert!(!is_unencrypted_remote("http://[::1]:8000"));
        assert!(!is_unencrypted_remote("https://cairn.example.org"));
        let err = normalize_server_url("ftp://host").expect_err("ftp");
        assert!(err.to_string().contains("https://HOST"), "{err}");
    }

    fn check_failure(status: u16, retry_after: Option<&str>, body: &str, expect: &str, code: &str) {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
        }
        let status = StatusCode::from_u16(status).expect("status");
        let err = classify_failure("http://s", "/p", status, &headers, body.as_bytes());
        assert_eq!(err.to_string(), expect);
        assert_eq!(err.code(), code);
    }

    #[test]
    fn failures_say_what_to_do() {
        check_failure(
            409,
            None,
            r#"{"error":{"code":"taken","message":"that username or email is already registered; log in instead"}}"#,
            "that username or email is already registered; log in instead",
            "taken",
        );
        check_failure(
            429,
            Some("17"),
            r#"{"error":{"code":"rate_limited","message":"x"}}"#,
            "too many attempts; wait 17 s",
            "rate_limited",
        );
        check_failure(
            429,
            None,
            "",
            "too many attempts; wait 60 s",
            "rate_limited",
        );
        check_failure(
            502,
            None,
            "<html>",
            "unexpected answer from http://s/p: HTTP 502 Bad Gateway",
            "unexpected_answer",
        );
        check_failure(
            400,
            None,
            "{\"error\":{\"code\":\"weak_password\",\"message\":\"two\\nlines\"}}",
            "two lines",
            "weak_password",
        );
    }

    fn check_quic_addr(server: &str, quic_addr: &str, expect: &str) {
        let info = SyncInfo {
            quic_addr: quic_addr.to_owned(),
            quic_port: 8443,
            fingerprint: "blake3:00".to_owned(),
            self_signed: true,
        };
        assert_eq!(quic_addr_for(server, &info), expect, "{server} {quic_addr}");
    }

    #[test]
    fn quic_addresses() {
        check_quic_addr(
            "http://files.example.org:8000",
            "0.0.0.0:8443",
            "files.example.org:8443",
        );
        check_quic_addr("http://[::1]:8000", "[::]:8443", "[::1]:8443");
        check_quic_addr("http://example.org", "127.0.0.1:8443", "127.0.0.1:8443");
        check_quic_addr("http://10.0.0.2:8000", "not an address", "10.0.0.2:8443");
    }

    #[test]
    fn root_cause_is_lowercased_and_one_line() {
        let err = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection\nrefused");
        assert_eq!(root_cause(&err), "connection refused");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let client = RestClient::new(&format!("http://{addr}")).expect("client");
        let err = client
            .logout(&RefreshToken("x".into()))
            .await
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(matches!(err, RestError::Unreachable { .. }), "{text}");
        assert!(
            text.starts_with(&format!("cannot reach the server at http://{addr}: ")),
            "{text}"
        );
        assert!(text.ends_with("; is it running?"), "{text}");
    }
}
