//! Encoded events that many sessions get at once, with their wire form built once.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

use super::chunk::{ChunkStart, CHUNK_END};

/// Encoded events (one or several, back to back) that a fan-out pushes to many sessions
/// with [`Session::push_bytes_joined`](super::Session::push_bytes_joined).
///
/// The form a lean HTTP/1.1 stream puts on the wire (see [`serve`](fn@super::serve)) — the
/// bytes as one chunk, with its size line before and `\r\n` after — is built the first
/// time a session writes them directly and shared by every other session that does, so
/// each of those writes is one contiguous `send(2)` with no framing of its own. Build one
/// `SharedBytes` per set of events and hand the same value to every session that gets
/// that set.
#[derive(Debug)]
pub struct SharedBytes {
    bytes: Bytes,
    #[cfg_attr(not(feature = "serve"), allow(dead_code))] // used by `server::serve` only
    chunk: OnceLock<Bytes>,
}

impl SharedBytes {
    /// Wraps encoded events.
    pub fn new(bytes: Bytes) -> SharedBytes {
        SharedBytes {
            bytes,
            chunk: OnceLock::new(),
        }
    }

    /// The encoded events.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The bytes as one HTTP/1.1 chunk (built on the first call).
    #[cfg_attr(not(feature = "serve"), allow(dead_code))] // used by `server::serve` only
    pub(crate) fn chunk(&self) -> &Bytes {
        self.chunk.get_or_init(|| {
            let start = ChunkStart::new(self.bytes.len());
            let mut chunk = BytesMut::with_capacity(
                start.as_bytes().len() + self.bytes.len() + CHUNK_END.len(),
            );
            chunk.put_slice(start.as_bytes());
            chunk.put_slice(&self.bytes);
            chunk.put_slice(CHUNK_END);
            chunk.freeze()
        })
    }
}

impl From<Bytes> for SharedBytes {
    fn from(bytes: Bytes) -> SharedBytes {
        SharedBytes::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_is_the_bytes_framed_once() {
        let shared = SharedBytes::new(Bytes::from(vec![b'x'; 300]));
        let chunk = shared.chunk();
        assert!(chunk.starts_with(b"12c\r\nxxx"));
        assert!(chunk.ends_with(b"xxx\r\n"));
        assert_eq!(chunk.len(), 5 + 300 + 2);
        // Built once: every later call gives the same buffer.
        assert_eq!(shared.chunk().as_ptr(), chunk.as_ptr());
    }
}
