//! RFC 6455's rules for a sequence of frames (§5.4, §5.5.1, §7.4, §8.1),
//! written plainly and on purpose apart from the edge's code (its close
//! code ranges are the RFC's, not `CloseCode::valid_on_wire`), so the
//! `ws_frame` target compares the assembler against an independent oracle.

use switchboard_protocol::CloseCode;

use crate::message::Event;
use crate::wsread::op;

/// An event reduced to what the model predicts.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Simple {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
}

impl Simple {
    pub(super) fn of(e: &Event) -> Self {
        match e {
            Event::Text(t) => Self::Text(t.to_vec()),
            Event::Binary(b) => Self::Binary(b.to_vec()),
            Event::Ping(p) => Self::Ping(p.to_vec()),
            Event::Pong => Self::Pong,
            Event::Close => Self::Close,
        }
    }
}

/// RFC 6455's rules for a sequence of frames, written plainly: the whole
/// message so far is checked as UTF-8 after each fragment (the assembler
/// checks only what is new).
#[derive(Default)]
pub(super) struct Model {
    /// The open fragmented message: (is text, bytes so far).
    open: Option<(bool, Vec<u8>)>,
}

impl Model {
    pub(super) fn push(&mut self, fin: bool, opcode: u8, payload: &[u8], max: usize) -> Result<Option<Simple>, u16> {
        let protocol = CloseCode::ProtocolError.as_u16();
        let invalid = CloseCode::InvalidPayload.as_u16();
        match opcode {
            op::PING => Ok(Some(Simple::Ping(payload.to_vec()))),
            op::PONG => Ok(Some(Simple::Pong)),
            op::CLOSE => match payload {
                [] => Ok(Some(Simple::Close)),
                [_] => Err(protocol),
                [hi, lo, reason @ ..] => {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    // §7.4.1–§7.4.2: the codes an endpoint may send.
                    let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                    if !allowed {
                        Err(protocol)
                    } else if std::str::from_utf8(reason).is_err() {
                        Err(invalid)
                    } else {
                        Ok(Some(Simple::Close))
                    }
                }
            },
            op::TEXT | op::BINARY => {
                if self.open.is_some() {
                    return Err(protocol);
                }
                let text = opcode == op::TEXT;
                let buf = payload.to_vec();
                if text && !utf8_so_far(&buf, fin) {
                    return Err(invalid);
                }
                if fin {
                    Ok(Some(if text { Simple::Text(buf) } else { Simple::Binary(buf) }))
                } else {
                    self.open = Some((text, buf));
                    Ok(None)
                }
            }
            _ => {
                let Some((text, buf)) = self.open.as_mut() else {
                    return Err(protocol);
                };
                if buf.len() + payload.len() > max {
                    return Err(CloseCode::TooBig.as_u16());
                }
                buf.extend_from_slice(payload);
                if *text && !utf8_so_far(buf, fin) {
                    return Err(invalid);
                }
                if !fin {
                    return Ok(None);
                }
                let (text, buf) = self.open.take().unwrap_or_default();
                Ok(Some(if text { Simple::Text(buf) } else { Simple::Binary(buf) }))
            }
        }
    }
}

/// Whether `buf` is UTF-8, or (when more may follow) could still become so.
fn utf8_so_far(buf: &[u8], fin: bool) -> bool {
    match std::str::from_utf8(buf) {
        Ok(_) => true,
        Err(e) => !fin && e.error_len().is_none(),
    }
}
