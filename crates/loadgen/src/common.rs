//! The options every scenario takes, and the client ids and handshake
//! queries derived from them.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// WebSocket URLs to connect to, comma separated (connections are
    /// spread over them; "different edges" means different targets).
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) targets: Vec<String>,
    /// Local source addresses, comma separated (127.0.0.x).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub(crate) sources: Vec<IpAddr>,
    /// bizCode used by this run.
    #[arg(long, default_value = "bench")]
    pub(crate) biz: String,
    /// clientId prefix (give each loadgen process its own).
    #[arg(long, default_value = "lg")]
    pub(crate) prefix: String,
    /// Most handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Hard limit of the whole run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub(crate) deadline: Duration,
}

impl Common {
    /// The clientId of client `i` of a kind (`<prefix>-<kind><i>`).
    pub(crate) fn id(&self, kind: &str, i: usize) -> String {
        format!("{}-{kind}{i}", self.prefix)
    }

    /// The handshake query of client `i` of a kind.
    pub(crate) fn query(&self, kind: &str, i: usize) -> String {
        format!("bizCode={}&clientId={}", self.biz, self.id(kind, i))
    }

    /// The target client `i` connects to (spread round-robin).
    pub(crate) fn target(&self, i: usize) -> &str {
        &self.targets[i % self.targets.len()]
    }

    /// The source address of client `i` (spread round-robin).
    pub(crate) fn source(&self, i: usize) -> IpAddr {
        self.sources[i % self.sources.len()]
    }
}
