//! Seam 3 of `docs/recovery.md`: a delivery from a history partition's
//! owner to this edge is a core-NATS publish, at most once. Every such
//! message carries an [`Order`]: the owner's fencing token and its number
//! among those the owner sent this node, and an owner that has sent a node
//! nothing for a second sends a tick with its count. A loss shows up as a
//! gap in the numbers, a tick counting more than arrived, or a newer
//! owner (whose predecessor's last messages may be lost).
//!
//! What is in doubt is healed by recovery: the connections concerned are
//! closed with 1012 (SPEC §2: reconnect) and come back with `recover`,
//! which replays from the log what they missed. On a gap or a tick, every
//! connection of the partition; on a newer owner, those that joined under
//! an older one. Messages of an older owner that arrive after a newer one
//! was heard are dropped (their entries are in the log).

use switchboard_protocol::envelope::Order;
use switchboard_protocol::CloseCode;

use crate::edge::EdgeInner;

/// Which connections of a partition a doubt closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doubt {
    /// Every one: a message of the current owner was lost.
    All,
    /// Those that joined under an owner older than this token.
    JoinedBefore(u64),
}

impl EdgeInner {
    /// Checks a message's place; false when it comes from an owner older
    /// than one already heard (drop it).
    pub(crate) fn check_order(&self, o: Order) -> bool {
        let mut doubts = Vec::new();
        {
            let mut orders = self.orders().lock();
            let (token, received) = orders.entry(o.partition).or_insert((0, 0));
            if o.token < *token {
                return false;
            }
            if o.token > *token {
                doubts.push(Doubt::JoinedBefore(o.token));
                *token = o.token;
                *received = 0;
            }
            if o.tick {
                if o.n > *received {
                    doubts.push(Doubt::All);
                    *received = o.n;
                }
            } else {
                if o.n != *received + 1 {
                    doubts.push(Doubt::All);
                }
                *received = (*received).max(o.n);
            }
        }
        for d in doubts {
            self.doubt(o.partition, d);
        }
        true
    }

    /// Whether a connection that joined partition `p` under owner `token`
    /// is already behind a newer owner this edge heard from (it would never
    /// learn of a loss before that owner): then it is closed like the
    /// others were.
    pub(crate) fn joined_stale(&self, p: u32, token: u64) -> bool {
        token > 0 && self.orders().lock().get(&p).is_some_and(|(t, _)| *t > token)
    }

    /// Closes the connections of partition `p` that `d` names with 1012.
    fn doubt(&self, p: u32, d: Doubt) {
        let mut closed = 0u64;
        self.registry().for_each(|c| {
            let Some((cp, token)) = c.joined() else { return };
            let hit = cp == p
                && match d {
                    Doubt::All => true,
                    Doubt::JoinedBefore(t) => token < t,
                };
            if hit && c.outbox.close(CloseCode::Draining) {
                closed += 1;
            }
        });
        if closed > 0 {
            tracing::info!(
                partition = p,
                ?d,
                closed,
                "a delivery from the partition's owner may be lost; closed its connections to recover"
            );
            self.metrics().recovery_closes.inc_by(closed);
        }
    }

    /// After a purge of this node (a `Resync`): routers took its
    /// connections out of presence meanwhile, so sends to them were stored
    /// and not delivered. Every connection with history closes with 1012
    /// to recover them.
    pub(crate) fn doubt_everything(&self) {
        let mut closed = 0u64;
        self.registry().for_each(|c| {
            if c.joined().is_some() && c.outbox.close(CloseCode::Draining) {
                closed += 1;
            }
        });
        if closed > 0 {
            tracing::info!(closed, "purged while alive: closed connections with history to recover");
            self.metrics().recovery_closes.inc_by(closed);
        }
    }
}
