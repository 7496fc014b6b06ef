//! The four cluster scenarios of the original requirement, exactly, on
//! three edges and one router (and nginx in front for scenario 4); and the
//! same scenarios against `standalone`.

mod common;

use std::time::Duration;

use common::*;

const QUIET: Duration = Duration::from_millis(300);

/// Scenarios 1–3, cumulative as in the seed document.
async fn seed_scenarios_1_to_3(t: &Target) {
    // Scenario 1: unicast.
    let (mut c1, w1) = t.join(0, "clientId=c1&bizCode=d1&token=456&group=g1").await;
    assert_eq!(w1["data"]["clientId"], "c1");
    assert_eq!(w1["data"]["bizCode"], "d1");
    assert_eq!(w1["data"]["groups"], json!(["g1"]));
    let (mut c2, _) = t.join(1, "clientId=c2&bizCode=d1&token=456&group=g2").await;
    let (mut c3, _) = t.join(1, "clientId=c3&bizCode=d1&token=456&group=g1").await;
    c1.send(&json!({"msgId":" 10001","targetClientId":"c2","mode":100,"content":"你好，c2"}))
        .await;
    let reply = c1.recv_mode(2).await;
    assert_eq!(reply["msgId"], " 10001");
    assert_eq!(reply["code"], 0);
    assert_eq!(reply["data"]["recipients"], 1);
    let got = c2.recv_mode(100).await;
    assert_eq!(got["from"], "c1");
    assert_eq!(got["content"], "你好，c2");
    assert_eq!(got["msgId"], " 10001");
    assert!(got["ts"].as_u64().is_some());
    c3.expect_silence(QUIET).await;

    // Scenario 2: multicast to g1.
    let (mut c4, _) = t.join(2, "bizCode=d1&clientId=c4&group=g1,g2&token=456").await;
    c1.send(&json!({"msgId":" 10002","group":"g1","mode":200,"content":"g1的朋友们，大家下午好！"}))
        .await;
    let reply = c1.recv_mode(2).await;
    assert_eq!(reply["code"], 0);
    assert_eq!(reply["data"]["recipients"], 2);
    for c in [&mut c3, &mut c4] {
        let got = c.recv_mode(200).await;
        assert_eq!(got["from"], "c1");
        assert_eq!(got["group"], "g1");
        assert_eq!(got["content"], "g1的朋友们，大家下午好！");
    }
    c2.expect_silence(QUIET).await;
    c1.expect_silence(QUIET).await;

    // Scenario 3: broadcast to d1; c5 is in d2.
    let (mut c5, _) = t.join(2, "bizCode=d2&group=g1,g2&clientId=c5&token=456").await;
    c1.send(&json!({"msgId":" 10003","mode":300,"content":"d1频道的朋友们，你们好！"}))
        .await;
    let reply = c1.recv_mode(2).await;
    assert_eq!(reply["code"], 0);
    assert_eq!(reply["data"]["recipients"], 3);
    for c in [&mut c2, &mut c3, &mut c4] {
        let got = c.recv_mode(300).await;
        assert_eq!(got["from"], "c1");
        assert_eq!(got["content"], "d1频道的朋友们，你们好！");
    }
    c5.expect_silence(QUIET).await;
    c1.expect_silence(QUIET).await;
}

async fn heartbeats(url: &str) {
    let (mut c, _) = Ws::join(url).await;
    for i in 0..3 {
        let id = format!("1000{}", 4 + i);
        c.send(&json!({"msgId": id, "mode": 1})).await;
        let r = c.recv_mode(1).await;
        assert_eq!(r["msgId"], id.as_str());
        assert!(r["ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000));
    }
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenarios_on_three_edges_and_a_load_balancer() {
    let cluster = Cluster::start(3, 1, &[]).await;
    seed_scenarios_1_to_3(&Target::cluster(&cluster)).await;

    // Scenario 4: through nginx, heartbeats are answered.
    let nginx = Nginx::start(&cluster.edge_ports);
    heartbeats(&format!(
        "ws://127.0.0.1:{}/ws?bizCode=d1&group=g1&clientId=c1lb&token=456",
        nginx.port
    ))
    .await;
    // Several clients through the balancer land on several edges and can
    // still reach each other.
    let mut clients = Vec::new();
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..6 {
        let (c, w) = Ws::join(&format!("ws://127.0.0.1:{}/ws?bizCode=lb&clientId=u{i}", nginx.port)).await;
        nodes.insert(w["data"]["node"].as_str().unwrap_or_default().to_owned());
        clients.push(c);
    }
    assert!(nodes.len() >= 2, "round robin should spread clients: {nodes:?}");
    clients[0]
        .send(&json!({"msgId":"x","mode":100,"targetClientId":"u5","content":{"k":1}}))
        .await;
    assert_eq!(clients[0].recv_mode(2).await["data"]["recipients"], 1);
    assert_eq!(clients[5].recv_mode(100).await["content"], json!({"k":1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenarios_on_standalone() {
    let s = Standalone::start(&[]).await;
    seed_scenarios_1_to_3(&Target::standalone(&s, 3)).await;
    heartbeats(&s.url("bizCode=d1&group=g1&clientId=hb&token=456")).await;
}
