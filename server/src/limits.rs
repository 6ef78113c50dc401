//! Every bound the server enforces, with its reasoning. Docs name these constants.

use std::time::Duration;

/// Largest JSON request body: 64 KiB. Auth and heartbeat bodies are a few hundred bytes.
pub const JSON_BODY_SIZE_MAX: usize = 64 * 1024;

/// Largest single upload by default: 16 GiB (configurable with `--upload-size-max`).
pub const UPLOAD_SIZE_MAX_DEFAULT: u64 = 16 * 1024 * 1024 * 1024;

/// Default storage quota of a new user: 10 GiB (configurable with `--quota`).
pub const QUOTA_DEFAULT: u64 = 10 * 1024 * 1024 * 1024;

/// Chunks of an upload in flight between the network and the chunker: 16 (~ 1 MiB), so a slow
/// disk slows the upload down instead of buffering it in memory.
pub const UPLOAD_CHANNEL_LEN_MAX: usize = 16;

/// Blocks read ahead while streaming a download: 4 (~1 MiB at the default block size).
pub const DOWNLOAD_READ_AHEAD: usize = 4;

/// Attempts at a commit whose compare-and-swap on the head lost to a concurrent commit: 16.
/// Each retry re-reads the head, so 16 only fails under a commit storm on one folder.
pub const COMMIT_ATTEMPTS_MAX: u32 = 16;

/// Files per page of `GET /files/`: default 1,000, at most 10,000.
pub const LIST_PAGE_LEN_DEFAULT: u32 = 1000;
/// See [`LIST_PAGE_LEN_DEFAULT`].
pub const LIST_PAGE_LEN_MAX: u32 = 10_000;

/// Changes per page of `GET /sync/changes`: 10,000.
pub const CHANGES_PAGE_LEN_MAX: u32 = 10_000;

/// Folders one user may have: 1,000.
pub const FOLDERS_PER_USER_MAX: usize = 1000;

/// Commits per page of `GET /folders/{name}/commits`: default 100, at most 1,000.
pub const COMMITS_PAGE_LEN_DEFAULT: u32 = 100;
/// See [`COMMITS_PAGE_LEN_DEFAULT`].
pub const COMMITS_PAGE_LEN_MAX: u32 = 1000;

/// Access token lifetime: 15 minutes (OWASP: minutes, not hours).
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Refresh token lifetime: 30 days, each use rotates it.
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Login and refresh attempts per IP address per minute: 20.
pub const AUTH_ATTEMPTS_PER_IP_PER_MINUTE: u32 = 20;

/// Login attempts per username per minute from one IP address: 5 (slows password guessing to
/// 7,200 a day from each address). Counted per address, so one stranger cannot lock the user
/// out by failing on purpose.
pub const AUTH_ATTEMPTS_PER_USER_PER_MINUTE: u32 = 5;

/// Login attempts per username per minute from all addresses together: 60 (a guess a second
/// however many addresses guess; a lockout then needs many addresses).
pub const AUTH_ATTEMPTS_PER_USER_ALL_IPS_PER_MINUTE: u32 = 60;

/// Keys the in-process rate limiter tracks before it evicts the oldest: 100,000.
pub const RATE_LIMIT_KEYS_MAX: usize = 100_000;

/// Events queued for one WebSocket client before it is dropped as too slow: 256.
pub const WS_QUEUE_LEN_MAX: usize = 256;

/// Largest message a WebSocket client may send: 4 KiB (clients only send pings and acks).
pub const WS_MESSAGE_SIZE_MAX: usize = 4 * 1024;

/// Events buffered by the in-process bus for all subscribers: 1,024.
pub const BUS_CAPACITY: usize = 1024;

/// Interval of WebSocket heartbeat events: 20 s, under common 30-60 s proxy idle timeouts.
pub const WS_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);

/// Longest client id: 64 characters.
pub const CLIENT_ID_LEN_MAX: usize = 64;

/// Time a graceful shutdown waits for requests in flight: 10 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Interval between rounds of background jobs (pruning, then garbage collection): 1 hour.
pub const JOB_INTERVAL: Duration = Duration::from_secs(3600);

/// How often each instance checks whether a periodic job is due: 1 minute. Only the instance
/// that moves the job's schedule forward submits it.
pub const JOB_TICK: Duration = Duration::from_secs(60);

/// Audit-log rows per export file: 10,000 (about 1.5 MB of JSON lines).
pub const AUDIT_EXPORT_BATCH: i64 = 10_000;

/// Audit rows younger than this wait for the next export: 5 s, so a row whose insert committed
/// late with a lower id is never skipped.
pub const AUDIT_EXPORT_LAG: Duration = Duration::from_secs(5);

/// Attempts of a RabbitMQ job before it goes to the dead-letter queue: 5 (a delivery cut off by
/// a dead consumer counts as one).
pub const JOB_ATTEMPTS_MAX: u32 = 5;

/// Wait before a failed RabbitMQ job runs again: 30 s.
pub const JOB_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Longest wait between attempts to reach RabbitMQ again.
pub const RABBITMQ_RETRY_MAX: Duration = Duration::from_secs(5);

/// How long start-up waits for RabbitMQ to answer.
pub const RABBITMQ_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Unreferenced blocks younger than this survive garbage collection: 24 hours, longer than
/// the slowest plausible upload (16 GiB at 1 MB/s is 4.5 hours) between storing and committing.
pub const GC_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How long a garbage collection holds the deployment's lease (released when it ends; a
/// collector that died holds it this long): no other collection starts meanwhile.
pub const GC_LEASE: Duration = Duration::from_secs(6 * 3600);

/// Default version retention: 30 days, as Dropbox Basic keeps versions.
pub const VERSION_RETENTION_DEFAULT_DAYS: u64 = 30;

/// Events waiting to be published to Redis at most: an outage that outlasts this many events
/// drops the newer ones for other instances (their clients resync from `/sync/changes`).
pub const REDIS_OUTBOX_LEN_MAX: usize = 4096;

/// Longest wait between attempts to reach Redis again.
pub const REDIS_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How long start-up waits for Redis to answer and the event subscription to be live.
pub const REDIS_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
