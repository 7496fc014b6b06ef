//! Frames → messages: RFC 6455 fragmentation (§5.4), UTF-8 of text
//! messages (§8.1) and the client's close frame (§5.5.1, §7.1.5–7.1.6, §7.4).
//!
//! [`wsread`](crate::wsread) checks each frame on its own (masking, reserved
//! bits, control frame rules, size); this checks how frames follow each
//! other, so every way of breaking those rules is refused in one place:
//!
//! - a continuation with no message open, or a new text/binary frame while
//!   one is open → 1002;
//! - text that is not UTF-8 → 1007, as soon as a fragment proves it (a
//!   sequence cut at a fragment's end waits for the next fragment);
//! - a fragmented message over the message limit → 1009;
//! - a close frame with a 1-byte payload or a code a peer may not send
//!   (§7.4.1: 1004–1006, 1015, below 1000, the unassigned ranges) → 1002,
//!   one whose reason is not UTF-8 → 1007.
//!
//! Control frames may come between fragments (§5.4) and are passed on at
//! once.

use bytes::BytesMut;
use switchboard_protocol::CloseCode;

use crate::wsread::{op, Frame};

/// What the session acts on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A whole text message (valid UTF-8).
    Text(BytesMut),
    /// A whole binary message.
    Binary(BytesMut),
    /// A ping with its payload (answered with a pong).
    Ping(BytesMut),
    /// A pong (ignored).
    Pong,
    /// A valid close frame: the close handshake answers with 1000 (§5.5.1
    /// lets the answer echo the code or not; 1000 carries no reason of ours
    /// that could mislead).
    Close,
}

/// A fragmented message that is still arriving.
#[derive(Debug)]
struct Partial {
    text: bool,
    buf: BytesMut,
    /// Bytes at the front of `buf` known to be valid UTF-8 (text only).
    checked: usize,
}

impl Partial {
    /// Checks the UTF-8 that arrived since the last check. A multi-byte
    /// sequence cut at the end is fine unless this was the last fragment.
    fn check(&mut self, fin: bool) -> Result<(), CloseCode> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.buf[self.checked..]) {
            Ok(_) => {
                self.checked = self.buf.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !fin => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(CloseCode::InvalidPayload),
        }
    }
}

/// Assembles one connection's frames into [`Event`]s.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    /// Boxed: an idle connection's reader holds only the pointer.
    open: Option<Box<Partial>>,
}

impl Assembler {
    /// Takes the next frame; `Ok(None)` while a fragmented message is
    /// incomplete.
    ///
    /// # Errors
    /// The close code the connection must be closed with (1002, 1007 or
    /// 1009).
    pub(crate) fn push(&mut self, f: Frame, max: usize) -> Result<Option<Event>, CloseCode> {
        match f.opcode {
            op::PING => Ok(Some(Event::Ping(f.payload))),
            op::PONG => Ok(Some(Event::Pong)),
            op::CLOSE => check_close(&f.payload).map(|()| Some(Event::Close)),
            op::TEXT | op::BINARY => {
                if self.open.is_some() {
                    return Err(CloseCode::ProtocolError);
                }
                let mut p = Partial {
                    text: f.opcode == op::TEXT,
                    buf: f.payload,
                    checked: 0,
                };
                p.check(f.fin)?;
                if f.fin {
                    Ok(Some(finish(p)))
                } else {
                    self.open = Some(Box::new(p));
                    Ok(None)
                }
            }
            _ => {
                let Some(p) = self.open.as_mut() else {
                    return Err(CloseCode::ProtocolError);
                };
                if p.buf.len() + f.payload.len() > max {
                    return Err(CloseCode::TooBig);
                }
                p.buf.extend_from_slice(&f.payload);
                p.check(f.fin)?;
                if !f.fin {
                    return Ok(None);
                }
                Ok(self.open.take().map(|p| finish(*p)))
            }
        }
    }
}

fn finish(p: Partial) -> Event {
    if p.text {
        Event::Text(p.buf)
    } else {
        Event::Binary(p.buf)
    }
}

