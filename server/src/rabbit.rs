//! Background jobs on RabbitMQ (`RABBITMQ_URL`, lapin), shared by every server instance.
//!
//! Three durable queues per deployment prefix `P`:
//! - `P.jobs`: jobs to run. Messages are persistent and published with confirms (a submit
//!   returns only once the broker has the job on disk). Each instance consumes with prefetch 1
//!   and acks only after the job finished, so a job whose consumer dies (process killed,
//!   connection cut) is redelivered to another instance.
//! - `P.jobs.retry`: a failed job waits here ([`limits::JOB_RETRY_DELAY`], per-message TTL)
//!   and then dead-letters back into `P.jobs`.
//! - `P.jobs.dead`: jobs that failed [`limits::JOB_ATTEMPTS_MAX`] times, and messages that are
//!   not jobs, dead-lettered from `P.jobs` for an operator to inspect.
//!
//! The attempt count travels in the `x-cairn-attempt` header. A redelivered message (its
//! consumer died mid-job) counts as a failed attempt and is re-published with the next count
//! before it runs again, so a job that kills its consumer cannot loop forever. Jobs are
//! idempotent ([`crate::jobs`]), so running one again after a crash is harmless.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::jobs::{self, Job};
use crate::limits;

/// The header carrying a job's attempt number (1 for the first run).
const ATTEMPT_HEADER: &str = "x-cairn-attempt";

/// Tunables of the queue; [`RabbitOptions::default`] is what a deployment runs.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// Prefix of the queue names (so deployments can share a broker).
    pub prefix: String,
    /// Runs of a job before it is dead-lettered.
    pub attempts_max: u32,
    /// Wait before a failed job runs again.
    pub retry_delay: Duration,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            prefix: "cairn".to_owned(),
            attempts_max: limits::JOB_ATTEMPTS_MAX,
            retry_delay: limits::JOB_RETRY_DELAY,
        }
    }
}

/// The queue names of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    /// Jobs to run.
    pub jobs: String,
    /// Failed jobs waiting to run again.
    pub retry: String,
    /// Jobs given up on.
    pub dead: String,
}

impl QueueNames {
    /// `PREFIX.jobs`, `PREFIX.jobs.retry`, `PREFIX.jobs.dead`.
    pub fn new(prefix: &str) -> QueueNames {
        QueueNames {
            jobs: format!("{prefix}.jobs"),
            retry: format!("{prefix}.jobs.retry"),
            dead: format!("{prefix}.jobs.dead"),
        }
    }
}

/// A connection to RabbitMQ, re-opened on demand after the broker or the network failed.
#[derive(Debug, Clone)]
pub struct RabbitQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    url: String,
    options: RabbitOptions,
    names: QueueNames,
    link: tokio::sync::Mutex<Option<Link>>,
    status: std::sync::Mutex<String>,
}

/// An open connection with its publishing channel (in confirm mode).
#[derive(Debug)]
struct Link {
    connection: Connection,
    publisher: Channel,
}

