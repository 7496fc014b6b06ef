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
//! - [`core`]: the transport-free [`Router`]: presence (connect,
//!   disconnect, resync, drain), routing and notices, node liveness, API
//!   operations. It answers `Result<_, `[`RouterError`]`>`.
//! - [`outbound`]: one send to route, and its origin.
//! - [`owner`]: partition ownership for the history log: leases in
//!   `<presence_bucket>-leases`, fences in the log, tokens, fair shares
//!   (not wired into routing yet).
//! - [`error`]: [`RouterError`] and its wire code.
//! - [`wire`]: core results as bus replies (NATS and `standalone`).
//! - [`api`]: the backend HTTP push API (`/api/websocket/*`).
//! - [`webhook`]: webhook settings (`set_webhook`), signing, and delivery
//!   of connection events from JetStream consumers (routers) or the
//!   in-process sink (`standalone`).
//! - [`nats`]: serving the router subjects, the KV watch, the edge link
//!   (which, after a bus outage, holds commands to a node until its inbox
//!   answers again: `settle.rs`).
//!
//! Wire codes are made at the edge of the crate only: [`wire`] for the
//! bus, [`api`] for HTTP, both through [`RouterError::code`].

pub mod api;
pub mod config;
pub mod core;
pub mod error;
pub mod index;
pub mod link;
pub mod nats;
pub mod outbound;
pub mod owner;
mod settle;
pub mod store;
pub mod webhook;
pub mod wire;

pub use crate::core::{Connected, History, Router};
pub use config::RouterConfig;
pub use error::RouterError;
pub use link::{EdgeError, EdgeLink, OwnerLink};
pub use outbound::{Origin, Outbound};
pub use store::{BizRegistry, KvRegistry, KvStore, MemoryRegistry, MemoryStore, PresenceStore};
