//! The server's push channel: its WebSocket `/ws/sync/{client_id}`, reduced to "the head of
//! this folder is now at seq N". A daemon passes at once when a head it has not synced is
//! announced, instead of finding it on its next poll.
//!
//! The socket is kept open by a background task: it authenticates with the session's access
//! token, reconnects with backoff (1 s doubling to 30 s) when the server goes away or closes it
//! at the token's expiry, and counts the connection as dead when nothing (not even the
//! server's heartbeat) arrives for [`SILENCE_MAX`]. While it is down the daemon keeps polling,
//! and it checks the head once more after every (re)connection ([`Push::opens`]): the server
//! announces only what is committed after the socket opened, and closes the socket whenever
//! announcements may have been lost (a client too slow, a server cut off from the others).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cairn_protocol::api::Event;
use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::rest::Session;

/// Without a message for this long (the server's heartbeat comes every 20 s), the socket is
/// taken for dead and opened again.
pub const SILENCE_MAX: Duration = Duration::from_secs(65);

/// The longest wait between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A running push channel for one folder; dropped, it closes.
pub struct Push {
    seq: watch::Receiver<u64>,
    up: Arc<AtomicBool>,
    opens: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Push {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The WebSocket URL of the push channel on `server` (an `http(s)://` base URL).
///
/// # Errors
/// The server URL is not HTTP(S).
pub fn socket_url(server: &str, client_id: &str) -> Result<String, String> {
    let (scheme, rest) = server
        .split_once("://")
        .ok_or_else(|| format!("'{server}' has no scheme"))?;
    let scheme = match scheme {
        "http" => "ws",
        "https" => "wss",
        other => return Err(format!("'{other}' is not http or https")),
    };
    Ok(format!(
        "{scheme}://{}/ws/sync/{client_id}",
        rest.trim_end_matches('/')
    ))
}

/// A client id the server accepts (1 to 64 of letters, digits, `.`, `_`, `-`) made from a
/// device name.
pub fn client_id(device: &str) -> String {
    let mut id: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if id.is_empty() {
        id.push_str("device");
    }
    id.push_str("-sync");
    id
}

/// The head seq an event announces for `folder`, if it is a head change of that folder.
pub fn head_of(text: &str, folder: &str) -> Option<u64> {
    match serde_json::from_str::<Event>(text).ok()? {
        Event::HeadChanged { folder: f, seq, .. } if f == folder => Some(seq),
        _ => None,
    }
}

impl Push {
    /// Starts listening for head changes of server folder `folder`.
    pub fn start(session: Arc<Session>, folder: String, client_id: String) -> Push {
        let (tx, seq) = watch::channel(0);
        let up = Arc::new(AtomicBool::new(false));
        let opens = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(listen(
            session,
            folder,
            client_id,
            tx,
            Arc::clone(&up),
            Arc::clone(&opens),
        ));
        Push {
            seq,
            up,
            opens,
            task,
        }
    }

    /// Whether the socket is open now (so head changes arrive without polling).
    pub fn connected(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// How many times the socket opened so far. A head committed before an opening is not
    /// announced on it: after each, the head is checked once.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::SeqCst)
    }

    /// Resolves when a head newer than `synced` is announced (at once if one was already).
    /// Cancel-safe.
    pub async fn moved_past(&mut self, synced: Option<u64>) {
        loop {
            let announced = *self.seq.borrow_and_update();
            if synced.is_none_or(|s| announced > s) && announced > 0 {
                return;
            }
            if self.seq.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn listen(
    session: Arc<Session>,
    folder: String,
    client_id: String,
    tx: watch::Sender<u64>,
    up: Arc<AtomicBool>,
    opens: Arc<AtomicU64>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match session_socket(&session, &client_id).await {
            Ok(mut socket) => {
                opens.fetch_add(1, Ordering::SeqCst);
                up.store(true, Ordering::SeqCst);
                backoff = Duration::from_secs(1);
                tracing::debug!("push channel open");
                while let Ok(Some(Ok(message))) =
                    tokio::time::timeout(SILENCE_MAX, socket.next()).await
                {
                    match message {
                        Message::Text(text) => {
                            if let Some(seq) = head_of(text.as_str(), &folder) {
                                tx.send_if_modified(|at| {
                                    let newer = seq > *at;
                                    if newer {
                                        *at = seq;
                                    }
                                    newer
                                });
                            }
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                up.store(false, Ordering::SeqCst);
                tracing::debug!("push channel closed");
            }
            Err(Refusal::Unauthorized) => session.invalidate().await,
            Err(Refusal::Other(reason)) => tracing::debug!(%reason, "push channel unavailable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Refusal {
    Unauthorized,
    Other(String),
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session_socket(session: &Session, client_id: &str) -> Result<Socket, Refusal> {
    let token = session
        .access_token()
        .await
        .map_err(|e| Refusal::Other(e.to_string()))?;
    let url = socket_url(session.rest().server(), client_id).map_err(Refusal::Other)?;
    let mut request = url
        .into_client_request()
        .map_err(|e| Refusal::Other(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", token.0))
        .map_err(|e| Refusal::Other(e.to_string()))?;
    request.headers_mut().insert("authorization", bearer);
    let tls = crate::rest::tls_config(&[b"http/1.1"]).map_err(Refusal::Other)?;
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls,
        ))),
    );
    match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Err(_) => Err(Refusal::Other("no answer within 15 s".into())),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
            if response.status() == 401 =>
        {
            Err(Refusal::Unauthorized)
        }
        Ok(Err(e)) => Err(Refusal::Other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_url_follows_the_server_url() {
        assert_eq!(
            socket_url("http://127.0.0.1:8080", "laptop-sync").as_deref(),
            Ok("ws://127.0.0.1:8080/ws/sync/laptop-sync")
        );
        assert_eq!(
            socket_url("https://cairn.example.org/base/", "x").as_deref(),
            Ok("wss://cairn.example.org/base/ws/sync/x")
        );
        assert!(socket_url("ftp://host", "x").is_err());
        assert!(socket_url("host:80", "x").is_err());
    }

    #[test]
    fn client_ids_are_what_the_server_accepts() {
        assert_eq!(client_id("Ann's laptop"), "Ann-s-laptop-sync");
        assert_eq!(client_id(""), "device-sync");
        let long = client_id(&"é".repeat(100));
        assert!(long.len() <= 64, "{long}");
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        );
    }

    #[test]
    fn only_head_changes_of_the_folder_count() {
        let head = r#"{"type":"head_changed","folder":"default","seq":7,"root":"ab"}"#;
        assert_eq!(head_of(head, "default"), Some(7));
        assert_eq!(head_of(head, "photos"), None);
        assert_eq!(
            head_of(r#"{"type":"heartbeat","server_time":"x"}"#, "default"),
            None
        );
        assert_eq!(head_of("not json", "default"), None);
    }
}
