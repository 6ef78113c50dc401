//! The sync engine against a real in-process server (SQLite, QUIC on loopback): two devices
//! of one user keep a folder identical, and the scenarios of `../shared/reliability.md` hold.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use cairn_client::engine::{Engine, EngineOptions, Event, PassSummary, SyncError};
use cairn_client::remote::{Fault, Remote, Trust};
use cairn_store::BlockId;
use cairn_store::chunk::{ChunkConfig, cut};
use tokio::sync::mpsc;

mod support;

use support::{TestServer, snapshot, start_server, token};

struct Device {
    engine: Engine,
    remote: Remote,
    root: PathBuf,
    events: mpsc::UnboundedReceiver<Event>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Device {
    async fn new(server: &TestServer, token: &str, name: &str) -> Device {
        let root = tempfile::tempdir().expect("root");
        let state = tempfile::tempdir().expect("state");
        let (tx, events) = mpsc::unbounded_channel();
        let engine = Engine::open(
            EngineOptions {
                root: root.path().to_path_buf(),
                state_dir: state.path().to_path_buf(),
                device: name.to_owned(),
                allow_mass_delete: false,
            },
            tx,
        )
        .expect("engine");
        let remote = Remote::connect(
            server.quic,
            "localhost",
            &Trust::Pinned(server.fingerprint.clone()),
            token,
            name,
            "default",
        )
        .await
        .expect("connect");
        Device {
            engine,
            remote,
            root: root.path().to_path_buf(),
            events,
            _dirs: (root, state),
        }
    }

    /// A new connection, as after a network change.
    async fn reconnect(&mut self, server: &TestServer, token: &str) {
        self.remote.close();
        self.remote = Remote::connect(
            server.quic,
            "localhost",
            &Trust::Pinned(server.fingerprint.clone()),
            token,
            "reconnected",
            "default",
        )
        .await
        .expect("reconnect");
    }

    async fn sync(&mut self) -> PassSummary {
        self.try_sync().await.expect("pass")
    }

    async fn try_sync(&mut self) -> Result<PassSummary, SyncError> {
        self.engine.pass(&self.remote).await
    }

    fn write(&self, path: &str, bytes: &[u8]) {
        let full = self.root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, bytes).expect("write");
    }

