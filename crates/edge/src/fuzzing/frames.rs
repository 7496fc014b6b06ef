//! The `ws_frame` fuzz target: the edge's RFC 6455 frame reader and
//! message assembler, driven over arbitrary client bytes.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

use super::model::{Model, Simple};
use crate::message::{Assembler, Event};
use crate::wsread::{op, Frame, FrameReader, ReadError};

/// Message limits the frame target picks from (its second input byte): the
/// edges of the 7-bit, 16-bit and 64-bit length forms, and the default
/// `max_message_bytes`.
const LIMITS: [usize; 8] = [0, 1, 2, 125, 126, 127, 65_536, 1 << 20];

/// The `ws_frame` target: the edge's RFC 6455 frame reader and message
/// assembler, as a session drives them (`session::read_loop`).
///
/// Input: byte 0 picks how many bytes each socket read returns (1–64),
/// byte 1 a message limit from `LIMITS`, the rest is what the client
/// sent after the upgrade.
///
/// # Panics
/// When an invariant breaks:
/// - a read returns the same frames and ends the same way however the
///   bytes are split across socket reads;
/// - a frame's payload is within the limit, its opcode known, a control
///   frame is final and at most 125 bytes;
/// - a frame, masked again, reads back as the same frame and nothing more;
/// - the assembler agrees with a plain model of RFC 6455 §5.4, §5.5.1,
///   §7.4 and §8.1: what it passes on, and which close code it answers
///   (1002, 1007 or 1009) to a broken sequence;
/// - the reader never waits on a source that has bytes.
pub fn ws_frame(data: &[u8]) {
    let [chunk, limit, wire @ ..] = data else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let max = LIMITS[usize::from(limit % 8)];
    let whole = drive(wire, wire.len().max(1), max);
    let split = drive(wire, chunk, max);
    assert_eq!(whole, split, "the result depends on how the bytes were split");
}

/// How one connection's bytes were taken.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    /// Frames read, in order.
    frames: Vec<(bool, u8, Vec<u8>)>,
    /// What the assembler passed on.
    events: Vec<Event>,
    /// Why reading stopped.
    end: End,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// All bytes were taken (EOF).
    Eof,
    /// The reader refused a frame (1009).
    TooLarge,
    /// The reader refused a frame (1002).
    Protocol(&'static str),
    /// The assembler refused a message or close frame.
    Close(u16),
    /// A valid close frame ended the session.
    Closed,
}

fn drive(wire: &[u8], chunk: usize, max: usize) -> Trace {
    let mut src = Chunked { data: wire, chunk };
    let mut reader = FrameReader::default();
    let mut assembler = Assembler::default();
    let mut model = Model::default();
    let mut trace = Trace {
        frames: Vec::new(),
        events: Vec::new(),
        end: End::Eof,
    };
    loop {
        let frame = match ready(reader.read(&mut src, max)) {
            Ok(f) => f,
            Err(e) => {
                trace.end = match e {
                    ReadError::Eof => {
                        assert!(src.data.is_empty(), "EOF with {} bytes unread", src.data.len());
                        End::Eof
                    }
                    ReadError::TooLarge => End::TooLarge,
                    ReadError::Protocol(why) => End::Protocol(why),
                    ReadError::Io(e) => panic!("I/O error from an in-memory source: {e}"),
                };
                return trace;
            }
        };
        check_frame(&frame, max);
        trace.frames.push((frame.fin, frame.opcode, frame.payload.to_vec()));
        let expected = model.push(frame.fin, frame.opcode, &frame.payload, max);
        let got = assembler.push(frame, max);
        let got_simple = got.as_ref().map(|e| e.as_ref().map(Simple::of)).map_err(|c| c.as_u16());
        assert_eq!(got_simple, expected, "the assembler and the RFC model disagree");
        match got {
            Ok(Some(Event::Close)) => {
                trace.events.push(Event::Close);
                trace.end = End::Closed;
                return trace;
            }
            Ok(Some(event)) => {
                check_event(&event, max);
                trace.events.push(event);
            }
            Ok(None) => {}
            Err(code) => {
                trace.end = End::Close(code.as_u16());
                return trace;
            }
        }
    }
}

/// Checks one frame as read.
fn check_frame(f: &Frame, max: usize) {
    assert!(
        f.payload.len() <= max,
        "payload {} over the limit {max}",
        f.payload.len()
    );
    assert!(
        matches!(
            f.opcode,
            op::CONTINUATION | op::TEXT | op::BINARY | op::CLOSE | op::PING | op::PONG
        ),
        "unknown opcode {:#x} passed",
        f.opcode
    );
    if f.opcode >= op::CLOSE {
        assert!(f.fin && f.payload.len() <= 125, "invalid control frame passed");
    }
    // Masked again (with a key of its own), it reads back as itself.
    let wire = masked(f.fin, f.opcode, &f.payload, [0xA5, 0x00, 0x5A, 0xFF]);
    let mut src = &wire[..];
    let mut again = FrameReader::default();
    let back = ready(again.read(&mut src, max)).unwrap_or_else(|e| panic!("re-encoded frame refused: {e}"));
    assert_eq!(
        (back.fin, back.opcode, &back.payload[..]),
        (f.fin, f.opcode, &f.payload[..])
    );
    assert!(
        matches!(ready(again.read(&mut src, max)), Err(ReadError::Eof)),
        "bytes left after a re-encoded frame"
    );
}

