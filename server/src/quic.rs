//! The QUIC sync endpoint (quinn + rustls, TLS 1.3 only, ALPN `cairn/1`).
//!
//! Each request arrives on its own bidirectional stream (see `cairn_protocol::wire`). A
//! connection starts unauthenticated; a hello with a valid access token binds it to a user until
//! the token expires (a later hello renews it). Every request names a folder and is authorized
//! against it: the folder must be the user's, and a node or block may be read only if the folder
//! committed or uploaded it. Blocks that arrive are hashed here; the client's ids are never used.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use cairn_protocol::path::RelPath;
use cairn_protocol::stream::{
    StreamError, read_control_within, read_raw, write_control, write_raw,
};
use cairn_protocol::wire::{
    self, CONTROL_FRAME_MAX, ErrorCode, IDS_PER_REQUEST_MAX, Limits, RAW_FRAME_MAX, Request,
    Response,
};
use cairn_store::{BlockId, BlockStore, NodeId};
use quinn::{RecvStream, SendStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{AppState, authenticate, now_ms};
use crate::commit::{RootError, RootOutcome, commit_root_keeping};
use crate::db;

/// Concurrent streams one connection may have open.
pub const STREAMS_MAX: u32 = 64;

/// Bytes of blocks one `PutBlocks` handler holds before it stores them (the client sends
/// 8 MiB requests, each stored as one batch).
const PUT_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// `PutBlocks` handlers one connection runs at once (the client keeps four in flight). More
/// wait unread: QUIC's flow control holds their sender back.
const PUTS_PER_CONNECTION: usize = 8;

/// `PutBlocks` handlers the server runs at once, over all connections. Each holds at most
/// [`PUT_BATCH_BYTES`] and a block, so together they hold at most 768 MiB, whatever the number
/// of connections and streams (64 streams per connection could otherwise hold 2 GiB each).
const PUTS_MAX: usize = 24;

/// How long a `PutBlocks` handler waits for each block while it holds its place (a sender
/// trickling bytes would keep the place from others): as long as a client waits for an answer.
const PUT_BLOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Places for `PutBlocks` handlers: one of the connection's and one of the server's.
#[derive(Clone)]
struct PutGate {
    connection: Arc<Semaphore>,
    server: Arc<Semaphore>,
}

impl PutGate {
    fn new(connection: usize, server: &Arc<Semaphore>) -> PutGate {
        PutGate {
            connection: Arc::new(Semaphore::new(connection)),
            server: Arc::clone(server),
        }
    }

    /// Waits for a place, the connection's first: a connection waiting for the server's holds
    /// one of its own places, never more of the server's than its share.
    async fn enter(&self) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Refusal> {
        let own = Arc::clone(&self.connection)
            .acquire_owned()
            .await
            .map_err(|e| Refusal::internal(&e))?;
        let shared = Arc::clone(&self.server)
            .acquire_owned()
            .await
            .map_err(|e| Refusal::internal(&e))?;
        Ok((own, shared))
    }
}

/// The certificate the endpoint presents, and its fingerprint for trust on first use.
pub struct TlsMaterial {
    /// Certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// `blake3:<hex>` of the leaf certificate (DER), published in `/sync/info`.
    pub fingerprint: String,
}

/// The fingerprint clients pin: BLAKE3 of the leaf certificate's DER.
pub fn fingerprint(cert: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(cert).to_hex())
}

/// Loads the configured certificate and key, or (with none configured) the self-signed pair in
/// `data_dir`, generating it on first start (key file mode 0600).
///
/// # Errors
/// Unreadable or invalid PEM files; IO errors writing the generated pair.
pub fn load_tls(
    configured: Option<(&Path, &Path)>,
    data_dir: &Path,
) -> Result<TlsMaterial, String> {
    let (cert_path, key_path) = match configured {
        Some((cert, key)) => (cert.to_path_buf(), key.to_path_buf()),
        None => {
            let cert = data_dir.join("tls-cert.pem");
            let key = data_dir.join("tls-key.pem");
            if !cert.exists() || !key.exists() {
                generate_self_signed(&cert, &key)?;
            }
            (cert, key)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(Iterator::collect)
        .map_err(|e| format!("reading the certificate '{}': {e}", cert_path.display()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| format!("no certificate in '{}'", cert_path.display()))?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("reading the private key '{}': {e}", key_path.display()))?;
    Ok(TlsMaterial {
        certs,
        key,
        fingerprint,
    })
}

fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let names = vec!["localhost".to_owned(), "cairn".to_owned()];
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    write_private(key_path, pair.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, pair.cert.pem())
        .map_err(|e| format!("writing '{}': {e}", cert_path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating '{}': {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("writing '{}': {e}", path.display()))
}

/// Binds the QUIC endpoint.
///
/// # Errors
/// An invalid key or certificate; the UDP port cannot be bound.
pub fn bind(addr: SocketAddr, tls: &TlsMaterial) -> Result<quinn::Endpoint, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(tls.certs.clone(), tls.key.clone_key())
        .map_err(|e| format!("the TLS certificate or key is not usable: {e}"))?;
    crypto.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto).map_err(|e| e.to_string())?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = cairn_protocol::stream::transport();
    transport.max_concurrent_bidi_streams(STREAMS_MAX.into());
    transport.max_concurrent_uni_streams(0u8.into());
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(std::time::Duration::from_secs(60))
            .map_err(|e| e.to_string())?,
    ));
    config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(config, addr)
        .map_err(|e| format!("listening for QUIC on {addr}: {e}; is another server running there?"))
}

