//! Why a router operation failed, for the callers that must branch on it.
//!
//! The core ([`crate::Router`]) answers `Result<_, RouterError>` and never
//! speaks wire codes; [`RouterError::code`] is the one place a failure
//! becomes an [`ErrorCode`], used by the adapters at the edge of the crate:
//! the bus replies ([`crate::wire`], for NATS and `standalone`) and the HTTP
//! API ([`crate::api`]). Every failure but [`RouterError::Offline`] and
//! [`RouterError::TooManyGroups`] and [`RouterError::HistoryOff`] means
//! "retry" (1500) to a caller.

use switchboard_log::LogError;
use switchboard_protocol::ErrorCode;

use crate::link::EdgeError;
use crate::store::StoreError;

/// A router operation that did not happen (or not completely).
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The client (a unicast target, the client of a bind, unbind or
    /// close) is not online.
    #[error("client is not online")]
    Offline,
    /// A bind would put the client in more groups than the limit
    /// ([`crate::core::MAX_GROUPS_PER_CLIENT`]).
    #[error("a client may be in at most {0} groups")]
    TooManyGroups(usize),
    /// The presence store (or the bizCode registry) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A presence entry kept changing under a compare-and-set loop.
    #[error("presence entry kept changing, gave up after {0} attempts")]
    Contended(usize),
    /// A node could not be reached, or did not acknowledge a command.
    #[error(transparent)]
    Node(#[from] EdgeError),
    /// The bizCode's log could not store or read an entry (SPEC §7): a
    /// send is not acknowledged unless its entry is stored.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A history call for a bizCode with history off.
    #[error("history is off for this bizCode")]
    HistoryOff,
    /// Too many delivery receipt waits are held: the send is refused
    /// (1005), not routed.
    #[error("too many delivery receipt waits")]
    Busy,
    /// The partition's owner (another router) answered with this wire code.
    #[error("the partition owner answered {0}")]
    Forwarded(u16),
}

impl RouterError {
    /// The wire code of this failure: what an edge's client reads in its
    /// mode-2 reply, and the `code` of an API answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Offline => ErrorCode::Offline,
            Self::TooManyGroups(_) => ErrorCode::InvalidFrame,
            Self::HistoryOff => ErrorCode::InvalidFrame,
            Self::Busy => ErrorCode::RateLimited,
            Self::Forwarded(code) => ErrorCode::from_u16(*code).unwrap_or(ErrorCode::Internal),
            Self::Store(_) | Self::Contended(_) | Self::Node(_) | Self::Log(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offline_too_many_groups_and_history_off_are_the_callers_to_fix() {
        assert_eq!(RouterError::Offline.code(), ErrorCode::Offline);
        assert_eq!(RouterError::HistoryOff.code(), ErrorCode::InvalidFrame);
        assert_eq!(RouterError::TooManyGroups(2).code(), ErrorCode::InvalidFrame);
        for e in [
            RouterError::Store(StoreError::Unavailable("down".into())),
            RouterError::Contended(8),
            RouterError::Node(EdgeError("gone".into())),
            RouterError::Log(LogError::Timeout),
        ] {
            assert_eq!(e.code(), ErrorCode::Internal, "{e}");
        }
    }
}
