//! A bizCode's own limits on each edge (the noisy-tenant limits,
//! [`BizLimits`]): kept in its settings record, set by the API's
//! `set_limits`, read by `get_limits` and by edges over
//! `sb.router.biz_limits`.
//!
//! Edges ask for the limits of every bizCode they serve every
//! `edge.biz_limits_refresh`, so the answers come from a cache here: each
//! bizCode's settings are read from the store at most once per
//! [`LIMITS_CACHE_TTL`] per router. A change made through this router is
//! seen at once; one made through another router within the TTL. The
//! cache holds at most [`LIMITS_CACHE`] bizCodes and starts over past that
//! (the store has them all).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parking_lot::Mutex;
use switchboard_protocol::envelope::BizLimits;

use super::{Router, CAS_ATTEMPTS};
use crate::error::RouterError;
use crate::store::{BizSettings, StoreError};

/// How long a router answers a bizCode's limits from its cache.
pub const LIMITS_CACHE_TTL: Duration = Duration::from_secs(1);

/// Most bizCodes whose limits a router caches.
const LIMITS_CACHE: usize = 100_000;

/// Settings reads one limits question makes at once.
const READS_AT_ONCE: usize = 16;

/// Limits read recently, by bizCode.
#[derive(Debug, Default)]
pub(super) struct LimitsCache {
    entries: Mutex<HashMap<String, (BizLimits, Instant)>>,
}

impl LimitsCache {
    fn get(&self, biz: &str) -> Option<BizLimits> {
        let entries = self.entries.lock();
        let (limits, at) = entries.get(biz)?;
        (at.elapsed() < LIMITS_CACHE_TTL).then_some(*limits)
    }

    fn put(&self, biz: &str, limits: BizLimits) {
        let mut entries = self.entries.lock();
        if entries.len() >= LIMITS_CACHE && !entries.contains_key(biz) {
            entries.clear();
        }
        entries.insert(biz.to_owned(), (limits, Instant::now()));
    }
}

impl Router {
    /// `biz`'s limits as stored now (`get_limits`): all off for a bizCode
    /// without settings.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the settings cannot be read.
    pub async fn limits(&self, biz: &str) -> Result<BizLimits, RouterError> {
        let limits = self
            .inner
            .registry
            .settings(biz)
            .await
            .map_err(|e| {
                tracing::warn!(biz, error = %e, "settings lookup failed");
                RouterError::from(e)
            })?
            .map(|(s, _)| s.limits)
            .unwrap_or_default();
        self.inner.limits.put(biz, limits);
        Ok(limits)
    }

    /// Replaces `biz`'s limits (`set_limits`), keeping its other settings;
    /// answers them as stored.
    ///
    /// # Errors
    /// [`RouterError::Store`] if the settings cannot be written,
    /// [`RouterError::Contended`] if they kept changing.
    pub async fn set_limits(&self, biz: &str, limits: BizLimits) -> Result<BizLimits, RouterError> {
        let registry = &self.inner.registry;
        for _ in 0..CAS_ATTEMPTS {
            let (mut s, rev) = match registry.settings(biz).await? {
                Some((s, rev)) => (s, Some(rev)),
                None => (BizSettings::new(), None),
            };
            s.limits = limits;
            match registry.put_settings(biz, &s, rev).await {
                Ok(_) => {
                    self.inner.limits.put(biz, limits);
                    tracing::info!(biz, ?limits, "limits set");
                    return Ok(limits);
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => {
                    tracing::warn!(biz, error = %e, "limits not stored");
                    return Err(e.into());
                }
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// The limits of each of `bizs`, in order (an edge's question), from
    /// the cache where it is fresh.
    ///
    /// # Errors
    /// [`RouterError::Store`] if any bizCode's settings cannot be read: the
    /// edge then keeps what it knew.
    pub async fn biz_limits(&self, bizs: &[String]) -> Result<Vec<BizLimits>, RouterError> {
        let mut answers = Vec::with_capacity(bizs.len());
        let mut missing = Vec::new();
        for (i, biz) in bizs.iter().enumerate() {
            let cached = self.inner.limits.get(biz);
            if cached.is_none() {
                missing.push(i);
            }
            answers.push(cached.unwrap_or_default());
        }
        for chunk in missing.chunks(READS_AT_ONCE) {
            let read = join_all(chunk.iter().map(|&i| self.limits(&bizs[i]))).await;
            for (&i, limits) in chunk.iter().zip(read) {
                answers[i] = limits?;
            }
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::router;

    #[tokio::test]
    async fn limits_are_off_by_default_and_set_keeps_the_other_settings() {
        let (r, _, _) = router();
        assert_eq!(r.limits("d1").await.ok(), Some(BizLimits::default()));
        assert!(r.register("d1").await.is_ok());
        let l = BizLimits {
            max_connections: 3,
            sends_per_sec: 10,
            sends_burst: 0,
        };
        assert_eq!(r.set_limits("d1", l).await.ok(), Some(l));
        assert_eq!(r.limits("d1").await.ok(), Some(l));
        assert!(r.is_registered("d1").await.unwrap_or(false), "registration kept");
        let asked = vec!["d1".to_owned(), "d2".to_owned(), "d1".to_owned()];
        assert_eq!(r.biz_limits(&asked).await.ok(), Some(vec![l, BizLimits::default(), l]));
        // Turned off again: seen at once through this router.
        assert!(r.set_limits("d1", BizLimits::default()).await.is_ok());
        assert_eq!(r.biz_limits(&asked[..1]).await.ok(), Some(vec![BizLimits::default()]));
    }
}
