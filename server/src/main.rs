//! `cairn-server`: flags and environment → [`ServerConfig`], then serve, check or migrate.
//!
//! With nothing set it is a working server: the data directory holds the SQLite database, the
//! block store and a generated JWT secret (mode 0600).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use cairn_server::Server;
use cairn_server::config::{ServerConfig, Services};
use cairn_server::limits::{
    QUOTA_DEFAULT, SHUTDOWN_GRACE, UPLOAD_SIZE_MAX_DEFAULT, VERSION_RETENTION_DEFAULT_DAYS,
};
use cairn_store::fs::FsBlockStore;
use clap::{Parser, Subcommand, ValueEnum};

/// Cairn's server: REST + WebSocket API over a content-addressed block store.
#[derive(Debug, Parser)]
#[command(name = "cairn-server", version, about)]
struct Args {
    /// HTTP listen address.
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// QUIC sync endpoint address, or `off` [default: the HTTP host, port 8443].
    #[arg(long, env = "CAIRN_QUIC_LISTEN")]
    quic_listen: Option<String>,
    /// TLS certificate chain (PEM) for QUIC [default: a self-signed one generated into DATA_DIR].
    #[arg(long, env = "CAIRN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "CAIRN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Data directory: SQLite database, block store and generated secrets
    /// [default: $XDG_DATA_HOME/cairn-server or ~/.local/share/cairn-server].
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Metadata database URL: sqlite://PATH or postgres://USER@HOST/DB [default: SQLite in the data dir].
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Secret for signing access tokens (32+ bytes) [default: generated into DATA_DIR/jwt-secret].
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Block store directory [default: DATA_DIR/blocks].
    #[arg(long, env = "STORAGE_PATH")]
    storage_path: Option<PathBuf>,
    /// Redis URL (redis://HOST:PORT): events fan out between instances and login limits are
    /// shared [default: in-process, one instance].
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// S3-compatible block storage shared by instances: http://HOST:PORT/BUCKET[/PREFIX] or
    /// s3://BUCKET[/PREFIX] (endpoint from AWS_ENDPOINT_URL); credentials from AWS_ACCESS_KEY_ID
    /// and AWS_SECRET_ACCESS_KEY [default: the local STORAGE_PATH].
    #[arg(long, env = "CAIRN_S3_URL")]
    s3_url: Option<String>,
    /// Prefix of Cairn's Redis keys and channels, so deployments can share one Redis.
    #[arg(long, env = "CAIRN_REDIS_NAMESPACE", default_value = "cairn")]
    redis_namespace: String,
    /// RabbitMQ URL (amqp://USER:PASSWORD@HOST:PORT/%2f): background jobs (garbage collection,
    /// version pruning, audit-log export) go through durable queues shared by all instances
    /// [default: an in-process queue].
    #[arg(long, env = "RABBITMQ_URL")]
    rabbitmq_url: Option<String>,
    /// Prefix of Cairn's RabbitMQ queues (PREFIX.jobs, PREFIX.jobs.retry, PREFIX.jobs.dead).
    #[arg(long, env = "CAIRN_RABBITMQ_PREFIX", default_value = "cairn")]
    rabbitmq_prefix: String,
    /// Storage quota of new users, in bytes.
    #[arg(long, env = "CAIRN_QUOTA", default_value_t = QUOTA_DEFAULT)]
    quota: u64,
    /// Largest single upload, in bytes.
    #[arg(long, env = "CAIRN_UPLOAD_SIZE_MAX", default_value_t = UPLOAD_SIZE_MAX_DEFAULT)]
    upload_size_max: u64,
    /// Days overwritten and deleted versions stay restorable; 0 keeps them forever.
    #[arg(long, env = "CAIRN_VERSION_RETENTION_DAYS", default_value_t = VERSION_RETENTION_DEFAULT_DAYS)]
    version_retention_days: u64,
    /// Log format.
    #[arg(long, env = "CAIRN_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Verify the block store against the metadata; exits 1 when anything is wrong.
    Check,
    /// Run database migrations and exit.
    Migrate,
    /// Rebuild the local block store's index log from its pack files (the server must be
    /// stopped); for a store that refuses to open because its index log is missing or damaged.
    RebuildIndex,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::new(err).context("starting the async runtime")),
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

#[allow(
    clippy::print_stderr,
    reason = "a binary reports its failure in one line on stderr"
)]
fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("cairn-server: {}", one_line(err));
    ExitCode::FAILURE
}

