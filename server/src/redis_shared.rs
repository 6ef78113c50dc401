//! What server instances share through Redis (`REDIS_URL`): the event fan-out ([`RedisBus`]) and
//! the login/refresh rate-limit counters ([`RedisRateLimiter`]).
//!
//! Both keep working while Redis is away, with what one instance can do alone: events still
//! reach this instance's clients (and queue, bounded, for the others until Redis is back), and
//! limits fall back to this instance's own counters. Reconnection is automatic (the redis
//! crate's `ConnectionManager` for commands; a loop with backoff for the subscription), and
//! `/health` reports the link.
//!
//! Events travel as JSON on one channel, tagged with the publishing instance so it does not
//! deliver its own events twice. Pub/sub is lossy by nature: an event published while an
//! instance is cut off from Redis does not reach that instance's clients; they catch up from
//! `/sync/changes` (every client resyncs on reconnect, and the sync client polls heads). So that
//! they do so at once, a re-established subscription counts a gap ([`EventBus::gaps`]) and every
//! WebSocket of this instance is closed with "events were lost; resync".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_protocol::api::Event;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::events::{EventBus, UserEvent};
use crate::limits::{BUS_CAPACITY, REDIS_OUTBOX_LEN_MAX, REDIS_RETRY_MAX};
use crate::ratelimit::{LocalRateLimiter, RateLimiter};

/// The pub/sub channel every instance of a deployment publishes to and listens on.
fn events_channel(namespace: &str) -> String {
    format!("{namespace}:events")
}

/// Opens a client for `url` and checks that Redis answers.
///
/// # Errors
/// A one-line reason when the URL is malformed or Redis does not answer.
pub async fn connect(url: &str) -> Result<(redis::Client, ConnectionManager), String> {
    let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL '{url}': {e}"))?;
    let manager = ConnectionManager::new(client.clone())
        .await
        .map_err(|e| format!("cannot reach Redis at {url}: {e}; is redis-server running?"))?;
    Ok((client, manager))
}

#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The publishing instance.
    instance: u64,
    user_id: i64,
    event: Event,
}

/// Events for clients of this instance go out at once on a local broadcast; the same events go
/// to Redis for the other instances, whose events come back in on the subscription.
pub struct RedisBus {
    local: broadcast::Sender<UserEvent>,
    outbox: mpsc::Sender<UserEvent>,
    subscribed: Arc<AtomicBool>,
    gaps: watch::Receiver<u64>,
}

impl RedisBus {
    /// Starts the publisher and subscriber tasks on the current runtime.
    pub fn start(client: redis::Client, manager: ConnectionManager, namespace: &str) -> RedisBus {
        let (local, _) = broadcast::channel(BUS_CAPACITY);
        let (outbox, pending) = mpsc::channel(REDIS_OUTBOX_LEN_MAX);
        let instance = instance_id();
        let subscribed = Arc::new(AtomicBool::new(false));
        let (gap, gaps) = watch::channel(0);
        let channel = events_channel(namespace);
        tokio::spawn(publish_loop(manager, channel.clone(), instance, pending));
        tokio::spawn(subscribe_loop(
            client,
            channel,
            instance,
            local.clone(),
            Arc::clone(&subscribed),
            gap,
        ));
        RedisBus {
            local,
            outbox,
            subscribed,
            gaps,
        }
    }

    /// Waits until the subscription is live (at most `timeout`); true when it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.subscribed.load(Ordering::Acquire) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl EventBus for RedisBus {
    fn publish(&self, event: UserEvent) {
        let _ = self.local.send(event.clone());
        if self.outbox.try_send(event).is_err() {
            tracing::warn!("Redis outbox full; an event reaches only this instance's clients");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<UserEvent> {
        self.local.subscribe()
    }

    fn gaps(&self) -> Option<watch::Receiver<u64>> {
        Some(self.gaps.clone())
    }

    fn health(&self) -> Option<String> {
        Some(if self.subscribed.load(Ordering::Acquire) {
            "ok".to_owned()
        } else {
            "error: not subscribed to Redis (reconnecting)".to_owned()
        })
    }
}

/// Publishes queued events in order; an event that cannot be published is retried with backoff
/// (Redis restarting), so events after an outage are not lost while the outbox has room.
async fn publish_loop(
    mut manager: ConnectionManager,
    channel: String,
    instance: u64,
    mut pending: mpsc::Receiver<UserEvent>,
) {
    while let Some(event) = pending.recv().await {
        let payload = match serde_json::to_string(&Wire {
            instance,
            user_id: event.user_id,
            event: event.event,
        }) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(error = %err, "an event does not serialize");
                continue;
            }
        };
        let mut delay = Duration::from_millis(50);
        loop {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload)
                .query_async(&mut manager)
                .await;
            match sent {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "publishing to Redis failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(REDIS_RETRY_MAX);
                }
            }
        }
    }
}

