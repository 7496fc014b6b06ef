//! The API rate limit (SPEC §3: 429/1005): one token bucket per (API key,
//! bizCode) on each router, `api.rate_per_sec` calls per second with a
//! burst of `api.rate_burst`.
//!
//! A key is told apart by its place in `api.keys` (never by its secret);
//! with API auth off every caller shares one key. The buckets are bounded
//! in count: past [`MAX_BUCKETS`], buckets that are full again (a fresh
//! bucket would be the same) are dropped, and if all are in use the map
//! starts over, which at worst gives the callers of that moment a fresh
//! burst.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Most (key, bizCode) buckets a router keeps.
const MAX_BUCKETS: usize = 100_000;

/// Who a bucket is for: the key's place in `api.keys` (`usize::MAX` with
/// auth off) and the bizCode.
type BucketKey = (usize, Box<str>);

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every (API key, bizCode).
#[derive(Debug)]
pub(crate) struct ApiRate {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

impl ApiRate {
    /// `rate` calls per second with a burst of `burst`; a rate of 0 allows
    /// everything.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `key`'s bucket for `biz`; `false` when it is empty.
    pub(crate) fn allow(&self, key: usize, biz: &str) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.allow_at(key, biz, Instant::now())
    }

    fn allow_at(&self, key: usize, biz: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        let k = (key, Box::<str>::from(biz));
        if !buckets.contains_key(&k) && buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let b = buckets.entry(k).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_key_and_biz_code_has_its_own_bucket() {
        let r = ApiRate::new(10, 3);
        let t = Instant::now();
        assert!((0..3).all(|_| r.allow_at(0, "a", t)));
        assert!(!r.allow_at(0, "a", t), "over the burst");
        assert!(r.allow_at(0, "b", t), "another bizCode");
        assert!(r.allow_at(1, "a", t), "another key");
        // 10/s: one more call after 100 ms.
        let later = t + Duration::from_millis(100);
        assert!(r.allow_at(0, "a", later));
        assert!(!r.allow_at(0, "a", later));
    }

    #[test]
    fn a_zero_rate_is_off() {
        let r = ApiRate::new(0, 0);
        assert!((0..10_000).all(|_| r.allow(0, "a")));
        assert_eq!(r.len(), 0, "no bucket kept");
    }

    #[test]
    fn buckets_are_bounded_and_full_ones_go_first() {
        let r = ApiRate::new(1, 1);
        let t = Instant::now();
        for i in 0..MAX_BUCKETS {
            assert!(r.allow_at(i, "a", t));
        }
        assert_eq!(r.len(), MAX_BUCKETS);
        // Two seconds later every bucket is full again: dropped for a new one.
        assert!(r.allow_at(usize::MAX, "a", t + Duration::from_secs(2)));
        assert_eq!(r.len(), 1);
    }
}
