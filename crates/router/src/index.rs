//! The router's in-memory index of presence, fed by its own writes and by
//! the store's watch. Answers "where is this client", "which nodes host this
//! group / bizCode and how many members" without touching the store.
//!
//! Revisions make every update idempotent and order-insensitive: a put or
//! delete older than what the index holds is ignored, and a removed entry
//! leaves a tombstone so a late replay of its put cannot resurrect it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_protocol::envelope::PresenceValue;

/// Where one client is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Node holding the connection.
    pub node: Arc<str>,
    /// Connection id on that node.
    pub conn: u64,
    /// Its groups.
    pub groups: Vec<Arc<str>>,
    /// Store revision of this entry.
    pub revision: u64,
}

/// Members of one group: who, and how many on each node.
#[derive(Debug, Default)]
pub struct Group {
    /// clientIds.
    pub members: HashSet<Arc<str>>,
    /// node → members on it.
    pub nodes: HashMap<Arc<str>, u32>,
}

#[derive(Debug, Default)]
struct Biz {
    clients: HashMap<Arc<str>, Entry>,
    nodes: HashMap<Arc<str>, u32>,
    groups: HashMap<Arc<str>, Group>,
}

/// (bizCode, clientId).
type ClientKey = (Arc<str>, Arc<str>);

/// The index.
#[derive(Debug, Default)]
pub struct Index {
    bizs: HashMap<Arc<str>, Biz>,
    by_node: HashMap<Arc<str>, HashSet<ClientKey>>,
    tombstones: HashMap<ClientKey, (u64, Instant)>,
    len: usize,
}

fn inc(map: &mut HashMap<Arc<str>, u32>, node: &Arc<str>) {
    *map.entry(node.clone()).or_insert(0) += 1;
}

fn dec(map: &mut HashMap<Arc<str>, u32>, node: &str) {
    if let Some(n) = map.get_mut(node) {
        *n -= 1;
        if *n == 0 {
            map.remove(node);
        }
    }
}

impl Index {
    /// Entries in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where `client` of `biz` is, if online.
    pub fn get(&self, biz: &str, client: &str) -> Option<&Entry> {
        self.bizs.get(biz)?.clients.get(client)
    }

    /// Members of a group.
    pub fn group(&self, biz: &str, group: &str) -> Option<&Group> {
        self.bizs.get(biz)?.groups.get(group)
    }

    /// node → clients of `biz` on it, and the total.
    pub fn biz_nodes(&self, biz: &str) -> Option<(&HashMap<Arc<str>, u32>, usize)> {
        let b = self.bizs.get(biz)?;
        Some((&b.nodes, b.clients.len()))
    }