/// Accepts connections until the endpoint is closed.
pub async fn serve(endpoint: quinn::Endpoint, state: AppState) {
    let puts = Arc::new(Semaphore::new(PUTS_MAX));
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        let gate = PutGate::new(PUTS_PER_CONNECTION, &puts);
        tokio::spawn(async move {
            match incoming.await {
                Ok(connection) => serve_connection(connection, state, gate).await,
                Err(err) => tracing::debug!(%err, "QUIC handshake failed"),
            }
        });
    }
}

/// Who a connection speaks for, after a hello.
#[derive(Debug, Clone)]
struct Session {
    user_id: i64,
    device: String,
    expires_at: u64,
}

type SharedSession = Arc<Mutex<Option<Session>>>;

async fn serve_connection(connection: quinn::Connection, state: AppState, gate: PutGate) {
    let remote = connection.remote_address();
    let _connected = state.metrics.client_connected("quic");
    let session: SharedSession = Arc::default();
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(err) => {
                tracing::debug!(%remote, %err, "QUIC connection ended");
                return;
            }
        };
        let state = state.clone();
        let session = Arc::clone(&session);
        let gate = gate.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_stream(&state, &session, &gate, send, recv).await {
                tracing::debug!(%remote, %err, "QUIC stream failed");
            }
        });
    }
}

/// A handler's failure: sent to the client as [`Response::Error`].
struct Refusal(ErrorCode, String);

impl Refusal {
    fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(%err, "QUIC request failed");
        Refusal(
            ErrorCode::Internal,
            "internal error; see the server log".to_owned(),
        )
    }
}

