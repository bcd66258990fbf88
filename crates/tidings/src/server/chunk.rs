//! HTTP/1.1 chunked framing (RFC 9112 section 7.1), as a lean stream writes it: each
//! frame of a body is one chunk, `<len in hex>\r\n<data>\r\n`, and `0\r\n\r\n` ends it.
//! Built here, outside `serve`, because [`SharedBytes`](super::SharedBytes) carries the
//! chunk form of what a fan-out shares.

// Without `serve`, nothing writes chunks; the framing stays for `SharedBytes`.
#![cfg_attr(not(feature = "serve"), allow(dead_code))]

/// The line that opens a chunk: `<len in hex>\r\n`, kept inline (no allocation per chunk).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChunkStart {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkStart {
    /// The line for a chunk of `len` bytes.
    pub(crate) fn new(len: usize) -> ChunkStart {
        let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
        let mut bytes = [0u8; 18];
        for (i, slot) in bytes[..digits].iter_mut().enumerate() {
            let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
            *slot = b"0123456789abcdef"[nibble];
        }
        bytes[digits] = b'\r';
        bytes[digits + 1] = b'\n';
        ChunkStart {
            bytes,
            len: digits + 2,
        }
    }

    /// The line's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for ChunkStart {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// What follows every chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk, which ends a chunked body (no trailers).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