/// A close frame's payload: empty, or a code a peer may send followed by a
/// UTF-8 reason.
fn check_close(p: &[u8]) -> Result<(), CloseCode> {
    match p {
        [] => Ok(()),
        [_] => Err(CloseCode::ProtocolError),
        [hi, lo, reason @ ..] => {
            if !CloseCode::valid_on_wire(u16::from_be_bytes([*hi, *lo])) {
                return Err(CloseCode::ProtocolError);
            }
            std::str::from_utf8(reason)
                .map(|_| ())
                .map_err(|_| CloseCode::InvalidPayload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fin: bool, opcode: u8, payload: &[u8]) -> Frame {
        Frame {
            fin,
            opcode,
            payload: BytesMut::from(payload),
        }
    }

    fn run(frames: Vec<Frame>) -> Result<Vec<Event>, CloseCode> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for fr in frames {
            out.extend(a.push(fr, 1 << 20)?);
        }
        Ok(out)
    }

    #[test]
    fn fragments_assemble_with_control_frames_between() {
        let got = run(vec![
            f(false, op::TEXT, b"he"),
            f(true, op::PING, b"p"),
            f(false, op::CONTINUATION, b"ll"),
            f(true, op::CONTINUATION, b"o"),
            f(false, op::BINARY, &[1]),
            f(true, op::CONTINUATION, &[2]),
        ]);
        assert_eq!(
            got,
            Ok(vec![
                Event::Ping(BytesMut::from(&b"p"[..])),
                Event::Text(BytesMut::from(&b"hello"[..])),
                Event::Binary(BytesMut::from(&[1u8, 2][..])),
            ])
        );
    }

    #[test]
    fn fragmentation_errors_are_protocol_errors() {
        for frames in [
            vec![f(true, op::CONTINUATION, b"")],
            vec![f(false, op::CONTINUATION, b"x")],
            vec![f(false, op::TEXT, b"a"), f(true, op::TEXT, b"b")],
            vec![f(false, op::TEXT, b"a"), f(false, op::TEXT, b"b")],
            vec![f(false, op::TEXT, b"a"), f(true, op::BINARY, b"b")],
            vec![f(false, op::BINARY, b"a"), f(true, op::TEXT, b"b")],
        ] {
            assert_eq!(run(frames), Err(CloseCode::ProtocolError));
        }
    }

    #[test]
    fn utf8_fails_fast_but_waits_for_a_split_sequence() {
        let euro = "€".as_bytes();
        let got = run(vec![
            f(false, op::TEXT, &euro[..1]),
            f(false, op::CONTINUATION, &euro[1..2]),
            f(true, op::CONTINUATION, &euro[2..]),
        ]);
        assert_eq!(got, Ok(vec![Event::Text(BytesMut::from(euro))]));
        // Invalid in the first fragment: refused before the message ends.
        let mut a = Assembler::default();
        assert_eq!(
            a.push(f(false, op::TEXT, &[b'a', 0xFF]), 100),
            Err(CloseCode::InvalidPayload)
        );
        // A sequence cut by the final fragment.
        assert_eq!(run(vec![f(true, op::TEXT, &euro[..2])]), Err(CloseCode::InvalidPayload));
        assert_eq!(
            run(vec![f(false, op::TEXT, b"a"), f(true, op::CONTINUATION, &euro[..1])]),
            Err(CloseCode::InvalidPayload)
        );
    }

    #[test]
    fn a_fragmented_message_over_the_limit_is_too_big() {
        let mut a = Assembler::default();
        assert_eq!(a.push(f(false, op::BINARY, &[0; 60]), 100), Ok(None));
        assert_eq!(a.push(f(true, op::CONTINUATION, &[0; 41]), 100), Err(CloseCode::TooBig));
    }

    #[test]
    fn close_frames_are_checked() {
        let close = |code: u16, reason: &[u8]| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason);
            run(vec![f(true, op::CLOSE, &p)])
        };
        assert_eq!(run(vec![f(true, op::CLOSE, b"")]), Ok(vec![Event::Close]));
        assert_eq!(run(vec![f(true, op::CLOSE, &[3])]), Err(CloseCode::ProtocolError));
        for ok in [1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999] {
            assert_eq!(close(ok, b"bye"), Ok(vec![Event::Close]), "{ok}");
        }
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
            assert_eq!(close(bad, b""), Err(CloseCode::ProtocolError), "{bad}");
        }
        assert_eq!(close(1000, &[0xCE, 0xBA, 0xE1]), Err(CloseCode::InvalidPayload));
    }
}
