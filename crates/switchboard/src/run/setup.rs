//! What every process kind sets up the same way: its listening socket and
//! its HTTP API configuration.

use std::net::SocketAddr;

use anyhow::Context as _;
use switchboard_router::config::{ApiConfig, ApiKey};
use tokio::net::TcpListener;

use crate::config::Config;

/// Listens on `addr` with an accept queue of `backlog` connections
/// (`*.listen_backlog`). The kernel silently caps the queue at
/// `net.core.somaxconn`; the log says so when it does.
///
/// A queue that is too short drops handshakes during a connect burst (an
/// edge died and its clients reconnect to the others) and each dropped
/// client waits a full second for its SYN retry.
pub(super) fn bind(addr: SocketAddr, backlog: u32) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // What `TcpListener::bind` does: a restarted process can listen
        // again while connections of the old one are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    let listener = listen().with_context(|| format!("cannot listen on {addr}"))?;
    if let Some(max) = somaxconn().filter(|&max| max < backlog) {
        tracing::warn!(
            backlog,
            somaxconn = max,
            "listen backlog capped by the kernel at net.core.somaxconn; raise it (sysctl) for the configured value"
        );
    }
    Ok(listener)
}

/// `net.core.somaxconn`, where the platform exposes it.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The API configuration with every key, generating one for standalone
/// when auth is on and none is configured.
pub(super) fn api_config(config: &Config, standalone: bool) -> ApiConfig {
    let mut api = config.api.clone();
    api.keys = config.api_keys();
    if !api.auth {
        tracing::warn!("HTTP API AUTHENTICATION IS OFF (api.auth = false): anyone who can reach the API can push");
    } else if api.keys.is_empty() && standalone {
        let key = format!("{:032x}", rand::random::<u128>());
        tracing::warn!(api_key = %key, "no API key configured; generated one for this run (set SWITCHBOARD_API_KEY to choose)");
        eprintln!("switchboard: API key for this run: {key}");
        api.keys.push(ApiKey::global(key));
    }
    api
}