impl RabbitQueue {
    /// Connects and declares the queues.
    ///
    /// # Errors
    /// RabbitMQ cannot be reached within [`limits::RABBITMQ_CONNECT_TIMEOUT`], or refuses the
    /// declarations (e.g. a queue of that name exists with other arguments).
    pub async fn connect(url: &str, options: RabbitOptions) -> Result<RabbitQueue, String> {
        let queue = RabbitQueue {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                names: QueueNames::new(&options.prefix),
                options,
                link: tokio::sync::Mutex::new(None),
                status: std::sync::Mutex::new("connecting".to_owned()),
            }),
        };
        queue.link().await?;
        Ok(queue)
    }

    /// The queue names.
    pub fn names(&self) -> &QueueNames {
        &self.shared.names
    }

    /// Publishes a job (attempt 1) and waits for the broker's confirm.
    ///
    /// # Errors
    /// RabbitMQ is unreachable or did not confirm the message.
    pub async fn submit(&self, job: &Job) -> Result<(), String> {
        let body = serde_json::to_vec(job).map_err(|e| e.to_string())?;
        let jobs = self.shared.names.jobs.clone();
        self.publish(&jobs, &body, 1, None).await
    }

    /// Jobs ready in the main queue; `None` while RabbitMQ is unreachable.
    pub async fn depth(&self) -> Option<u64> {
        let channel = self.link().await.ok()?;
        let queue = channel
            .queue_declare(
                self.shared.names.jobs.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        Some(u64::from(queue.message_count()))
    }

    /// `ok` or what is wrong with the link.
    pub fn health(&self) -> String {
        self.shared.status.lock().expect("status lock").clone()
    }

    fn set_status(&self, status: impl Into<String>) {
        *self.shared.status.lock().expect("status lock") = status.into();
    }

    /// Starts this instance's consumer; after `shutdown` it finishes its current job and stops.
    pub fn start_consumer(
        &self,
        state: AppState,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let queue = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match queue.consume(&state, &shutdown).await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, "RabbitMQ consumer stopped; reconnecting");
                        queue.set_status(format!("error: {err}"));
                        queue.forget_link().await;
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(limits::RABBITMQ_RETRY_MAX);
            }
        })
    }

    /// The publishing channel, opening the connection (and declaring the queues) if it is not
    /// open.
    async fn link(&self) -> Result<Channel, String> {
        let mut link = self.shared.link.lock().await;
        if let Some(open) = link.as_ref()
            && open.connection.status().connected()
            && open.publisher.status().connected()
        {
            return Ok(open.publisher.clone());
        }
        *link = None;
        let opened = tokio::time::timeout(limits::RABBITMQ_CONNECT_TIMEOUT, self.open())
            .await
            .map_err(|_| {
                format!(
                    "RabbitMQ at {} did not answer within {:?}",
                    redact(&self.shared.url),
                    limits::RABBITMQ_CONNECT_TIMEOUT
                )
            })
            .and_then(|r| r);
        match opened {
            Ok(opened) => {
                let publisher = opened.publisher.clone();
                *link = Some(opened);
                self.set_status("ok");
                Ok(publisher)
            }
            Err(err) => {
                self.set_status(format!("error: {err}"));
                Err(err)
            }
        }
    }

    async fn forget_link(&self) {
        if let Some(old) = self.shared.link.lock().await.take() {
            let _ = old.connection.close(320, "reconnecting".into()).await;
        }
    }

    async fn open(&self) -> Result<Link, String> {
        let url = redact(&self.shared.url);
        let fail = |what: &str, e: lapin::Error| format!("RabbitMQ at {url}: {what}: {e}");
        let connection = Connection::connect(
            &self.shared.url,
            ConnectionProperties::default().with_connection_name("cairn-server".into()),
        )
        .await
        .map_err(|e| fail("connecting", e))?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| fail("opening a channel", e))?;
        let names = &self.shared.names;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut dead_letter_to_dead = FieldTable::default();
        dead_letter_to_dead.insert("x-dead-letter-exchange".into(), string(""));
        dead_letter_to_dead.insert("x-dead-letter-routing-key".into(), string(&names.dead));
        let mut dead_letter_to_jobs = FieldTable::default();
        dead_letter_to_jobs.insert("x-dead-letter-exchange".into(), string(""));
        dead_letter_to_jobs.insert("x-dead-letter-routing-key".into(), string(&names.jobs));
        for (name, arguments) in [
            (&names.dead, FieldTable::default()),
            (&names.jobs, dead_letter_to_dead),
            (&names.retry, dead_letter_to_jobs),
        ] {
            publisher
                .queue_declare(name.as_str().into(), durable, arguments)
                .await
                .map_err(|e| fail(&format!("declaring queue {name}"), e))?;
        }
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| fail("enabling publisher confirms", e))?;
        Ok(Link {
            connection,
            publisher,
        })
    }

    /// Publishes persistently to `queue` and waits for the confirm.
    async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        attempt: u32,
        expiration: Option<Duration>,
    ) -> Result<(), String> {
        let channel = self.link().await?;
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(delay) = expiration {
            properties = properties.with_expiration(delay.as_millis().to_string().into());
        }
        let confirm = channel
            .basic_publish(
                ShortString::from(""),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(|e| format!("publishing to {queue}: {e}"))?
            .await
            .map_err(|e| format!("waiting for RabbitMQ to confirm a job in {queue}: {e}"))?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(format!("RabbitMQ refused a job for {queue}"))
        }
    }

    /// Consumes until `shutdown` (`Ok`) or until the channel fails (`Err`).
    async fn consume(&self, state: &AppState, shutdown: &CancellationToken) -> Result<(), String> {
        self.link().await?;
        let channel = {
            let link = self.shared.link.lock().await;
            let open = link.as_ref().ok_or("RabbitMQ connection closed")?;
            open.connection
                .create_channel()
                .await
                .map_err(|e| format!("opening the consumer channel: {e}"))?
        };
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .map_err(|e| format!("setting the prefetch: {e}"))?;
        let mut consumer = channel
            .basic_consume(
                self.shared.names.jobs.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consuming {}: {e}", self.shared.names.jobs))?;
        self.set_status("ok");
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = channel.close(200, "server shutting down".into()).await;
                    return Ok(());
                }
                delivery = consumer.next() => delivery,
            };
            let delivery = delivery
                .ok_or("RabbitMQ cancelled the consumer")?
                .map_err(|e| format!("receiving a job: {e}"))?;
            self.handle(state, delivery).await?;
        }
    }

    /// Runs one delivery and settles it: ack on success, else retry later or dead-letter.
    async fn handle(
        &self,
        state: &AppState,
        delivery: lapin::message::Delivery,
    ) -> Result<(), String> {
        let attempt = attempt_of(&delivery.properties);
        let job: Job = match serde_json::from_slice(&delivery.data) {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(error = %err, "a message in the job queue is not a job; dead-lettering it");
                return reject(&delivery).await;
            }
        };
        let failure = if delivery.redelivered {
            // Its consumer died mid-job (or lost its channel): that run counts as an attempt.
            Some((
                "redelivered after its consumer stopped".to_owned(),
                Duration::ZERO,
            ))
        } else {
            match jobs::run(state, job).await {
                Ok(summary) => {
                    tracing::info!(?job, attempt, %summary, "job done");
                    None
                }
                Err(err) => Some((err, self.shared.options.retry_delay)),
            }
        };
        let Some((reason, delay)) = failure else {
            return settled(
                delivery.ack(BasicAckOptions::default()).await,
                "acknowledging a job",
            );
        };
        if attempt >= self.shared.options.attempts_max {
            tracing::error!(?job, attempt, %reason, "job failed too often; moved to the dead-letter queue");
            return reject(&delivery).await;
        }
        tracing::warn!(?job, attempt, %reason, ?delay, "job failed; it runs again");
        let names = &self.shared.names;
        let (queue, expiration) = if delay.is_zero() {
            (names.jobs.as_str(), None)
        } else {
            (names.retry.as_str(), Some(delay))
        };
        self.publish(queue, &delivery.data, attempt + 1, expiration)
            .await?;
        settled(
            delivery.ack(BasicAckOptions::default()).await,
            "acknowledging a job",
        )
    }
}

async fn reject(delivery: &lapin::message::Delivery) -> Result<(), String> {
    settled(
        delivery.reject(BasicRejectOptions { requeue: false }).await,
        "dead-lettering a job",
    )
}

/// An ack or reject's outcome: `false` means the channel is gone (the broker redelivers the
/// message), which the consumer treats as a lost connection.
fn settled(outcome: lapin::Result<bool>, what: &str) -> Result<(), String> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{what}: the channel is closed")),
        Err(err) => Err(format!("{what}: {err}")),
    }
}

/// The attempt number in a message's headers (1 when absent).
pub fn attempt_of(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPT_HEADER))
        .and_then(|value| match value {
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(1)
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
    }

    #[test]
    fn attempt_defaults_to_one() {
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(4));
        assert_eq!(
            attempt_of(&BasicProperties::default().with_headers(headers)),
            4
        );
    }

    #[test]
    fn queue_names_follow_the_prefix() {
        let names = QueueNames::new("acme");
        assert_eq!(names.jobs, "acme.jobs");
        assert_eq!(names.retry, "acme.jobs.retry");
        assert_eq!(names.dead, "acme.jobs.dead");
    }
}
