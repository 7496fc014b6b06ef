//! Switchboard router: owns presence (the only code that touches the KV
//! bucket), resolves every send into one Deliver per hosting node, detects
//! dead edges and purges their entries.
//!
//! Architecture: `protocol` ← `runtime` ← `edge`, **`router`** ← `switchboard`.
//!
//! - [`config`]: `[router]` settings.
//! - [`store`]: the presence store seam (JetStream KV, in-memory).
//! - [`index`]: the in-memory presence index.
//! - [`link`]: the router → edge seam.
//! - [`core`]: presence (connect, disconnect, resync, drain); its child
//!   modules: routing and notices, node liveness, API operations.
//! - [`api`]: the backend HTTP push API (`/api/websocket/*`).
//! - [`nats`]: serving the router subjects, the KV watch, the edge link.

pub mod api;
pub mod config;
pub mod core;
pub mod index;
pub mod link;
pub mod nats;
pub mod store;

pub use crate::core::Router;
pub use config::RouterConfig;
pub use link::{EdgeError, EdgeLink};
pub use store::{BizRegistry, KvRegistry, KvStore, MemoryRegistry, MemoryStore, PresenceStore};
