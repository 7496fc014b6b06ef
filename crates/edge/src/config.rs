//! `[edge]` configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Edge settings. Every field has a safe default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Address of the WebSocket and ops server. Default `0.0.0.0:8081`
    /// (`standalone` uses `[standalone].listen`).
    pub listen: SocketAddr,
    /// Accept queue of the listening socket (`listen(2)` backlog), capped
    /// by the kernel at `net.core.somaxconn`. Default 4096.
    pub listen_backlog: u32,
    /// Node name prefix; a random suffix makes the node id unique per
    /// process. Default: `$HOSTNAME` (the pod name), else `edge`.
    pub node_name: String,
    /// Heartbeat period announced to clients (`heartbeatSec`). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Close a connection (1001) after this long without any frame from the
    /// client. Default: 3 × `heartbeat`.
    #[serde(with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// Frames larger than this get code 1003. Default 65536 (64 KiB).
    pub max_frame_bytes: usize,
    /// Frames (or fragmented messages) larger than this close the connection
    /// with 1009. Default 1048576 (1 MiB).
    pub max_message_bytes: usize,
    /// Per-connection send queue in bytes; overflow closes with 4008.
    /// Default 1048576 (1 MiB).
    pub send_queue_bytes: usize,
    /// Sends (mode 100/200/300) per second per connection. Default 50.
    pub rate_per_sec: u32,
    /// Burst of sends allowed above the rate. Default 100.
    pub rate_burst: u32,
    /// Rate-limited frames in a row after which the connection is closed
    /// with 1008. Default 100.
    pub abuse_limit: u32,
    /// Most groups one connection may join at the handshake. Default 64.
    pub max_groups: usize,
    /// Client send modes this deployment allows (of 100, 200, 300 and 500,
    /// the upstream message); others get code 1006. Default all four.
    pub send_modes: Vec<u16>,
    /// Whether a group send (200) requires the sender to be a member of the
    /// group (else 1006). Default false.
    pub group_send_requires_membership: bool,
    /// Browser `Origin`s allowed to connect (exact, or `https://*.domain`);
    /// empty allows any. Clients that send no `Origin` are not browsers and
    /// are not affected. Default empty.
    pub allowed_origins: Vec<String>,
    /// Refuse clients of unregistered bizCodes (403, 1007). Set from
    /// `api.require_registration`, not from `[edge]`.
    #[serde(skip)]
    pub require_registration: bool,
    /// How often this node tells the routers it is alive. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub node_heartbeat: Duration,
    /// On SIGTERM, connections are closed with 1012 spread over this window
    /// (no reconnect stampede). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Time a closing connection gets to finish its close handshake.
    /// Default `2s`.
    #[serde(with = "humantime_serde")]
    pub close_grace: Duration,
    /// Serve `GET /echo`: a WebSocket endpoint that sends every message back
    /// as it came, through the same reader, limits and close handling as
    /// `/ws` (no welcome, no presence). For conformance tests (the
    /// Autobahn|Testsuite) only; never turn it on in production. Default
    /// false.
    pub echo_endpoint: bool,
    /// Serve the web console's client view at `/console` (static pages
    /// embedded in the binary, which adds them in front of the edge; the
    /// view connects to this edge's own `/ws`, with the same handshake
    /// checks as any client). Off in production unless wanted. Default
    /// false (`standalone` has its own `standalone.console`).
    pub console: bool,
    /// Most WebSocket connections one client address may hold on this
    /// edge; past it a handshake gets 429 with `Retry-After` (SPEC §2).
    /// 0 turns the cap off. Behind a proxy every client shares the proxy's
    /// address: list the proxy in `trusted_proxies`. Default 0 (off).
    pub max_connections_per_address: u32,
    /// Proxies (addresses or CIDR networks, e.g. `"10.0.0.9"`, `"10.0.0.0/8"`) whose
    /// `X-Forwarded-For` / `Forwarded` headers name the client's address.
    /// From any other peer those headers are ignored. Default empty.
    #[serde(deserialize_with = "crate::address::deserialize_nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most WebSocket connections one bizCode may hold on this edge (so one
    /// tenant cannot take all of an edge's sockets); past it a handshake
    /// gets 429 with `Retry-After`. 0 turns the cap off. A bizCode's own
    /// cap (`set_limits`) applies too; the lower one wins. Default 0 (off).
    pub max_connections_per_biz: u32,
    /// How often this edge asks the routers again for the limits of the
    /// bizCodes it serves (`set_limits`: connections and sends/s per
    /// bizCode on each edge); a change takes effect within about this
    /// long plus a second. A bizCode new to the edge is asked about before
    /// its first handshake is admitted. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub biz_limits_refresh: Duration,
    /// Delivery receipts: how long a client's unicast with `"ack":true`
    /// waits for the recipient's ack before its sender gets the receipt
    /// (mode 4) with the recipient in `unacked`. Default `10s`; between
    /// 100ms and 30s.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Most unicasts with `"ack":true` of one connection waiting for their
    /// receipts at once; past it such a send gets a mode-2 reply 1005.
    /// Default 100.
    pub max_acks_in_flight: u32,
    /// Acks (mode 3) per second per connection (burst: twice as many) the
    /// edge forwards to the routers; past it they are dropped silently.
    /// Default 500.
    pub ack_rate_per_sec: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            listen_backlog: switchboard_runtime::config::DEFAULT_LISTEN_BACKLOG,
            node_name: String::new(),
            heartbeat: Duration::from_secs(30),
            idle_timeout: None,
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 1024 * 1024,
            send_queue_bytes: 1024 * 1024,
            rate_per_sec: 50,
            rate_burst: 100,
            abuse_limit: 100,
            max_groups: 64,
            send_modes: vec![100, 200, 300, 500],
            allowed_origins: Vec::new(),
            require_registration: false,
            group_send_requires_membership: false,
            node_heartbeat: Duration::from_secs(2),
            drain_window: Duration::from_secs(5),
            close_grace: Duration::from_secs(2),
            echo_endpoint: false,
            console: false,
            max_connections_per_address: 0,
            trusted_proxies: Vec::new(),
            max_connections_per_biz: 0,
            biz_limits_refresh: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(10),
            max_acks_in_flight: 100,
            ack_rate_per_sec: 500,
        }
    }
}

