//! HTTP load against a running `cairn-server`: many clients doing heartbeats and small uploads,
//! and filling a folder with many files then paging through `GET /files/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;

/// Arguments of `cairn-bench http-load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Base URL of the server; several, comma-separated, spread the clients over instances.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// Only uploads, no heartbeats.
    #[arg(long)]
    uploads_only: bool,
    /// Access token (Bearer).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 200)]
    clients: u32,
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `cairn-bench http-fill`.
#[derive(Debug, clap::Args)]
pub(crate) struct FillArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// Access token (Bearer).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: String,
    /// Log in as this user again whenever the token expires (a long fill outlasts an access
    /// token); the password comes from `$CAIRN_PASSWORD`.
    #[arg(long)]
    username: Option<String>,
    /// Files to upload.
    #[arg(long, default_value_t = 100_000)]
    files: u32,
    /// Concurrent uploads.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct LoadReport {
    clients: u32,
    instances: usize,
    seconds: f64,
    uploads: u64,
    uploads_per_second: f64,
    requests: u64,
    errors: u64,
    requests_per_second: f64,
    heartbeat_p50_ms: f64,
    heartbeat_p99_ms: f64,
    upload_p50_ms: f64,
    upload_p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct FillReport {
    files: u32,
    fill_seconds: f64,
    uploads_per_second: f64,
    errors: u64,
    first_page_ms: f64,
    full_listing_ms: f64,
    pages: u32,
    listed: u64,
}

#[derive(Default)]
struct Samples {
    heartbeat: Vec<Duration>,
    upload: Vec<Duration>,
    errors: u64,
}

pub(crate) fn load(args: &LoadArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let report = runtime.block_on(run_load(args))?;
    crate::measure::emit(&report, args.json, || {
        vec![
            format!(
                "{} clients on {} instance(s) for {:.0} s: {} requests ({:.0}/s), {} errors",
                report.clients,
                report.instances,
                report.seconds,
                report.requests,
                report.requests_per_second,
                report.errors
            ),
            format!(
                "{} uploads ({:.0}/s)",
                report.uploads, report.uploads_per_second
            ),
            format!(
                "heartbeat p50 {:.1} ms, p99 {:.1} ms",
                report.heartbeat_p50_ms, report.heartbeat_p99_ms
            ),
            format!(
                "upload    p50 {:.1} ms, p99 {:.1} ms",
                report.upload_p50_ms, report.upload_p99_ms
            ),
        ]
    })
}

