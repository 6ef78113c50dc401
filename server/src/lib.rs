//! `cairn-server`: the server every Cairn client talks to.
//!
//! [`Server::start`] opens the metadata database (SQLite by default, PostgreSQL by URL), runs
//! migrations, opens the block store and serves the REST + WebSocket API of
//! `../shared/design.md` and the QUIC sync endpoint ([`quic`]) until the shutdown future resolves. Decisions live in pure functions (`auth::rotate`,
//! `ratelimit::Window::hit`, `files::parse_range`); handlers gather inputs and carry them out.

pub mod api;
pub mod auth;
pub mod blocks;
pub mod commit;
pub mod config;
pub mod db;
pub mod events;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod quic;
pub mod rabbit;
pub mod ratelimit;
pub mod redis_shared;
pub mod s3;
pub mod verify;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use cairn_store::dir::{chunk_dir, store_dir};
use cairn_store::fs::{FsBlockStore, FsStoreOptions};
use cairn_store::fsck::{FsckOptions, FsckReport, fsck};
use cairn_store::{BlockStore, NodeId};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::{AppState, Inner};
use crate::auth::TokenKeys;
use crate::blocks::Blocks;
use crate::config::ServerConfig;
use crate::db::Db;
use crate::events::{EventBus, LocalBus};
use crate::ratelimit::{LocalRateLimiter, RateLimiter};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The metadata database.
    #[error("database: {0}")]
    Db(#[from] db::DbError),
    /// The block store.
    #[error("block store: {0}")]
    Store(#[from] cairn_store::Error),
    /// Listening or serving.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A blocking task failed.
    #[error("internal: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The QUIC endpoint's certificate or socket.
    #[error("QUIC: {0}")]
    Tls(String),
    /// A shared service (Redis, RabbitMQ) named in the configuration.
    #[error("{0}")]
    Service(String),
}

/// A running server's parts, before it serves.
pub struct Server {
    state: AppState,
    quic: Option<quinn::Endpoint>,
}

impl Server {
    /// Opens the database and block store and runs migrations.
    ///
    /// # Errors
    /// When the database or the store cannot be opened or migrated.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let db = Db::connect(&config.database_url).await?;
        db.migrate().await?;
        let storage = config.storage_path.clone();
        let s3 = config
            .services
            .s3_url
            .clone()
            .map(|url| (url, config.services.s3_credentials.clone()));
        let (store, empty_root) =
            tokio::task::spawn_blocking(move || open_store(storage, s3)).await??;
        let (quic, quic_info) = match config.quic_listen {
            Some(addr) => {
                let tls = config
                    .tls
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path()));
                let material = quic::load_tls(tls, &config.data_dir).map_err(ServerError::Tls)?;
                let endpoint = quic::bind(addr, &material).map_err(ServerError::Tls)?;
                let bound = endpoint.local_addr()?;
                let info = cairn_protocol::api::SyncInfo {
                    quic_addr: bound.to_string(),
                    quic_port: bound.port(),
                    fingerprint: material.fingerprint,
                    self_signed: config.tls.is_none(),
                };
                (Some(endpoint), Some(info))
            }
            None => (None, None),
        };
        let (limiter, bus) = shared_services(&config).await?;
        let jobs = match &config.services.rabbitmq_url {
            Some(url) => {
                let mut options = rabbit::RabbitOptions::default();
                if let Some(prefix) = &config.services.rabbitmq_prefix {
                    options.prefix.clone_from(prefix);
                }
                if let Some(delay) = config.services.job_retry_delay {
                    options.retry_delay = delay;
                }
                jobs::Jobs::Rabbit(
                    rabbit::RabbitQueue::connect(url, options)
                        .await
                        .map_err(ServerError::Service)?,
                )
            }
            None => jobs::Jobs::local(),
        };
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let state = AppState::new(Inner {
            db,
            store: Arc::new(store),
            keys: TokenKeys::new(&config.jwt_secret),
            limiter,
            bus,
            empty_root,
            cpu: Semaphore::new(cores),
            folder_locks: commit::FolderLocks::default(),
            quic: quic_info,
            jobs,
            metrics: metrics::Metrics::default(),
            config,
        });
        Ok(Server { state, quic })
    }

    /// Where the QUIC endpoint listens, when it runs.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().and_then(|e| e.local_addr().ok())
    }

    /// The shared state (for tests and tools that run jobs directly).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains requests in flight. Runs the
    /// background jobs every [`limits::JOB_INTERVAL`] meanwhile.
    ///
    /// # Errors
    /// IO errors of the listener.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = api::router(self.state.clone());
        let stop_jobs = tokio_util::sync::CancellationToken::new();
        let worker = self
            .state
            .jobs
            .start_worker(self.state.clone(), stop_jobs.clone());
        let scheduler = tokio::spawn(jobs::scheduler(
            self.state.clone(),
            jobs::periodic(self.state.config.version_retention),
            limits::JOB_TICK,
            stop_jobs.clone(),
        ));
        let quic = self
            .quic
            .clone()
            .map(|endpoint| tokio::spawn(quic::serve(endpoint, self.state.clone())));
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        if let (Some(endpoint), Some(task)) = (&self.quic, quic) {
            endpoint.close(0u32.into(), b"server shutting down");
            let _ = task.await;
        }
        // The worker finishes its current job first (an unfinished RabbitMQ job is redelivered).
        stop_jobs.cancel();
        let _ = scheduler.await;
        let _ = worker.await;
        served?;
        self.state.db.close().await;
        let store = Arc::clone(&self.state.store);
        tokio::task::spawn_blocking(move || store.sync()).await??;
        Ok(())
    }

    /// Checks every tree the metadata references against the block store (re-hashing data).
    ///
    /// # Errors
    /// Database errors.
    pub async fn check(&self) -> Result<FsckReport, ServerError> {
        let roots: Vec<NodeId> = db::all_roots(&self.state.db)
            .await?
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        let versions: Vec<NodeId> = db::version_nodes(&self.state.db)
            .await?
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        let store = Arc::clone(&self.state.store);
        let options = FsckOptions {
            verify_data: true,
            scan_unreferenced: true,
        };
        Ok(
            tokio::task::spawn_blocking(move || fsck(store.as_ref(), &roots, &versions, &options))
                .await??,
        )
    }
}