    fn conflicts(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            if matches!(event, Event::Conflict { .. }) {
                out.push(event);
            }
        }
        out
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_converge_and_no_change_is_one_round_trip() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "alice").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;

    a.write("notes/todo.txt", b"buy milk\n");
    a.write("photos/2024/beach.jpg", &pseudo_random(3 << 20, 1));
    a.write("empty.txt", b"");
    std::fs::create_dir_all(a.root.join("empty-dir")).expect("mkdir");
    std::os::unix::fs::symlink("notes/todo.txt", a.root.join("link")).expect("symlink");
    std::fs::set_permissions(
        a.root.join("notes/todo.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    let up = a.sync().await;
    assert_eq!(up.uploaded, 4, "{up:?}");
    assert!(up.bytes_up >= 3 << 20, "{up:?}");
    let down = b.sync().await;
    assert_eq!(down.downloaded, 4, "{down:?}");
    assert_eq!(snapshot(&a.root), snapshot(&b.root));

    // Nothing changed: both passes end at the head check, moving no blocks.
    for (device, downloaded) in [(&mut a, false), (&mut b, true)] {
        let quiet = device.sync().await;
        assert!(quiet.in_sync, "{quiet:?}");
        assert_eq!((quiet.blocks_up, quiet.blocks_down), (0, 0));
        if downloaded {
            // What B downloaded was recorded as written: its scan reads none of it again.
            assert_eq!(quiet.files_read, 0, "{quiet:?}");
        }
    }

    // Disjoint changes on both sides merge.
    a.write("notes/todo.txt", b"buy milk\nand bread\n");
    std::fs::remove_file(b.root.join("empty.txt")).expect("rm");
    b.write("new-on-b.txt", b"hello from b");
    a.sync().await;
    b.sync().await;
    a.sync().await;
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
    assert!(!a.root.join("empty.txt").exists(), "the delete propagated");
    assert_eq!(
        std::fs::read(b.root.join("notes/todo.txt")).expect("read"),
        b"buy milk\nand bread\n"
    );
    let quiet = b.sync().await;
    assert!(quiet.in_sync, "no sync loop: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_keep_both_and_edit_beats_delete() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "bob").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    a.write("report.txt", b"v1");
    a.write("plan.txt", b"p1");
    a.sync().await;
    b.sync().await;

    // Edit/edit: the commit the server accepted first wins; the other is kept as a copy.
    a.write("report.txt", b"from a");
    b.write("report.txt", b"from b, longer");
    // Edit/delete: the edit survives.
    std::fs::remove_file(a.root.join("plan.txt")).expect("rm");
    b.write("plan.txt", b"p2 edited on b");
    a.sync().await;
    let pass = b.sync().await;
    assert_eq!(pass.conflicts, 2, "{pass:?}");
    a.sync().await;
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
    assert_eq!(
        std::fs::read(a.root.join("report.txt")).expect("read"),
        b"from a"
    );
    assert_eq!(
        std::fs::read(a.root.join("plan.txt")).expect("read"),
        b"p2 edited on b"
    );
    let copies: Vec<String> = snapshot(&a.root)
        .into_iter()
        .filter(|(p, (bytes, _))| {
            p.starts_with("report (conflict from desktop ") && bytes == b"from b, longer"
        })
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "the loser is kept beside it: {:?}",
        snapshot(&a.root).keys()
    );
    assert!(!b.conflicts().is_empty(), "the user is told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_conflict_copies_the_loser_is_kept_in_the_version_history() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "carol").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    b.engine.set_conflict_copies(false);
    a.write("report.txt", b"v1");
    a.sync().await;
    b.sync().await;

    a.write("report.txt", b"from a");
    b.write("report.txt", b"from b, longer");
    a.sync().await;
    let pass = b.sync().await;
    assert_eq!(pass.conflicts, 1, "{pass:?}");
    let told = b.conflicts();
    assert!(
        matches!(&told[..], [Event::Conflict { copy: None, reason, .. }] if reason == "both_edited"),
        "{told:?}"
    );
    let record = cairn_client::conflicts::load(b._dirs.1.path())
        .expect("load")
        .expect("recorded");
    assert!(record.conflicts[0].kept.is_some(), "{record:?}");
    a.sync().await;
    // No copy anywhere: both folders hold the winner only.
    let expected = BTreeMap::from([("report.txt".to_owned(), (b"from a".to_vec(), 0o644))]);
    let plain = |root: &Path| {
        snapshot(root)
            .into_iter()
            .map(|(p, (bytes, _))| (p, (bytes, 0o644)))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(plain(&a.root), expected);
    assert_eq!(plain(&b.root), expected);

    // The history: v1 (laptop), "from a" (laptop), b's loser (desktop), "from a" again as the
    // head, still credited to the laptop.
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let token = token.clone();
        let url = format!("{}{path}", server.http);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
        }
    };
    let files: serde_json::Value = get("/files/?path=report.txt".into())
        .await
        .json()
        .await
        .expect("json");
    let id = files["files"][0]["id"].as_i64().expect("file id");
    let versions: serde_json::Value = get(format!("/files/{id}/versions"))
        .await
        .json()
        .await
        .expect("json");
    let versions = versions["versions"].as_array().expect("versions").clone();
    let mut seen = Vec::new();
    for v in &versions {
        let n = v["version"].as_u64().expect("n");
        let bytes = get(format!("/files/{id}/download?version={n}"))
            .await
            .bytes()
            .await
            .expect("body");
        seen.push((
            String::from_utf8_lossy(&bytes).into_owned(),
            v["device"].as_str().expect("device").to_owned(),
        ));
    }
    let pair = |text: &str, device: &str| (text.to_owned(), device.to_owned());
    assert_eq!(
        seen,
        [
            pair("from a", "laptop"),
            pair("from b, longer", "desktop"),
            pair("from a", "laptop"),
            pair("v1", "laptop"),
        ],
        "newest first"
    );
    // The loser is in no commit's tree, only in the history: the collector keeps it as long
    // as the history lists it.
    let report = cairn_server::jobs::collect_garbage(&server.state, std::time::Duration::ZERO)
        .await
        .expect("collect");
    assert!(!report.skipped, "{report:?}");
    for (v, (text, _)) in versions.iter().zip(&seen) {
        let n = v["version"].as_u64().expect("n");
        let response = get(format!("/files/{id}/download?version={n}")).await;
        assert_eq!(response.status(), 200, "version {n} after a collection");
        let bytes = response.bytes().await.expect("body");
        assert_eq!(String::from_utf8_lossy(&bytes), *text, "version {n}");
    }
    // Nothing left to do, on either side.
    assert!(a.sync().await.in_sync);
    assert!(b.sync().await.in_sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_change_in_a_big_file_moves_few_blocks() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "carol").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    // Larger than two of the windows a download is written back in as it is written.
    let mut data = pseudo_random(72 << 20, 7);
    a.write("big.bin", &data);
    a.sync().await;
    b.sync().await;
    assert_eq!(std::fs::read(b.root.join("big.bin")).expect("read"), data);
    data[36 << 20] ^= 0xff;
    a.write("big.bin", &data);
    let up = a.sync().await;
    assert!(
        up.blocks_up <= 2 + 3,
        "data blocks plus a few tree nodes: {up:?}"
    );
    let down = b.sync().await;
    assert!(down.blocks_down <= 2, "{down:?}");
    assert_eq!(std::fs::read(b.root.join("big.bin")).expect("read"), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_device_does_not_resurrect_deletes_and_mass_deletes_pause() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "dave").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    for i in 0..220 {
        a.write(&format!("docs/{i}.txt"), format!("doc {i}").as_bytes());
    }
    a.sync().await;
    b.sync().await;
    // B is offline while A deletes one file; B comes back with its stale copy untouched.
    std::fs::remove_file(a.root.join("docs/3.txt")).expect("rm");
    a.sync().await;
    b.sync().await;
    assert!(!b.root.join("docs/3.txt").exists(), "deleted on B too");
    a.sync().await;
    assert!(!a.root.join("docs/3.txt").exists(), "not resurrected on A");

    // Deleting most of the folder (and at least 100 files) pauses instead of propagating.
    for i in 0..150 {
        let _ = std::fs::remove_file(a.root.join(format!("docs/{i}.txt")));
    }
    let err = a.try_sync().await.expect_err("mass delete refused");
    assert!(matches!(err, SyncError::MassDelete { .. }), "{err}");
    b.sync().await;
    assert!(b.root.join("docs/10.txt").exists(), "nothing deleted on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_upload_resumes_without_resending_what_the_server_has() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "resume").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    // 80 MiB of incompressible data: ten upload requests of 8 MiB.
    let mut blocks: Vec<(BlockId, u64)> = Vec::new();
    for i in 0..5u64 {
        let data = pseudo_random(16 << 20, 100 + i);
        blocks.extend(
            cut(&data, &ChunkConfig::DEFAULT)
                .map(|r| (BlockId::of(&data[r.clone()]), r.len() as u64)),
        );
        a.write(&format!("videos/clip{i}.bin"), &data);
    }
    let total: u64 = 80 << 20;
    assert_eq!(blocks.iter().map(|b| b.1).sum::<u64>(), total);
    // This test counts what one cut pass left on the server; early commits have their own.
    a.engine.set_checkpoints(None);
    // The server stores the first upload request's blocks and answers; the connection drops
    // before that answer arrives (the other requests in flight may or may not have landed).
    a.remote.inject_fault(Fault::LoseAnswerTo("put_blocks"));
    let failed = a.try_sync().await;
    assert!(
        matches!(failed, Err(SyncError::Remote(_))),
        "the pass fails on the dropped connection: {failed:?}"
    );
    let mut acknowledged = 0;
    while let Ok(event) = a.events.try_recv() {
        if let Event::Progress {
            direction: "upload",
            done,
            ..
        } = event
        {
            acknowledged = done;
        }
    }
    a.reconnect(&server, &token).await;
    // Uploads run several requests at once, so the server may also hold blocks of a request
    // whose answer the drop cut off: what it lacks is at most what was not acknowledged.
    let ids: Vec<BlockId> = blocks.iter().map(|b| b.0).collect();
    let lacking: u64 = a
        .remote
        .lacking(&ids)
        .await
        .expect("lacking")
        .into_iter()
        .map(|i| blocks[i].1)
        .sum();
    assert!(
        lacking > 0 && lacking < total && lacking <= total - acknowledged,
        "the server lacks {lacking} bytes after {acknowledged} of {total} were acknowledged"
    );
    // Requests the server had read whole before the drop may still be landing, so the server
    // can only gain blocks between that question and the next pass: what the pass sends is at
    // most what was lacking then, and never zero (the requests behind them were never sent).
    let resumed = a.sync().await;
    assert!(
        resumed.bytes_up > 0 && resumed.bytes_up <= lacking,
        "only blocks the server did not get are sent again: {} sent, {lacking} lacking",
        resumed.bytes_up
    );
    let still: Vec<usize> = a.remote.lacking(&ids).await.expect("lacking");
    assert!(
        still.is_empty(),
        "the server lacks {} blocks after the pass",
        still.len()
    );
    assert_eq!(resumed.uploaded, 5);
    let pulled = b.sync().await;
    assert_eq!(pulled.downloaded, 5);
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
}

/// A long upload commits the files it has finished before its end: each file is announced
/// once, another device gets the early ones whole while the rest travels, and a pass cut
/// after such a commit (its answer lost, even) keeps it and sends only the rest. A file that
/// became a directory is not in an early commit (a put below a remote file is not a valid
/// edit of the remote tree); it waits for the pass's own commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upload_commits_whole_files_early_and_a_cut_pass_keeps_them() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "early").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    a.write("x", b"a file, soon a directory");
    let first = a.sync().await;
    b.sync().await;
    while a.events.try_recv().is_ok() {}
    // Early commits as soon as files are whole, with the upload held to 12 MiB/s, so files
    // are whole on the server well before the upload ends.
    a.engine.set_checkpoints(Some(std::time::Duration::ZERO));
    a.remote.set_limits(Some(12 << 20), None);
    for i in 0..6u64 {
        let len = (i as usize + 1) << 20;
        a.write(&format!("music/m{i}.bin"), &pseudo_random(len, 100 + i));
    }
    let whole = a.sync().await;
    assert!(
        whole.seq >= first.seq + 2,
        "early commits before the pass's own: {whole:?}"
    );
    let mut announced = BTreeMap::new();
    while let Ok(event) = a.events.try_recv() {
        if let Event::File {
            what: "uploaded",
            path,
        } = event
        {
            *announced.entry(path).or_insert(0) += 1;
        }
    }
    assert_eq!(announced.len(), 6, "{announced:?}");
    assert!(announced.values().all(|n| *n == 1), "{announced:?}");
    assert_eq!(whole.uploaded, 6);

    std::fs::remove_file(a.root.join("x")).expect("rm");
    a.write("x/inner.bin", &pseudo_random(1 << 20, 7));
    let mut sizes = BTreeMap::new();
    for i in 0..8u64 {
        let len = (i as usize + 1) << 20;
        a.write(&format!("clips/c{i}.bin"), &pseudo_random(len, 200 + i));
        sizes.insert(format!("clips/c{i}.bin"), len as u64);
    }
    // The first early commit is made, then the connection drops before its answer arrives.
    a.remote.inject_fault(Fault::LoseAnswerTo("checkpoint"));
    let cut = a.try_sync().await;
    assert!(matches!(cut, Err(SyncError::Remote(_))), "{cut:?}");
    // B gets the early commit: some of the new files, each whole; `x` is still a file.
    let early = b.sync().await;
    let got: Vec<String> = sizes
        .keys()
        .filter(|p| b.root.join(p).exists())
        .cloned()
        .collect();
    assert!(
        !got.is_empty() && got.len() < sizes.len(),
        "early commit held {got:?}"
    );
    assert_eq!(early.downloaded, 6 + got.len() as u64);
    for path in &got {
        assert_eq!(
            std::fs::read(b.root.join(path)).expect("read"),
            std::fs::read(a.root.join(path)).expect("read"),
            "{path} is whole"
        );
    }
    assert!(b.root.join("x").is_file());
    // A's next pass finds its early commit on the server, sends only the rest, and commits.
    a.reconnect(&server, &token).await;
    let early_bytes: u64 = got.iter().map(|p| sizes[p]).sum();
    let rest_bytes: u64 = sizes.values().sum::<u64>() + (1 << 20) - early_bytes;
    let resumed = a.sync().await;
    assert_eq!(
        resumed.uploaded,
        (sizes.len() - got.len()) as u64 + 1,
        "{resumed:?}"
    );
    assert!(resumed.bytes_up <= rest_bytes, "{resumed:?}");
    assert_eq!(resumed.conflicts, 0);
    b.sync().await;
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
    assert!(b.root.join("x/inner.bin").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edited_between_scan_and_upload_is_never_committed_half_old() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "racing").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    let first = pseudo_random(3 << 20, 7);
    let second = pseudo_random(3 << 20, 8);
    a.write("report.bin", &first);
    // The edit lands after the scan hashed the first content and before its blocks are read
    // for the upload (the "which blocks do you lack" request comes in between).
    let path = a.root.join("report.bin");
    let edit = second.clone();
    let edited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = std::sync::Arc::clone(&edited);
    a.remote.on_request(move |name| {
        if name == "lacking" && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::fs::write(&path, &edit).expect("edit");
        }
    });
    let failed = a.try_sync().await;
    assert!(edited.load(std::sync::atomic::Ordering::SeqCst));
    match failed {
        Err(SyncError::Local(message)) => assert!(
            message.contains("changed while it was being uploaded"),
            "{message}"
        ),
        other => panic!("the pass must refuse to commit a file read half-old: {other:?}"),
    }
    let nothing = b.sync().await;
    assert_eq!(nothing.downloaded, 0, "nothing was committed: {nothing:?}");
    // The next pass reads the file again and sends what it holds now.
    let again = a.sync().await;
    assert_eq!(again.uploaded, 1, "{again:?}");
    assert_eq!(b.sync().await.downloaded, 1);
    assert_eq!(
        std::fs::read(b.root.join("report.bin")).expect("read"),
        second
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_not_made_twice() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "lost").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    a.write("notes.txt", b"first");
    a.sync().await;
    b.sync().await;
    a.write("notes.txt", b"second, from a");
    // The server commits; the answer never arrives.
    a.remote.inject_fault(Fault::LoseAnswerTo("commit"));
    assert!(a.try_sync().await.is_err(), "the client cannot know");
    a.reconnect(&server, &token).await;
    // The next pass finds its own change on the server: no conflict, nothing uploaded again.
    let again = a.sync().await;
    assert_eq!(again.conflicts, 0, "{again:?}");
    assert_eq!((again.uploaded, again.bytes_up), (0, 0), "{again:?}");
    let pulled = b.sync().await;
    assert_eq!(pulled.downloaded, 1);
    assert_eq!(
        std::fs::read(b.root.join("notes.txt")).expect("read"),
        b"second, from a"
    );
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
}

