//! The QUIC sync protocol's messages and framing (ALPN [`ALPN`], version [`PROTOCOL_VERSION`]).
//!
//! Every exchange runs on its own bidirectional QUIC stream, so requests are independent and
//! pipeline freely: the client opens a stream, writes one [`Request`] frame (for
//! [`Request::PutBlocks`] followed by `count` raw block frames) and finishes its side; the server
//! answers with one [`Response`] frame (for [`Response::Nodes`] and [`Response::Blocks`] followed
//! by `count` raw frames) and finishes. The first stream of a connection carries
//! [`Request::Hello`]; the server refuses every other request until a hello succeeded, and a new
//! hello (with a fresh access token) may come at any time.
//!
//! A frame is a 4-byte big-endian length and that many bytes. Control frames hold a message
//! encoded with postcard (a stable, documented serde format) and are at most
//! [`CONTROL_FRAME_MAX`]; raw frames hold one block or node and are at most [`RAW_FRAME_MAX`]. A
//! reader checks the length before it allocates, so a hostile peer cannot make it reserve more.
//! This module does no IO: callers read the header, ask [`frame_len`], read that many bytes and
//! call [`decode`].

use cairn_store::{BlockId, NodeId};
use serde::{Deserialize, Serialize};

/// The ALPN protocol id of Cairn's QUIC endpoint.
pub const ALPN: &[u8] = b"cairn/1";

/// The protocol version a hello carries; a server answers a different one with
/// [`ErrorCode::Version`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest control frame: 4 MiB, room for [`IDS_PER_REQUEST_MAX`] ids and then some.
pub const CONTROL_FRAME_MAX: u32 = 4 * 1024 * 1024;

/// Largest control frame a server reads on a connection that has not said hello yet: 64 KiB, room
/// for a hello (an access token is well under 4 KiB). Before authentication a peer may not make
/// the server hold [`CONTROL_FRAME_MAX`] per stream.
pub const HELLO_FRAME_MAX: u32 = 64 * 1024;

/// Largest raw frame: one block or node at the store's limit.
pub const RAW_FRAME_MAX: u32 = cairn_store::limits::BLOCK_SIZE_MAX;

/// Most ids one request may name (nodes, blocks, lacking queries) and most raw frames one
/// request or response may carry.
pub const IDS_PER_REQUEST_MAX: u32 = 16 * 1024;

/// Longest folder name in a request.
pub const FOLDER_NAME_MAX: usize = 255;

/// An access token in a hello: encoded as the string it is, never shown by `Debug` (a request
/// logged or put in an error message must not carry a credential).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessToken(pub String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(…)")
    }
}

/// What the client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Authenticates the connection (again, when the token was refreshed).
    Hello {
        /// Must be [`PROTOCOL_VERSION`].
        version: u32,
        /// The JWT access token from the REST login.
        token: AccessToken,
        /// The client's device name, recorded with its commits.
        device: String,
    },
    /// The folder's head.
    GetHead {
        /// Folder name.
        folder: String,
    },
    /// Tree nodes by id; answered with [`Response::Nodes`] and one raw frame per id, in order.
    GetNodes {
        /// Folder name.
        folder: String,
        /// Node ids, at most [`IDS_PER_REQUEST_MAX`].
        ids: Vec<NodeId>,
    },
    /// Which of these blocks (or nodes) the server does not have for this folder.
    Lacking {
        /// Folder name.
        folder: String,
        /// Block ids, at most [`IDS_PER_REQUEST_MAX`].
        ids: Vec<BlockId>,
    },
    /// Stores blocks (data or tree nodes): followed by `count` raw frames. The server hashes each
    /// one itself.
    PutBlocks {
        /// Folder name.
        folder: String,
        /// Raw frames that follow, at most [`IDS_PER_REQUEST_MAX`].
        count: u32,
    },
    /// Blocks by id; answered with [`Response::Blocks`] and one raw frame per id, in order.
    GetBlocks {
        /// Folder name.
        folder: String,
        /// Block ids, at most [`IDS_PER_REQUEST_MAX`].
        ids: Vec<BlockId>,
    },
    /// Compare-and-swap of the folder head from `base_seq` to a tree whose nodes and blocks were
    /// put before.
    Commit {
        /// Folder name.
        folder: String,
        /// The head the client merged onto.
        base_seq: u64,
        /// The new root directory node.
        root: NodeId,
    },
    /// A [`Request::Commit`] that also keeps conflict losers in the version history: for each
    /// [`KeptVersion`], the server records its file node as a version of its path just before
    /// the new head's version of that path, so the loser is restorable although the head never
    /// held it (a client that makes no conflict copies sends this). Answered like a commit.
    CommitKeeping {
        /// Folder name.
        folder: String,
        /// The head the client merged onto.
        base_seq: u64,
        /// The new root directory node.
        root: NodeId,
        /// The losing versions, at most [`IDS_PER_REQUEST_MAX`]; their nodes and blocks were
        /// put before, like the tree's.
        kept: Vec<KeptVersion>,
    },
}