/// The error and its causes on one line, leaving out a cause whose text the line already holds
/// (many errors print their source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(args: Args) -> Result<ExitCode> {
    let config = config(&args)?;
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| {
                    format!(
                        "listening on {}; is another server running there?",
                        config.listen
                    )
                })?;
            let server = Server::start(config.clone()).await?;
            let quic = server
                .quic_addr()
                .map_or_else(|| "off".to_owned(), |a| a.to_string());
            tracing::info!(listen = %config.listen, %quic, data_dir = %config.data_dir.display(), "cairn-server ready");
            server.serve(listener, shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let db = cairn_server::db::Db::connect(&config.database_url).await?;
            db.migrate().await?;
            say("migrations are up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::RebuildIndex => {
            if config.services.s3_url.is_some() {
                bail!(
                    "blocks are in S3 (CAIRN_S3_URL), which keeps no index log; nothing to rebuild"
                );
            }
            // The rebuilt index may hold nodes the collector had deleted, back without their
            // children (their packs were compacted at other times): commits must not stop at
            // them. Done first, so a rebuilt index is never trusted as the old one was.
            let db = cairn_server::db::Db::connect(&config.database_url).await?;
            db.migrate().await?;
            let distrusted = cairn_server::db::distrust_committed(&db).await?;
            let path = config.storage_path.clone();
            let report =
                tokio::task::spawn_blocking(move || FsBlockStore::rebuild_index(&path)).await??;
            for pack in &report.unreadable_packs {
                say(&format!(
                    "damaged: {} held no readable block; moved aside",
                    pack.display()
                ));
            }
            say(&format!(
                "rebuilt the index of {}: {} blocks from {} packs; {} damaged stretches ({} bytes) skipped{}",
                config.storage_path.display(),
                report.blocks,
                report.packs,
                report.damaged_regions,
                report.damaged_bytes,
                report
                    .previous_log
                    .as_ref()
                    .map_or_else(String::new, |p| format!(
                        "; the previous log is kept as {}",
                        p.display()
                    ))
            ));
            say(&format!(
                "{distrusted} committed objects will be checked again by the next commit naming them"
            ));
            say(
                "next: run `cairn-server check` to verify every folder's blocks against the metadata",
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            // A check must not take the QUIC port from a running server.
            let config = ServerConfig {
                quic_listen: None,
                ..config
            };
            let server = Server::start(config).await?;
            let report = server.check().await?;
            for problem in &report.problems {
                say(&format!(
                    "problem: {} ({}): {}",
                    problem.location, problem.id, problem.error
                ));
            }
            say(&format!(
                "checked {} nodes and {} data blocks ({} bytes); {} unreferenced; {} problems",
                report.nodes,
                report.data_blocks,
                report.data_size,
                report.unreferenced_blocks,
                report.problems.len()
            ));
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

#[allow(
    clippy::print_stdout,
    reason = "the check command's report is its output"
)]
fn say(line: &str) {
    println!("{line}");
}

fn config(args: &Args) -> Result<ServerConfig> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory '{}'", data_dir.display()))?;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", data_dir.join("cairn.db").display()),
    };
    let jwt_secret = match &args.jwt_secret {
        Some(secret) if secret.len() < 32 => bail!(
            "JWT_SECRET is {} bytes; use at least 32 random bytes",
            secret.len()
        ),
        Some(secret) => secret.as_bytes().to_vec(),
        None => load_or_create_secret(&data_dir.join("jwt-secret"))?,
    };
    let quic_listen = match args.quic_listen.as_deref() {
        Some("off") => None,
        Some(addr) => Some(addr.parse().with_context(|| {
            format!("--quic-listen '{addr}' is not an address like 127.0.0.1:8443 (or 'off')")
        })?),
        None => Some(SocketAddr::new(args.listen.ip(), 8443)),
    };
    Ok(ServerConfig {
        listen: args.listen,
        storage_path: args
            .storage_path
            .clone()
            .unwrap_or_else(|| data_dir.join("blocks")),
        data_dir,
        database_url,
        jwt_secret,
        quota_default: args.quota,
        upload_size_max: args.upload_size_max,
        version_retention: (args.version_retention_days > 0).then(|| {
            std::time::Duration::from_secs(args.version_retention_days.saturating_mul(24 * 3600))
        }),
        quic_listen,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        services: Services {
            redis_url: args.redis_url.clone().filter(|url| !url.is_empty()),
            redis_namespace: Some(args.redis_namespace.clone()),
            rabbitmq_url: args.rabbitmq_url.clone().filter(|url| !url.is_empty()),
            rabbitmq_prefix: Some(args.rabbitmq_prefix.clone()),
            job_retry_delay: None,
            s3_url: args.s3_url.clone().filter(|url| !url.is_empty()),
            s3_credentials: None,
            trash_settle: None,
        },
    })
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("cairn-server"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/cairn-server"))
}

/// Reads the generated JWT secret, or creates it (64 hex characters, mode 0600).
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => bail!(
            "'{}' holds a secret shorter than 32 bytes; delete it to generate a new one",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading '{}'", path.display())),
    }
    let secret = cairn_server::auth::new_refresh_token().map_err(anyhow::Error::msg)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating '{}'", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing '{}'", path.display()))?;
    Ok(secret.into_bytes())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM; then the server stops accepting and drains for at most
/// [`SHUTDOWN_GRACE`].
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM; stop with SIGINT");
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(grace = ?SHUTDOWN_GRACE, "shutting down");
    tokio::spawn(async {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("requests still running after the grace period; exiting");
        std::process::exit(0);
    });
}
