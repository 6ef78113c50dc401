//! The client end of the QUIC sync protocol: one connection, one stream per request.
//!
//! The server's certificate is checked one of two ways: against a pinned fingerprint (trust on
//! first use, for the self-signed certificate a server generates; a changed certificate is
//! refused with a message that says what to do), or against the system's roots for a real
//! certificate. There is no accept-anything verifier.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_protocol::stream::{StreamError, read_control, read_raw, write_control, write_raw};
use cairn_protocol::wire::{self, ErrorCode, KeptVersion, Request, Response};
use cairn_store::{BlockId, NodeId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::throttle::Throttle;

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No connection could be made.
    #[error("cannot reach the sync endpoint at {addr}: {reason}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection broke mid-request.
    #[error("the connection to the server was lost: {0}")]
    Stream(#[from] StreamError),
    /// The server refused the request.
    #[error("the server refused {request}: {message}")]
    Refused {
        /// Which request.
        request: &'static str,
        /// The server's code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server answered something that does not fit the request.
    #[error("the server answered {request} with something unexpected")]
    Protocol {
        /// Which request.
        request: &'static str,
    },
    /// The connection is up but the server made no progress on a request for too long (a
    /// stuck or overloaded server): the connection is closed, so the pass can start again on
    /// a new one instead of waiting for ever.
    #[error(
        "the server made no progress on {request} for {} s; the connection was closed (is the server overloaded or stuck? its log may say)",
        after.as_secs()
    )]
    Stalled {
        /// Which request.
        request: &'static str,
        /// How long nothing moved.
        after: Duration,
    },
}

/// How long a request may make no progress (no answer, no frame read, no frame taken by the
/// stream) before the connection is given up: far longer than any request takes on a working
/// server, short enough that a stuck one turns into an error and a reconnect.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(120);

impl RemoteError {
    /// The server's error code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RemoteError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How the server's certificate is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly this fingerprint (`blake3:<hex>` of the leaf certificate).
    Pinned(String),
    /// The system's root certificates (a real certificate for `server_name`).
    SystemRoots,
}

/// The result of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    /// The new head.
    Committed(u64),
    /// The head moved: (seq, root).
    Stale(u64, NodeId),
}

/// A connection loss made on purpose (see [`Remote::inject_fault`]), for fault tests: the
/// connection is really closed, so the engine sees exactly what a dropped network gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection drops just before the request `n` requests from now (0: the next one)
    /// is sent: the server never sees it.
    DropBefore(u64),
    /// The request `n` requests from now is sent and fully answered, then the connection drops
    /// before the client takes the answer: the server did it, the client cannot know.
    LoseAnswer(u64),
    /// As [`Fault::LoseAnswer`], for the next request of this kind: the name of the
    /// [`Remote`] method that sends it (`commit`, `put_blocks`, `put_nodes`, `lacking`,
    /// `lacking_nodes`…), so a test can aim at file blocks or at tree nodes.
    LoseAnswerTo(&'static str),
}

/// A connection to a server's sync endpoint, bound to one folder. Clones share the connection
/// (each request is its own stream), so transfers can run several requests at once.
#[derive(Debug, Clone)]
pub struct Remote {
    link: Arc<Link>,
}

#[derive(Debug)]
struct Link {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    folder: String,
    up: Throttle,
    down: Throttle,
    /// Requests sent so far.
    calls: AtomicU64,
    /// An injected fault: the request number it hits, and how.
    fault: std::sync::Mutex<Option<(u64, Fault)>>,
    /// Called with each request's name just before it is sent (see [`Remote::on_request`]).
    hook: std::sync::Mutex<Option<RequestHook>>,
    /// [`STALL_TIMEOUT`], or what [`Remote::set_stall_timeout`] set, in milliseconds.
    stall_ms: AtomicU64,
}

/// See [`Remote::on_request`].
#[derive(Clone)]
struct RequestHook(Arc<dyn Fn(&'static str) + Send + Sync>);

impl std::fmt::Debug for RequestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestHook")
    }
}

