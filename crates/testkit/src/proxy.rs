//! A TCP proxy that can make a link go silent: the fault of a network
//! partition, not of a closed connection.
//!
//! [`Proxy::silence`] stops moving bytes in both directions, and a
//! connection opened meanwhile is accepted but not forwarded. Nothing is
//! closed or reset, so each side sees what it sees when packets are
//! dropped: writes that succeed into its socket buffer, reads that never
//! return, pings that are never answered. Bytes read before the silence are
//! held, not dropped, as TCP retransmits them once a partition heals;
//! [`Proxy::restore`] moves them on. A side that gave up on the link
//! closes its socket as it would, and the proxy passes the close on once
//! it is restored.
//!
//! It runs on its own thread and runtime, so a test that blocks its own
//! thread (a `sleep`, a `wait_exit`) does not freeze the link too.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy from a free local port to `upstream`, killed on drop.
pub struct Proxy {
    port: u16,
    upstream: SocketAddr,
    flowing: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<port>` to `upstream`.
    ///
    /// # Panics
    /// If no local port can be bound (a test set-up failure).
    pub fn start(upstream: SocketAddr) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        std_listener.set_nonblocking(true).expect("non-blocking proxy listener");
        let port = std_listener.local_addr().expect("proxy port").port();
        let (flowing, watch_rx) = watch::channel(true);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                tokio::select! {
                    _ = stop_rx => {}
                    () = accept_loop(listener, upstream, watch_rx) => {}
                }
            });
            // Dropping the runtime drops every connection task: both
            // sockets of each link close.
        });
        Self {
            port,
            upstream,
            flowing,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>` (for a proxy in front of a NATS server).
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Stops moving bytes both ways on every link, old and new, without
    /// closing anything (a black hole).
    pub fn silence(&self) {
        self.flowing.send_replace(false);
    }

    /// Moves bytes again, held ones first.
    pub fn restore(&self) {
        self.flowing.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.flowing.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, flowing: watch::Receiver<bool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let flowing = flowing.clone();
        tokio::spawn(async move {
            // A connect during a silence is a SYN that is never answered:
            // wait for the link before reaching upstream.
            let mut gate = flowing.clone();
            if gate.wait_for(|f| *f).await.is_err() {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pump(cr, sw, flowing.clone()));
            let down = tokio::spawn(pump(sr, cw, flowing));
            let _ = tokio::join!(up, down);
        });
    }
}

/// Copies `from` to `to`, stopping (holding what it read) while the link
/// is silent; passes the end of stream on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flowing: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if flowing.wait_for(|f| *f).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            },
            // Silenced while waiting for bytes: stop reading.
            _ = flowing.wait_for(|f| !*f) => continue,
        };
        if flowing.wait_for(|f| *f).await.is_err() {
            return;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
