//! Webhooks (README "Webhooks"): an operator sets a bizCode's webhook
//! with a global API key; connection events reach a real HTTP server in
//! the test, which checks every call's HMAC-SHA256 signature itself.
//! Deliveries are retried while the server answers 500, then succeed
//! (every event delivered, deduped by id); a slow endpoint of one bizCode
//! does not hold back another's; an endpoint that never answers 2xx ends
//! in the dead-letter count; hosts off the allow-list and tenant-scoped
//! keys are refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use sha2::Sha256;
use switchboard_protocol::event::{Event, EventKind};
use switchboard_protocol::subject;

/// A key scoped to the tenant `d1` (its backend's), next to the global
/// test key (the operator's).
const SCOPED_KEY: &str = "d1-backend-key-0123456789";

/// Short retries and refreshes, the test server's host allowed.
const ENV: &[(&str, &str)] = &[
    ("SWITCHBOARD_WEBHOOKS__ALLOWED_HOSTS", r#"["127.0.0.1"]"#),
    ("SWITCHBOARD_WEBHOOKS__MAX_ATTEMPTS", "3"),
    ("SWITCHBOARD_WEBHOOKS__MAX_BATCH", "2"),
    ("SWITCHBOARD_WEBHOOKS__BACKOFF_INITIAL", "200ms"),
    ("SWITCHBOARD_WEBHOOKS__BACKOFF_MAX", "400ms"),
    ("SWITCHBOARD_WEBHOOKS__REFRESH", "300ms"),
    ("SWITCHBOARD_WEBHOOKS__TIMEOUT", "10s"),
    (
        "SWITCHBOARD_API__KEYS",
        r#"[{"key":"d1-backend-key-0123456789","biz_codes":["d1"]}]"#,
    ),
];

/// One call the test server got.
#[derive(Debug, Clone)]
struct Call {
    /// The events' JSON.
    events: Vec<Value>,
    /// The signature checked out with the secret and within 5 minutes.
    signed: bool,
    /// What the server answered.
    status: u16,
}

/// A webhook endpoint: answers 500 to its first `failures` calls, waits
/// `delay` before each answer, and records every call.
#[derive(Clone)]
struct Endpoint {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    secret: Arc<Mutex<String>>,
}

impl Endpoint {
    async fn start(failures: usize, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let secret = Arc::new(Mutex::new(String::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let (c, s) = (calls.clone(), secret.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (c, s, failed) = (c.clone(), s.clone(), failed.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (c, s, failed) = (c.clone(), s.clone(), failed.clone());
                    async move {
                        let header = req
                            .headers()
                            .get("x-switchboard-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        tokio::time::sleep(delay).await;
                        let secret = s.lock().expect("secret").clone();
                        let signed = verify(&header, &secret, &body);
                        let status = if failed.fetch_add(1, Ordering::SeqCst) < failures {
                            500
                        } else {
                            200
                        };
                        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let events = parsed["events"].as_array().cloned().unwrap_or_default();
                        c.lock().expect("calls").push(Call { events, signed, status });
                        let mut res = Response::new(Full::new(bytes::Bytes::from_static(b"ok")));
                        *res.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Self { addr, calls, secret }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/switchboard", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// The ids of the events answered 200, each once, and how many times
    /// an id came in a 200 more than once.
    fn delivered(&self) -> (BTreeSet<String>, usize) {
        let mut seen = BTreeSet::new();
        let mut again = 0;
        for call in self.calls().iter().filter(|c| c.status == 200) {
            for e in &call.events {
                if !seen.insert(e["id"].as_str().unwrap_or_default().to_owned()) {
                    again += 1;
                }
            }
        }
        (seen, again)
    }
}

/// What a receiver does (README "Webhooks", "Verifying a call"): HMAC-SHA256
/// over `<t>.<body>` with the secret, any `v1` matches, `t` within 300 s.
fn verify(header: &str, secret: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if t.abs_diff(now) > 300 || secret.is_empty() {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    sigs.contains(&want)
}

/// Sets `biz`'s webhook to `endpoint` through `addr` (global key); the
/// endpoint learns the secret that came back.
async fn set_webhook(addr: &str, biz: &str, endpoint: &Endpoint, kinds: Value) -> Value {
    let (status, body) = api(addr, biz, "set_webhook", json!({"url": endpoint.url(), "kinds": kinds})).await;
    assert_eq!(status, 200, "{body}");
    let secret = body["data"]["webhook"]["secret"]
        .as_str()
        .expect("a new webhook's secret")
        .to_owned();
    *endpoint.secret.lock().expect("secret") = secret;
    body["data"]["webhook"].clone()
}

/// The sum over `addrs` of a counter's value.
async fn counter(addrs: &[String], line: &str) -> u64 {
    let mut sum = 0;
    for a in addrs {
        let (_, text) = http_get(a, "/metrics").await.unwrap_or_default();
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    sum
}

/// Publishes `n` events of `biz` to the events stream as an edge would;
/// answers their ids.
async fn publish(js: &async_nats::jetstream::Context, biz: &str, kind: EventKind, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let id = format!("{biz}-{}-{i}-{:08x}", kind.as_str(), rand::random::<u32>());
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let event = Event::new(id.clone(), kind, biz, &format!("c{i}"), "edge-test", ts);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        js.publish_with_headers(subject::event(biz, kind), headers, event.to_json().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        ids.insert(id);
    }
    ids
}

/// Operators only, allowed hosts only: a tenant's key gets 403, a host off
/// the allow-list, a bad scheme or kind 400; the secret is shown once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_set_webhooks_and_only_to_allowed_hosts() {
    let s = Standalone::start(ENV).await;
    let addr = s.addr();
    let url = "http://127.0.0.1:9/in";
    let (status, body) = api_as(SCOPED_KEY, &addr, "d1", "set_webhook", json!({"url": url})).await;
    assert_eq!((status, body["code"].as_u64()), (403, Some(403)), "{body}");
    let (status, _) = api_as(SCOPED_KEY, &addr, "d1", "get_webhook", json!({})).await;
    assert_eq!(status, 403);
    for (body, why) in [
        (json!({"url": "http://localhost:9/in"}), "not allowed"),
        (json!({"url": "http://10.0.0.1/in"}), "not allowed"),
        (json!({"url": "file:///etc/passwd"}), "http or https"),
        (json!({"url": url, "kinds": ["online", "nope"]}), "unknown event kind"),
    ] {
        let (status, answer) = api(&addr, "d1", "set_webhook", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["msg"].as_str().unwrap_or_default().contains(why),
            "{body}: {answer}"
        );
    }
    let (status, first) = api(&addr, "d1", "set_webhook", json!({"url": url, "kinds": ["online"]})).await;
    assert_eq!(status, 200, "{first}");
    let secret = first["data"]["webhook"]["secret"].as_str().unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{first}");
    let (_, got) = api(&addr, "d1", "get_webhook", json!({})).await;
    assert_eq!(
        got["data"]["webhook"],
        json!({"url": url, "kinds": ["online"]}),
        "{got}"
    );
    let (_, rotated) = api(&addr, "d1", "set_webhook", json!({"url": url, "rotateSecret": true})).await;
    let new = rotated["data"]["webhook"]["secret"].as_str().unwrap_or_default();
    assert!(new.starts_with("whsec_") && new != secret, "{rotated}");
    assert!(rotated["data"]["webhook"]["previousSecretUntil"].is_u64(), "{rotated}");
    let (_, removed) = api(&addr, "d1", "set_webhook", json!({"url": null})).await;
    assert_eq!(removed["data"], json!({"webhook": null}), "{removed}");
    assert!(!s.proc.log().contains(new), "the secret is never logged");

    // standalone delivers from its in-process events: a client's life.
    let endpoint = Endpoint::start(0, Duration::ZERO).await;
    set_webhook(&addr, "d1", &endpoint, json!(["connected", "online", "offline"])).await;
    let (ws, _) = Ws::join(&s.url("bizCode=d1&clientId=u1")).await;
    // Another tenant's client is not d1's business.
    let (other, _) = Ws::join(&s.url("bizCode=d2&clientId=u2")).await;
    drop(ws);
    drop(other);
    let kinds = || -> Vec<String> {
        endpoint
            .calls()
            .iter()
            .flat_map(|c| c.events.clone())
            .map(|e| {
                format!(
                    "{}:{}:{}",
                    e["kind"].as_str().unwrap_or("?"),
                    e["bizCode"].as_str().unwrap_or("?"),
                    e["clientId"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    eventually!(kinds().len() == 3, "a client's life at the webhook: {:?}", kinds());
    let mut got = kinds();
    got.sort();
    assert_eq!(got, ["connected:d1:u1", "offline:d1:u1", "online:d1:u1"]);
    assert!(endpoint.calls().iter().all(|c| c.signed), "{:?}", endpoint.calls());
}

/// On a cluster (two routers sharing each bizCode's consumer, the chart's
/// NATS permissions): signed deliveries, retries through 500s with every
/// event delivered, a slow endpoint not delaying another bizCode, dead
/// letters once the attempts run out, and each bizCode's events only at its
/// own endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_delivers_signed_events_at_least_once_per_biz() {
    let c = Cluster::start(1, 2, ENV).await;
    let routers = [c.router_addr(0), c.router_addr(1)];
    let admin = c.nats.connect_admin().await.expect("admin");
    let js = async_nats::jetstream::new(admin);
    let events = switchboard_runtime::events::EventsConfig::default();
    switchboard_runtime::events::ensure_stream(&js, &events)
        .await
        .expect("events stream");

    let flaky = Endpoint::start(2, Duration::ZERO).await;
    let slow = Endpoint::start(0, Duration::from_secs(4)).await;
    let fast = Endpoint::start(0, Duration::ZERO).await;
    let broken = Endpoint::start(usize::MAX, Duration::ZERO).await;
    let hook = set_webhook(&routers[0], "d1", &flaky, json!([])).await;
    assert_eq!(hook["kinds"].as_array().map(Vec::len), Some(7), "{hook}");
    set_webhook(&routers[1], "slow", &slow, json!(["online"])).await;
    set_webhook(&routers[0], "fast", &fast, json!(["online"])).await;
    set_webhook(&routers[1], "broken", &broken, json!(["offline"])).await;

    // Retries through two 500s, then every event, each id once.
    let sent = publish(&js, "d1", EventKind::Online, 5).await;
    eventually!(
        flaky.delivered().0 == sent,
        "d1's events delivered: {:?}",
        flaky.calls()
    );
    assert_eq!(flaky.delivered().1, 0, "no event answered 200 twice");
    assert!(
        flaky.calls().iter().all(|c| c.signed),
        "every call signed: {:?}",
        flaky.calls()
    );
    assert!(flaky.calls().iter().filter(|c| c.status == 500).count() >= 2);
    assert!(flaky
        .calls()
        .iter()
        .flat_map(|c| &c.events)
        .all(|e| e["bizCode"] == "d1" && e["kind"] == "online"));
    eventually!(
        counter(&routers, r#"switchboard_webhook_events_total{outcome="retried"} "#).await >= 1,
        "retries counted"
    );

    // A slow endpoint (4 s per call) holds back only its own bizCode.
    let slow_sent = publish(&js, "slow", EventKind::Online, 1).await;
    let started = Instant::now();
    let fast_sent = publish(&js, "fast", EventKind::Online, 1).await;
    // Kinds not asked for are not delivered.
    publish(&js, "fast", EventKind::Offline, 1).await;
    eventually!(fast.delivered().0 == fast_sent, "the fast bizCode's event");
    let fast_took = started.elapsed();
    assert!(
        fast_took < Duration::from_secs(3),
        "the fast endpoint waited {fast_took:?} behind the slow one"
    );
    eventually!(slow.delivered().0 == slow_sent, "the slow bizCode's event");
    assert!(fast
        .calls()
        .iter()
        .flat_map(|c| &c.events)
        .all(|e| e["kind"] == "online"));

    // Never 2xx: three attempts each, then dead letters.
    publish(&js, "broken", EventKind::Offline, 2).await;
    eventually!(
        counter(&routers, r#"switchboard_webhook_events_total{outcome="dead_letter"} "#).await == 2,
        "dead letters: {:?}",
        broken.calls()
    );
    let attempts: BTreeMap<String, usize> =
        broken
            .calls()
            .iter()
            .flat_map(|c| &c.events)
            .fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
                m
            });
    assert!(attempts.values().all(|&n| n == 3), "{attempts:?}");

    // Edges' credentials cannot read a bizCode's webhook events (only
    // routers may use the consumers).
    let edge = c.nats.connect_as(EDGE_USER).await.expect("edge login");
    let mut edge_js = async_nats::jetstream::new(edge);
    edge_js.set_timeout(Duration::from_millis(500));
    let denied = async {
        let stream = edge_js
            .get_stream(subject::EVENTS_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("wh-ZDE")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(denied.await.is_err(), "an edge reached the webhook consumers");

    // Changing the kinds changes the consumer's filter (the secret stays).
    let (status, changed) = api(
        &routers[1],
        "fast",
        "set_webhook",
        json!({"url": fast.url(), "kinds": ["online", "offline"]}),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert!(changed["data"]["webhook"]["secret"].is_null(), "{changed}");
    let offline = publish(&js, "fast", EventKind::Offline, 1).await;
    eventually!(
        offline.is_subset(&fast.delivered().0),
        "an offline event after the change: {:?}",
        fast.calls()
    );
    assert!(fast.calls().iter().all(|c| c.signed));

    // Removing a webhook removes its consumer.
    let (status, _) = api(&routers[0], "fast", "set_webhook", json!({"url": ""})).await;
    assert_eq!(status, 200);
    let stream = js.get_stream(subject::EVENTS_STREAM).await.expect("stream");
    let names: Vec<String> = futures_util::TryStreamExt::try_collect(stream.consumer_names())
        .await
        .expect("names");
    assert_eq!(names.len(), 3, "{names:?}");
}

/// `standalone`'s bounds: a call longer than `webhooks.timeout` is a failed
/// attempt, at most `webhooks.max_batch` events go in one call, and past
/// `webhooks.queue` waiting events a bizCode's new ones are dropped and
/// counted, while another bizCode's webhook is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_bounds_batches_calls_and_queues() {
    let mut env = ENV.to_vec();
    env.extend([
        ("SWITCHBOARD_WEBHOOKS__QUEUE", "2"),
        ("SWITCHBOARD_WEBHOOKS__TIMEOUT", "1s"),
    ]);
    let s = Standalone::start(&env).await;
    let addr = s.addr();
    let stuck = Endpoint::start(0, Duration::from_secs(30)).await;
    let fine = Endpoint::start(0, Duration::ZERO).await;
    set_webhook(&addr, "d1", &stuck, json!(["connected"])).await;
    set_webhook(&addr, "d2", &fine, json!(["connected"])).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(Ws::join(&s.url(&format!("bizCode=d1&clientId=u{i}"))).await.0);
    }
    // d2's clients come one at a time: its queue never fills.
    for i in 0..5 {
        clients.push(Ws::join(&s.url(&format!("bizCode=d2&clientId=v{i}"))).await.0);
        let id = format!("v{i}");
        eventually!(
            fine.calls()
                .iter()
                .flat_map(|c| &c.events)
                .any(|e| e["clientId"] == id.as_str()),
            "{id} delivered while d1's endpoint is stuck"
        );
    }
    let addrs = [addr.clone()];
    eventually!(
        counter(&addrs, r#"switchboard_webhook_events_total{outcome="dropped"} "#).await >= 1,
        "a full queue drops"
    );
    eventually!(
        counter(&addrs, r#"switchboard_webhook_requests_total{result="timeout"} "#).await >= 1,
        "a call over webhooks.timeout fails"
    );
    assert_eq!(fine.delivered().1, 0, "each of d2's events once");
    assert!(fine.calls().iter().all(|c| c.events.len() <= 2), "{:?}", fine.calls());
    drop(clients);
}
