//! How async-nats' errors become [`LogError`]s: the kinds callers branch on
//! are read from the error kinds and JetStream's error codes, never from
//! text, except the real last sequence of a refused append (only the text
//! carries it).

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{ConsumerErrorKind, LastRawMessageErrorKind, PurgeErrorKind};
use async_nats::jetstream::ErrorCode;

use crate::seam::LogError;

/// "duplicate message id is in process" (JetStream 10158).
const DUPLICATE_MESSAGE_CONFLICT: ErrorCode = ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT;

/// "wrong last sequence" without the number (JetStream 10164,
/// `JSStreamWrongLastSequenceConstantErr`; async-nats has no constant).
const WRONG_LAST_SEQUENCE_CONSTANT: ErrorCode = ErrorCode(10164);

/// The JetStream API error somewhere in `e`'s sources.
fn api_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a async_nats::jetstream::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(api) = err.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(api);
        }
        cur = err.source();
    }
    None
}

/// The real last sequence in a "wrong last sequence: N" answer.
pub(super) fn parse_last(text: &str) -> Option<u64> {
    const MARK: &str = "wrong last sequence: ";
    let at = text.rfind(MARK)? + MARK.len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether a clustered stream refused an append because another one
/// naming the same expectation subject is in flight (10164).
pub(super) fn is_in_flight_refusal(e: &PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(api_error)
        .is_some_and(|api| api.error_code() == WRONG_LAST_SEQUENCE_CONSTANT)
}

/// An append's failure, sent or acknowledged.
pub(super) fn publish(e: &PublishError) -> LogError {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => LogError::WrongLastSequence {
            last: parse_last(&e.to_string()),
        },
        PublishErrorKind::TimedOut => LogError::Timeout,
        PublishErrorKind::StreamNotFound => LogError::Unavailable("no log stream answers for the partition".to_owned()),
        PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => LogError::Unavailable(e.to_string()),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::MaxPayloadExceeded | PublishErrorKind::Other => {
            let source = std::error::Error::source(e);
            match source.and_then(api_error) {
                Some(api) if api.error_code() == DUPLICATE_MESSAGE_CONFLICT => LogError::Conflict,
                Some(api) if api.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE => LogError::WrongLastSequence {
                    last: parse_last(&api.to_string()),
                },
                // "wrong last sequence" without a number: a clustered
                // stream refused it before its proposal, because another
                // append naming the fence subject is in flight (or stuck:
                // see `JetStreamLog::publish`). Nothing stored.
                Some(api) if api.error_code() == WRONG_LAST_SEQUENCE_CONSTANT => {
                    LogError::WrongLastSequence { last: None }
                }
                _ => LogError::Other(e.to_string()),
            }
        }
    }
}

/// Whether a JetStream API error says the stream does not exist.
fn is_missing(api: &async_nats::jetstream::Error) -> bool {
    api.error_code() == ErrorCode::STREAM_NOT_FOUND
}

/// A stream lookup's failure; `Ok(())` when the stream does not exist.
pub(super) fn lookup(e: &async_nats::jetstream::context::GetStreamError) -> Result<(), LogError> {
    match e.kind() {
        GetStreamErrorKind::JetStream(api) if is_missing(&api) || api.code() == 404 => Ok(()),
        GetStreamErrorKind::JetStream(api) => Err(LogError::Other(api.to_string())),
        GetStreamErrorKind::Request => Err(request(&e.to_string())),
        GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => Err(LogError::Invalid(e.to_string())),
    }
}

/// A stream creation's failure; `Ok(())` when another writer created it
/// first (the name exists with another first sequence).
pub(super) fn create(e: &async_nats::jetstream::context::CreateStreamError) -> Result<(), LogError> {
    match e.kind() {
        CreateStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NAME_EXIST => Ok(()),
        CreateStreamErrorKind::TimedOut => Err(LogError::Timeout),
        CreateStreamErrorKind::JetStream(api) => Err(LogError::Other(api.to_string())),
        CreateStreamErrorKind::JetStreamUnavailable | CreateStreamErrorKind::Response => {
            Err(LogError::Unavailable(e.to_string()))
        }
        _ => Err(LogError::Other(e.to_string())),
    }
}

/// A request that got no answer: a timeout, or nobody to ask.
fn request(text: &str) -> LogError {
    if text.contains("timed out") {
        LogError::Timeout
    } else {
        LogError::Unavailable(text.to_owned())
    }
}

/// A purge's failure.
pub(super) fn purge(e: &async_nats::jetstream::stream::PurgeError) -> LogError {
    match e.kind() {
        PurgeErrorKind::TimedOut => LogError::Timeout,
        PurgeErrorKind::Request => LogError::Unavailable(e.to_string()),
        PurgeErrorKind::JetStream(api) if is_missing(&api) => LogError::Unavailable(api.to_string()),
        PurgeErrorKind::JetStream(api) => LogError::Other(api.to_string()),
    }
}

/// A consumer creation's failure (range reads).
pub(super) fn consumer(e: &async_nats::jetstream::stream::ConsumerError) -> LogError {
    match e.kind() {
        ConsumerErrorKind::TimedOut => LogError::Timeout,
        ConsumerErrorKind::Request => request(&e.to_string()),
        ConsumerErrorKind::JetStream(api) if is_missing(&api) => LogError::Unavailable(api.to_string()),
        _ => LogError::Other(e.to_string()),
    }
}

/// A direct message lookup's failure; `Ok(())` when there is no such
/// message.
pub(super) fn raw_get(e: &async_nats::jetstream::stream::LastRawMessageError) -> Result<(), LogError> {
    match e.kind() {
        LastRawMessageErrorKind::NoMessageFound => Ok(()),
        LastRawMessageErrorKind::JetStream(api) if api.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(()),
        LastRawMessageErrorKind::JetStream(api) if is_missing(&api) => Err(LogError::Unavailable(api.to_string())),
        LastRawMessageErrorKind::JetStream(api) => Err(LogError::Other(api.to_string())),
        LastRawMessageErrorKind::InvalidSubject => Err(LogError::Invalid(e.to_string())),
        LastRawMessageErrorKind::Other => Err(request(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_last_sequence() {
        assert_eq!(
            parse_last("wrong last sequence: wrong last sequence: 1715000000000123 (code 400, error code 10071)"),
            Some(1_715_000_000_000_123)
        );
        assert_eq!(parse_last("wrong last sequence"), None);
    }
}