impl EdgeConfig {
    /// The effective idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(self.heartbeat * 3)
    }

    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        switchboard_runtime::config::validate_listen_backlog("edge.listen_backlog", self.listen_backlog, problems);
        if self.heartbeat < Duration::from_secs(1) {
            problems.push("edge.heartbeat must be at least 1s".into());
        }
        if self.idle_timeout() < self.heartbeat {
            problems.push("edge.idle_timeout must be at least edge.heartbeat".into());
        }
        if self.max_frame_bytes < 128 {
            problems.push("edge.max_frame_bytes must be at least 128".into());
        }
        if self.max_message_bytes < self.max_frame_bytes {
            problems.push("edge.max_message_bytes must be at least edge.max_frame_bytes".into());
        }
        if self.send_queue_bytes < self.max_frame_bytes {
            problems.push("edge.send_queue_bytes must be at least edge.max_frame_bytes".into());
        }
        if self.rate_per_sec == 0 || self.rate_burst == 0 {
            problems.push("edge.rate_per_sec and edge.rate_burst must be positive".into());
        }
        if self.abuse_limit == 0 {
            problems.push("edge.abuse_limit must be positive".into());
        }
        if self.send_modes.iter().any(|m| ![100, 200, 300, 500].contains(m)) {
            problems.push("edge.send_modes may only contain 100, 200, 300 and 500".into());
        }
        if self.ack_timeout < Duration::from_millis(100)
            || self.ack_timeout > Duration::from_millis(u64::from(switchboard_protocol::frame::MAX_ACK_TIMEOUT_MS))
        {
            problems.push("edge.ack_timeout must be between 100ms and 30s".into());
        }
        if self.max_acks_in_flight == 0 || self.ack_rate_per_sec == 0 {
            problems.push("edge.max_acks_in_flight and edge.ack_rate_per_sec must be positive".into());
        }
        if self.max_groups == 0 {
            problems.push("edge.max_groups must be positive".into());
        }
        if self.biz_limits_refresh < Duration::from_millis(100) || self.biz_limits_refresh > Duration::from_secs(60) {
            problems.push("edge.biz_limits_refresh must be between 100ms and 60s".into());
        }
        if self.node_heartbeat < Duration::from_millis(100) || self.node_heartbeat > Duration::from_secs(3) {
            problems.push(
                "edge.node_heartbeat must be between 100ms and 3s (routers purge a silent node within 10s)".into(),
            );
        }
    }
}
