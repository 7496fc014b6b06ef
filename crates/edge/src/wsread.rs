//! A lean RFC 6455 frame reader for the server side.
//!
//! fastwebsockets' reader allocates 8 KiB per connection up front; most
//! connections are idle and their frames are a few hundred bytes. This
//! reader reserves [`MIN_READ`] bytes while waiting, grows only for a frame
//! that needs it, and frees its buffer whenever it is empty, so an idle
//! connection holds ~0.5 KiB here.
//!
//! It enforces what a server must: client frames are masked, reserved bits
//! are zero, control frames are short and unfragmented, and a frame over
//! the size limit is refused from its header, before its payload is read.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes reserved for a read when nothing is buffered.
pub(crate) const MIN_READ: usize = 512;

/// Frame opcodes.
pub(crate) mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// One frame, unmasked.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: BytesMut,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// A frame over the limit (close 1009).
    #[error("frame too large")]
    TooLarge,
    /// A protocol violation (close 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The peer closed the TCP connection.
    #[error("connection closed")]
    Eof,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads frames from one connection.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// A reader that starts with bytes already read from the connection.
    pub(crate) fn with_buffered(early: &[u8]) -> Self {
        Self {
            buf: BytesMut::from(early),
        }
    }

    /// Reads the next frame; payloads over `max` bytes are refused from the
    /// header.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read are kept in the reader's buffer, and a new
    /// call continues where the cancelled one stopped.
    pub(crate) async fn read<R: AsyncRead + Unpin>(&mut self, rd: &mut R, max: usize) -> Result<Frame, ReadError> {
        loop {
            match self.parse(max)? {
                Parsed::Frame(f) => {
                    if self.buf.is_empty() {
                        // Give the allocation back while the connection idles.
                        self.buf = BytesMut::new();
                    }
                    return Ok(f);
                }
                Parsed::Need(n) => {
                    self.buf.reserve(n.max(MIN_READ));
                    if rd.read_buf(&mut self.buf).await? == 0 {
                        return Err(ReadError::Eof);
                    }
                }
            }
        }
    }

    /// Reads and discards until EOF (lingering close).
    pub(crate) async fn drain<R: AsyncRead + Unpin>(&mut self, rd: &mut R) {
        loop {
            self.buf.clear();
            self.buf.reserve(MIN_READ);
            match rd.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    fn parse(&mut self, max: usize) -> Result<Parsed, ReadError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(Parsed::Need(2 - b.len()));
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = b[0] & 0x0F;
        if !matches!(
            opcode,
            op::CONTINUATION | op::TEXT | op::BINARY | op::CLOSE | op::PING | op::PONG
        ) {
            return Err(ReadError::Protocol("unknown opcode"));
        }
        if b[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let len7 = usize::from(b[1] & 0x7F);
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header = 2 + ext + 4;
        if b.len() < 2 + ext {
            return Ok(Parsed::Need(header - b.len()));
        }
        let len = match ext {
            0 => len7 as u64,
            2 => u64::from(u16::from_be_bytes([b[2], b[3]])),
            _ => u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]),
        };
        let control = opcode >= op::CLOSE;
        if control && (len > 125 || !fin) {
            return Err(ReadError::Protocol("invalid control frame"));
        }
        if len > max as u64 {
            return Err(ReadError::TooLarge);
        }
        let len = len as usize;
        if b.len() < header + len {
            return Ok(Parsed::Need(header + len - b.len()));
        }
        let mask = [b[2 + ext], b[3 + ext], b[4 + ext], b[5 + ext]];
        self.buf.advance(header);
        let mut payload = self.buf.split_to(len);
        unmask(&mut payload, mask);
        Ok(Parsed::Frame(Frame { fin, opcode, payload }))
    }
}

enum Parsed {
    Frame(Frame),
    Need(usize),
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[tokio::test]
    async fn reads_frames_split_across_reads() {
        let mut wire = masked(true, op::TEXT, b"Hello");
        wire.extend(masked(true, op::PING, b"p"));
        let big = vec![b'x'; 70_000];
        wire.extend(masked(false, op::TEXT, &big));
        wire.extend(masked(true, op::CONTINUATION, b"end"));
        // Deliver the bytes 7 at a time.
        let (mut client, mut server) = tokio::io::duplex(7);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(&wire).await;
        });
        let mut r = FrameReader::default();
        let f = r.read(&mut server, 1 << 20).await.expect("frame");
        assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, op::TEXT, &b"Hello"[..]));
        let f = r.read(&mut server, 1 << 20).await.expect("frame");
        assert_eq!((f.opcode, &f.payload[..]), (op::PING, &b"p"[..]));
        let f = r.read(&mut server, 1 << 20).await.expect("frame");
        assert_eq!((f.fin, f.payload.len()), (false, 70_000));
        assert!(f.payload.iter().all(|&b| b == b'x'));
        let f = r.read(&mut server, 1 << 20).await.expect("frame");
        assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, op::CONTINUATION, &b"end"[..]));
        assert_eq!(r.buf.capacity(), 0, "a reader with nothing buffered holds no buffer");
        assert!(matches!(r.read(&mut server, 1 << 20).await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn refuses_what_a_server_must() {
        async fn first(wire: Vec<u8>, max: usize) -> Result<Frame, ReadError> {
            let mut r = FrameReader::default();
            r.read(&mut &wire[..], max).await
        }
        assert!(matches!(
            first(masked(true, op::TEXT, &[b'a'; 100]), 99).await,
            Err(ReadError::TooLarge)
        ));
        let mut unmasked = masked(true, op::TEXT, b"hi");
        unmasked[1] &= 0x7F;
        assert!(matches!(first(unmasked, 99).await, Err(ReadError::Protocol(_))));
        assert!(matches!(
            first(masked(false, op::PING, b""), 99).await,
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            first(masked(true, 0x3, b""), 99).await,
            Err(ReadError::Protocol(_))
        ));
        let mut rsv = masked(true, op::TEXT, b"");
        rsv[0] |= 0x40;
        assert!(matches!(first(rsv, 99).await, Err(ReadError::Protocol(_))));
        // An oversize frame is refused from its header alone.
        let mut header_only = masked(true, op::TEXT, &[]);
        header_only[1] = 0x80 | 127;
        header_only.splice(2..2, (u64::MAX / 2).to_be_bytes());
        assert!(matches!(first(header_only, 1 << 20).await, Err(ReadError::TooLarge)));
    }
}
