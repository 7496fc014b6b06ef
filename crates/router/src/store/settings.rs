//! Per-bizCode settings in the registration bucket (`<presence bucket>-biz`,
//! one value per bizCode), and their in-memory twin for `standalone`.
//!
//! Values written before settings existed hold the registration time as
//! decimal text (`register` was a plain put); they read as a registered
//! bizCode with default settings, and are replaced by the first write.
//! Older routers read any value as "registered", so a bizCode that has
//! settings but was never registered looks registered to them during a
//! rolling upgrade (upgrade routers first; see docs/recovery.md).

use async_nats::jetstream::kv::{Operation, Store};
use async_trait::async_trait;
use switchboard_protocol::{envelope, ids};

use super::kv::{cas_write, open_bucket, unavailable};
use super::memory::CasMap;
use super::seam::{BizRegistry, BizSettings, StoreError};

/// Per-bizCode settings in a JetStream KV bucket (routers).
#[derive(Debug, Clone)]
pub struct KvRegistry {
    kv: Store,
}

impl KvRegistry {
    /// Opens (creating or updating) the bucket `name`.
    ///
    /// # Errors
    /// If JetStream refuses the bucket.
    pub async fn open(js: &async_nats::jetstream::Context, name: &str, replicas: usize) -> Result<Self, StoreError> {
        let description = "Switchboard bizCodes: <b64 bizCode> -> settings (registration, history)";
        let kv = open_bucket(js, name, description, replicas, None).await?;
        Ok(Self { kv })
    }
}

#[async_trait]
impl BizRegistry for KvRegistry {
    async fn settings(&self, biz: &str) -> Result<Option<(BizSettings, u64)>, StoreError> {
        let e = self.kv.entry(ids::encode(biz)).await.map_err(unavailable)?;
        Ok(e.filter(|e| e.operation == Operation::Put)
            .map(|e| (BizSettings::decode(&e.value), e.revision)))
    }

    async fn put_settings(&self, biz: &str, settings: &BizSettings, revision: Option<u64>) -> Result<u64, StoreError> {
        let bytes = envelope::encode(settings).map_err(unavailable)?;
        cas_write(&self.kv, &ids::encode(biz), bytes, revision).await
    }
}

/// Per-bizCode settings in memory (`standalone`).
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    map: CasMap<BizSettings>,
}

#[async_trait]
impl BizRegistry for MemoryRegistry {
    async fn settings(&self, biz: &str) -> Result<Option<(BizSettings, u64)>, StoreError> {
        Ok(self.map.get(biz))
    }

    async fn put_settings(&self, biz: &str, settings: &BizSettings, revision: Option<u64>) -> Result<u64, StoreError> {
        self.map.put(biz, settings, revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_from_before_settings_reads_as_registered() {
        let s = BizSettings::decode(b"1795460174907");
        assert_eq!(s.registered_at, Some(1_795_460_174_907));
        assert_eq!((s.history, s.generation, s.low_water), (None, 0, 0));
        assert_eq!(BizSettings::decode(b"garbage").registered_at, Some(0));
    }

    #[test]
    fn settings_round_trip_and_salts_differ() {
        let mut s = BizSettings::new();
        s.history = Some(false);
        s.generation = 3;
        let bytes = envelope::encode(&s).unwrap_or_default();
        assert_eq!(BizSettings::decode(&bytes), s);
        assert_ne!(BizSettings::new().epoch_salt, BizSettings::new().epoch_salt);
    }

    #[test]
    fn a_record_from_before_limits_reads_with_limits_off() {
        #[derive(serde::Serialize)]
        struct Old {
            registered_at: Option<u64>,
            history: Option<bool>,
            epoch_salt: String,
            generation: u64,
            low_water: u64,
        }
        let old = Old {
            registered_at: Some(1),
            history: Some(true),
            epoch_salt: "salt".into(),
            generation: 2,
            low_water: 3,
        };
        let s = BizSettings::decode(&envelope::encode(&old).unwrap_or_default());
        assert_eq!((s.epoch_salt.as_str(), s.generation), ("salt", 2));
        assert!(s.limits.is_off());
    }

    #[tokio::test]
    async fn register_keeps_other_settings_and_settings_alone_do_not_register() {
        let r = MemoryRegistry::default();
        let mut s = BizSettings::new();
        s.history = Some(false);
        assert!(r.put_settings("d1", &s, None).await.is_ok());
        assert!(
            !r.is_registered("d1").await.unwrap_or(true),
            "settings are not a registration"
        );
        assert!(r.register("d1").await.is_ok());
        assert!(r.register("d1").await.is_ok(), "idempotent");
        assert!(r.is_registered("d1").await.unwrap_or(false));
        let kept = r.settings("d1").await.ok().flatten().map(|(s, _)| s.history);
        assert_eq!(kept, Some(Some(false)));
        assert!(matches!(
            r.put_settings("d1", &s, None).await,
            Err(StoreError::WrongRevision)
        ));
    }
}
