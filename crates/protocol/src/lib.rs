//! The wire vocabulary of Switchboard, shared by every other crate. Pure: no
//! tokio, no I/O.
//!
//! Architecture: `protocol` ← `runtime` ← `edge`, `router` ← `switchboard`.
//!
//! - [`ids`]: validation of bizCode / clientId / group ids and their encoding
//!   into subject tokens and KV keys.
//! - [`codes`]: reply codes (mode 2 `code`) and WebSocket close codes.
//! - [`frame`]: client → gateway frame parsing, gateway → client frame rendering.
//! - [`event`]: connection events for backends (the `sb-events` stream).
//! - [`envelope`]: msgpack bus messages between edges and routers.
//! - [`subject`]: NATS subject and KV key builders.
//! - `fuzzing`: entry points of the fuzz targets (`fuzz/`) and the corpus
//!   replay, not API.

pub mod codes;
pub mod envelope;
pub mod event;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod subject;

pub use codes::{CloseCode, ErrorCode, RefusalCode};