/// More tree nodes than one upload request holds (5,000 files in 10 directories: two requests
/// of file nodes, then the directories' and the root's). Connections dropped after the n-th
/// request of successive passes (n = 0, 1, 2…) cut the upload at every point, node requests
/// included, and each next pass goes on from what the server kept until one commits. (Had a
/// directory node been stored without its children, the next pass would not descend into
/// it and every commit would fail; nodes go up a level at a time for that reason. Requests
/// run several at a time, so this test does not force that ordering on its own.)
#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_during_a_node_upload_resume_and_converge() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "nodes").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    for i in 0..5000 {
        a.write(
            &format!("d{}/f{i:04}.txt", i % 10),
            format!("file {i}").as_bytes(),
        );
    }
    let mut dropped = 0;
    let mut done = None;
    for n in 0..80 {
        a.remote.inject_fault(Fault::LoseAnswer(n));
        match a.try_sync().await {
            Ok(summary) => {
                done = Some(summary);
                break;
            }
            Err(SyncError::Remote(_)) => {
                dropped += 1;
                a.reconnect(&server, &token).await;
            }
            Err(other) => panic!("pass after {dropped} dropped ones: {other}"),
        }
    }
    let done = done.expect("a pass completes once the drops come late enough");
    assert!(dropped >= 4, "the drops hit the upload: {dropped}");
    assert!(done.seq > 0, "{done:?}");
    b.sync().await;
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
    assert_eq!(snapshot(&b.root).len(), 5000 + 10);
}