impl Remote {
    /// Connects and says hello.
    ///
    /// # Errors
    /// [`RemoteError::Connect`] (including a certificate that does not match the pin),
    /// [`RemoteError::Refused`] for a bad token.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        trust: &Trust,
        token: &str,
        device: &str,
        folder: &str,
    ) -> Result<Remote, RemoteError> {
        let remote = Remote::connect_without_hello(addr, server_name, trust, folder).await?;
        remote.hello(token, device).await?;
        tracing::debug!(%addr, folder, "connected");
        Ok(remote)
    }

    /// Connects without saying hello: the server answers nothing but a [`Remote::hello`] on such
    /// a connection (for tests of what it refuses before one).
    ///
    /// # Errors
    /// [`RemoteError::Connect`] (including a certificate that does not match the pin).
    pub async fn connect_without_hello(
        addr: SocketAddr,
        server_name: &str,
        trust: &Trust,
        folder: &str,
    ) -> Result<Remote, RemoteError> {
        let fail = |reason: String| RemoteError::Connect { addr, reason };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| fail(e.to_string()))?;
        let mut crypto = match trust {
            Trust::Pinned(fingerprint) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    fingerprint: fingerprint.clone(),
                    provider,
                }))
                .with_no_client_auth(),
            Trust::SystemRoots => {
                let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                    .map_err(|e| fail(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
        };
        crypto.alpn_protocols = vec![wire::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| fail(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = cairn_protocol::stream::transport();
        transport.keep_alive_interval(Some(std::time::Duration::from_secs(15)));
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
                .parse()
                .map_err(|_| fail("bad bind address".into()))?
        } else {
            "0.0.0.0:0"
                .parse()
                .map_err(|_| fail("bad bind address".into()))?
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| fail(e.to_string()))?;
        let connection = tokio::time::timeout(std::time::Duration::from_secs(15), connecting)
            .await
            .map_err(|_| fail("no answer within 15 s; is the server running and UDP open?".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let remote = Remote {
            link: Arc::new(Link {
                connection,
                _endpoint: endpoint,
                folder: folder.to_owned(),
                up: Throttle::default(),
                down: Throttle::default(),
                calls: AtomicU64::new(0),
                fault: std::sync::Mutex::new(None),
                hook: std::sync::Mutex::new(None),
                stall_ms: AtomicU64::new(millis(STALL_TIMEOUT)),
            }),
        };
        Ok(remote)
    }

    /// Sets how long a request may make no progress before the connection is given up (see
    /// [`STALL_TIMEOUT`], the default).
    pub fn set_stall_timeout(&self, after: Duration) {
        self.link.stall_ms.store(millis(after), Ordering::Relaxed);
    }

    /// Runs one step of a request (sending it, reading its answer or one of its frames) under
    /// the stall timeout; a step that takes longer closes the connection.
    async fn watched<T>(
        &self,
        request: &'static str,
        step: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        let after = Duration::from_millis(self.link.stall_ms.load(Ordering::Relaxed));
        match tokio::time::timeout(after, step).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(request, ?after, "no progress; closing the connection");
                self.close();
                Err(RemoteError::Stalled { request, after })
            }
        }
    }

    /// Authenticates the connection (again) with an access token.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn hello(&self, token: &str, device: &str) -> Result<(), RemoteError> {
        let request = Request::Hello {
            version: wire::PROTOCOL_VERSION,
            token: wire::AccessToken(token.to_owned()),
            device: device.to_owned(),
        };
        match self.call(&request, Vec::new()).await?.0 {
            Response::Hello { .. } => Ok(()),
            other => Err(unexpected("hello", other)),
        }
    }

    /// Arms a [`Fault`]: a later request of this connection loses it. Replaces an armed one.
    pub fn inject_fault(&self, fault: Fault) {
        let ahead = match fault {
            Fault::DropBefore(n) | Fault::LoseAnswer(n) => n,
            Fault::LoseAnswerTo(_) => 0,
        };
        let at = self.link.calls.load(Ordering::SeqCst).saturating_add(ahead);
        if let Ok(mut armed) = self.link.fault.lock() {
            *armed = Some((at, fault));
        }
    }

    /// Calls `hook` with each request's name ([`Request::name`]) just before it is sent, from
    /// then on: a test seam, like [`Remote::inject_fault`], for changing the world at an exact
    /// point of a pass (a file edited between the scan and the upload, say).
    pub fn on_request(&self, hook: impl Fn(&'static str) + Send + Sync + 'static) {
        if let Ok(mut slot) = self.link.hook.lock() {
            *slot = Some(RequestHook(Arc::new(hook)));
        }
    }

    /// Requests sent on this connection so far.
    pub fn requests_sent(&self) -> u64 {
        self.link.calls.load(Ordering::SeqCst)
    }

    /// The fault armed for request number `n` (named `name`), disarming it.
    fn fault_at(&self, n: u64, name: &str) -> Option<Fault> {
        let mut armed = self.link.fault.lock().ok()?;
        match *armed {
            Some((_, fault @ Fault::LoseAnswerTo(kind))) if kind == name => {
                *armed = None;
                Some(fault)
            }
            Some((at, fault @ (Fault::DropBefore(_) | Fault::LoseAnswer(_)))) if at == n => {
                *armed = None;
                Some(fault)
            }
            _ => None,
        }
    }

    /// The error of a request on a closed connection (what a dropped network gives).
    async fn lost(&self) -> RemoteError {
        match self.link.connection.open_bi().await {
            Err(e) => RemoteError::Stream(StreamError::Write(e.into())),
            Ok(_) => RemoteError::Protocol { request: "fault" },
        }
    }

    /// Sends a request (and raw frames after it, handed to the stream without a copy); returns
    /// the answer and the stream to read any frames that follow it.
    async fn call(
        &self,
        request: &Request,
        frames: Vec<Vec<u8>>,
    ) -> Result<(Response, quinn::RecvStream), RemoteError> {
        self.call_as(request.name(), request, frames).await
    }

    /// [`Remote::call`], with `name` as the request's name for faults and the request hook
    /// (node uploads and lookups travel as block requests but are named apart).
    async fn call_as(
        &self,
        name: &'static str,
        request: &Request,
        frames: Vec<Vec<u8>>,
    ) -> Result<(Response, quinn::RecvStream), RemoteError> {
        let fault = self.fault_at(self.link.calls.fetch_add(1, Ordering::SeqCst), name);
        if fault.is_some() {
            tracing::debug!(?fault, request = name, "injected fault");
        }
        if let Some(Fault::DropBefore(_)) = fault {
            self.close();
        }
        let hook = self.link.hook.lock().ok().and_then(|h| h.clone());
        if let Some(RequestHook(hook)) = hook {
            hook(name);
        }
        let (mut send, mut recv) = self
            .watched(name, async {
                self.link
                    .connection
                    .open_bi()
                    .await
                    .map_err(|e| RemoteError::Stream(StreamError::Write(e.into())))
            })
            .await?;
        self.watched(name, async { Ok(write_control(&mut send, request).await?) })
            .await?;
        for frame in frames {
            self.watched(name, async { Ok(write_raw(&mut send, frame).await?) })
                .await?;
        }
        let _ = send.finish();
        let sent = Instant::now();
        let response: Response = self
            .watched(name, async { Ok(read_control(&mut recv).await?) })
            .await?;
        tracing::trace!(request = name, answered_in = ?sent.elapsed(), "answer");
        if let Some(Fault::LoseAnswer(_) | Fault::LoseAnswerTo(_)) = fault {
            self.close();
            return Err(self.lost().await);
        }
        if let Response::Error { code, message } = response {
            return Err(RemoteError::Refused {
                request: request.name(),
                code,
                message,
            });
        }
        Ok((response, recv))
    }

    /// The folder's head: (seq, root).
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn head(&self) -> Result<(u64, NodeId), RemoteError> {
        let request = Request::GetHead {
            folder: self.link.folder.clone(),
        };
        match self.call(&request, Vec::new()).await?.0 {
            Response::Head { seq, root } => Ok((seq, root)),
            other => Err(unexpected("get_head", other)),
        }
    }

    /// Node encodings by id (the caller re-hashes them).
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Vec<u8>>, RemoteError> {
        let request = Request::GetNodes {
            folder: self.link.folder.clone(),
            ids: ids.to_vec(),
        };
        let (response, mut recv) = self.call(&request, Vec::new()).await?;
        match response {
            Response::Nodes { count } if count as usize == ids.len() => {
                self.read_frames("get_nodes", &mut recv, ids.len()).await
            }
            other => Err(unexpected("get_nodes", other)),
        }
    }

    /// Blocks by id (the caller re-hashes them).
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn blocks(&self, ids: &[BlockId]) -> Result<Vec<Vec<u8>>, RemoteError> {
        let started = Instant::now();
        let request = Request::GetBlocks {
            folder: self.link.folder.clone(),
            ids: ids.to_vec(),
        };
        let (response, mut recv) = self.call(&request, Vec::new()).await?;
        let blocks = match response {
            Response::Blocks { count } if count as usize == ids.len() => {
                self.read_frames("get_blocks", &mut recv, ids.len()).await?
            }
            other => return Err(unexpected("get_blocks", other)),
        };
        let bytes: usize = blocks.iter().map(Vec::len).sum();
        self.link.down.pace(started, bytes as u64).await;
        Ok(blocks)
    }

    /// Sets the bandwidth limits for block transfers, bytes per second (`None`: unlimited).
    /// They apply from the next request on, also while a pass runs.
    pub fn set_limits(&self, up: Option<u64>, down: Option<u64>) {
        self.link.up.set(up);
        self.link.down.set(down);
    }

    /// Bytes of blocks per upload request: `unlimited` unless a limit asks for smaller steps.
    pub fn upload_batch_bytes(&self, unlimited: usize) -> usize {
        self.link.up.batch_bytes(unlimited)
    }

    /// Bytes of blocks per download request: `unlimited` unless a limit asks for smaller steps.
    pub fn download_batch_bytes(&self, unlimited: usize) -> usize {
        self.link.down.batch_bytes(unlimited)
    }

    /// Block requests a download keeps in flight: `unlimited` without a limit, one under a
    /// limit (several paced requests would arrive in bursts).
    pub fn download_streams(&self, unlimited: usize) -> usize {
        if self.link.down.limit().is_some() {
            1
        } else {
            unlimited
        }
    }

    /// As [`Remote::download_streams`], for uploads.
    pub fn upload_streams(&self, unlimited: usize) -> usize {
        if self.link.up.limit().is_some() {
            1
        } else {
            unlimited
        }
    }

    /// The positions in `ids` of the blocks the server lacks for this folder.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn lacking(&self, ids: &[BlockId]) -> Result<Vec<usize>, RemoteError> {
        self.lacking_as("lacking", ids).await
    }

    /// [`Remote::lacking`] for tree nodes (the same request, named `lacking_nodes` for
    /// faults and the request hook).
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn lacking_nodes(&self, ids: &[BlockId]) -> Result<Vec<usize>, RemoteError> {
        self.lacking_as("lacking_nodes", ids).await
    }

    async fn lacking_as(
        &self,
        name: &'static str,
        ids: &[BlockId],
    ) -> Result<Vec<usize>, RemoteError> {
        let request = Request::Lacking {
            folder: self.link.folder.clone(),
            ids: ids.to_vec(),
        };
        match self.call_as(name, &request, Vec::new()).await?.0 {
            Response::Lacking { indices } => Ok(indices
                .into_iter()
                .map(|i| i as usize)
                .filter(|i| *i < ids.len())
                .collect()),
            other => Err(unexpected(name, other)),
        }
    }

    /// Uploads blocks; returns the ids the server computed.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn put_blocks(&self, blocks: Vec<Vec<u8>>) -> Result<Vec<BlockId>, RemoteError> {
        self.put_as("put_blocks", blocks).await
    }

    /// [`Remote::put_blocks`] for encoded tree nodes (the same request, named `put_nodes` for
    /// faults and the request hook).
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn put_nodes(&self, nodes: Vec<Vec<u8>>) -> Result<Vec<BlockId>, RemoteError> {
        self.put_as("put_nodes", nodes).await
    }

    async fn put_as(
        &self,
        name: &'static str,
        blocks: Vec<Vec<u8>>,
    ) -> Result<Vec<BlockId>, RemoteError> {
        let started = Instant::now();
        let count = blocks.len();
        let bytes: usize = blocks.iter().map(Vec::len).sum();
        let request = Request::PutBlocks {
            folder: self.link.folder.clone(),
            count: u32::try_from(count).unwrap_or(u32::MAX),
        };
        let ids = match self.call_as(name, &request, blocks).await?.0 {
            Response::Stored { ids, .. } if ids.len() == count => ids,
            other => return Err(unexpected(name, other)),
        };
        self.link.up.pace(started, bytes as u64).await;
        Ok(ids)
    }

    /// Compare-and-swap of the head.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn commit(&self, base_seq: u64, root: NodeId) -> Result<CommitResult, RemoteError> {
        self.commit_keeping(base_seq, root, &[]).await
    }

    /// [`Remote::commit`] of an early commit, in the middle of a long upload (named
    /// `checkpoint` for faults and the request hook).
    ///
    /// # Errors
    /// As [`Remote::commit`].
    pub async fn checkpoint(
        &self,
        base_seq: u64,
        root: NodeId,
    ) -> Result<CommitResult, RemoteError> {
        let request = Request::Commit {
            folder: self.link.folder.clone(),
            base_seq,
            root,
        };
        match self.call_as("checkpoint", &request, Vec::new()).await?.0 {
            Response::Committed { seq } => Ok(CommitResult::Committed(seq)),
            Response::Stale { seq, root } => Ok(CommitResult::Stale(seq, root)),
            other => Err(unexpected("checkpoint", other)),
        }
    }

    /// [`Remote::commit`] that also keeps conflict losers in the version history (their nodes
    /// and blocks put before): each is recorded as a version of its path just before the new
    /// head's version. With none it is a plain commit.
    ///
    /// # Errors
    /// As [`Remote::commit`].
    pub async fn commit_keeping(
        &self,
        base_seq: u64,
        root: NodeId,
        kept: &[KeptVersion],
    ) -> Result<CommitResult, RemoteError> {
        let request = if kept.is_empty() {
            Request::Commit {
                folder: self.link.folder.clone(),
                base_seq,
                root,
            }
        } else {
            Request::CommitKeeping {
                folder: self.link.folder.clone(),
                base_seq,
                root,
                kept: kept.to_vec(),
            }
        };
        match self.call(&request, Vec::new()).await?.0 {
            Response::Committed { seq } => Ok(CommitResult::Committed(seq)),
            Response::Stale { seq, root } => Ok(CommitResult::Stale(seq, root)),
            other => Err(unexpected("commit", other)),
        }
    }

    /// Closes the connection politely: requests still in flight on any clone fail at once, and
    /// the endpoint (its socket and buffers) goes away once the close is done, even while some
    /// task still holds a clone.
    pub fn close(&self) {
        self.link.connection.close(0u32.into(), b"done");
    }

    /// The `count` raw frames that follow an answer, each under the stall timeout.
    async fn read_frames(
        &self,
        request: &'static str,
        recv: &mut quinn::RecvStream,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, RemoteError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let frame = self
                .watched(request, async {
                    Ok(read_raw(recv, wire::RAW_FRAME_MAX).await?)
                })
                .await?;
            out.push(frame);
        }
        Ok(out)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unexpected(request: &'static str, response: Response) -> RemoteError {
    tracing::debug!(?response, request, "unexpected answer");
    RemoteError::Protocol { request }
}

/// Accepts exactly one certificate, by fingerprint, and still checks the handshake signatures
/// with it (so the peer must hold the pinned certificate's key).
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = format!("blake3:{}", blake3::hash(end_entity).to_hex());
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate changed (pinned {}, now {seen}); if you trust this change, run `cairn user login` again to pin the new one",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