/// Keeps a subscription to the events channel alive and forwards other instances' events. Every
/// subscription after the first counts a gap in `gap`: what other instances published in
/// between never arrives.
async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    instance: u64,
    local: broadcast::Sender<UserEvent>,
    subscribed: Arc<AtomicBool>,
    gap: watch::Sender<u64>,
) {
    let mut delay = Duration::from_millis(50);
    let mut first = true;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    subscribed.store(true, Ordering::Release);
                    if !first {
                        tracing::info!("subscribed to Redis again; clients are told to resync");
                        gap.send_modify(|gaps| *gaps += 1);
                    }
                    first = false;
                    delay = Duration::from_millis(50);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Wire>(&payload) {
                            Ok(wire) if wire.instance != instance => {
                                let _ = local.send(UserEvent {
                                    user_id: wire.user_id,
                                    event: wire.event,
                                });
                            }
                            Ok(_) => {}
                            Err(err) => tracing::warn!(error = %err, "ignoring a malformed event"),
                        }
                    }
                    subscribed.store(false, Ordering::Release);
                    tracing::warn!("lost the Redis subscription; reconnecting");
                }
                Err(err) => tracing::warn!(error = %err, "subscribing to Redis failed"),
            },
            Err(err) => tracing::warn!(error = %err, "connecting to Redis failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(REDIS_RETRY_MAX);
    }
}

/// A random id for this instance's events (the process id and clock if the OS has no entropy).
fn instance_id() -> u64 {
    use rand::TryRngCore as _;
    rand::rngs::OsRng.try_next_u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (u64::from(std::process::id()) << 32) | u64::from(nanos)
    })
}

/// Fixed-window counters in Redis, so every instance counts the same hits. The window starts
/// at a key's first hit and the key expires with it.
pub struct RedisRateLimiter {
    manager: ConnectionManager,
    key_prefix: String,
    script: redis::Script,
    /// Used while Redis cannot be reached: limits per instance beat no limits.
    fallback: LocalRateLimiter,
}

impl RedisRateLimiter {
    /// A limiter on `manager`'s connection, its keys under `namespace`.
    pub fn new(manager: ConnectionManager, namespace: &str) -> Self {
        RedisRateLimiter {
            manager,
            key_prefix: format!("{namespace}:limit:"),
            // Count the hit; start the window on the first one; answer (hits, ms left).
            script: redis::Script::new(
                r"local hits = redis.call('INCR', KEYS[1])
                  if hits == 1 or redis.call('PTTL', KEYS[1]) < 0 then
                    redis.call('PEXPIRE', KEYS[1], ARGV[1])
                  end
                  return {hits, redis.call('PTTL', KEYS[1])}",
            ),
            fallback: LocalRateLimiter::default(),
        }
    }
}

impl RateLimiter for RedisRateLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window: Duration,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(async move {
            let mut manager = self.manager.clone();
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let counted: redis::RedisResult<(u64, i64)> = self
                .script
                .key(format!("{}{key}", self.key_prefix))
                .arg(window_ms)
                .invoke_async(&mut manager)
                .await;
            match counted {
                Ok((hits, left_ms)) if hits > u64::from(limit) => Err(Duration::from_millis(
                    u64::try_from(left_ms).unwrap_or(1).max(1),
                )),
                Ok(_) => Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, "Redis rate limit unavailable; counting locally");
                    self.fallback.check(key, limit, window, now_ms).await
                }
            }
        })
    }
}
