//! The QUIC endpoint's refusals: no hello, a bad token, another user's blocks and nodes, forged
//! commits (blocks never uploaded, wrong sizes, a stale base), uploads never committed beyond
//! the quota, a changed certificate; and the client's answer to a server that takes a request
//! and never answers it.

use std::time::{Duration, Instant};

use cairn_client::remote::{CommitResult, Remote, RemoteError, Trust};
use cairn_protocol::stream::{read_control, write_control};
use cairn_protocol::wire::{ErrorCode, Limits, PROTOCOL_VERSION, Request, Response};
use cairn_store::dir::chunk_dir;
use cairn_store::node::{BlockRef, DirEntry, EntryKind, FileNode, Name, Node};
use cairn_store::{BlockId, NodeId};

mod support;

use support::{TestServer, start_server, token};

async fn connect(server: &TestServer, token: &str) -> Result<Remote, RemoteError> {
    Remote::connect(
        server.quic,
        "localhost",
        &Trust::Pinned(server.fingerprint.clone()),
        token,
        "test-device",
        "default",
    )
    .await
}

fn code(result: Result<impl std::fmt::Debug, RemoteError>) -> ErrorCode {
    match result {
        Err(e) => e.code().unwrap_or_else(|| panic!("not a refusal: {e}")),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

/// A root with one file of `blocks`, claiming `size`; returns (root bytes, file bytes, root id).
fn tree_with(blocks: &[&[u8]], size: u64) -> (Vec<u8>, Vec<u8>, NodeId) {
    let refs = blocks
        .iter()
        .map(|b| BlockRef {
            id: BlockId::of(b),
            len: u32::try_from(b.len()).expect("small"),
        })
        .collect();
    tree_of(refs, size)
}

/// A root with one file of the blocks `refs` (lengths as given), claiming `size`.
fn tree_of(refs: Vec<BlockRef>, size: u64) -> (Vec<u8>, Vec<u8>, NodeId) {
    let file = Node::File(FileNode::new(0o644, 0, refs).expect("file"));
    let entry = DirEntry {
        name: Name::new(b"f.txt".to_vec()).expect("name"),
        kind: EntryKind::File,
        size,
        mtime_ns: 0,
        mode: 0o644,
        child: file.id(),
    };
    let dir = chunk_dir(vec![entry]).expect("dir");
    let (root, root_node) = dir.nodes.into_iter().next().expect("one node");
    (root_node.to_bytes(), file.to_bytes(), root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_tokens_and_changed_certificates() {
    let server = start_server(1 << 20).await;
    assert_eq!(
        code(connect(&server, "not-a-token").await),
        ErrorCode::Unauthorized
    );
    let token = token(&server, "erin").await;
    let wrong_pin = Remote::connect(
        server.quic,
        "localhost",
        &Trust::Pinned("blake3:0000".to_owned()),
        &token,
        "d",
        "default",
    )
    .await;
    let Err(err) = wrong_pin else {
        panic!("a changed certificate was accepted")
    };
    assert!(err.to_string().contains("certificate"), "{err}");
    let remote = connect(&server, &token).await.expect("connects");
    let (seq, _) = remote.head().await.expect("head");
    assert_eq!(seq, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_hashes_are_not_capabilities() {
    let server = start_server(1 << 20).await;
    let alice = connect(&server, &token(&server, "alice").await)
        .await
        .expect("alice");
    let mallory = connect(&server, &token(&server, "mallory").await)
        .await
        .expect("mallory");
    let secret = b"alice's secret".to_vec();
    let (root_bytes, file_bytes, root) = tree_with(&[&secret], secret.len() as u64);
    alice
        .put_blocks(vec![secret.clone(), file_bytes, root_bytes])
        .await
        .expect("put");
    let (seq, _) = alice.head().await.expect("head");
    assert_eq!(
        alice.commit(seq, root).await.expect("commit"),
        CommitResult::Committed(1)
    );
    assert_eq!(
        alice
            .blocks(&[BlockId::of(&secret)])
            .await
            .expect("own block"),
        vec![secret.clone()]
    );

    // Mallory knows the hashes but gets nothing, and is told the block is lacking.
    assert_eq!(
        code(mallory.blocks(&[BlockId::of(&secret)]).await),
        ErrorCode::NotFound
    );
    assert_eq!(code(mallory.nodes(&[root]).await), ErrorCode::NotFound);
    assert_eq!(
        mallory
            .lacking(&[BlockId::of(&secret)])
            .await
            .expect("lacking"),
        vec![0]
    );
    // Nor can she commit a tree naming Alice's blocks without uploading them.
    let (_, _, root2) = tree_with(&[&secret], secret.len() as u64);
    assert_eq!(code(mallory.commit(0, root2).await), ErrorCode::Missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_commits_are_refused() {
    let server = start_server(1 << 20).await;
    let remote = connect(&server, &token(&server, "frank").await)
        .await
        .expect("connect");
    let data = b"some content".to_vec();
    // A tree whose blocks were never uploaded.
    let (root_bytes, file_bytes, root) = tree_with(&[&data], data.len() as u64);
    remote
        .put_blocks(vec![file_bytes.clone(), root_bytes.clone()])
        .await
        .expect("put nodes");
    assert_eq!(code(remote.commit(0, root).await), ErrorCode::Missing);
    // A directory entry that lies about the file's size (to dodge the quota).
    let (root_bytes, file_bytes, root) = tree_with(&[&data], 1);
    remote
        .put_blocks(vec![data.clone(), file_bytes, root_bytes])
        .await
        .expect("put");
    assert_eq!(code(remote.commit(0, root).await), ErrorCode::InvalidTree);
    // A file node that lies about its block's length, shorter (to store more than the usage
    // counts) or longer (reads past the block's end), with a directory entry that agrees.
    for len in [1u32, 100] {
        let refs = vec![BlockRef {
            id: BlockId::of(&data),
            len,
        }];
        let (root_bytes, file_bytes, root) = tree_of(refs, u64::from(len));
        remote
            .put_blocks(vec![data.clone(), file_bytes, root_bytes])
            .await
            .expect("put");
        assert_eq!(
            code(remote.commit(0, root).await),
            ErrorCode::InvalidTree,
            "a block of {} bytes claimed as {len}",
            data.len()
        );
    }
    // A root that is a file node.
    let (_, file_bytes, _) = tree_with(&[&data], data.len() as u64);
    remote
        .put_blocks(vec![file_bytes.clone()])
        .await
        .expect("put");
    assert_eq!(
        code(remote.commit(0, NodeId::of(&file_bytes)).await),
        ErrorCode::InvalidTree
    );
    // A good tree commits once; the same base again is stale.
    let (root_bytes, file_bytes, root) = tree_with(&[&data], data.len() as u64);
    remote
        .put_blocks(vec![file_bytes, root_bytes])
        .await
        .expect("put");
    assert_eq!(
        remote.commit(0, root).await.expect("commit"),
        CommitResult::Committed(1)
    );
    let empty = chunk_dir(Vec::new()).expect("empty").root;
    match remote.commit(0, empty).await.expect("answer") {
        CommitResult::Stale(seq, head) => assert_eq!((seq, head), (1, root)),
        other => panic!("stale base accepted: {other:?}"),
    }
    // Over quota (1 MiB): a 2 MiB file is refused while it is uploaded.
    let big: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    let halves: Vec<&[u8]> = big.chunks(1 << 20).collect();
    let (root_bytes, file_bytes, root) = tree_with(&halves, big.len() as u64);
    let mut blocks: Vec<Vec<u8>> = halves.iter().map(|h| h.to_vec()).collect();
    blocks.extend([file_bytes, root_bytes]);
    assert_eq!(code(remote.put_blocks(blocks).await), ErrorCode::OverQuota);
    assert_eq!(code(remote.commit(1, root).await), ErrorCode::Missing);
}

/// 600 KiB of bytes that differ with `seed`.
fn block_of(seed: u8) -> Vec<u8> {
    (0..600 * 1024u32)
        .map(|i| u8::try_from(i % 241).expect("small") ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_committed_count_against_the_quota() {
    let server = start_server(1 << 20).await;
    let remote = connect(&server, &token(&server, "gina").await)
        .await
        .expect("connect");
    let (a, b) = (block_of(1), block_of(2));
    remote
        .put_blocks(vec![a.clone()])
        .await
        .expect("600 KiB fit");
    // Another 600 KiB would leave 1.2 MiB uploaded and never committed, over the 1 MiB quota.
    let refused = remote.put_blocks(vec![b.clone()]).await;
    let Err(err) = &refused else {
        panic!("accepted: {refused:?}")
    };
    assert!(
        err.to_string().contains("not yet committed"),
        "the refusal says why: {err}"
    );
    assert_eq!(code(refused), ErrorCode::OverQuota);
    // The first upload is still the folder's, ready to commit, and sending it again costs
    // nothing (a resend after a lost answer).
    assert_eq!(
        remote.lacking(&[BlockId::of(&a)]).await.expect("lacking"),
        Vec::<usize>::new()
    );
    remote
        .put_blocks(vec![a.clone()])
        .await
        .expect("what the folder has fits even at the limit");

    // Committing the first upload releases its share of the quota for uploads...
    let (root_bytes, file_bytes, root) = tree_with(&[&a], a.len() as u64);
    remote
        .put_blocks(vec![file_bytes, root_bytes])
        .await
        .expect("nodes");
    assert_eq!(
        remote.commit(0, root).await.expect("commit"),
        CommitResult::Committed(1)
    );
    remote
        .put_blocks(vec![b.clone()])
        .await
        .expect("room for uploads again once the first was committed");
    // ...while committing the second too would exceed the quota itself.
    let (root_bytes, file_bytes, both) = tree_with(&[&a, &b], (a.len() + b.len()) as u64);
    remote
        .put_blocks(vec![file_bytes, root_bytes])
        .await
        .expect("nodes");
    assert_eq!(code(remote.commit(1, both).await), ErrorCode::OverQuota);
}

/// A stand-in sync endpoint (the server's own TLS set-up) that says hello, answers the first
/// `get_head` late but within the client's stall timeout, and takes every later request without
/// ever answering it: a stuck server whose connection is still alive.
async fn stuck_server(dir: &std::path::Path, late: Duration) -> (std::net::SocketAddr, String) {
    let tls = cairn_server::quic::load_tls(None, dir).expect("tls");
    let endpoint =
        cairn_server::quic::bind("127.0.0.1:0".parse().expect("addr"), &tls).expect("bind");
    let addr = endpoint.local_addr().expect("local addr");
    tokio::spawn(async move {
        let connection = endpoint
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        let mut heads = 0;
        let mut held = Vec::new();
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let answer = match read_control::<Request>(&mut recv).await.expect("request") {
                Request::Hello { .. } => Response::Hello {
                    version: PROTOCOL_VERSION,
                    limits: Limits {
                        control_frame_max: 1 << 20,
                        raw_frame_max: 1 << 24,
                        ids_per_request_max: 1024,
                        streams_max: 16,
                    },
                    user: "ann".into(),
                },
                Request::GetHead { .. } if heads == 0 => {
                    heads += 1;
                    tokio::time::sleep(late).await;
                    Response::Head {
                        seq: 7,
                        root: NodeId::of(b"root"),
                    }
                }
                _ => {
                    held.push((send, recv));
                    continue;
                }
            };
            write_control(&mut send, &answer).await.expect("answer");
            let _ = send.finish();
        }
        drop(endpoint);
    });
    (addr, tls.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_given_up_after_the_stall_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let stall = Duration::from_millis(1500);
    let (addr, fingerprint) = stuck_server(dir.path(), Duration::from_millis(600)).await;
    let remote = Remote::connect(
        addr,
        "localhost",
        &Trust::Pinned(fingerprint),
        "any-token",
        "test-device",
        "default",
    )
    .await
    .expect("connect");
    remote.set_stall_timeout(stall);

    // Slow, but within the timeout: answered.
    assert_eq!(
        remote.head().await.expect("a late answer"),
        (7, NodeId::of(b"root"))
    );

    // Never answered: an error once the timeout has passed, not a wait for ever.
    let started = Instant::now();
    let stuck = tokio::time::timeout(Duration::from_secs(30), remote.head())
        .await
        .expect("the client gave up by itself");
    let waited = started.elapsed();
    match stuck {
        Err(RemoteError::Stalled { request, after }) => {
            assert_eq!(request, "get_head");
            assert_eq!(after, stall);
        }
        other => panic!("expected a stall, got {other:?}"),
    }
    assert!(waited >= stall, "gave up early, after {waited:?}");
    let message = remote
        .head()
        .await
        .expect_err("the connection is closed")
        .to_string();
    assert!(
        message.contains("connection"),
        "a request after the stall fails on the closed connection: {message}"
    );
}

/// Before a hello the server reads no more than a hello's worth of a request (64 KiB), so an
/// unauthenticated peer cannot make it hold 4 MiB per stream; after one, the same request is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_hello_only_a_hello_sized_request_is_read() {
    let server = start_server(1 << 20).await;
    let token = token(&server, "nohello").await;
    let remote = Remote::connect_without_hello(
        server.quic,
        "localhost",
        &Trust::Pinned(server.fingerprint.clone()),
        "default",
    )
    .await
    .expect("connect");
    let ids: Vec<BlockId> = (0..16_384u32)
        .map(|i| BlockId::of(&i.to_le_bytes()))
        .collect();
    // A small request is read, and refused for the missing hello.
    assert_eq!(
        code(remote.blocks(&ids[..4]).await),
        ErrorCode::Unauthorized
    );
    // A large one (over 500 KiB of ids) is refused unread.
    match remote.blocks(&ids).await {
        Err(e) => assert!(
            matches!(e.code(), None | Some(ErrorCode::BadRequest)),
            "read before a hello: {e}"
        ),
        Ok(_) => panic!("answered before a hello"),
    }
    // After a hello the same request is read (and refused: none of these is the folder's).
    remote.hello(&token, "d").await.expect("hello");
    assert_eq!(code(remote.blocks(&ids).await), ErrorCode::NotFound);
}