async fn serve_stream(
    state: &AppState,
    session: &SharedSession,
    gate: &PutGate,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), StreamError> {
    // Before a hello, only a hello's worth: an unauthenticated peer cannot make the server
    // hold 4 MiB on each of its streams.
    let said_hello = session
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some();
    let max = if said_hello {
        CONTROL_FRAME_MAX
    } else {
        wire::HELLO_FRAME_MAX
    };
    let request: Request = match read_control_within(&mut recv, max).await {
        Ok(request) => request,
        Err(StreamError::Frame(err)) => {
            let refusal = Response::Error {
                code: ErrorCode::BadRequest,
                message: err.to_string(),
            };
            write_control(&mut send, &refusal).await?;
            let _ = send.finish();
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let outcome = handle(state, session, gate, &request, &mut send, &mut recv).await;
    if let Err(Refusal(code, message)) = outcome {
        write_control(&mut send, &Response::Error { code, message }).await?;
    }
    let _ = send.finish();
    Ok(())
}

async fn handle(
    state: &AppState,
    session: &SharedSession,
    gate: &PutGate,
    request: &Request,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), Refusal> {
    request
        .check()
        .map_err(|m| Refusal(ErrorCode::BadRequest, m))?;
    if let Request::Hello {
        version,
        token,
        device,
    } = request
    {
        return hello(state, session, *version, &token.0, device, send).await;
    }
    let current = session
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let who = current.ok_or_else(|| {
        Refusal(
            ErrorCode::Unauthorized,
            "say hello with an access token first".to_owned(),
        )
    })?;
    let now_s = u64::try_from(now_ms() / 1000).unwrap_or(0);
    if now_s >= who.expires_at {
        return Err(Refusal(
            ErrorCode::Unauthorized,
            "the access token expired; say hello with a fresh one".to_owned(),
        ));
    }
    let folder_name = request.folder().unwrap_or_default();
    let folder = db::folder(&state.db, who.user_id, folder_name)
        .await
        .map_err(|e| Refusal::internal(&e))?
        .ok_or_else(|| Refusal(ErrorCode::NotFound, format!("no folder '{folder_name}'")))?;
    match request {
        Request::Hello { .. } => Ok(()),
        Request::GetHead { .. } => {
            let root: NodeId = folder
                .head_root
                .parse()
                .map_err(|e| Refusal::internal(&e))?;
            reply(
                send,
                Response::Head {
                    seq: u64::try_from(folder.head_seq).unwrap_or(0),
                    root,
                },
            )
            .await
        }
        Request::GetNodes { ids, .. } => {
            let ids: Vec<BlockId> = ids.iter().map(|id| BlockId::from(*id)).collect();
            send_blocks(state, folder.id, &folder.head_root, &ids, true, send).await
        }
        Request::GetBlocks { ids, .. } => {
            send_blocks(state, folder.id, &folder.head_root, ids, false, send).await
        }
        Request::Lacking { ids, .. } => {
            let indices = lacking(state, folder.id, ids).await?;
            reply(send, Response::Lacking { indices }).await
        }
        Request::PutBlocks { count, .. } => {
            let _place = gate.enter().await?;
            let (ids, new) = put_blocks(state, who.user_id, folder.id, *count, recv).await?;
            reply(send, Response::Stored { ids, new }).await
        }
        Request::Commit { base_seq, root, .. } | Request::CommitKeeping { base_seq, root, .. } => {
            let base = i64::try_from(*base_seq)
                .map_err(|_| Refusal(ErrorCode::BadRequest, "base_seq out of range".to_owned()))?;
            let kept = match request {
                Request::CommitKeeping { kept, .. } => kept
                    .iter()
                    .map(|k| {
                        RelPath::parse(&k.path)
                            .map(|path| (path, k.node))
                            .map_err(|e| Refusal(ErrorCode::BadRequest, e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            let outcome = commit_root_keeping(
                state,
                who.user_id,
                folder_name,
                base,
                *root,
                &kept,
                &who.device,
            )
            .await
            .map_err(|e| match e {
                RootError::NotFound => Refusal(ErrorCode::NotFound, e.to_string()),
                RootError::Missing(m) => Refusal(ErrorCode::Missing, m),
                RootError::Invalid(m) => Refusal(ErrorCode::InvalidTree, m),
                RootError::OverQuota => Refusal(ErrorCode::OverQuota, e.to_string()),
                RootError::Internal(m) => Refusal::internal(&m),
            })?;
            let response = match outcome {
                RootOutcome::Committed { seq } => Response::Committed {
                    seq: u64::try_from(seq).unwrap_or(0),
                },
                RootOutcome::Stale { seq, root } => Response::Stale {
                    seq: u64::try_from(seq).unwrap_or(0),
                    root: root.parse().map_err(|e| Refusal::internal(&e))?,
                },
            };
            reply(send, response).await
        }
    }
}

async fn hello(
    state: &AppState,
    session: &SharedSession,
    version: u32,
    token: &str,
    device: &str,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    if version != wire::PROTOCOL_VERSION {
        return Err(Refusal(
            ErrorCode::Version,
            format!(
                "this server speaks protocol version {}, the client {version}; update the older one",
                wire::PROTOCOL_VERSION
            ),
        ));
    }
    let user = authenticate(state, token).map_err(|e| {
        let message = match e {
            crate::api::error::ApiError::Unauthorized(m) => m,
            _ => "invalid access token".to_owned(),
        };
        Refusal(ErrorCode::Unauthorized, message)
    })?;
    let device = if device.is_empty() || device.len() > 128 {
        return Err(Refusal(
            ErrorCode::BadRequest,
            "a device name must have 1 to 128 bytes".to_owned(),
        ));
    } else {
        device.to_owned()
    };
    *session.lock().unwrap_or_else(PoisonError::into_inner) = Some(Session {
        user_id: user.id,
        device,
        expires_at: user.expires_at,
    });
    write_control(
        send,
        &Response::Hello {
            version: wire::PROTOCOL_VERSION,
            limits: Limits {
                control_frame_max: CONTROL_FRAME_MAX,
                raw_frame_max: RAW_FRAME_MAX,
                ids_per_request_max: IDS_PER_REQUEST_MAX,
                streams_max: STREAMS_MAX,
            },
            user: user.name,
        },
    )
    .await
    .map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))
}

/// Sends blocks (or nodes) the folder may read. "Not the folder's" and "not stored" both
/// answer `NotFound`, so a client learns nothing about other users' data.
async fn send_blocks(
    state: &AppState,
    folder_id: i64,
    head_root: &str,
    ids: &[BlockId],
    nodes: bool,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    let hex: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let known = db::objects_state(&state.db, folder_id, &hex)
        .await
        .map_err(|e| Refusal::internal(&e))?;
    // The folder's head root is always readable (a new folder's empty root is never uploaded).
    if let Some((id, _)) = ids
        .iter()
        .zip(&hex)
        .find(|(_, h)| !known.contains_key(*h) && h.as_str() != head_root)
    {
        return Err(Refusal(
            ErrorCode::NotFound,
            format!(
                "no {} {id} in this folder",
                if nodes { "node" } else { "block" }
            ),
        ));
    }
    let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
    let header = if nodes {
        Response::Nodes { count }
    } else {
        Response::Blocks { count }
    };
    // Read and sent a window at a time, the next window read while this one is sent: a
    // request may name IDS_PER_REQUEST_MAX blocks of up to 16 MiB (the same one again and
    // again), so reading it whole first would let one request claim gigabytes. The first
    // window is read before the answer starts, so a missing block there (the usual case: a
    // small request) is an error frame; a later one resets the stream.
    let read_window = |start: usize| {
        let store = Arc::clone(&state.store);
        let ids = ids[start..ids.len().min(start + SEND_WINDOW_BLOCKS)].to_vec();
        tokio::task::spawn_blocking(move || {
            let mut blocks = Vec::new();
            let mut bytes = 0;
            for id in &ids {
                if bytes >= SEND_WINDOW_BYTES {
                    break;
                }
                let block = store.get(id)?;
                bytes += block.len();
                blocks.push(block);
            }
            Ok::<_, cairn_store::Error>(blocks)
        })
    };
    let first = read_window(0).await.map_err(|e| Refusal::internal(&e))?;
    let mut window = match first {
        Ok(window) => window,
        Err(cairn_store::Error::BlockMissing(id)) => {
            return Err(Refusal(ErrorCode::NotFound, format!("block {id} is gone")));
        }
        Err(err) => return Err(Refusal::internal(&err)),
    };
    write_control(send, &header)
        .await
        .map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
    let mut next = window.len();
    loop {
        let ahead = (next < ids.len()).then(|| read_window(next));
        state
            .metrics
            .quic_sent(window.iter().map(|b| b.len() as u64).sum());
        for block in window {
            if write_raw(send, block).await.is_err() {
                // The client went away; nothing to answer.
                return Ok(());
            }
        }
        let Some(ahead) = ahead else {
            return Ok(());
        };
        let read = ahead
            .await
            .map_err(|e| e.to_string())
            .and_then(|read| read.map_err(|e| e.to_string()));
        window = match read {
            Ok(read) => read,
            Err(error) => {
                // The answer has begun: a failure now cannot be an error frame.
                tracing::warn!(%error, "a block could not be read mid-answer; the stream is reset");
                let _ = send.reset(quinn::VarInt::from_u32(STREAM_RESET_READ_FAILED));
                return Ok(());
            }
        };
        next += window.len();
    }
}

/// Blocks and bytes of one window of an answer to `GetBlocks` or `GetNodes` (see
/// `send_blocks`): at most two windows of a stream are in memory at once.
const SEND_WINDOW_BLOCKS: usize = 16;
const SEND_WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// The QUIC error code of a stream reset because a block it was answering with could not be
/// read.
const STREAM_RESET_READ_FAILED: u32 = 1;

async fn lacking(state: &AppState, folder_id: i64, ids: &[BlockId]) -> Result<Vec<u32>, Refusal> {
    let hex: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let known = db::objects_state(&state.db, folder_id, &hex)
        .await
        .map_err(|e| Refusal::internal(&e))?;
    let candidates: Vec<(usize, BlockId)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| known.contains_key(&id.to_string()))
        .map(|(i, id)| (i, *id))
        .collect();
    let store = Arc::clone(&state.store);
    let check: Vec<BlockId> = candidates.iter().map(|(_, id)| *id).collect();
    // "Stored" is promised for the grace period: the blocks are refreshed, so the garbage
    // collector cannot delete one between this answer and the commit relying on it.
    let present = tokio::task::spawn_blocking(move || store.keep_many(&check))
        .await
        .map_err(|e| Refusal::internal(&e))?
        .map_err(|e| Refusal::internal(&e))?;
    let mut have = vec![false; ids.len()];
    let mut refresh = Vec::new();
    for ((i, id), present) in candidates.iter().zip(present) {
        have[*i] = present;
        if present && known.get(&hex[*i]) == Some(&false) {
            refresh.push(id.to_string());
        }
    }
    // An upload the client is told the folder has must not expire before its commit either.
    if !refresh.is_empty() {
        db::refresh_uploaded(&state.db, folder_id, &refresh, now_ms())
            .await
            .map_err(|e| Refusal::internal(&e))?;
    }
    Ok(have
        .iter()
        .enumerate()
        .filter(|(_, have)| !**have)
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect())
}

async fn put_blocks(
    state: &AppState,
    owner_id: i64,
    folder_id: i64,
    count: u32,
    recv: &mut RecvStream,
) -> Result<(Vec<BlockId>, u32), Refusal> {
    let mut ids = Vec::with_capacity(count as usize);
    let mut new = 0u32;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0usize;
    for i in 0..count {
        let block = tokio::time::timeout(PUT_BLOCK_WAIT, read_raw(recv, RAW_FRAME_MAX))
            .await
            .map_err(|_| {
                Refusal(
                    ErrorCode::BadRequest,
                    format!(
                        "block {i} did not arrive within {} s",
                        PUT_BLOCK_WAIT.as_secs()
                    ),
                )
            })?
            .map_err(|e| Refusal(ErrorCode::BadRequest, format!("reading block {i}: {e}")))?;
        batch_bytes += block.len();
        batch.push(block);
        if batch_bytes >= PUT_BATCH_BYTES || i + 1 == count {
            state.metrics.quic_received(batch_bytes as u64);
            crate::commit::admit_upload(state, owner_id, folder_id, &batch)
                .await
                .map_err(|e| Refusal::internal(&e))?
                .map_err(|reason| Refusal(ErrorCode::OverQuota, reason))?;
            let blocks = std::mem::take(&mut batch);
            batch_bytes = 0;
            let sizes: Vec<i64> = blocks
                .iter()
                .map(|b| i64::try_from(b.len()).unwrap_or(i64::MAX))
                .collect();
            let store = Arc::clone(&state.store);
            let puts = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
                store.put_many(&refs)
            })
            .await
            .map_err(|e| Refusal::internal(&e))?
            .map_err(|e| match e {
                cairn_store::Error::BlockTooLarge { .. } => {
                    Refusal(ErrorCode::BadRequest, e.to_string())
                }
                other => Refusal::internal(&other),
            })?;
            let fresh = puts.iter().filter(|p| p.new).count();
            state
                .metrics
                .blocks_received(puts.len() as u64, fresh as u64);
            new += u32::try_from(fresh).unwrap_or(0);
            // Recorded (and charged) batch by batch: a stream broken off after a batch leaves
            // nothing stored that the owner is not charged for.
            let objects: Vec<(String, i64)> = puts
                .iter()
                .zip(sizes)
                .map(|(p, size)| (p.id.to_string(), size))
                .collect();
            let anew: Vec<&str> = puts
                .iter()
                .zip(&objects)
                .filter(|(p, _)| p.new)
                .map(|(_, (id, _))| id.as_str())
                .collect();
            db::add_uploaded(&state.db, owner_id, folder_id, &objects, &anew, now_ms())
                .await
                .map_err(|e| Refusal::internal(&e))?;
            ids.extend(puts.iter().map(|p| p.id));
        }
    }
    Ok((ids, new))
}

async fn reply(send: &mut SendStream, response: Response) -> Result<(), Refusal> {
    write_control(send, &response)
        .await
        .map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn waits(gate: &PutGate) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), gate.enter())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn put_handlers_wait_for_a_place_of_their_connection_and_of_the_server() {
        let server = Arc::new(Semaphore::new(3));
        let a = PutGate::new(2, &server);
        let b = PutGate::new(2, &server);
        let first = a.enter().await.ok().expect("a place");
        let _second = a.enter().await.ok().expect("a place");
        // A's own places are taken: a third waits, though the server has one left.
        assert!(waits(&a).await);
        let _b1 = b.enter().await.ok().expect("a place");
        // The server's are taken: B waits, though its connection has one left.
        assert!(waits(&b).await);
        drop(first);
        let _b2 = tokio::time::timeout(std::time::Duration::from_secs(5), b.enter())
            .await
            .expect("a freed place is taken")
            .ok()
            .expect("a place");
        assert_eq!(server.available_permits(), 0);
        assert_eq!(a.connection.available_permits(), 1);
    }
}
