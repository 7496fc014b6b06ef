//! A router process: its HTTP side answers (ops at once, the API once
//! started) while it waits for NATS, opens presence and subscribes the
//! router subjects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::Request;
use hyper::body::Incoming;
use switchboard_log::{JetStreamLog, PartitionLog};
use switchboard_protocol::codes::{ErrorCode, RefusalCode};
use switchboard_protocol::subject;
use switchboard_router::api::{Api, RouterHttp};
use switchboard_router::nats::NatsOwners;
use switchboard_router::owner::{LeaseConfig, Leases};
use switchboard_router::store::{KvMembers, StoreError};
use switchboard_router::webhook::Webhooks;
use switchboard_router::{BizRegistry, History, KvRegistry, KvStore, Router};
use switchboard_runtime::events::{ensure_stream, Events, JetStreamSink, Publisher};
use switchboard_runtime::http::{self as h, Handler, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::Health;
use switchboard_runtime::{nats, ops, shutdown};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::setup::{api_config, bind};
use crate::config::Config;
use crate::console::{self, Views};

/// Opens the presence buckets, waiting for NATS as long as it takes (the
/// log says why it is not reachable); JetStream refusing the buckets for
/// 20 attempts in a row while NATS is up stops the process.
async fn open_store(
    js: &async_nats::jetstream::Context,
    config: &Config,
    health: &Health,
) -> anyhow::Result<(KvStore, KvRegistry, KvMembers)> {
    let bucket = &config.nats.presence_bucket;
    let replicas = config.nats.replicas;
    let mut last = None;
    let mut refused = 0;
    while refused < 20 {
        if !health.bus_up() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let opened = async {
            let store = KvStore::open(js, bucket, replicas, config.router.delete_marker_ttl).await?;
            let registry = KvRegistry::open(js, &format!("{bucket}-biz"), replicas).await?;
            let marker_ttl = config.router.delete_marker_ttl;
            let members = KvMembers::open(js, &format!("{bucket}-members"), replicas, marker_ttl).await?;
            Ok::<_, StoreError>((store, registry, members))
        };
        match opened.await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::warn!(error = %e, "presence bucket not available yet");
                last = Some(e);
                refused += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot open the presence bucket (is JetStream enabled, and may this NATS user use it?): {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// The router's HTTP side before and after start-up: ops endpoints at once
/// (`/readyz` 503 until NATS is reached and presence is loaded), the API
/// (503 until then) once the router runs.
struct RouterStartingHttp {
    api: std::sync::OnceLock<RouterHttp>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl Handler for RouterStartingHttp {
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        if let Some(http) = self.api.get() {
            return http.call(req, peer);
        }
        let path = req.uri().path();
        let res = ops::handle(req.method(), path, &self.health, &self.metrics).unwrap_or_else(|| {
            if Api::owns(path) {
                h::error(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Internal.as_u16(),
                    "the router is starting: NATS not reached yet",
                )
            } else {
                h::error(http::StatusCode::NOT_FOUND, RefusalCode::NotFound.as_u16(), "not found")
            }
        });
        Box::pin(std::future::ready(res))
    }
}

/// Runs a router until SIGTERM/SIGINT, then finishes in-flight requests.
///
/// The listener opens first: `/readyz` answers 503 until NATS is reached
/// (the log says why it is not, e.g. refused credentials) and the presence
/// buckets are open.
pub(crate) async fn router(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (client, link) = nats::connect(
        &config.nats,
        "switchboard-router",
        subject::ROUTER_INBOX_PREFIX,
        health.clone(),
        metrics.clone(),
    )
    .await?;
    tracing::info!(url = %config.nats.redacted_url(), auth = config.nats.auth_method(), "connecting to NATS");
    let listener = bind(config.router.listen, config.router.listen_backlog)?;
    let addr = listener.local_addr()?;
    let http = Arc::new(RouterStartingHttp {
        api: std::sync::OnceLock::new(),
        health: health.clone(),
        metrics: metrics.clone(),
    });
    let stop_http = CancellationToken::new();
    let server = tokio::spawn(h::serve(
        listener,
        console::maybe(http.clone(), Views::Admin, config.router.console),
        stop_http.clone(),
        config.http.clone(),
        metrics.clone(),
    ));
    let started = tokio::select! {
        r = start_router(&config, &client, link, &health, &metrics, &shutdown) => Some(r),
        () = shutdown.cancelled() => None,
    };
    let mut result = Ok(());
    match started {
        Some(Ok((router, webhooks, stop_requests, tasks, publisher))) => {
            let mut api = Api::new(router, api_config(&config, false), health.clone(), metrics.clone());
            if let Some(hooks) = webhooks {
                api = api.with_webhooks(hooks);
            }
            let _ = http.api.set(RouterHttp { api });
            health.set_ready();
            tracing::info!(%addr, "router listening");
            shutdown.cancelled().await;
            health.set_draining();
            stop_requests.cancel();
            tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
            if let Some(p) = publisher {
                p.close(Duration::from_secs(2)).await;
            }
        }
        Some(Err(e)) => result = Err(e),
        None => tracing::info!("stopped before NATS was reached"),
    }
    stop_http.cancel();
    let _ = server.await;
    let _ = client.drain().await;
    tracing::info!("router stopped");
    result
}

/// Opens presence, subscribes the router subjects and starts liveness.
async fn start_router(
    config: &Config,
    client: &async_nats::Client,
    link: tokio::sync::watch::Receiver<(u64, nats::LinkState)>,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(
    Router,
    Option<Webhooks>,
    CancellationToken,
    TaskTracker,
    Option<Publisher>,
)> {
    let js = async_nats::jetstream::new(client.clone());
    let (store, registry, members) = open_store(&js, config, health).await?;
    let store = store.with_link(link.clone());
    // Nodes reconnect within their longest backoff after a NATS restart.
    let settle = config.nats.max_reconnect_delay + Duration::from_secs(1);
    let edges = Arc::new(switchboard_router::nats::NatsEdges::new(
        client.clone(),
        link.clone(),
        settle,
    ));
    // History (SPEC §7): this router writes the partitions whose lease it
    // holds and forwards the rest to their owners (docs/recovery.md).
    let node = format!("router-{:08x}", rand::random::<u32>());
    // An append that is not acknowledged within a few seconds (a stream
    // leader election) fails, and its send is answered 1500 before the
    // asking edge gives up on its own request.
    let mut log_js = js.clone();
    log_js.set_timeout(
        (config.nats.request_timeout / 2)
            .min(Duration::from_millis(2500))
            .max(Duration::from_millis(200)),
    );
    let log: Arc<dyn PartitionLog> = Arc::new(JetStreamLog::new(log_js, config.history.log_config()));
    let lease = LeaseConfig {
        replicas: config.history.replicas,
        ..LeaseConfig::new(&node, &config.nats.presence_bucket, config.history.partitions)
    };
    // A takeover takes up to a lease TTL; a forwarded request waits for an
    // owner, but answers (1500: retry) before the asking edge gives up on
    // its own request (nats.request_timeout), so a refused send is never
    // logged later.
    let patience = (lease.ttl + Duration::from_secs(2))
        .min(config.nats.request_timeout.saturating_sub(Duration::from_secs(1)))
        .max(Duration::from_millis(100));
    let owners = Arc::new(NatsOwners::new(client.clone(), patience));
    let history = History::leased(log.clone(), config.history.clone(), &node, owners);
    let registry: Arc<dyn BizRegistry> = Arc::new(registry);
    // Webhooks deliver events: none without them.
    let webhooks = if config.events.enabled {
        Some(super::webhooks::cluster(
            config,
            &js,
            registry.clone(),
            metrics.clone(),
            shutdown,
        )?)
    } else {
        None
    };
    let router = Router::new(
        config.router_config(),
        Arc::new(store),
        registry,
        Arc::new(members),
        edges,
        Some(Arc::new(history)),
        metrics.clone(),
    );
    router.start_watch().await.context("cannot watch the presence bucket")?;
    let publisher = if config.events.enabled {
        open_events(&js, config).await?;
        let (sink, publisher) = JetStreamSink::spawn(js.clone(), &config.events, metrics.clone());
        router.set_events(Events::new(Arc::new(sink), &node));
        Some(publisher)
    } else {
        None
    };
    let tasks = TaskTracker::new();
    let stop_requests = CancellationToken::new();
    switchboard_router::nats::serve(router.clone(), client.clone(), tasks.clone(), stop_requests.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe the router subjects: {e}"))?;
    // The lease bucket, retried like the presence buckets: creating a
    // replicated bucket can time out while a NATS cluster is still forming.
    let mut attempt = 0;
    let (leases, events) = loop {
        match Leases::spawn_kv(&js, log.clone(), lease.clone(), shutdown.clone()).await {
            Ok(started) => break started,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::warn!(error = %e, "partition lease bucket not available yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("cannot open the partition leases: {e}")),
        }
    };
    switchboard_router::nats::serve_partitions(
        router.clone(),
        client.clone(),
        events,
        leases.handle(),
        tasks.clone(),
        stop_requests.clone(),
    );
    router.spawn_ticks(shutdown.clone());
    // The lease loop releases every lease at shutdown.
    tokio::spawn(leases.join());
    tracing::info!(node_id = %node, partitions = config.history.partitions, "partition leases started");
    router.spawn_liveness(shutdown.clone(), link);
    router.spawn_member_sweeper(shutdown.clone());
    Ok((router, webhooks, stop_requests, tasks, publisher))
}

/// Creates or updates the `sb-events` stream, retried like the presence
/// buckets (a replicated stream can time out while a NATS cluster forms).
async fn open_events(js: &async_nats::jetstream::Context, config: &Config) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match ensure_stream(js, &config.events).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::warn!(error = %e, "events stream not available yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot create the {} stream (events.replicas at most the JetStream servers; events.enabled = false turns events off): {e}",
                    subject::EVENTS_STREAM
                ))
            }
        }
    }
}
