//! Range reads: an ordered pull consumer from a start sequence with a
//! subject filter. Ordered consumers are ephemeral, memory-backed, R1 and
//! without acks; async-nats recreates one from the last sequence + 1 when
//! it sees a gap. Memory stays bounded by the consumer's batch (500).

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::Context;
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;

use super::errors;
use crate::config::LogConfig;
use crate::partition::{parse_subject, stream_name, SubjectKind};
use crate::seam::{EntryKind, EntryStream, LogError, StoredEntry};

/// Deletes the read's consumer when the read ends or is dropped, instead of
/// leaving it to the server's 30 s inactivity timeout.
struct ConsumerGuard {
    stream: Stream<()>,
    name: String,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        let stream = self.stream.clone();
        let name = std::mem::take(&mut self.name);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = stream.delete_consumer(&name).await {
                    tracing::debug!(error = %e, consumer = %name, "range read consumer not deleted");
                }
            });
        }
    }
}

/// State of a range read between two entries.
struct Reader {
    messages: pull::Ordered,
    p: u32,
    after: u64,
    up_to: u64,
    timeout: Duration,
    done: bool,
    _guard: ConsumerGuard,
}

/// Reads partition `p`'s entries on `filter` in `(after, up_to]`.
pub(super) async fn range(
    js: &Context,
    config: &LogConfig,
    p: u32,
    filter: String,
    after: u64,
    up_to: u64,
) -> Result<EntryStream, LogError> {
    if up_to <= after {
        return Ok(Box::pin(futures_util::stream::empty()));
    }
    let stream = js
        .get_stream_no_info(stream_name(p))
        .await
        .map_err(|e| LogError::Invalid(e.to_string()))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| errors::consumer(&e))?;
    let guard = ConsumerGuard {
        stream,
        name: consumer.cached_info().name.clone(),
    };
    if consumer.cached_info().num_pending == 0 {
        return Ok(Box::pin(futures_util::stream::empty()));
    }
    let messages = consumer
        .messages()
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))?;
    let reader = Reader {
        messages,
        p,
        after,
        up_to,
        timeout: config.read_timeout,
        done: false,
        _guard: guard,
    };
    Ok(Box::pin(futures_util::stream::unfold(reader, next)))
}

/// The next entry of a read, or its end.
async fn next(mut r: Reader) -> Option<(Result<StoredEntry, LogError>, Reader)> {
    loop {
        if r.done {
            return None;
        }
        let item = match tokio::time::timeout(r.timeout, r.messages.next()).await {
            Err(_) => Err(LogError::Timeout),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(LogError::Unavailable(e.to_string())),
            Ok(Some(Ok(m))) => Ok(m),
        };
        let m = match item {
            Ok(m) => m,
            Err(e) => {
                r.done = true;
                return Some((Err(e), r));
            }
        };
        let (seq, pending) = match m.info() {
            Ok(i) => (i.stream_sequence, i.pending),
            Err(e) => {
                r.done = true;
                return Some((Err(LogError::Other(format!("unreadable delivery: {e}"))), r));
            }
        };
        if seq > r.up_to {
            return None;
        }
        if seq <= r.after {
            // async-nats re-creates an ordered consumer that saw a gap or
            // missed heartbeats from the last sequence it delivered, and
            // from the stream's first message (`DeliverPolicy::All`) if it
            // delivered none yet: what is below the range is skipped. (It
            // used to count as read: a recovery after an owner change
            // found "more than history.max_replay" entries in a range of
            // ten and answered recovered: false.)
            if pending == 0 {
                return None;
            }
            continue;
        }
        r.done = seq >= r.up_to || pending == 0;
        return Some((Ok(entry(r.p, seq, &m)), r));
    }
}

/// A delivered message as a stored entry.
fn entry(p: u32, seq: u64, m: &async_nats::jetstream::Message) -> StoredEntry {
    let kind = match parse_subject(p, m.subject.as_str()) {
        SubjectKind::Entry(biz) => EntryKind::Entry {
            biz,
            msg_id: m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned()),
        },
        SubjectKind::Fence => EntryKind::Fence {
            token: seq,
            owner: String::from_utf8_lossy(&m.payload).into_owned(),
        },
        SubjectKind::Foreign => EntryKind::Foreign {
            subject: m.subject.to_string(),
        },
    };
    StoredEntry {
        seq,
        kind,
        payload: m.payload.clone(),
    }
}
