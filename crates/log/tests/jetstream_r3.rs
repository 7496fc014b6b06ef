//! The log scenarios that pipeline appends, against a 3-server JetStream
//! cluster with R3 streams (the Helm chart's `history.replicas`): clustered
//! streams check some expectations before the Raft proposal, not at apply.

mod scenarios;

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use switchboard_log::partition::{entry_subject, fence_subject, stream_name};
use switchboard_log::{JetStreamLog, LogConfig, PartitionLog};
use switchboard_testkit::NatsServer;

async fn log(servers: &[NatsServer]) -> JetStreamLog {
    log_on(servers[0].connect_admin().await.expect("connect")).await
}

/// A log over `client` (R3), once the cluster places its streams.
async fn log_on(client: async_nats::Client) -> JetStreamLog {
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        replicas: 3,
        ..LogConfig::default()
    };
    let log = JetStreamLog::new(async_nats::jetstream::new(client), config);
    // The cluster elects its meta leader after the servers start.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match log.ensure(0).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("cluster never answered: {e}"),
        }
    }
    log
}

#[tokio::test]
async fn r3_pipelined_appends_get_consecutive_seqs() {
    let servers = NatsServer::start_cluster_secured(3);
    scenarios::pipelined_appends_get_consecutive_seqs(&log(&servers).await).await;
}

#[tokio::test]
async fn r3_fenced_owner_appends_are_all_refused_after_a_newer_fence() {
    let servers = NatsServer::start_cluster_secured(3);
    scenarios::fenced_owner_appends_are_all_refused_after_a_newer_fence(&log(&servers).await).await;
}

#[tokio::test]
async fn r3_an_owner_pipelines_under_its_fence() {
    let servers = NatsServer::start_cluster_secured(3);
    scenarios::an_owner_pipelines_under_its_fence(&log(&servers).await).await;
}

#[tokio::test]
async fn r3_in_flight_appends_can_land_after_a_fence() {
    let servers = NatsServer::start_cluster_secured(3);
    scenarios::in_flight_appends_can_land_after_a_fence(&log(&servers).await).await;
}

#[tokio::test]
async fn r3_tail_after_a_failure_shows_what_was_stored() {
    let servers = NatsServer::start_cluster_secured(3);
    scenarios::tail_after_a_failure_shows_what_was_stored(&log(&servers).await).await;
}

/// The stream leader of partition `p`, as the cluster reports it.
async fn leader_of(js: &async_nats::jetstream::Context, p: u32) -> Option<String> {
    let mut s = js.get_stream(stream_name(p)).await.expect("stream");
    s.info()
        .await
        .expect("info")
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
}

/// An append that reaches the leader while another writer's append naming
/// the fence subject is still in flight is refused with 10164 (nothing
/// stored) and tried again a few ms later: it is stored, right after the
/// other one, every time, and the leader is left alone. (The leader also
/// answers an append just before it clears its mark, so the owner's own
/// next append can meet the same refusal.)
#[tokio::test]
async fn r3_an_append_refused_as_in_flight_is_tried_again() {
    let servers = NatsServer::start_cluster_secured(3);
    // One connection for both writers: the other's append reaches the
    // leader first, and is still in flight when ours arrives.
    let client = servers[0].connect_admin().await.expect("connect");
    let log = log_on(client.clone()).await;
    let js = async_nats::jetstream::new(client);
    let p = 6;
    let biz = &scenarios::bizcodes_in(p, 1)[0];
    log.ensure(p).await.expect("ensure");
    let fence = log.fence(p, "owner").await.expect("fence");
    let before = leader_of(&js, p).await.expect("a leader");
    let mut last = fence.token;
    for k in 0..20 {
        let other = PublishMessage::build()
            .payload(Bytes::from_static(b"other"))
            .expected_last_sequence(last)
            .expected_last_subject_sequence(fence.token)
            .header("Nats-Expected-Last-Subject-Sequence-Subject", fence_subject(p).as_str())
            .message_id(format!("other-{k}"));
        let other = js.send_publish(entry_subject(p, biz), other).await.expect("sent");
        let ours = log
            .append(
                p,
                biz,
                &format!("ours-{k}"),
                last + 1,
                Some(fence.token),
                Bytes::from_static(b"ours"),
            )
            .await
            .expect("sent")
            .await;
        let other = other.await.expect("the other append is stored").sequence;
        assert_eq!(other, last + 1);
        assert_eq!(ours.map(|a| a.seq), Ok(last + 2), "append {k}, tried again");
        last += 2;
    }
    assert_eq!(leader_of(&js, p).await, Some(before), "no step-down");
}
