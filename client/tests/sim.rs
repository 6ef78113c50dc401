//! A deterministic simulation of several devices and one server (invariants I1, I3, I4, I5 and
//! I7 of `../shared/reliability.md`).
//!
//! Each seed drives three real engines of one user against the real in-process server (QUIC,
//! SQLite) through a sequence of random steps: writes, appends, same-size rewrites in place,
//! deletes, renames, editor saves (temp file + rename; vim's rename-away), mode changes,
//! directory deletes, files replacing directories and back, devices going offline and coming
//! back, and sync passes, some with the connection dropped on purpose (before a request, or
//! after the server answered it, so the client cannot know a commit happened). Steps run one
//! at a time and conflict copies are named by a simulated clock, so a seed always produces
//! the same trace.
//!
//! After the steps every device comes online and syncs until nothing moves. Then:
//! - every device holds the same files, modes and directories, and its last pass agreed with
//!   the server (I3, I5: the passes end);
//! - every content a device held when a pass of it succeeded is still somewhere: in a device's
//!   folder or in the server's version history (I1, I4: conflict losers are kept);
//! - every file holds content some device wrote (nothing invented or mixed, I2);
//! - a second run of a seed gives the same trace (I7).
//!
//! `CAIRN_SIM_SEEDS` (default 12), `CAIRN_SIM_FIRST_SEED` (0) and `CAIRN_SIM_OPS` (120) set the
//! size; RELIABILITY.md records the large runs.

#![allow(
    clippy::print_stderr,
    reason = "the simulation prints its figures and where a failing seed's trace went"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cairn_client::engine::{Engine, EngineOptions, Event, PassSummary, SyncError};
use cairn_client::remote::{Fault, Remote, Trust};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use support::{TestServer, snapshot, start_server, token};
use tokio::sync::mpsc;

const DEVICES: usize = 3;
/// File paths the steps use: few, so that devices collide often. `e` is a file in some steps
/// and a directory (of `e/f.txt`) in others.
const PATHS: &[&str] = &[
    "a.txt",
    "b.txt",
    "d/a.txt",
    "d/b.txt",
    "d/e/c.txt",
    "e",
    "e/f.txt",
];
const DIRS: &[&str] = &["d", "d/e", "e"];
/// Rounds of "every device syncs" after the steps before the run counts as not converging.
const QUIESCE_ROUNDS_MAX: usize = 8;
/// The simulated clock's start: 2026-01-01 00:00:00 UTC.
const CLOCK_START: i64 = 1_767_225_600;

type Hash = [u8; 32];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Device {
    name: String,
    engine: Engine,
    remote: Option<Remote>,
    root: PathBuf,
    online: bool,
    events: mpsc::UnboundedReceiver<Event>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// What one run found.
struct Outcome {
    trace: Vec<String>,
    violations: Vec<String>,
    passes: u64,
    faults: u64,
    conflicts: u64,
    acked: usize,
}

struct Sim<'a> {
    server: &'a TestServer,
    token: String,
    seed: u64,
    rng: SmallRng,
    clock: Arc<AtomicI64>,
    devices: Vec<Device>,
    trace: Vec<String>,
    violations: Vec<String>,
    /// Every content a step wrote.
    written: BTreeSet<Hash>,
    /// Every content a device held at the start of a pass that succeeded, with where.
    acked: BTreeMap<Hash, String>,
    /// Every file path any device ever held at a pass.
    paths: BTreeSet<String>,
    passes: u64,
    faults: u64,
    conflicts: u64,
}

fn hash(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

fn digest(snap: &BTreeMap<String, (Vec<u8>, u32)>) -> String {
    let mut hasher = blake3::Hasher::new();
    for (path, (bytes, mode)) in snap {
        hasher.update(path.as_bytes());
        hasher.update(&[0]);
        hasher.update(&hash(bytes));
        hasher.update(&mode.to_le_bytes());
    }
    hasher.finalize().to_hex()[..16].to_owned()
}

fn category(e: &SyncError) -> &'static str {
    match e {
        SyncError::Remote(_) => "connection",
        SyncError::Local(_) => "local",
        SyncError::MassDelete { .. } => "mass delete",
        SyncError::Busy(_) => "busy",
        SyncError::Corrupt(_) => "corrupt",
    }
}

