//! Reading and writing frames on QUIC streams (feature `quic`): the only IO in this crate, kept
//! to the framing of [`crate::wire`] so client and server share it.

use quinn::{RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{self, CONTROL_FRAME_MAX, FrameError};

/// A frame could not be moved over a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Too large or malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed or reset the stream, or the connection was lost.
    #[error("reading from the connection: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing failed (connection lost, stream stopped).
    #[error("writing to the connection: {0}")]
    Write(#[from] quinn::WriteError),
}

/// The largest UDP payload MTU discovery probes for. Quinn's default stops at 1452 (Ethernet);
/// probing higher costs a few lost probes where the path is Ethernet, and where it allows more
/// (loopback, jumbo-frame LANs) each packet carries more, so fewer packets are encrypted, sent
/// and acknowledged per byte.
pub const MTU_PROBE_MAX: u16 = 9000;

/// Transport settings both ends share; each adds its own (stream counts, timeouts).
#[must_use]
pub fn transport() -> quinn::TransportConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_PROBE_MAX);
    let mut transport = quinn::TransportConfig::default();
    transport.mtu_discovery_config(Some(mtu));
    transport
}

async fn read_frame(recv: &mut RecvStream, max: u32) -> Result<Vec<u8>, StreamError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await?;
    let len = wire::frame_len(header, max)?;
    // The stream's own chunks are appended to a buffer that is never zero-filled first: a
    // zeroed buffer the size of a block costs an allocator that recycles memory (the client's
    // jemalloc) a `madvise` and a page fault per page, per block received.
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(quinn::ReadExactError::FinishedEarly(body.len()).into()),
            Err(e) => return Err(quinn::ReadExactError::ReadError(e).into()),
        }
    }
    Ok(body)
}

/// Reads one control frame and decodes it.
///
/// # Errors
/// [`StreamError`].
pub async fn read_control<T: DeserializeOwned>(recv: &mut RecvStream) -> Result<T, StreamError> {
    read_control_within(recv, CONTROL_FRAME_MAX).await
}

/// Reads one control frame of at most `max` bytes and decodes it.
///
/// # Errors
/// [`StreamError`].
pub async fn read_control_within<T: DeserializeOwned>(
    recv: &mut RecvStream,
    max: u32,
) -> Result<T, StreamError> {
    let body = read_frame(recv, max).await?;
    Ok(wire::decode(&body)?)
}

/// Reads one raw frame (a block or node) of at most `max` bytes.
///
/// # Errors
/// [`StreamError`].
pub async fn read_raw(recv: &mut RecvStream, max: u32) -> Result<Vec<u8>, StreamError> {
    read_frame(recv, max.min(wire::RAW_FRAME_MAX)).await
}

/// Writes one control frame.
///
/// # Errors
/// [`StreamError`].
pub async fn write_control<T: Serialize>(
    send: &mut SendStream,
    message: &T,
) -> Result<(), StreamError> {
    let frame = wire::encode(message)?;
    send.write_all(&frame).await?;
    Ok(())
}

/// Writes one raw frame. The stream takes the buffer as it is (no copy into its own).
///
/// # Errors
/// [`StreamError`].
pub async fn write_raw(send: &mut SendStream, bytes: Vec<u8>) -> Result<(), StreamError> {
    let header = wire::raw_header(bytes.len())?;
    send.write_all_chunks(&mut [
        bytes::Bytes::copy_from_slice(&header),
        bytes::Bytes::from(bytes),
    ])
    .await?;
    Ok(())
}
