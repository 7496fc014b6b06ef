//! Connection events the router observes (README "Connection events"):
//! `online` / `offline` when a clientId's presence entry is created or
//! removed (a replacement updates the entry in place, so it is neither),
//! `disconnected` with cause `crash_purge` for each connection purged with
//! its silent edge, and `bound` / `unbound` when the API changed a
//! client's groups. Emitting never waits ([`Events::emit`]).

use switchboard_protocol::event::{Cause, EventKind};
use switchboard_runtime::events::Events;

use super::Router;

/// The close code of a connection nobody closed (RFC 6455 §7.1.5: 1006,
/// "abnormal closure", never sent on the wire).
const ABNORMAL_CLOSURE: u16 = 1006;

impl Router {
    /// Publishes connection events to `events` from now on. Set once;
    /// later calls change nothing. Without it nothing is published.
    pub fn set_events(&self, events: Events) {
        let _ = self.inner.events.set(events);
    }

    fn events(&self) -> Option<&Events> {
        self.inner.events.get().filter(|e| e.enabled())
    }

    /// The clientId's first connection: `conn` on `node` entered presence
    /// where it had no entry.
    pub(super) fn emit_online(&self, biz: &str, client: &str, node: &str, conn: u64) {
        if let Some(ev) = self.events() {
            ev.emit(ev.event(EventKind::Online, biz, client).with_conn(conn).with_edge(node));
        }
    }

    /// The clientId's last connection (`conn` on `node`) left presence.
    pub(super) fn emit_offline(&self, biz: &str, client: &str, node: &str, conn: u64, cause: Option<Cause>) {
        if let Some(ev) = self.events() {
            let e = ev
                .event(EventKind::Offline, biz, client)
                .with_conn(conn)
                .with_edge(node);
            ev.emit(match cause {
                Some(c) => e.with_cause(c),
                None => e,
            });
        }
    }

    /// `conn` on the silent `node` was purged: its edge cannot say so.
    pub(super) fn emit_purged(&self, biz: &str, client: &str, node: &str, conn: u64) {
        if let Some(ev) = self.events() {
            let e = ev
                .event(EventKind::Disconnected, biz, client)
                .with_conn(conn)
                .with_edge(node)
                .with_close(ABNORMAL_CLOSURE, "edge silent, purged", Cause::CrashPurge);
            ev.emit(e);
        }
        self.emit_offline(biz, client, node, conn, Some(Cause::CrashPurge));
    }

    /// The API bound (`join`) or unbound the client's `group`.
    pub(super) fn emit_membership(&self, biz: &str, client: &str, group: &str, join: bool) {
        if let Some(ev) = self.events() {
            let kind = if join { EventKind::Bound } else { EventKind::Unbound };
            ev.emit(ev.event(kind, biz, client).with_group(group));
        }
    }
}