impl<'a> Sim<'a> {
    async fn new(server: &'a TestServer, user: &str, seed: u64) -> Sim<'a> {
        let token = token(server, user).await;
        let clock = Arc::new(AtomicI64::new(CLOCK_START));
        let mut devices = Vec::new();
        for i in 0..DEVICES {
            let root = tempfile::tempdir().expect("root");
            let state = tempfile::tempdir().expect("state");
            let (tx, events) = mpsc::unbounded_channel();
            let name = format!("dev{i}");
            let mut engine = Engine::open(
                EngineOptions {
                    root: root.path().to_path_buf(),
                    state_dir: state.path().to_path_buf(),
                    device: name.clone(),
                    allow_mass_delete: false,
                },
                tx,
            )
            .expect("engine");
            let seen = Arc::clone(&clock);
            engine.set_clock(Box::new(move || {
                cairn_client::time::utc_from_unix(seen.load(Ordering::SeqCst))
            }));
            // One device of every odd seed keeps conflict losers in the history only.
            engine.set_conflict_copies(!(i == DEVICES - 1 && seed % 2 == 1));
            // Early commits are timed, and a seed must give the same trace on any machine.
            engine.set_checkpoints(None);
            devices.push(Device {
                name,
                engine,
                remote: None,
                root: root.path().to_path_buf(),
                online: true,
                events,
                _dirs: (root, state),
            });
        }
        Sim {
            server,
            token,
            seed,
            rng: SmallRng::seed_from_u64(seed),
            clock,
            devices,
            trace: Vec::new(),
            violations: Vec::new(),
            written: BTreeSet::new(),
            acked: BTreeMap::new(),
            paths: BTreeSet::new(),
            passes: 0,
            faults: 0,
            conflicts: 0,
        }
    }

    fn violation(&mut self, what: String) {
        self.trace.push(format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    /// New, unique content: a header naming the step, then 0.1 to 2 KiB, or sometimes 70 to
    /// 300 KiB (several blocks), of seeded bytes.
    fn content(&mut self, step: usize, d: usize) -> Vec<u8> {
        let mut bytes = format!("seed {} step {step} device {d}\n", self.seed).into_bytes();
        let len = if self.rng.random_bool(0.15) {
            self.rng.random_range(70_000..300_000)
        } else {
            self.rng.random_range(100..2_000)
        };
        let start = bytes.len();
        bytes.resize(start + len, 0);
        self.rng.fill_bytes(&mut bytes[start..]);
        self.written.insert(hash(&bytes));
        bytes
    }

    fn pick<'p>(&mut self, from: &[&'p str]) -> &'p str {
        from[self.rng.random_range(0..from.len())]
    }