/// An engine for `root` with its state in `state`, and its event receiver.
fn open_engine(root: &Path, state: &Path) -> (Engine, mpsc::UnboundedReceiver<Event>) {
    let (tx, events) = mpsc::unbounded_channel();
    let engine = Engine::open(
        EngineOptions {
            root: root.to_path_buf(),
            state_dir: state.to_path_buf(),
            device: "laptop".to_owned(),
            allow_mass_delete: false,
        },
        tx,
    )
    .expect("engine");
    (engine, events)
}

async fn connect(server: &TestServer, token: &str, folder: &str) -> Remote {
    Remote::connect(
        server.quic,
        "localhost",
        &Trust::Pinned(server.fingerprint.clone()),
        token,
        "laptop",
        folder,
    )
    .await
    .expect("connect")
}

/// The warnings among `events` so far.
fn warnings(events: &mut mpsc::UnboundedReceiver<Event>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Warning { message } = event {
            out.push(message);
        }
    }
    out
}

/// The JSON answer to an authenticated `GET path` on `server`.
async fn get_json(server: &TestServer, token: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}{path}", server.http))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// The files of the folder's head on `server`, by path (through REST).
async fn server_files(server: &TestServer, token: &str) -> Vec<String> {
    let listed = get_json(server, token, "/files/").await;
    let mut paths: Vec<String> = listed["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_owned))
        .collect();
    paths.sort();
    paths
}

/// The uid of each of the user's server folders, by name (creating `also` first).
async fn folder_uids(server: &TestServer, token: &str, also: &str) -> BTreeMap<String, String> {
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/folders", server.http))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": also }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let listed = get_json(server, token, "/folders").await;
    listed["folders"]
        .as_array()
        .expect("folders")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_owned(),
                f["uid"].as_str().expect("uid").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_bound_to_another_server_folder_deletes_nothing() {
    let server = start_server(1 << 30).await;
    let token = token(&server, "rebind").await;
    let uids = folder_uids(&server, &token, "other").await;
    let root = tempfile::tempdir().expect("root");
    let state = tempfile::tempdir().expect("state");
    std::fs::write(root.path().join("a.txt"), b"apple").expect("write");
    std::fs::write(root.path().join("b.txt"), b"banana").expect("write");

    let (mut engine, mut events) = open_engine(root.path(), state.path());
    assert!(
        !engine.bind(&uids["other"]).expect("bind"),
        "a new state is only bound"
    );
    let remote = connect(&server, &token, "other").await;
    assert_eq!(engine.pass(&remote).await.expect("pass").uploaded, 2);
    remote.close();
    drop(engine);

    // Meanwhile another device put two other files in `default`, one commit each: its head
    // (revision 2) is past the one the state saw of `other` (revision 1), so only the binding
    // tells the two folders apart.
    let mut desk = Device::new(&server, &token, "desktop").await;
    desk.write("c.txt", b"cherry");
    desk.sync().await;
    desk.write("d.txt", b"date");
    assert_eq!(desk.sync().await.seq, 2);

    // The same folder, now synced with `default`: the base of `other` would read a.txt and
    // b.txt as deleted there, and delete them here.
    let (mut engine, mut rebound) = open_engine(root.path(), state.path());
    assert!(
        !engine.bind(&uids["other"]).expect("bind"),
        "the same folder: kept"
    );
    assert!(
        engine.bind(&uids["default"]).expect("bind"),
        "another folder: forgotten"
    );
    let told = warnings(&mut rebound);
    assert!(
        told.len() == 1 && told[0].contains("another server folder"),
        "{told:?}"
    );
    let remote = connect(&server, &token, "default").await;
    let pass = engine.pass(&remote).await.expect("pass");
    assert_eq!(
        (pass.deleted_local, pass.uploaded, pass.downloaded),
        (0, 2, 2),
        "{pass:?}"
    );
    assert_eq!(
        server_files(&server, &token).await,
        ["a.txt", "b.txt", "c.txt", "d.txt"]
    );
    assert_eq!(
        std::fs::read(root.path().join("a.txt")).expect("a"),
        b"apple"
    );
    assert!(
        warnings(&mut events).is_empty(),
        "the first engine warned of nothing"
    );
    drop(engine);

    // The binding was saved with the pass: a third engine keeps the base.
    let (mut engine, mut events) = open_engine(root.path(), state.path());
    assert!(!engine.bind(&uids["default"]).expect("bind"));
    assert!(engine.pass(&remote).await.expect("pass").in_sync);
    assert!(warnings(&mut events).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_commits_gets_its_files_back_and_deletes_nothing() {
    let first = start_server(1 << 30).await;
    let token = token(&first, "restored").await;
    let root = tempfile::tempdir().expect("root");
    let state = tempfile::tempdir().expect("state");
    std::fs::write(root.path().join("a.txt"), b"apple").expect("write");
    std::fs::write(root.path().join("b.txt"), b"banana").expect("write");
    let (mut engine, mut events) = open_engine(root.path(), state.path());
    let remote = connect(&first, &token, "default").await;
    assert_eq!(engine.pass(&remote).await.expect("pass").uploaded, 2);
    remote.close();

    // Another server at revision 0 stands where this state saw revision 1 (as a server
    // restored from a backup older than the last commit), and the engine was not told of any
    // folder uid: the revision alone shows the base is not the server's past.
    let second = start_server(1 << 30).await;
    let token = support::token(&second, "restored").await;
    let remote = connect(&second, &token, "default").await;
    let pass = engine.pass(&remote).await.expect("pass");
    assert_eq!((pass.deleted_local, pass.uploaded), (0, 2), "{pass:?}");
    assert_eq!(server_files(&second, &token).await, ["a.txt", "b.txt"]);
    let told = warnings(&mut events);
    assert!(
        told.len() == 1 && told[0].contains("revision 0") && told[0].contains("revision 1"),
        "{told:?}"
    );
    assert!(engine.pass(&remote).await.expect("pass").in_sync);
    assert!(warnings(&mut events).is_empty(), "said once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_made_anew_at_the_path_is_compared_from_scratch() {
    let server = start_server(1 << 30).await;
    let token = token(&server, "anew").await;
    let home = tempfile::tempdir().expect("home");
    let root = home.path().join("Cairn");
    let state = tempfile::tempdir().expect("state");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::write(root.join("a.txt"), b"apple").expect("write");
    std::fs::write(root.join("b.txt"), b"banana").expect("write");
    let (mut engine, _) = open_engine(&root, state.path());
    assert!(!engine.bind("").expect("bind"), "a new state is only bound");
    let remote = connect(&server, &token, "default").await;
    assert_eq!(engine.pass(&remote).await.expect("pass").uploaded, 2);
    drop(engine);

    // The folder is deleted and made again with one file (as a drive not mounted under its
    // mount point shows an empty directory). Its base would delete a.txt and b.txt on the
    // server.
    std::fs::remove_dir_all(&root).expect("rm");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::write(root.join("c.txt"), b"cherry").expect("write");
    let (mut engine, mut events) = open_engine(&root, state.path());
    assert!(engine.bind("").expect("bind"), "forgotten");
    let told = warnings(&mut events);
    assert!(
        told.len() == 1 && told[0].contains("not the directory"),
        "{told:?}"
    );
    let pass = engine.pass(&remote).await.expect("pass");
    assert_eq!(
        (pass.deleted_remote, pass.downloaded, pass.uploaded),
        (0, 2, 1),
        "{pass:?}"
    );
    assert_eq!(
        server_files(&server, &token).await,
        ["a.txt", "b.txt", "c.txt"]
    );
    assert_eq!(std::fs::read(root.join("a.txt")).expect("a"), b"apple");
    drop(engine);
    // The new directory is the one recorded now.
    let (mut engine, mut events) = open_engine(&root, state.path());
    assert!(!engine.bind("").expect("bind"));
    assert!(warnings(&mut events).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_engine_whose_folder_goes_away_deletes_nothing() {
    let server = start_server(1 << 30).await;
    let token = token(&server, "unmounted").await;
    let home = tempfile::tempdir().expect("home");
    let root = home.path().join("Cairn");
    let state = tempfile::tempdir().expect("state");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::write(root.join("a.txt"), b"apple").expect("write");
    std::fs::write(root.join("b.txt"), b"banana").expect("write");
    let (mut engine, mut events) = open_engine(&root, state.path());
    engine.bind("").expect("bind");
    let remote = connect(&server, &token, "default").await;
    assert_eq!(engine.pass(&remote).await.expect("pass").uploaded, 2);

    // The folder goes away under the running engine (its drive is unmounted, or it is moved
    // or removed): the pass fails, and deletes nothing.
    std::fs::rename(&root, home.path().join("elsewhere")).expect("mv");
    match engine.pass(&remote).await {
        Err(SyncError::Local(message)) => {
            assert!(message.contains("cannot read the folder"), "{message}");
        }
        other => panic!("a missing folder must fail the pass: {other:?}"),
    }
    assert_eq!(server_files(&server, &token).await, ["a.txt", "b.txt"]);

    // An empty directory at the path (the mount point under an unmounted drive) is another
    // directory: compared from scratch, with a warning, deleting nothing.
    std::fs::create_dir(&root).expect("mkdir");
    let _ = warnings(&mut events);
    let pass = engine.pass(&remote).await.expect("pass");
    assert_eq!((pass.deleted_remote, pass.downloaded), (0, 2), "{pass:?}");
    let told = warnings(&mut events);
    assert!(
        told.len() == 1 && told[0].contains("not the directory"),
        "{told:?}"
    );
    assert_eq!(server_files(&server, &token).await, ["a.txt", "b.txt"]);
    assert!(engine.pass(&remote).await.expect("pass").in_sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_read_is_left_as_it_was_not_deleted() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "busy").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    let content = pseudo_random(48 << 20, 11);
    a.write("vm.img", &content);
    a.write("notes.txt", b"v1");
    a.sync().await;
    b.sync().await;

    // Something keeps writing to vm.img (a running VM, a log, a database): every read of it
    // sees it change, so the scan cannot read it. A file it cannot read is not a deleted file.
    let path = a.root.join("vm.img");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let touches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, touches) = (
            std::sync::Arc::clone(&stop),
            std::sync::Arc::clone(&touches),
        );
        std::thread::spawn(move || {
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let tick = touches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + tick);
                file.set_modified(when).expect("touch");
                std::thread::yield_now();
            }
        })
    };
    // Changed before the scan looks at it (else the scan cache takes it as unchanged).
    while touches.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    a.write("notes.txt", b"v2");
    let pass = a.sync().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    assert_eq!(pass.deleted_remote, 0, "{pass:?}");
    assert!(pass.problems >= 1 && !pass.in_sync, "{pass:?}");
    // The summary names it, for the daemon's status (`out_of_sync` with this list).
    assert!(
        pass.problem_paths.iter().any(|p| p.path == "vm.img"),
        "{:?}",
        pass.problem_paths
    );
    assert_eq!(pass.problem_count, pass.problem_paths.len() as u64);
    assert_eq!(pass.uploaded, 1, "notes.txt still goes: {pass:?}");
    let pulled = b.sync().await;
    assert_eq!(pulled.deleted_local, 0, "{pulled:?}");
    assert_eq!(
        std::fs::read(b.root.join("vm.img")).expect("vm.img"),
        content
    );
    assert_eq!(
        std::fs::read(b.root.join("notes.txt")).expect("notes"),
        b"v2"
    );

    // Once it can be read, it is synced as usual (only its time changed: no block to send).
    let settled = a.sync().await;
    assert_eq!(
        (settled.deleted_remote, settled.bytes_up),
        (0, 0),
        "{settled:?}"
    );
    assert!(settled.in_sync || a.sync().await.in_sync);
    b.sync().await;
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_ignored_for_a_while_are_seen_as_the_server_has_them_once_the_rule_goes() {
    let server = start_server(1 << 32).await;
    let token = token(&server, "ignoring").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    a.write("x.log", b"x v1");
    a.write("y.log", b"y v1");
    a.sync().await;
    b.sync().await;
    // a ignores the logs; b edits both before it has the rule.
    a.write(".cairnignore", b"*.log\n");
    a.sync().await;
    b.write("x.log", b"x v2 from b");
    b.write("y.log", b"y v2 from b");
    assert_eq!(b.sync().await.uploaded, 2);
    let ignoring = a.sync().await;
    assert_eq!(
        (ignoring.downloaded, ignoring.uploaded),
        (0, 0),
        "{ignoring:?}"
    );
    assert_eq!(std::fs::read(a.root.join("y.log")).expect("y"), b"y v1");

    // The rule goes. x.log, deleted on a while ignored, comes back as the server has it; y.log,
    // still the old version on a, is not sent over the server's newer one: both are kept.
    std::fs::remove_file(a.root.join("x.log")).expect("rm");
    std::fs::remove_file(a.root.join(".cairnignore")).expect("rm");
    let back = a.sync().await;
    assert_eq!(back.deleted_remote, 1, "only the rules file: {back:?}");
    assert_eq!(back.conflicts, 1, "{back:?}");
    assert_eq!(
        std::fs::read(a.root.join("x.log")).expect("x"),
        b"x v2 from b"
    );
    assert_eq!(
        std::fs::read(a.root.join("y.log")).expect("y"),
        b"y v2 from b"
    );
    let copies: Vec<Vec<u8>> = snapshot(&a.root)
        .into_iter()
        .filter(|(path, _)| path.starts_with("y (conflict"))
        .map(|(_, (bytes, _))| bytes)
        .collect();
    assert_eq!(copies, [b"y v1".to_vec()]);
    a.sync().await;
    // b's first pass still scans under its copy of the rule (the copy's name ends in .log),
    // and learns that the rule went; the next one fetches what the rule had hidden.
    b.sync().await;
    b.sync().await;
    assert_eq!(snapshot(&a.root), snapshot(&b.root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_deleted_elsewhere_goes_with_desktop_metadata_but_not_with_ignored_files() {
    let server = start_server(1 << 30).await;
    let token = token(&server, "finder").await;
    let mut a = Device::new(&server, &token, "laptop").await;
    let mut b = Device::new(&server, &token, "desktop").await;
    a.write("photos/p.jpg", b"a photo");
    a.write("notes/n.txt", b"a note");
    a.sync().await;
    b.sync().await;
    // On b, a file manager leaves its metadata in one directory, and an editor its swap file
    // in the other; neither is synced.
    b.write("photos/.DS_Store", b"finder");
    b.write("photos/._p.jpg", b"resource fork");
    b.write("notes/.n.txt.swp", b"vim");
    std::fs::remove_dir_all(a.root.join("photos")).expect("rm");
    std::fs::remove_dir_all(a.root.join("notes")).expect("rm");
    assert_eq!(
        a.sync().await.deleted_remote,
        4,
        "two files, two directories"
    );
    let pass = b.sync().await;
    assert!(!b.root.join("photos").exists(), "metadata does not keep it");
    assert!(
        b.root.join("notes/.n.txt.swp").is_file(),
        "an unsynced file is kept"
    );
    assert!(!b.root.join("notes/n.txt").exists());
    assert_eq!(pass.problems, 1, "{pass:?}");
    let mut told = Vec::new();
    while let Ok(event) = b.events.try_recv() {
        if let Event::Problem { path, message } = event {
            told.push(format!("{path}: {message}"));
        }
    }
    assert!(
        told.iter()
            .any(|m| m.starts_with("notes: ") && m.contains(".n.txt.swp")),
        "{told:?}"
    );
    assert_eq!(server_files(&server, &token).await, Vec::<String>::new());
}
