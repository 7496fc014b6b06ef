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

/// async-nats re-creates an ordered consumer whose server-side consumer is
/// gone, from the last sequence it delivered, and from the stream's first
/// message if it delivered none yet. A range read must still yield exactly
/// its range: it yielded everything from the stream's start, and a
/// recovery after an owner change counted that as more than
/// `history.max_replay` entries in a range of ten and answered
/// `recovered: false` (found by a newcomer's break test).
#[tokio::test]
async fn a_range_read_whose_consumer_is_recreated_yields_exactly_its_range() {
    use futures_util::{StreamExt, TryStreamExt};
    let server = NatsServer::start();
    let log = log(&server).await;
    let p = 6;
    let biz = scenarios::bizcodes_in(p, 1).remove(0);
    let mut last = switchboard_log::PartitionLog::ensure(&log, p)
        .await
        .expect("ensure")
        .last;
    let mut seqs = Vec::new();
    for i in 0..40 {
        let id = format!("e{i}");
        let ack = switchboard_log::PartitionLog::append(&log, p, &biz, &id, last, None, bytes::Bytes::from(id.clone()))
            .await
            .expect("sent");
        last = ack.await.expect("stored").seq;
        seqs.push(last);
    }
    let (lo, hi) = (seqs[29], seqs[34]);
    let mut read = switchboard_log::PartitionLog::read_range(&log, p, Some(&biz), lo, hi)
        .await
        .expect("range");
    // The server loses the read's consumer before its first delivery.
    let js = async_nats::jetstream::new(server.connect_admin().await.expect("connect"));
    let stream = js
        .get_stream(switchboard_log::partition::stream_name(p))
        .await
        .expect("stream");
    let names: Vec<String> = stream.consumer_names().try_collect().await.expect("names");
    assert!(!names.is_empty(), "the read has a consumer");
    for n in names {
        stream.delete_consumer(&n).await.expect("delete the consumer");
    }
    let mut got = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), read.next())
        .await
        .expect("the read ends")
    {
        got.push(e.expect("entry").seq);
    }
    assert_eq!(got, seqs[30..=34].to_vec());
}
