//! Operations: the metrics the Grafana dashboard and the alerts use are
//! exported under their documented names, JSON logs are selectable, and
//! liveness and readiness are separate endpoints.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_json_logs() {
    let s = Standalone::start(&[("SWITCHBOARD_LOG__FORMAT", "json")]).await;
    let (mut a, _) = Ws::join(&s.url("bizCode=d1&clientId=a&group=g")).await;
    a.send(&json!({"msgId":"1","mode":300,"content":1})).await;
    assert_eq!(a.recv_mode(2).await["code"], 0);
    let (st, _) = api(&s.addr(), "d1", "get_online_list", json!({})).await;
    assert_eq!(st, 200);

    let (status, m) = http_get(&s.addr(), "/metrics").await.unwrap_or_default();
    assert_eq!(status, 200);
    for name in [
        "switchboard_connections 1",
        r#"switchboard_frames_received_total{mode="300"} 1"#,
        "switchboard_frames_sent_total{mode=",
        "switchboard_deliveries_total",
        "switchboard_slow_consumer_closes_total 0",
        "switchboard_route_duration_seconds_bucket",
        "switchboard_send_duration_seconds_bucket",
        "switchboard_presence_entries 1",
        "switchboard_nats_reconnects_total",
        "switchboard_nodes_purged_total",
        "switchboard_handshake_refusals_total",
        r#"switchboard_api_requests_total{call="get_online_list",status="200"} 1"#,
        r#"switchboard_api_request_duration_seconds_bucket{le="#,
        r#"switchboard_webhook_events_total{outcome="dead_letter"} 0"#,
        r#"switchboard_webhook_requests_total{result="5xx"} 0"#,
        "switchboard_webhook_request_duration_seconds_bucket",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }
    // The dashboard only queries names that exist.
    let dash = std::fs::read_to_string(format!(
        "{}/../../k8s/dashboards/switchboard.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("dashboard");
    let dash: Value = serde_json::from_str(&dash).expect("dashboard JSON");
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let metric = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|w| w.starts_with("switchboard_"))
                .unwrap_or_default();
            let base = metric.trim_end_matches("_bucket");
            assert!(m.contains(base), "dashboard queries {metric}, which is not exported");
        }
    }

    assert_eq!(http_get(&s.addr(), "/livez").await.map(|r| r.0).ok(), Some(200));
    assert_eq!(http_get(&s.addr(), "/readyz").await.map(|r| r.0).ok(), Some(200));

    let log = s.proc.log();
    let line = log
        .lines()
        .find(|l| l.contains("standalone listening"))
        .unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    assert_eq!(v["level"], "INFO");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("standalone listening")),
        "{v}"
    );
    assert!(v["node_id"].is_string(), "{v}");
}