    /// clientIds online in `biz`, sorted.
    pub fn clients(&self, biz: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .bizs
            .get(biz)
            .map(|b| b.clients.keys().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Groups of `biz` with their member counts, sorted by name.
    pub fn groups(&self, biz: &str) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .bizs
            .get(biz)
            .map(|b| b.groups.iter().map(|(g, m)| (g.to_string(), m.members.len())).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Every (biz, client, revision) held by `node`.
    pub fn node_entries(&self, node: &str) -> Vec<(Arc<str>, Arc<str>, Entry)> {
        let Some(keys) = self.by_node.get(node) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|(b, c)| {
                let e = self.get(b, c)?;
                Some((b.clone(), c.clone(), e.clone()))
            })
            .collect()
    }

    /// Number of entries held by `node`.
    pub fn node_len(&self, node: &str) -> usize {
        self.by_node.get(node).map_or(0, HashSet::len)
    }

    /// Every node that holds entries.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_node.keys()
    }

    /// Applies a put at `revision`. Returns the entry it replaced, or `None`
    /// (also when the put is older than what the index holds: then
    /// `applied` is false).
    pub fn put(&mut self, value: &PresenceValue, revision: u64) -> (bool, Option<Entry>) {
        let key: ClientKey = (value.biz.as_str().into(), value.client.as_str().into());
        if let Some((tomb, _)) = self.tombstones.get(&key) {
            if *tomb >= revision {
                return (false, None);
            }
        }
        if let Some(e) = self.get(&value.biz, &value.client) {
            if e.revision >= revision {
                return (false, None);
            }
        }
        self.tombstones.remove(&key);
        let old = self.remove_entry(&value.biz, &value.client);
        let (biz_id, client) = key;
        let node: Arc<str> = value.node.as_str().into();
        let groups: Vec<Arc<str>> = value.groups.iter().map(|g| Arc::from(g.as_str())).collect();
        let biz = self.bizs.entry(biz_id.clone()).or_default();
        inc(&mut biz.nodes, &node);
        for g in &groups {
            let group = biz.groups.entry(g.clone()).or_default();
            group.members.insert(client.clone());
            inc(&mut group.nodes, &node);
        }
        biz.clients.insert(
            client.clone(),
            Entry {
                node: node.clone(),
                conn: value.conn,
                groups,
                revision,
            },
        );
        self.by_node.entry(node).or_default().insert((biz_id, client));
        self.len += 1;
        (true, old)
    }

    /// Removes the entry if its revision is at most `upto` and leaves a
    /// tombstone at `upto`. Returns the removed entry.
    pub fn delete(&mut self, biz: &str, client: &str, upto: u64) -> Option<Entry> {
        let key: ClientKey = (biz.into(), client.into());
        let tomb = self.tombstones.entry(key).or_insert((upto, Instant::now()));
        tomb.0 = tomb.0.max(upto);
        match self.get(biz, client) {
            Some(e) if e.revision <= upto => self.remove_entry(biz, client),
            _ => None,
        }
    }

    /// Forgets tombstones older than `age`.
    pub fn prune_tombstones(&mut self, age: Duration) {
        self.tombstones.retain(|_, (_, at)| at.elapsed() < age);
    }

    fn remove_entry(&mut self, biz_id: &str, client: &str) -> Option<Entry> {
        let biz = self.bizs.get_mut(biz_id)?;
        let (client_key, entry) = biz.clients.remove_entry(client)?;
        dec(&mut biz.nodes, &entry.node);
        for g in &entry.groups {
            if let Some(group) = biz.groups.get_mut(g) {
                group.members.remove(client);
                dec(&mut group.nodes, &entry.node);
                if group.members.is_empty() {
                    biz.groups.remove(g);
                }
            }
        }
        let biz_key = self.bizs.get_key_value(biz_id).map(|(k, _)| k.clone());
        if let Some(b) = self.bizs.get(biz_id) {
            if b.clients.is_empty() {
                self.bizs.remove(biz_id);
            }
        }
        if let (Some(keys), Some(bk)) = (self.by_node.get_mut(&*entry.node), biz_key) {
            keys.remove(&(bk, client_key));
            if keys.is_empty() {
                self.by_node.remove(&*entry.node);
            }
        }
        self.len -= 1;
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(node: &str, conn: u64, biz: &str, client: &str, groups: &[&str]) -> PresenceValue {
        PresenceValue {
            node: node.into(),
            conn,
            biz: biz.into(),
            client: client.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            since: 0,
            bound: Vec::new(),
        }
    }

    #[test]
    fn resolves_the_four_scenarios() {
        let mut ix = Index::default();
        ix.put(&pv("e1", 1, "d1", "c1", &["g1"]), 1);
        ix.put(&pv("e2", 1, "d1", "c2", &["g2"]), 2);
        ix.put(&pv("e2", 2, "d1", "c3", &["g1"]), 3);
        ix.put(&pv("e3", 1, "d1", "c4", &["g1", "g2"]), 4);
        ix.put(&pv("e3", 2, "d2", "c5", &["g1", "g2"]), 5);
        assert_eq!(ix.get("d1", "c2").map(|e| (&*e.node, e.conn)), Some(("e2", 1)));
        assert!(ix.get("d2", "c2").is_none());
        let g1 = ix.group("d1", "g1").expect("g1");
        assert_eq!(g1.members.len(), 3);
        assert_eq!(g1.nodes.len(), 3);
        let (nodes, n) = ix.biz_nodes("d1").expect("d1");
        assert_eq!((nodes.len(), n), (3, 4));
        assert_eq!(ix.biz_nodes("d2").map(|x| x.1), Some(1));
        assert_eq!(ix.node_entries("e3").len(), 2);
        assert_eq!((ix.node_len("e3"), ix.node_len("e9")), (2, 0));
    }

    #[test]
    fn revisions_make_updates_idempotent() {
        let mut ix = Index::default();
        assert!(ix.put(&pv("e1", 1, "d1", "c1", &["g1"]), 5).0);
        assert!(!ix.put(&pv("e1", 1, "d1", "c1", &["g1"]), 5).0);
        assert!(!ix.put(&pv("e9", 9, "d1", "c1", &["g1"]), 4).0);
        // replacement moves the client and its group counts
        let (applied, old) = ix.put(&pv("e2", 7, "d1", "c1", &["g2"]), 6);
        assert!(applied);
        assert_eq!(old.map(|e| e.conn), Some(1));
        assert!(ix.group("d1", "g1").is_none());
        assert_eq!(ix.group("d1", "g2").map(|g| g.members.len()), Some(1));
        // a stale delete does nothing, a current one removes, a late put stays out
        assert!(ix.delete("d1", "c1", 5).is_none());
        assert!(ix.delete("d1", "c1", 6).is_some());
        assert!(!ix.put(&pv("e2", 7, "d1", "c1", &["g2"]), 6).0);
        assert!(ix.is_empty());
        assert!(ix.biz_nodes("d1").is_none());
        assert_eq!(ix.nodes().count(), 0);
        // a newer put after the delete comes back
        assert!(ix.put(&pv("e3", 8, "d1", "c1", &[]), 9).0);
        assert_eq!(ix.len(), 1);
    }
}
