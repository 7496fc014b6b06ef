//! Test harness for Switchboard: real parts only.
//!
//! - [`NatsServer`]: a real `nats-server -js` on a free port with a temp
//!   store, killed and cleaned on drop.
//! - [`Proc`]: a child process (our binary, nginx) with its log captured,
//!   killed on drop, its log printed when the test failed.
//! - [`Ws`]: a WebSocket test client (tokio-tungstenite) speaking JSON.
//! - [`http_get`]/[`http_post`]: a tiny HTTP/1.1 client.
//! - [`eventually!`]: retry an assertion until it holds or patience runs out.
//! - [`Nginx`]: nginx as the WebSocket load balancer.
//! - [`Proxy`]: a TCP proxy whose link can go silent (a partition).

mod nats;
mod nginx;
mod process;
mod proxy;
mod ws;

pub use nats::{cluster_url, edge_nkey_seed, NatsServer, NatsUser, ADMIN_USER, EDGE_USER, ROUTER_USER};
pub use nginx::Nginx;
pub use process::{free_port, http_get, http_post, wait_ready, Proc};
pub use proxy::Proxy;
pub use ws::{Closed, Ws};

/// How long `eventually!` and the waits try: `SWITCHBOARD_TEST_PATIENCE_MS`
/// or 15 s.
pub fn patience() -> std::time::Duration {
    std::env::var("SWITCHBOARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(std::time::Duration::from_secs(15), std::time::Duration::from_millis)
}

/// Retries an async boolean expression every 50 ms until it is true or
/// [`patience`] runs out, then panics with the message.
#[macro_export]
macro_rules! eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + $crate::patience();
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}