/// A file version a commit keeps in the history without making it the head's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersion {
    /// The file's path in the folder (a [`crate::path::RelPath`] as text).
    pub path: String,
    /// The file node of the kept content.
    pub node: NodeId,
}

impl Request {
    /// The folder a request is about (`None` for hello).
    pub fn folder(&self) -> Option<&str> {
        match self {
            Request::Hello { .. } => None,
            Request::GetHead { folder }
            | Request::GetNodes { folder, .. }
            | Request::Lacking { folder, .. }
            | Request::PutBlocks { folder, .. }
            | Request::GetBlocks { folder, .. }
            | Request::Commit { folder, .. }
            | Request::CommitKeeping { folder, .. } => Some(folder),
        }
    }

    /// A word for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::GetHead { .. } => "get_head",
            Request::GetNodes { .. } => "get_nodes",
            Request::Lacking { .. } => "lacking",
            Request::PutBlocks { .. } => "put_blocks",
            Request::GetBlocks { .. } => "get_blocks",
            Request::Commit { .. } => "commit",
            Request::CommitKeeping { .. } => "commit_keeping",
        }
    }

    /// Checks the request's own limits (what can be checked without state).
    ///
    /// # Errors
    /// A message for [`ErrorCode::BadRequest`].
    pub fn check(&self) -> Result<(), String> {
        if let Some(folder) = self.folder()
            && (folder.is_empty() || folder.len() > FOLDER_NAME_MAX)
        {
            return Err(format!(
                "a folder name must have 1 to {FOLDER_NAME_MAX} bytes"
            ));
        }
        let count = match self {
            Request::GetNodes { ids, .. } => ids.len(),
            Request::Lacking { ids, .. } | Request::GetBlocks { ids, .. } => ids.len(),
            Request::PutBlocks { count, .. } => usize::try_from(*count).unwrap_or(usize::MAX),
            Request::CommitKeeping { kept, .. } => kept.len(),
            Request::Hello { .. } | Request::GetHead { .. } | Request::Commit { .. } => 0,
        };
        if count > IDS_PER_REQUEST_MAX as usize {
            return Err(format!(
                "{} names {count} items; at most {IDS_PER_REQUEST_MAX} per request",
                self.name()
            ));
        }
        Ok(())
    }
}

/// The server's limits, sent in answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest control frame the server reads.
    pub control_frame_max: u32,
    /// Largest raw frame (block) the server reads.
    pub raw_frame_max: u32,
    /// Most ids or raw frames per request.
    pub ids_per_request_max: u32,
    /// Concurrent streams a client may open.
    pub streams_max: u32,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The hello was accepted.
    Hello {
        /// The server's protocol version.
        version: u32,
        /// The server's limits.
        limits: Limits,
        /// The authenticated user's name.
        user: String,
    },
    /// The folder's head.
    Head {
        /// Commit sequence number (0: the empty folder nobody committed to).
        seq: u64,
        /// Root directory node.
        root: NodeId,
    },
    /// `count` raw frames follow, one node encoding per requested id, in order.
    Nodes {
        /// Frames that follow.
        count: u32,
    },
    /// The positions (into the request's ids) of the blocks the server lacks.
    Lacking {
        /// Indices, ascending.
        indices: Vec<u32>,
    },
    /// Blocks were stored.
    Stored {
        /// The ids the server computed, in order of the frames.
        ids: Vec<BlockId>,
        /// How many of them were new to the store.
        new: u32,
    },
    /// `count` raw frames follow, one block per requested id, in order.
    Blocks {
        /// Frames that follow.
        count: u32,
    },
    /// The commit was accepted as the new head.
    Committed {
        /// The new head's sequence number.
        seq: u64,
    },
    /// The commit's base is not the head: pull, merge and try again.
    Stale {
        /// Current head sequence number.
        seq: u64,
        /// Current head root.
        root: NodeId,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// One line for a person.
        message: String,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Malformed or over a limit.
    BadRequest,
    /// No valid hello on this connection, or the token expired: send a hello with a fresh token.
    Unauthorized,
    /// No such folder, node or block for this user (also what "not yours" looks like).
    NotFound,
    /// A commit names nodes or blocks that were never put (or were collected): put them again.
    Missing,
    /// A commit's tree is malformed (nodes that do not decode, wrong kinds, too deep).
    InvalidTree,
    /// The commit would exceed the user's quota.
    OverQuota,
    /// The server is busy; retry later.
    Busy,
    /// Another protocol version.
    Version,
    /// Anything else.
    Internal,
}

