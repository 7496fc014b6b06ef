//! A WebSocket client bound to a chosen source address.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::frames::Incoming;

/// A connected client stream.
pub(crate) type Ws = WebSocketStream<TcpStream>;
/// Its write half.
pub(crate) type Sink = SplitSink<Ws, Message>;
/// Its read half.
pub(crate) type Stream = SplitStream<Ws>;

/// Nanoseconds since the first call: the clock embedded in messages
/// (senders and receivers live in the same process).
pub(crate) fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `ws://host:port/path` → (socket address, path).
fn parse(target: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = target
        .strip_prefix("ws://")
        .with_context(|| format!("only ws:// targets are supported: {target}"))?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, "ws"));
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("target host must be ip:port: {target}"))?;
    Ok((addr, format!("/{path}")))
}

/// Binds `socket` to the source address, leaving the port to `connect`.
///
/// A plain `bind(addr:0)` makes the kernel reserve a port for the address
/// alone, searching the range for one that no socket, TIME_WAIT included,
/// holds on it. Once about half the range is taken (a few load generator
/// runs within a minute leave tens of thousands of TIME_WAIT sockets on
/// the same 127.0.0.x) each bind costs ~2.5 ms of kernel CPU instead of
/// ~5 µs: 30k connects spent 20–30 s in the kernel and the connect-rate
/// benchmark "stalled". With `IP_BIND_ADDRESS_NO_PORT` the port is picked
/// at `connect` time, only unique per 4-tuple, and TIME_WAIT ports are
/// reused on loopback (`net.ipv4.tcp_tw_reuse`).
fn bind_source(socket: &TcpSocket, source: IpAddr) -> anyhow::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
        .context("set IP_BIND_ADDRESS_NO_PORT")?;
    socket
        .bind(SocketAddr::new(source, 0))
        .context("bind the source address")?;
    Ok(())
}

/// Read buffer per client connection.
const READ_BUFFER: usize = 4096;

/// Connects from `source` to `target` with `query` and waits for the
/// welcome. Returns the stream and the connect→welcome time.
pub(crate) async fn connect(target: &str, source: IpAddr, query: &str) -> anyhow::Result<(Ws, Duration)> {
    let (addr, path) = parse(target)?;
    let started = Instant::now();
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    bind_source(&socket, source)?;
    let stream = socket.connect(addr).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}?{query}");
    // tungstenite zeroes its whole read buffer on every read (128 KiB by
    // default): that was half of the load generator's CPU.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    let welcome = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .context("no welcome within 30 s")?;
    match welcome {
        Some(Ok(m @ Message::Text(_))) => {
            let welcome = Incoming::parse(&m).is_some_and(|v| v.is_welcome());
            anyhow::ensure!(welcome, "first frame is not a welcome: {m}");
        }
        other => anyhow::bail!("no welcome: {other:?}"),
    }
    Ok((ws, started.elapsed()))
}
