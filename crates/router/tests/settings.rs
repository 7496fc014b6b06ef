//! Per-bizCode settings in the registration bucket on a real nats-server
//! (as the router's NATS user): values written before settings existed
//! still read as registered, `register` keeps other settings, and writes
//! are compare-and-set.

use switchboard_router::store::{BizRegistry, BizSettings, KvRegistry, StoreError};
use switchboard_testkit::{NatsServer, ROUTER_USER};

const BUCKET: &str = "sb-presence-biz";

#[tokio::test]
async fn legacy_registrations_read_as_registered_and_settings_are_compare_and_set() {
    let server = NatsServer::start_secured();
    let client = server.connect_as(ROUTER_USER).await.expect("router connects");
    let js = async_nats::jetstream::new(client);
    let registry = KvRegistry::open(&js, BUCKET, 1).await.expect("bucket");

    // What `register` wrote before settings: the time as decimal text.
    let admin = async_nats::jetstream::new(server.connect_admin().await.expect("admin"));
    let kv = admin.get_key_value(BUCKET).await.expect("bucket");
    let legacy = switchboard_protocol::ids::encode("old");
    kv.put(legacy, "1795460174907".into()).await.expect("legacy put");
    assert!(registry.is_registered("old").await.expect("read"));
    let (s, _) = registry.settings("old").await.expect("read").expect("settings");
    assert_eq!(s.registered_at, Some(1_795_460_174_907));

    // Settings alone are not a registration; register keeps them.
    let mut s = BizSettings::new();
    s.history = Some(false);
    let rev = registry.put_settings("new", &s, None).await.expect("create");
    assert!(!registry.is_registered("new").await.expect("read"));
    assert!(matches!(
        registry.put_settings("new", &s, None).await,
        Err(StoreError::WrongRevision)
    ));
    registry.register("new").await.expect("register");
    let (now, rev2) = registry.settings("new").await.expect("read").expect("settings");
    assert!(rev2 > rev && now.registered_at.is_some());
    assert_eq!((now.history, &now.epoch_salt), (Some(false), &s.epoch_salt));
    assert!(matches!(
        registry.put_settings("new", &s, Some(rev)).await,
        Err(StoreError::WrongRevision)
    ));
}