async fn run_load(args: &LoadArgs) -> Result<LoadReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients as usize)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let bases: Vec<Arc<String>> = args
        .server
        .split(',')
        .map(|s| Arc::new(s.trim().trim_end_matches('/').to_owned()))
        .collect();
    let token = Arc::new(args.token.clone());
    let uploads_only = args.uploads_only;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client_idx in 0..args.clients {
        let base = Arc::clone(&bases[client_idx as usize % bases.len()]);
        let (client, token) = (client.clone(), Arc::clone(&token));
        tasks.spawn(async move {
            let mut samples = Samples::default();
            let mut round = 0u32;
            while Instant::now() < deadline {
                let at = Instant::now();
                if !uploads_only {
                    let beat = client
                    .post(format!("{base}/sync/heartbeat"))
                    .bearer_auth(token.as_str())
                    .json(&json!({"client_id": format!("load-{client_idx}"), "status": "syncing"}))
                    .send()
                    .await;
                    match beat {
                        Ok(r) if r.status().is_success() => samples.heartbeat.push(at.elapsed()),
                        _ => samples.errors += 1,
                    }
                }
                let at = Instant::now();
                let body: Vec<u8> = (0..4096u32)
                    .map(|i| (i ^ round ^ client_idx) as u8)
                    .collect();
                let form = reqwest::multipart::Form::new()
                    .text("path", format!("load/c{client_idx:03}/f{}.bin", round % 50))
                    .part("file", reqwest::multipart::Part::bytes(body));
                let upload = client
                    .post(format!("{base}/files/upload"))
                    .bearer_auth(token.as_str())
                    .multipart(form)
                    .send()
                    .await;
                match upload {
                    Ok(r) if r.status().is_success() => samples.upload.push(at.elapsed()),
                    _ => samples.errors += 1,
                }
                round += 1;
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(done) = tasks.join_next().await {
        let samples = done.context("a load client panicked")?;
        all.heartbeat.extend(samples.heartbeat);
        all.upload.extend(samples.upload);
        all.errors += samples.errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = (all.heartbeat.len() + all.upload.len()) as u64 + all.errors;
    Ok(LoadReport {
        clients: args.clients,
        instances: bases.len(),
        seconds,
        uploads: all.upload.len() as u64,
        uploads_per_second: all.upload.len() as f64 / seconds,
        requests,
        errors: all.errors,
        requests_per_second: requests as f64 / seconds,
        heartbeat_p50_ms: percentile_ms(&mut all.heartbeat, 50),
        heartbeat_p99_ms: percentile_ms(&mut all.heartbeat, 99),
        upload_p50_ms: percentile_ms(&mut all.upload, 50),
        upload_p99_ms: percentile_ms(&mut all.upload, 99),
    })
}

pub(crate) fn fill(args: &FillArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let report = runtime.block_on(run_fill(args))?;
    crate::measure::emit(&report, args.json, || {
        vec![
            format!(
                "{} uploads in {:.1} s ({:.0}/s), {} errors",
                report.files, report.fill_seconds, report.uploads_per_second, report.errors
            ),
            format!(
                "GET /files/ first page {:.1} ms; all {} files in {} pages {:.0} ms",
                report.first_page_ms, report.listed, report.pages, report.full_listing_ms
            ),
        ]
    })
}

/// The fill's access token, renewed by logging in again when the server answers 401.
struct Credentials {
    token: tokio::sync::RwLock<String>,
    login: Option<(String, String)>,
}

impl Credentials {
    async fn token(&self) -> String {
        self.token.read().await.clone()
    }

    /// Logs in again (once for all workers that saw `stale` expire); false without a login.
    async fn renew(&self, client: &reqwest::Client, base: &str, stale: &str) -> bool {
        let Some((username, password)) = &self.login else {
            return false;
        };
        let mut token = self.token.write().await;
        if *token != stale {
            return true;
        }
        let answer = client
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await;
        let Ok(answer) = answer else { return false };
        let Ok(body) = answer.json::<serde_json::Value>().await else {
            return false;
        };
        match body["access_token"].as_str() {
            Some(fresh) => {
                *token = fresh.to_owned();
                true
            }
            None => false,
        }
    }
}

async fn run_fill(args: &FillArgs) -> Result<FillReport> {
    let client = reqwest::Client::new();
    let base = args.server.trim_end_matches('/').to_owned();
    let login = match &args.username {
        Some(username) => Some((
            username.clone(),
            std::env::var("CAIRN_PASSWORD").context("--username needs $CAIRN_PASSWORD")?,
        )),
        None => None,
    };
    let credentials = Arc::new(Credentials {
        token: tokio::sync::RwLock::new(args.token.clone()),
        login,
    });
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, base, credentials, next, total) = (
            client.clone(),
            base.clone(),
            Arc::clone(&credentials),
            Arc::clone(&next),
            args.files,
        );
        tasks.spawn(async move {
            let mut errors = 0u64;
            loop {
                let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if idx >= total {
                    return errors;
                }
                let mut renewed = false;
                loop {
                    let form = reqwest::multipart::Form::new()
                        .text("path", format!("many/f{idx:07}.txt"))
                        .part(
                            "file",
                            reqwest::multipart::Part::bytes(format!("file {idx}\n").into_bytes()),
                        );
                    let token = credentials.token().await;
                    match client
                        .post(format!("{base}/files/upload"))
                        .bearer_auth(&token)
                        .multipart(form)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r)
                            if r.status() == reqwest::StatusCode::UNAUTHORIZED
                                && !renewed
                                && credentials.renew(&client, &base, &token).await =>
                        {
                            renewed = true;
                            continue;
                        }
                        _ => errors += 1,
                    }
                    break;
                }
            }
        });
    }
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        errors += done.context("a fill client panicked")?;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    // The listing may come after the token expired: start it with a fresh one when possible.
    let stale = credentials.token().await;
    credentials.renew(&client, &base, &stale).await;
    let token = credentials.token().await;
    let at = Instant::now();
    let first: serde_json::Value = client
        .get(format!("{base}/files/?limit=1000"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let first_page_ms = at.elapsed().as_secs_f64() * 1000.0;
    if first.get("files").is_none() {
        bail!("unexpected listing: {first}");
    }
    let at = Instant::now();
    let (mut pages, mut listed, mut cursor) = (0u32, 0u64, None::<String>);
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/files/?limit=10000&cursor={c}"),
            None => format!("{base}/files/?limit=10000"),
        };
        let page: serde_json::Value = client
            .get(url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        pages += 1;
        listed += page["files"].as_array().map_or(0, Vec::len) as u64;
        match page.get("next_cursor").and_then(|c| c.as_str()) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    Ok(FillReport {
        files: args.files,
        fill_seconds,
        uploads_per_second: f64::from(args.files) / fill_seconds,
        errors,
        first_page_ms,
        full_listing_ms: at.elapsed().as_secs_f64() * 1000.0,
        pages,
        listed,
    })
}

pub(crate) fn percentile_ms(samples: &mut [Duration], pct: usize) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let idx = (samples.len() * pct / 100).min(samples.len() - 1);
    samples[idx].as_secs_f64() * 1000.0
}
