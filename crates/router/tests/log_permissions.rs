//! The chart's NATS permissions (`k8s/switchboard/files/nats-permissions.conf`)
//! let the router user do everything a partition owner does with the
//! history log, and the edge user read it, on every partition.

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_log::{partition_of, JetStreamLog, LogConfig, PartitionLog};
use switchboard_testkit::{NatsServer, EDGE_USER, ROUTER_USER};

const PARTITIONS: u32 = 16;

async fn log_as(server: &NatsServer, user: switchboard_testkit::NatsUser) -> JetStreamLog {
    let client = server.connect_as(user).await.expect("connects");
    JetStreamLog::new(
        async_nats::jetstream::new(client),
        LogConfig {
            partitions: PARTITIONS,
            ..LogConfig::default()
        },
    )
}

#[tokio::test]
async fn routers_own_and_edges_read_every_partition_under_the_charts_permissions() {
    let server = NatsServer::start_secured();
    let router = log_as(&server, ROUTER_USER).await;
    let edge = log_as(&server, EDGE_USER).await;
    for p in 0..PARTITIONS {
        let biz = (0..)
            .map(|i| format!("biz{i}"))
            .find(|b| partition_of(b, PARTITIONS) == p)
            .expect("a bizCode");
        router.ensure(p).await.expect("router creates the stream");
        let fence = router.fence(p, "router-a").await.expect("router fences");
        let seq = router
            .append(p, &biz, "m1", fence.token, Some(fence.token), Bytes::from_static(b"x"))
            .await
            .expect("sent")
            .await
            .expect("router appends")
            .seq;
        assert_eq!(
            router
                .tail(p, fence.after, 10)
                .await
                .expect("router reads the tail")
                .len(),
            2
        );
        assert_eq!(router.first_seq_of(p, &biz).await.expect("router looks up"), Some(seq));
        let mut range = edge
            .read_range(p, Some(&biz), fence.after, seq)
            .await
            .expect("edge reads a range");
        let first = range.next().await.expect("an entry").expect("readable");
        assert_eq!(first.seq, seq, "partition {p}");
        assert_eq!(router.purge(p, &biz, seq).await.expect("router purges"), 1);
    }
}

/// On a 3-server cluster (R3 log streams), the router user may ask a log
/// stream's leader to step down, as the log does after a 10164 refusal
/// with none of its own appends in flight (docs/recovery.md).
#[tokio::test]
async fn routers_may_step_a_log_streams_leader_down() {
    let servers = NatsServer::start_cluster_secured(3);
    let client = servers[0].connect_as(ROUTER_USER).await.expect("connects");
    let router = JetStreamLog::new(
        async_nats::jetstream::new(client),
        LogConfig {
            partitions: PARTITIONS,
            replicas: 3,
            ..LogConfig::default()
        },
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Err(e) = router.ensure(3).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never placed the stream: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    router.step_down(3).await.expect("the router steps the leader down");
}
