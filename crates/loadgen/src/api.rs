//! A minimal client of the HTTP push API (SPEC §3): one request per
//! connection, enough for presence checks and probes.

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `POST /api/websocket/<call>` on `api` (`http://host:port`) as tenant
/// `biz`; returns the JSON answer (whatever its status).
pub(crate) async fn post(api: &str, key: &str, biz: &str, call: &str, body: &Value) -> anyhow::Result<Value> {
    let hostport = api
        .strip_prefix("http://")
        .context("--api must be http://host:port")?
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .with_context(|| format!("connect to the API at {hostport}"))?;
    let body = body.to_string();
    let req = format!(
        "POST /api/websocket/{call} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Type: application/json\r\nsystemId: {biz}\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let json = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    serde_json::from_str(json).with_context(|| format!("bad API answer to {call}: {text}"))
}

/// `get_online_list` count for `biz`.
pub(crate) async fn online_count(api: &str, key: &str, biz: &str) -> anyhow::Result<i64> {
    let v = post(api, key, biz, "get_online_list", &serde_json::json!({})).await?;
    v["data"]["count"].as_i64().with_context(|| format!("no count in {v}"))
}
