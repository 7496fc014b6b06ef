//! Presence and registered bizCodes in memory, for `standalone` (and the
//! core's unit tests): compare-and-set with the same contract as the KV
//! bucket, one process, no watch traffic.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_protocol::envelope::PresenceValue;
use tokio::sync::mpsc;

use super::seam::{PresenceStore, StoreError, Versioned, WatchEvent};

/// In-process presence for `standalone`: one router, which applies its own
/// writes to its index, so the watch only reports [`WatchEvent::Ready`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<(u64, HashMap<String, Versioned>)>,
}

impl MemoryStore {
    /// Writes `value` if the entry is at `expected` (`None`: absent) and
    /// returns the new revision.
    fn write(&self, key: &str, value: &PresenceValue, expected: Option<u64>) -> Result<u64, StoreError> {
        let mut s = self.state.lock();
        if s.1.get(key).map(|v| v.revision) != expected {
            return Err(StoreError::WrongRevision);
        }
        s.0 += 1;
        let revision = s.0;
        let value = value.clone();
        s.1.insert(key.to_owned(), Versioned { value, revision });
        Ok(revision)
    }
}

#[async_trait]
impl PresenceStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.state.lock().1.get(key).cloned())
    }

    async fn create(&self, key: &str, value: &PresenceValue) -> Result<u64, StoreError> {
        self.write(key, value, None)
    }

    async fn update(&self, key: &str, value: &PresenceValue, revision: u64) -> Result<u64, StoreError> {
        self.write(key, value, Some(revision))
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        let mut s = self.state.lock();
        match s.1.get(key) {
            Some(v) if v.revision == revision => {
                s.1.remove(key);
                s.0 += 1;
                Ok(())
            }
            _ => Err(StoreError::WrongRevision),
        }
    }

    async fn watch(&self) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(WatchEvent::Ready);
        Ok(rx)
    }
}

/// The last revision given, and every value with its revision.
type Versions<T> = (u64, HashMap<String, (T, u64)>);

/// Values with compare-and-set on revisions, in memory: the twin of a KV
/// bucket for the stores that need nothing else (membership, settings).
#[derive(Debug)]
pub(super) struct CasMap<T> {
    state: Mutex<Versions<T>>,
}

impl<T> Default for CasMap<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new((0, HashMap::new())),
        }
    }
}

impl<T: Clone> CasMap<T> {
    /// The value and its revision.
    pub(super) fn get(&self, key: &str) -> Option<(T, u64)> {
        self.state.lock().1.get(key).cloned()
    }

    /// Writes `value` if the key is at `revision` (`None`: absent).
    pub(super) fn put(&self, key: &str, value: &T, revision: Option<u64>) -> Result<u64, StoreError> {
        let mut s = self.state.lock();
        if s.1.get(key).map(|(_, r)| *r) != revision {
            return Err(StoreError::WrongRevision);
        }
        s.0 += 1;
        let rev = s.0;
        s.1.insert(key.to_owned(), (value.clone(), rev));
        Ok(rev)
    }

    /// Removes the key if it is at `revision`.
    pub(super) fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        let mut s = self.state.lock();
        match s.1.get(key) {
            Some((_, r)) if *r == revision => {
                s.1.remove(key);
                Ok(())
            }
            _ => Err(StoreError::WrongRevision),
        }
    }

    /// Every key.
    pub(super) fn keys(&self) -> Vec<String> {
        self.state.lock().1.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(conn: u64) -> PresenceValue {
        PresenceValue {
            node: "n".into(),
            conn,
            biz: "d1".into(),
            client: "c1".into(),
            groups: vec![],
            since: 0,
            bound: Vec::new(),
        }
    }

    #[tokio::test]
    async fn memory_store_is_compare_and_set() {
        let s = MemoryStore::default();
        let r1 = s.create("k", &v(1)).await.expect("create");
        assert!(matches!(s.create("k", &v(2)).await, Err(StoreError::WrongRevision)));
        let r2 = s.update("k", &v(2), r1).await.expect("update");
        assert!(matches!(s.update("k", &v(3), r1).await, Err(StoreError::WrongRevision)));
        assert!(matches!(s.delete("k", r1).await, Err(StoreError::WrongRevision)));
        s.delete("k", r2).await.expect("delete");
        assert_eq!(s.get("k").await.expect("get"), None);
    }
}
