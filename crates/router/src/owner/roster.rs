//! How routers share partitions: each holds at most `ceil(P / routers)`,
//! takes free partitions up to that share, and hands extras over one at a
//! time. Pure arithmetic over a [`Snapshot`] of the lease bucket.
//!
//! [`Snapshot`]: super::lease::Snapshot

use std::collections::BTreeSet;

use switchboard_log::partition::fnv1a;

/// The most partitions one router holds: `ceil(partitions / routers)`
/// (a router that sees no announcement, not even its own, counts itself).
#[must_use]
pub fn fair_share(partitions: u32, routers: usize) -> usize {
    let routers = routers.max(1);
    let p = usize::try_from(partitions).unwrap_or(usize::MAX);
    p.div_ceil(routers)
}

/// What a router should do with the bucket as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try to take these free partitions, in this order.
    Acquire(Vec<u32>),
    /// Hand this partition over (it holds more than its share).
    HandOver(u32),
    /// Nothing to do.
    Hold,
}

/// The plan of router `node_id` holding `held`, with `routers` announced and
/// `leased` partitions taken (its own among them), leaving `cooling` alone.
///
/// Free partitions are tried from an offset that depends on the node id,
/// so two routers starting together mostly try different ones first. The
/// partition handed over is the last held, so a router keeps its first ones.
#[must_use]
pub fn plan(
    node_id: &str,
    partitions: u32,
    routers: usize,
    held: &BTreeSet<u32>,
    leased: &BTreeSet<u32>,
    cooling: &BTreeSet<u32>,
) -> Plan {
    let share = fair_share(partitions, routers);
    if held.len() > share {
        return held.last().map_or(Plan::Hold, |p| Plan::HandOver(*p));
    }
    let room = share - held.len();
    if room == 0 || partitions == 0 {
        return Plan::Hold;
    }
    let start = fnv1a(node_id.as_bytes()) % partitions;
    let free: Vec<u32> = (0..partitions)
        .map(|i| (start + i) % partitions)
        .filter(|p| !held.contains(p) && !leased.contains(p) && !cooling.contains(p))
        .take(room)
        .collect();
    if free.is_empty() {
        Plan::Hold
    } else {
        Plan::Acquire(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
        v.into_iter().collect()
    }

    #[test]
    fn share_is_the_ceiling() {
        assert_eq!(fair_share(16, 0), 16);
        assert_eq!(fair_share(16, 1), 16);
        assert_eq!(fair_share(16, 2), 8);
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(16, 17), 1);
    }

    #[test]
    fn a_lone_router_takes_every_free_partition() {
        let Plan::Acquire(ps) = plan("a", 16, 1, &set([]), &set([3]), &set([4])) else {
            panic!("acquire");
        };
        assert_eq!(ps.len(), 14);
        assert!(!ps.contains(&3) && !ps.contains(&4));
    }

    #[test]
    fn a_router_over_its_share_hands_one_over() {
        let held = set(0..16);
        assert_eq!(plan("a", 16, 2, &held, &held, &set([])), Plan::HandOver(15));
        let held = set(0..8);
        assert_eq!(plan("a", 16, 2, &held, &set(0..16), &set([])), Plan::Hold);
    }

    #[test]
    fn a_router_takes_only_up_to_its_share() {
        let Plan::Acquire(ps) = plan("b", 16, 2, &set([1]), &set([1]), &set([])) else {
            panic!("acquire");
        };
        assert_eq!(ps.len(), 7);
    }
}
