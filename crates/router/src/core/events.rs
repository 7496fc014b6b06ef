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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use switchboard_protocol::event::Event;
    use switchboard_runtime::events::MemorySink;
    use switchboard_runtime::metrics::Metrics;
    use tokio::sync::mpsc;

    use super::*;
    use crate::core::testing::{disconnect, info, router};

    fn observed(router: &Router) -> mpsc::Receiver<Event> {
        let (sink, rx) = MemorySink::new(100, Duration::from_secs(1), Arc::new(Metrics::new()));
        router.set_events(Events::new(Arc::new(sink), "r1"));
        rx
    }

    /// What a test compares of an event: kind, edge, connId, cause.
    type Seen = (EventKind, Option<String>, Option<u64>, Option<Cause>);

    fn kinds(rx: &mut mpsc::Receiver<Event>) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push((e.kind, e.edge, e.conn, e.cause));
        }
        out
    }

    /// `online` for the first connection only, `offline` for the last: a
    /// replacement (on another node) and the stale disconnect of the
    /// replaced connection say nothing.
    #[tokio::test]
    async fn online_and_offline_only_for_the_first_and_last_connection() {
        let (router, _nodes, _store) = router();
        let mut rx = observed(&router);
        let (old, new) = (info("e1", 1, "a"), info("e2", 7, "a"));
        router.connect(old.clone()).await.expect("first");
        router.connect(new.clone()).await.expect("replacement");
        router.disconnect(disconnect(&old)).await.expect("stale");
        assert_eq!(kinds(&mut rx), [(EventKind::Online, Some("e1".into()), Some(1), None)]);
        router.disconnect(disconnect(&new)).await.expect("last");
        assert_eq!(kinds(&mut rx), [(EventKind::Offline, Some("e2".into()), Some(7), None)]);
    }

    /// A silent node's connections are purged with `disconnected`
    /// (`crash_purge`, 1006) then `offline`; `close_client`'s offline says
    /// `api_close`.
    #[tokio::test]
    async fn purges_and_api_closes_say_why() {
        let (router, _nodes, _store) = router();
        router.connect(info("e1", 1, "a")).await.expect("a");
        router.connect(info("e2", 2, "b")).await.expect("b");
        let mut rx = observed(&router);
        router.purge_node("e1").await;
        let purged: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let got: Vec<_> = purged
            .iter()
            .map(|e| (e.kind, e.code, e.cause, e.client.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (EventKind::Disconnected, Some(1006), Some(Cause::CrashPurge), "a"),
                (EventKind::Offline, None, Some(Cause::CrashPurge), "a"),
            ]
        );
        assert!(purged.iter().all(|e| e.node == "r1" && e.edge.as_deref() == Some("e1")));
        router.close_client("b", "b").await.ok();
        assert_eq!(
            kinds(&mut rx),
            [(EventKind::Offline, Some("e2".into()), Some(2), Some(Cause::ApiClose))]
        );
    }
}