    /// Makes every parent of `rel` a directory (a file in the way is deleted, as a user
    /// replacing it would); false when that is not possible.
    fn make_parents(root: &Path, rel: &str) -> bool {
        let mut at = root.to_path_buf();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    if std::fs::remove_file(&at).is_err() {
                        return false;
                    }
                    std::fs::create_dir(&at).expect("mkdir");
                }
                Err(_) => std::fs::create_dir(&at).expect("mkdir"),
            }
        }
        true
    }

    /// Deletes the files of [`PATHS`] under directory `rel`, then the directories left empty
    /// (conflict copies and other files stay, as a user would see and keep them). True when the
    /// directory is gone.
    fn clear_dir(root: &Path, rel: &str) -> bool {
        let full = root.join(rel);
        if !full.is_dir() {
            return !full.exists();
        }
        for path in PATHS.iter().filter(|p| p.starts_with(&format!("{rel}/"))) {
            let file = root.join(path);
            if file.is_file() {
                std::fs::remove_file(&file).expect("rm");
            }
        }
        let mut dirs: Vec<&str> = DIRS
            .iter()
            .copied()
            .filter(|d| *d == rel || d.starts_with(&format!("{rel}/")))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for dir in dirs {
            let _ = std::fs::remove_dir(root.join(dir));
        }
        !full.exists()
    }

    /// Writes `bytes` at `rel` in place (the same inode when the file exists); a directory in
    /// the way is cleared first. False when the path cannot be written.
    fn write_file(root: &Path, rel: &str, bytes: &[u8]) -> bool {
        if !Self::make_parents(root, rel) {
            return false;
        }
        let full = root.join(rel);
        if full.is_dir() && !Self::clear_dir(root, rel) {
            return false;
        }
        std::fs::write(&full, bytes).expect("write");
        true
    }

    fn files_of(&self, d: usize) -> Vec<&'static str> {
        PATHS
            .iter()
            .copied()
            .filter(|p| self.devices[d].root.join(p).is_file())
            .collect()
    }

    async fn step(&mut self, step: usize) {
        self.clock
            .store(CLOCK_START + 7 * step as i64, Ordering::SeqCst);
        let d = self.rng.random_range(0..DEVICES);
        let root = self.devices[d].root.clone();
        let name = self.devices[d].name.clone();
        let roll = self.rng.random_range(0..100);
        let files = self.files_of(d);
        let existing = if files.is_empty() {
            None
        } else {
            Some(files[self.rng.random_range(0..files.len())])
        };
        let note = match roll {
            0..28 => {
                let path = self.pick(PATHS);
                let bytes = self.content(step, d);
                if Self::write_file(&root, path, &bytes) {
                    format!("write {path} ({} bytes)", bytes.len())
                } else {
                    format!("write {path}: skipped")
                }
            }
            28..36 => match existing {
                Some(path) => {
                    let mut bytes = std::fs::read(root.join(path)).expect("read");
                    bytes.extend_from_slice(format!("append step {step}\n").as_bytes());
                    self.written.insert(hash(&bytes));
                    std::fs::write(root.join(path), &bytes).expect("append");
                    format!("append {path}")
                }
                None => "append: no file".into(),
            },
            36..41 => match existing {
                // The same size, in place, right after a pass may have read it: only the
                // change time tells the scan cache that it changed.
                Some(path) => {
                    let old = std::fs::read(root.join(path)).expect("read");
                    let mut bytes = self.content(step, d);
                    bytes.resize(old.len(), b'.');
                    if bytes == old {
                        bytes[0] ^= 1;
                    }
                    self.written.insert(hash(&bytes));
                    std::fs::write(root.join(path), &bytes).expect("rewrite");
                    format!("rewrite {path} in place, same size")
                }
                None => "rewrite: no file".into(),
            },
            41..49 => match existing {
                Some(path) => {
                    std::fs::remove_file(root.join(path)).expect("rm");
                    format!("delete {path}")
                }
                None => "delete: no file".into(),
            },
            49..56 => {
                let to = self.pick(PATHS);
                match existing {
                    Some(from)
                        if from != to
                            && !root.join(to).exists()
                            && !to.starts_with(&format!("{from}/"))
                            && Self::make_parents(&root, to)
                            && root.join(from).is_file() =>
                    {
                        std::fs::rename(root.join(from), root.join(to)).expect("rename");
                        format!("rename {from} -> {to}")
                    }
                    _ => "rename: skipped".into(),
                }
            }
            56..61 => {
                // An editor's safe save: a temp file beside, then renamed over (a new inode).
                let path = self.pick(PATHS);
                let bytes = self.content(step, d);
                let full = root.join(path);
                if Self::make_parents(&root, path) && !full.is_dir() {
                    let temp = full.with_file_name(format!(
                        ".{}.save",
                        full.file_name().expect("name").to_string_lossy()
                    ));
                    std::fs::write(&temp, &bytes).expect("temp");
                    std::fs::rename(&temp, &full).expect("rename over");
                    format!("save {path} via temp + rename")
                } else {
                    format!("save {path}: skipped")
                }
            }
            61..65 => match existing {
                // vim: the file is renamed away to its backup name, the new one written, the
                // backup deleted.
                Some(path) => {
                    let full = root.join(path);
                    let backup = full.with_file_name(format!(
                        "{}~",
                        full.file_name().expect("name").to_string_lossy()
                    ));
                    let bytes = self.content(step, d);
                    std::fs::rename(&full, &backup).expect("rename away");
                    std::fs::write(&full, &bytes).expect("write");
                    std::fs::remove_file(&backup).expect("rm backup");
                    format!("vim-save {path}")
                }
                None => "vim-save: no file".into(),
            },
            65..69 => match existing {
                Some(path) => {
                    let full = root.join(path);
                    let mode = std::fs::metadata(&full).expect("meta").permissions().mode();
                    let new = if mode & 0o111 == 0 { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(new))
                        .expect("chmod");
                    format!("chmod {path} {new:o}")
                }
                None => "chmod: no file".into(),
            },
            69..72 => {
                let dir = self.pick(DIRS);
                let gone = Self::clear_dir(&root, dir);
                format!("delete dir {dir} (gone: {gone})")
            }
            72..75 => {
                let device = &mut self.devices[d];
                device.online = !device.online;
                if !device.online
                    && let Some(remote) = device.remote.take()
                {
                    remote.close();
                }
                if device.online { "online" } else { "offline" }.to_owned()
            }
            75..82 => {
                let n = self.rng.random_range(0..8);
                let fault = if self.rng.random_bool(0.5) {
                    Fault::DropBefore(n)
                } else {
                    Fault::LoseAnswer(n)
                };
                self.trace
                    .push(format!("{step} {name} sync with fault {fault:?}"));
                self.sync(d, Some(fault)).await;
                return;
            }
            _ => {
                self.trace.push(format!("{step} {name} sync"));
                self.sync(d, None).await;
                return;
            }
        };
        self.trace.push(format!("{step} {name} {note}"));
    }

    /// One pass of device `d` (nothing when it is offline).
    async fn sync(&mut self, d: usize, fault: Option<Fault>) -> Option<PassSummary> {
        if !self.devices[d].online {
            self.trace.push("  offline: no pass".into());
            return None;
        }
        let before = snapshot(&self.devices[d].root);
        if self.devices[d].remote.is_none() {
            let remote = Remote::connect(
                self.server.quic,
                "localhost",
                &Trust::Pinned(self.server.fingerprint.clone()),
                &self.token,
                &self.devices[d].name,
                "default",
            )
            .await
            .expect("connect");
            self.devices[d].remote = Some(remote);
        }
        let device = &mut self.devices[d];
        let remote = device.remote.as_ref().expect("connected");
        if let Some(fault) = fault {
            remote.inject_fault(fault);
        }
        self.passes += 1;
        let result = device.engine.pass(remote).await;
        if fault.is_some() {
            // A new connection, like a client after a network change (and no fault left armed).
            if let Some(remote) = device.remote.take() {
                remote.close();
            }
        }
        let mut told = 0;
        let mut notes = Vec::new();
        while let Ok(event) = device.events.try_recv() {
            match event {
                Event::Conflict { path, copy, reason } => {
                    told += 1;
                    // A copy made on the server may never exist in a folder: its history is
                    // still searched.
                    self.paths.extend(copy.clone());
                    notes.push(format!("  conflict {path} ({reason}) kept at {copy:?}"));
                }
                Event::Problem { path, message } => {
                    notes.push(format!("  problem {path}: {message}"));
                }
                _ => {}
            }
        }
        self.trace.extend(notes);
        let name = device.name.clone();
        let after = snapshot(&device.root);
        let summary = match result {
            Ok(s) => {
                self.trace.push(format!(
                    "  ok: up {} down {} deleted {}/{} conflicts {} problems {} seq {} in sync {} -> {}",
                    s.uploaded,
                    s.downloaded,
                    s.deleted_local,
                    s.deleted_remote,
                    s.conflicts,
                    s.problems,
                    s.seq,
                    s.in_sync,
                    digest(&after)
                ));
                for (path, (bytes, _)) in &before {
                    if !path.ends_with('/') {
                        self.paths.insert(path.clone());
                        self.acked
                            .entry(hash(bytes))
                            .or_insert_with(|| format!("{path} on {name}"));
                    }
                }
                if s.conflicts != told {
                    self.violation(format!(
                        "{name}: {} conflicts but {told} conflict events",
                        s.conflicts
                    ));
                }
                self.conflicts += s.conflicts;
                if fault.is_none() && s.problems > 0 {
                    self.violation(format!(
                        "{name}: {} paths left for later without a fault",
                        s.problems
                    ));
                }
                Some(s)
            }
            Err(e) => {
                self.trace
                    .push(format!("  failed ({}) -> {}", category(&e), digest(&after)));
                if fault.is_none() {
                    self.violation(format!("{name}: a pass failed without a fault: {e}"));
                }
                None
            }
        };
        if fault.is_some() {
            self.faults += 1;
        }
        summary
    }

    /// Every device online, syncing until a whole round moves nothing.
    async fn quiesce(&mut self) {
        for device in &mut self.devices {
            device.online = true;
        }
        for round in 0..QUIESCE_ROUNDS_MAX {
            self.trace.push(format!("quiesce round {round}"));
            let mut settled = true;
            let mut seqs = BTreeSet::new();
            for d in 0..DEVICES {
                match self.sync(d, None).await {
                    Some(s) => {
                        settled &= s.in_sync;
                        seqs.insert(s.seq);
                    }
                    None => settled = false,
                }
            }
            if settled && seqs.len() == 1 {
                return;
            }
        }
        self.violation(format!(
            "no quiescence after {QUIESCE_ROUNDS_MAX} rounds of passes"
        ));
    }

    /// Every content of every version the server keeps, over REST.
    async fn history(&self) -> BTreeSet<Hash> {
        let http = reqwest::Client::new();
        let get = |url: String| {
            http.get(format!("{}{url}", self.server.http))
                .bearer_auth(&self.token)
                .send()
        };
        let mut out = BTreeSet::new();
        for path in self
            .paths
            .iter()
            .map(String::as_str)
            .chain(PATHS.iter().copied())
        {
            let list: serde_json::Value = get(format!(
                "/files/?limit=10&path={}",
                path.replace('%', "%25")
                    .replace(' ', "%20")
                    .replace('(', "%28")
                    .replace(')', "%29")
            ))
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
            let Some(id) = list["files"][0]["id"].as_i64() else {
                continue;
            };
            let versions: serde_json::Value = get(format!("/files/{id}/versions"))
                .await
                .expect("versions")
                .json()
                .await
                .expect("json");
            for version in versions["versions"].as_array().expect("versions") {
                if version["deleted"].as_bool() == Some(true) {
                    continue;
                }
                let v = version["version"].as_u64().expect("version");
                let response = get(format!("/files/{id}/download?version={v}"))
                    .await
                    .expect("download");
                assert!(response.status().is_success(), "version {v} of {path}");
                out.insert(hash(&response.bytes().await.expect("bytes")));
            }
        }
        out
    }

    async fn check(&mut self) {
        let snaps: Vec<_> = self.devices.iter().map(|d| snapshot(&d.root)).collect();
        for (i, snap) in snaps.iter().enumerate().skip(1) {
            if *snap != snaps[0] {
                let differ: Vec<&String> = snap
                    .keys()
                    .chain(snaps[0].keys())
                    .filter(|k| snap.get(*k) != snaps[0].get(*k))
                    .collect();
                self.violation(format!(
                    "dev{i} differs from dev0 after quiescence at {differ:?}"
                ));
            }
        }
        self.trace.push(format!("final {}", digest(&snaps[0])));
        let mut present: BTreeSet<Hash> = BTreeSet::new();
        for (path, (bytes, _)) in &snaps[0] {
            if path.ends_with('/') {
                continue;
            }
            self.paths.insert(path.clone());
            let h = hash(bytes);
            if !self.written.contains(&h) {
                self.violation(format!("{path} holds content no device wrote"));
            }
            present.insert(h);
        }
        let history = self.history().await;
        let lost: Vec<String> = self
            .acked
            .iter()
            .filter(|(h, _)| !present.contains(*h) && !history.contains(*h))
            .map(|(_, at)| at.clone())
            .collect();
        for at in lost {
            self.violation(format!(
                "lost: the content that was at {at} is in no folder and no version"
            ));
        }
    }

    async fn run(mut self, ops: usize) -> Outcome {
        for step in 0..ops {
            self.step(step).await;
        }
        self.clock
            .store(CLOCK_START + 7 * ops as i64, Ordering::SeqCst);
        self.quiesce().await;
        self.check().await;
        for device in &self.devices {
            if let Some(remote) = &device.remote {
                remote.close();
            }
        }
        Outcome {
            trace: self.trace,
            violations: self.violations,
            passes: self.passes,
            faults: self.faults,
            conflicts: self.conflicts,
            acked: self.acked.len(),
        }
    }
}