/// The rate limiter and event bus: shared through Redis when it is configured, else in-process.
async fn shared_services(
    config: &ServerConfig,
) -> Result<(Arc<dyn RateLimiter>, Arc<dyn EventBus>), ServerError> {
    let Some(url) = &config.services.redis_url else {
        return Ok((
            Arc::new(LocalRateLimiter::default()),
            Arc::new(LocalBus::default()),
        ));
    };
    let (client, manager) = redis_shared::connect(url)
        .await
        .map_err(ServerError::Service)?;
    let namespace = config
        .services
        .redis_namespace
        .as_deref()
        .unwrap_or("cairn");
    let bus = redis_shared::RedisBus::start(client, manager.clone(), namespace);
    if !bus.ready(limits::REDIS_CONNECT_TIMEOUT).await {
        return Err(ServerError::Service(format!(
            "cannot subscribe to Redis at {url} within {:?}",
            limits::REDIS_CONNECT_TIMEOUT
        )));
    }
    Ok((
        Arc::new(redis_shared::RedisRateLimiter::new(manager, namespace)),
        Arc::new(bus),
    ))
}

/// Opens the block store (S3 when a URL is given, else the local directory) and makes sure
/// the empty directory node (every new folder's root) is in it.
fn open_store(
    path: std::path::PathBuf,
    s3: Option<(String, Option<(String, String)>)>,
) -> Result<(Blocks, NodeId), ServerError> {
    let store = match s3 {
        Some((url, credentials)) => Blocks::S3(Box::new(
            s3::S3BlockStore::open(&url, credentials, limits::GC_GRACE / 2)
                .map_err(ServerError::Service)?,
        )),
        None => Blocks::Local(FsBlockStore::open(path, FsStoreOptions::DEFAULT)?),
    };
    let empty = chunk_dir(Vec::new())?;
    store_dir(&store, &empty)?;
    store.sync()?;
    Ok((store, empty.root))
}
