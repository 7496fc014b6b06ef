//! The presence store seam: get / create / update-if-unchanged /
//! delete-if-unchanged / watch, keyed by [`subject::presence_key`], and
//! the registry of bizCodes.
//!
//! Contract: revisions grow with every write to the store; a conditional
//! write with a stale revision fails with [`StoreError::WrongRevision`] and
//! changes nothing.
//!
//! - `seam`: the traits [`PresenceStore`] and [`BizRegistry`], their
//!   values and errors.
//! - `kv`: [`KvStore`] and [`KvRegistry`], JetStream KV buckets (routers).
//! - `memory`: [`MemoryStore`] and [`MemoryRegistry`] for `standalone`,
//!   where the one router is the only writer.
//! - `members`: durable group membership ([`MemberStore`]: [`KvMembers`],
//!   [`MemoryMembers`]), the groups bound to a bizCode+clientId.
//! - `settings`: per-bizCode settings ([`BizSettings`]) in the
//!   registration bucket ([`KvRegistry`], [`MemoryRegistry`]).
//!
//! [`subject::presence_key`]: switchboard_protocol::subject::presence_key

mod kv;
mod members;
mod memory;
mod seam;
mod settings;

pub use kv::KvStore;
pub use members::{KvMembers, MemberStore, Membership, MemoryMembers};
pub use memory::MemoryStore;
pub use seam::{BizRegistry, BizSettings, PresenceStore, StoreError, Versioned, WatchEvent};
pub use settings::{KvRegistry, MemoryRegistry};
