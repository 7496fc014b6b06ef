//! The cap on API sends waiting for their delivery receipts
//! (`ackTimeoutMs`): at most `api.max_receipt_waits` on this process and
//! `api.max_receipt_waits_per_key` per API key at once; past either a
//! send is refused with 429/1005 before it is routed.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Waits held, in total and per key (its place in `api.keys`,
/// `usize::MAX` with auth off).
#[derive(Debug)]
pub(crate) struct ApiWaits {
    max: usize,
    max_per_key: usize,
    held: Mutex<(usize, HashMap<usize, usize>)>,
}

/// One held wait; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Slot {
    waits: Arc<ApiWaits>,
    key: usize,
}

impl ApiWaits {
    pub(crate) fn new(max: usize, max_per_key: usize) -> Self {
        Self {
            max,
            max_per_key,
            held: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a slot for `key`; `None` when the process or the key holds
    /// its most.
    pub(crate) fn take(self: &Arc<Self>, key: usize) -> Option<Slot> {
        let mut held = self.held.lock();
        let (total, per_key) = &mut *held;
        let mine = per_key.entry(key).or_insert(0);
        if *total >= self.max || *mine >= self.max_per_key {
            if *mine == 0 {
                per_key.remove(&key);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot {
            waits: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.waits.held.lock();
        let (total, per_key) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_key.get_mut(&self.key) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_in_total_and_gives_back_on_drop() {
        let w = Arc::new(ApiWaits::new(3, 2));
        let a1 = w.take(0).expect("a 1");
        let _a2 = w.take(0).expect("a 2");
        assert!(w.take(0).is_none(), "per key");
        let _b1 = w.take(1).expect("b 1");
        assert!(w.take(2).is_none(), "in total");
        assert_eq!(w.held.lock().1.len(), 2, "a refused key leaves no entry");
        drop(a1);
        assert!(w.take(2).is_some());
    }
}