/// A frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The length a frame header announces, checked against `max` before anything is allocated.
///
/// # Errors
/// [`FrameError::TooLarge`].
pub fn frame_len(header: [u8; 4], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len as usize)
}

/// A control frame: header and postcard encoding of `message`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the encoding exceeds [`CONTROL_FRAME_MAX`];
/// [`FrameError::Malformed`] if serde refuses the value (it does not for these types).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(message, vec![0u8; 4])
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    if len > CONTROL_FRAME_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: CONTROL_FRAME_MAX,
        });
    }
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// The header of a raw frame of `len` bytes.
///
/// # Errors
/// [`FrameError::TooLarge`] over [`RAW_FRAME_MAX`].
pub fn raw_header(len: usize) -> Result<[u8; 4], FrameError> {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    if len > RAW_FRAME_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: RAW_FRAME_MAX,
        });
    }
    Ok(len.to_be_bytes())
}

/// Decodes a control frame's body (without its header). The whole body must be used.
///
/// # Errors
/// [`FrameError::Malformed`]. Never panics, whatever the bytes.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(v: &T) {
        let frame = encode(v).unwrap();
        let len = frame_len(frame[..4].try_into().unwrap(), CONTROL_FRAME_MAX).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: T = decode(&frame[4..]).unwrap();
        assert_eq!(&back, v);
    }

    #[test]
    fn messages_round_trip() {
        let id = NodeId::of(b"x");
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            token: AccessToken("secret.jwt.token".into()),
            device: "laptop".into(),
        };
        round_trip(&hello);
        // The token is on the wire as a plain string, and never in a `Debug` rendering.
        assert!(!format!("{hello:?}").contains("secret"));
        let plain = encode(&(0u8, PROTOCOL_VERSION, "secret.jwt.token", "laptop")).expect("plain");
        assert_eq!(encode(&hello).expect("hello"), plain);
        round_trip(&Request::Commit {
            folder: "default".into(),
            base_seq: 7,
            root: id,
        });
        round_trip(&Request::CommitKeeping {
            folder: "default".into(),
            base_seq: 7,
            root: id,
            kept: vec![KeptVersion {
                path: "a/b.txt".into(),
                node: id,
            }],
        });
        round_trip(&Request::GetNodes {
            folder: "default".into(),
            ids: vec![id; 3],
        });
        round_trip(&Response::Stale { seq: 9, root: id });
        round_trip(&Response::Error {
            code: ErrorCode::Missing,
            message: "m".into(),
        });
    }

    /// Pins the encoding: a change here breaks every deployed client.
    #[test]
    fn golden_encoding() {
        let frame = encode(&Request::GetHead {
            folder: "default".into(),
        })
        .unwrap();
        assert_eq!(frame, b"\0\0\0\x09\x01\x07default");
        let frame = encode(&Response::Committed { seq: 300 }).unwrap();
        assert_eq!(frame, b"\0\0\0\x03\x06\xac\x02");
    }

    #[test]
    fn limits_are_checked_before_allocation() {
        assert_eq!(
            frame_len([0xff; 4], CONTROL_FRAME_MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: CONTROL_FRAME_MAX
            })
        );
        assert!(raw_header(RAW_FRAME_MAX as usize + 1).is_err());
        assert!(raw_header(RAW_FRAME_MAX as usize).is_ok());
        let too_many = Request::Lacking {
            folder: "f".into(),
            ids: vec![BlockId::of(b""); IDS_PER_REQUEST_MAX as usize + 1],
        };
        assert!(too_many.check().is_err());
        let no_folder = Request::GetHead { folder: "".into() };
        assert!(no_folder.check().is_err());
    }

    #[test]
    fn trailing_bytes_and_garbage_are_errors() {
        let mut frame = encode(&Request::GetHead { folder: "a".into() }).unwrap();
        frame.push(0);
        assert!(decode::<Request>(&frame[4..]).is_err());
        assert!(decode::<Request>(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode::<Response>(&[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }
}
