//! The storm's settings besides [`crate::common::Common`].

use std::time::Duration;

use super::backoff::Backoff;

/// The storm's settings besides [`crate::common::Common`].
pub(crate) struct StormOptions {
    pub(crate) clients: usize,
    /// Shell command that kills an edge.
    pub(crate) kill: String,
    pub(crate) backoff: Backoff,
    /// Longest one reconnect attempt may take (TCP connect to welcome).
    pub(crate) attempt_timeout: Duration,
    /// A probe not received after this is sent again.
    pub(crate) probe_timeout: Duration,
    /// Longest wait for every client to be reachable again.
    pub(crate) recover_timeout: Duration,
    /// Wait after recovery before the last drift check and probe round
    /// (longer than the routers' `node_timeout`).
    pub(crate) settle: Duration,
    /// HTTP API base URL (router or standalone) for probes and presence.
    pub(crate) api: String,
    pub(crate) api_key: String,
}
