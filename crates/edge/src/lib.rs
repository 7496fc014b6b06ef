//! Switchboard edge: terminates client WebSockets and fans deliveries out
//! to local sockets. It asks the router for everything that needs cluster
//! knowledge and never talks to another edge.
//!
//! Architecture: `protocol` ← `runtime` ← **`edge`**, `router` ← `switchboard`.
//!
//! The node:
//! - `edge`: [`Edge`], the shared state every part below reads.
//! - `http`: the HTTP side ([`Edge`] is a `Handler`): `/ws`, `/echo`, ops.
//! - `admit`: every check before the upgrade, refusals as one error enum
//!   mapped to status + `{code, msg}` in one place.
//! - `lifecycle`: the sweeper (token expiry, idle timeouts) and drain.
//! - `inbox`: the router's commands to this node (deliver, close, bind).
//! - `resync`: re-asserting presence after a bus outage.
//!
//! A connection:
//! - [`handshake`]: query and HTTP checks of the opening request.
//! - [`auth`]: connection JWTs and the `Origin` allow-list.
//! - `address`: the client's address (trusted proxies) and the cap on
//!   connections per address.
//! - `tenant`: each bizCode's limits here (connections, sends/s), asked of
//!   the routers and refreshed.
//! - `session`: one task per connection: the reader, and a writer for what
//!   a direct write left (`writer`).
//! - `send`: what a client's text message does (heartbeat, send, limits).
//! - `events`: the connection events this edge observes (connected,
//!   disconnected, upstream).
//! - `wsread`: a lean RFC 6455 frame reader (small buffer while idle).
//! - `message`: frames → messages (fragmentation, UTF-8, close frames).
//! - [`outbox`]: each connection's bounded send queue and direct writes.
//! - [`registry`]: local connections by id, by (bizCode, group), by bizCode.
//!
//! The router seam:
//! - [`link`]: the edge → router seam ([`RouterLink`]).
//! - [`nats`]: the seam over NATS, the node inbox subscriber, heartbeats,
//!   and the task set the binary stops at shutdown.
//!
//! Also [`config`] (`[edge]` settings) and `fuzzing` (entry points of the
//! fuzz targets in `fuzz/`, not API).
//!
//! Within the crate, imports run one way: `http` → `admit`, `session` →
//! `send`, `writer` → `edge` → `registry` → `outbox`; nothing imports back.

mod address;
mod admit;
pub mod auth;
pub mod config;
mod edge;
mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
mod heard;
mod http;
mod inbox;
mod lifecycle;
pub mod link;
mod message;
pub mod nats;
mod order;
pub mod outbox;
mod recovery;
pub mod registry;
mod resync;
mod send;
mod session;
mod tenant;
mod writer;
mod wsread;

pub use admit::new_client_id;
pub use auth::{AuthConfig, AuthMode, Verifier};
pub use config::EdgeConfig;
pub use edge::{new_node_id, Edge};
pub use link::{LinkError, RouterLink};
pub use registry::Dirty;
