//! The shared log scenarios against a real `nats-server -js` (one per test).

mod scenarios;

use std::time::Duration;

use switchboard_log::{JetStreamLog, LogConfig};
use switchboard_testkit::NatsServer;

async fn log(server: &NatsServer) -> JetStreamLog {
    let client = server.connect_admin().await.expect("connect");
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        ..LogConfig::default()
    };
    JetStreamLog::new(async_nats::jetstream::new(client), config)
}

#[tokio::test]
async fn pipelined_appends_get_consecutive_seqs() {
    let server = NatsServer::start();
    scenarios::pipelined_appends_get_consecutive_seqs(&log(&server).await).await;
}

#[tokio::test]
async fn stale_writer_is_refused() {
    let server = NatsServer::start();
    scenarios::stale_writer_is_refused(&log(&server).await).await;
}

#[tokio::test]
async fn fence_fences_a_writer_that_had_not_appended() {
    let server = NatsServer::start();
    scenarios::fence_fences_a_writer_that_had_not_appended(&log(&server).await).await;
}

#[tokio::test]
async fn msg_id_retry_returns_the_original_seq() {
    let server = NatsServer::start();
    scenarios::msg_id_retry_returns_the_original_seq(&log(&server).await).await;
}

#[tokio::test]
async fn in_flight_appends_can_land_after_a_fence() {
    let server = NatsServer::start();
    scenarios::in_flight_appends_can_land_after_a_fence(&log(&server).await).await;
}

#[tokio::test]
async fn fenced_owner_appends_are_all_refused_after_a_newer_fence() {
    let server = NatsServer::start();
    scenarios::fenced_owner_appends_are_all_refused_after_a_newer_fence(&log(&server).await).await;
}

#[tokio::test]
async fn fence_outlives_max_age() {
    let server = NatsServer::start();
    let client = server.connect_admin().await.expect("connect");
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        max_age: Duration::from_secs(1),
        duplicate_window: Duration::from_millis(500),
        ..LogConfig::default()
    };
    let log = JetStreamLog::new(async_nats::jetstream::new(client), config);
    scenarios::fence_outlives_max_age(&log, || tokio::time::sleep(Duration::from_millis(2_000))).await;
}

#[tokio::test]
async fn tail_after_a_failure_shows_what_was_stored() {
    let server = NatsServer::start();
    scenarios::tail_after_a_failure_shows_what_was_stored(&log(&server).await).await;
}

#[tokio::test]
async fn read_range_returns_exactly_the_range() {
    let server = NatsServer::start();
    scenarios::read_range_returns_exactly_the_range(&log(&server).await).await;
}

#[tokio::test]
async fn purge_removes_one_bizcode_up_to_a_seq() {
    let server = NatsServer::start();
    scenarios::purge_removes_one_bizcode_up_to_a_seq(&log(&server).await).await;
}

#[tokio::test]
async fn a_recreated_log_starts_above_the_old_one() {
    let server = NatsServer::start();
    let log = log(&server).await;
    let admin = async_nats::jetstream::new(server.connect_admin().await.expect("connect"));
    scenarios::a_recreated_log_starts_above_the_old_one(&log, |p| async move {
        admin
            .delete_stream(switchboard_log::partition::stream_name(p))
            .await
            .expect("delete the stream");
    })
    .await;
}

#[tokio::test]
async fn concurrent_ensures_end_with_one_log() {
    let server = NatsServer::start();
    // Two writers on two connections, as two routers would be.
    let (a, b) = (log(&server).await, log(&server).await);
    scenarios::concurrent_ensures_end_with_one_log(&a, &b).await;
}

#[tokio::test]
async fn mistakes_are_refused() {
    let server = NatsServer::start();
    scenarios::mistakes_are_refused(&log(&server).await).await;
}

#[tokio::test]
async fn range_read_speed() {
    let server = NatsServer::start();
    scenarios::range_read_speed(&log(&server).await).await;
}

#[tokio::test]
async fn count_limit_keeps_each_bizcodes_newest() {
    let server = NatsServer::start();
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        max_messages_per_biz: 3,
        ..LogConfig::default()
    };
    scenarios::count_limit_keeps_each_bizcodes_newest(&JetStreamLog::new(
        async_nats::jetstream::new(server.connect_admin().await.expect("connect")),
        config,
    ))
    .await;
}

#[tokio::test]
async fn a_quiet_bizcode_loses_nothing_behind_others_entries_and_fences() {
    let server = NatsServer::start();
    scenarios::a_quiet_bizcode_loses_nothing_behind_others_entries_and_fences(&log(&server).await).await;
}

#[tokio::test]
async fn an_owner_pipelines_under_its_fence() {
    let server = NatsServer::start();
    scenarios::an_owner_pipelines_under_its_fence(&log(&server).await).await;
}
