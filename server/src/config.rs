//! The server's validated configuration, built once by `main` from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the server needs to run; no code below `main` reads the environment.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory (SQLite database, block store, generated secrets).
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Where blocks are stored.
    pub storage_path: PathBuf,
    /// HS256 key for access tokens.
    pub jwt_secret: Vec<u8>,
    /// Storage quota of new users, in bytes.
    pub quota_default: u64,
    /// Largest single upload, in bytes.
    pub upload_size_max: u64,
    /// How long overwritten and deleted versions stay restorable; `None` keeps them forever.
    pub version_retention: Option<std::time::Duration>,
    /// QUIC sync endpoint address; `None` turns the endpoint off.
    pub quic_listen: Option<SocketAddr>,
    /// Certificate chain and key (PEM files) for QUIC; `None` uses a self-signed pair generated
    /// into the data dir.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Services shared with other instances; all `None` is the embedded single-instance setup.
    pub services: Services,
}

/// The external services a deployment shares between server instances.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Redis: event fan-out between instances and shared rate-limit counters.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel (so deployments can share a Redis); `None` is
    /// `cairn`.
    pub redis_namespace: Option<String>,
    /// RabbitMQ: background jobs.
    pub rabbitmq_url: Option<String>,
    /// Prefix of the RabbitMQ queue names; `None` is `cairn`.
    pub rabbitmq_prefix: Option<String>,
    /// Wait before a failed RabbitMQ job runs again; `None` is [`crate::limits::JOB_RETRY_DELAY`].
    pub job_retry_delay: Option<std::time::Duration>,
    /// S3-compatible block storage shared by instances (`http://host:port/bucket[/prefix]` or
    /// `s3://bucket[/prefix]`); `None` keeps blocks in the local `storage_path`.
    pub s3_url: Option<String>,
    /// S3 access key id and secret; `None` reads the standard `AWS_*` variables.
    pub s3_credentials: Option<(String, String)>,
    /// How long the bucket trash's purge waits after each wave of nodes; `None` is
    /// [`crate::jobs::TRASH_SETTLE`].
    pub trash_settle: Option<std::time::Duration>,
}