/// On a violation, writes the seed's whole trace to a file and says where.
fn report(seed: u64, outcome: &Outcome) {
    if !outcome.violations.is_empty() {
        let path = std::env::temp_dir().join(format!("cairn-sim-seed-{seed}.trace"));
        let written = std::fs::write(&path, outcome.trace.join("\n"));
        eprintln!(
            "seed {seed}: {} violations; trace in {} ({written:?})",
            outcome.violations.len(),
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_devices_converge_and_lose_nothing() {
    let server = start_server(1 << 34).await;
    let seeds = env_number("CAIRN_SIM_SEEDS", 12);
    let first = env_number("CAIRN_SIM_FIRST_SEED", 0);
    let ops = usize::try_from(env_number("CAIRN_SIM_OPS", 120)).expect("ops");
    let started = std::time::Instant::now();
    let (mut passes, mut faults, mut conflicts, mut acked) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for seed in first..first + seeds {
        let outcome = Sim::new(&server, &format!("sim{seed}"), seed)
            .await
            .run(ops)
            .await;
        passes += outcome.passes;
        faults += outcome.faults;
        conflicts += outcome.conflicts;
        acked += outcome.acked;
        report(seed, &outcome);
        for v in &outcome.violations {
            failed.push(format!("seed {seed}: {v}"));
        }
    }
    eprintln!(
        "simulation: {seeds} seeds x {ops} steps, {passes} passes ({faults} with a dropped connection), {conflicts} conflicts, {acked} acknowledged contents checked, {} violations, {:.1} s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "violations:\n{}", failed.join("\n"));
    assert!(
        faults > 0 && conflicts > 0,
        "the runs must exercise faults and conflicts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_gives_the_same_trace_every_time() {
    let server = start_server(1 << 34).await;
    let seed = env_number("CAIRN_SIM_FIRST_SEED", 0) + 1;
    let first = Sim::new(&server, "twice-a", seed).await.run(80).await;
    let second = Sim::new(&server, "twice-b", seed).await.run(80).await;
    assert!(first.violations.is_empty(), "{:?}", first.violations);
    assert!(
        first.trace.len() > 80,
        "the trace records every step and pass"
    );
    if first.trace != second.trace {
        let at = first
            .trace
            .iter()
            .zip(&second.trace)
            .position(|(a, b)| a != b)
            .unwrap_or(first.trace.len().min(second.trace.len()));
        panic!(
            "the traces differ at line {at}:\n  {:?}\n  {:?}",
            first.trace.get(at),
            second.trace.get(at)
        );
    }
}