/// Checks one event the assembler passed on.
fn check_event(e: &Event, max: usize) {
    match e {
        Event::Text(t) => {
            assert!(t.len() <= max, "text message over the limit");
            assert!(std::str::from_utf8(t).is_ok(), "text message is not UTF-8");
        }
        Event::Binary(b) => assert!(b.len() <= max, "binary message over the limit"),
        Event::Ping(p) => assert!(p.len() <= 125, "ping payload over 125 bytes"),
        Event::Pong | Event::Close => {}
    }
}

/// A client frame: header, the given mask, masked payload.
fn masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(if fin { 0x80 | opcode } else { opcode });
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => f.push(0x80 | n as u8),
        Ok(n) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A socket that returns at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Polls a future over an in-memory source once: it must be ready.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the reader waited on a source that had bytes"),
    }
}

/// Seeds for `ws_frame`: each kind of frame and sequence RFC 6455 names,
/// valid and broken, read 1 and 7 bytes at a time, under a 1 MiB and a
/// 125-byte limit.
pub fn ws_frame_seeds() -> Vec<Vec<u8>> {
    let f = |fin: bool, opcode: u8, payload: &[u8]| masked(fin, opcode, payload, [0x37, 0xFA, 0x21, 0x3D]);
    let close = |code: u16, reason: &[u8]| {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        f(true, op::CLOSE, &p)
    };
    let euro = "€".as_bytes();
    let mut unmasked = f(true, op::TEXT, b"hi");
    unmasked[1] &= 0x7F;
    let mut rsv = f(true, op::TEXT, b"hi");
    rsv[0] |= 0x40;
    let mut huge = f(true, op::BINARY, b"");
    huge[1] = 0x80 | 127;
    huge.splice(2..2, (u64::MAX / 2).to_be_bytes());
    let sequences: Vec<Vec<Vec<u8>>> = vec![
        vec![f(true, op::TEXT, br#"{"msgId":"10004","mode":1}"#)],
        vec![
            f(true, op::TEXT, "你好".as_bytes()),
            f(true, op::BINARY, &[0, 1, 2, 255]),
        ],
        vec![
            f(true, op::PING, b"ping"),
            f(true, op::PONG, b""),
            f(true, op::PING, &[7; 125]),
        ],
        vec![f(true, op::CLOSE, b"")],
        vec![close(1000, b"bye")],
        vec![close(4999, "ü".as_bytes())],
        vec![f(true, op::CLOSE, &[3])],
        vec![close(1005, b"")],
        vec![close(1000, &[0xCE, 0xBA, 0xE1])],
        vec![
            f(false, op::TEXT, b"he"),
            f(true, op::PING, b"p"),
            f(false, op::CONTINUATION, b"ll"),
            f(true, op::CONTINUATION, b"o"),
        ],
        vec![f(false, op::BINARY, &[1]), f(true, op::CONTINUATION, &[2])],
        vec![f(true, op::CONTINUATION, b"")],
        vec![f(false, op::TEXT, b"a"), f(true, op::TEXT, b"b")],
        vec![f(false, op::TEXT, b"a"), f(true, op::BINARY, b"b")],
        vec![
            f(false, op::TEXT, &euro[..1]),
            f(false, op::CONTINUATION, &euro[1..2]),
            f(true, op::CONTINUATION, &euro[2..]),
        ],
        vec![f(true, op::TEXT, &[b'a', 0xFF])],
        vec![f(true, op::TEXT, &euro[..2])],
        vec![f(true, op::TEXT, &[b'x'; 200])],
        vec![f(false, op::BINARY, &[0; 100]), f(true, op::CONTINUATION, &[0; 100])],
        vec![f(false, op::PING, b"")],
        vec![f(true, op::PING, &[0; 126])],
        vec![f(true, 0x3, b"")],
        vec![f(true, 0xB, b"")],
        vec![unmasked],
        vec![rsv],
        vec![huge],
        vec![f(true, op::TEXT, b"hello")[..5].to_vec()],
    ];
    let mut seeds = Vec::new();
    for (i, frames) in sequences.iter().enumerate() {
        let wire = frames.concat();
        let (chunk, limit) = if i % 3 == 2 { (6, 3) } else { (0, 7) };
        seeds.push([&[chunk, limit][..], &wire].concat());
    }
    seeds
}
