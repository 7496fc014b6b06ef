//! Start-up and shutdown of each process kind: bind, run until the
//! shutdown token, drain, and call NATS `drain()` last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use switchboard_edge::Edge;
use switchboard_router::{KvStore, MemoryStore, Router};
use switchboard_runtime::http::{self as h, Handler, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::{self, Health};
use switchboard_runtime::{nats, shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::local::{LocalEdges, LocalRouter};

fn node_id(config: &Config) -> String {
    let name = if config.edge.node_name.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_default()
    } else {
        config.edge.node_name.clone()
    };
    switchboard_edge::new_node_id(&name)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Runs an edge until SIGTERM/SIGINT, then drains.
pub(crate) async fn edge(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let node = node_id(&config);
    let (client, link) = nats::connect(
        &config.nats,
        &format!("switchboard-edge {node}"),
        health.clone(),
        metrics.clone(),
    )
    .await
    .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
    let drain_window = config.edge.drain_window;
    let router = Arc::new(switchboard_edge::nats::NatsRouter::new(client.clone()));
    let edge = Edge::new(
        config.edge.clone(),
        node.clone(),
        router,
        metrics,
        health.clone(),
    );
    switchboard_edge::nats::attach(edge.clone(), client.clone(), link, shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe the node inbox: {e}"))?;
    edge.spawn_sweeper(shutdown.clone());
    let listener = bind(config.edge.listen).await?;
    let addr = listener.local_addr()?;
    health.set_ready();
    tracing::info!(node_id = %node, %addr, "edge listening");

    let stop_http = CancellationToken::new();
    let server = tokio::spawn(h::serve(
        listener,
        Arc::new(edge.clone()),
        stop_http.clone(),
    ));
    shutdown.cancelled().await;
    edge.drain(drain_window).await;
    stop_http.cancel();
    let _ = server.await;
    let _ = client.drain().await;
    tracing::info!(node_id = %node, "edge stopped");
    Ok(())
}

/// The router's HTTP side: ops endpoints.
struct RouterHttp {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl Handler for RouterHttp {
    fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> ResponseFuture {
        let res = ops::handle(req.method(), req.uri().path(), &self.health, &self.metrics)
            .unwrap_or_else(|| h::error(StatusCode::NOT_FOUND, 404, "not found"));
        Box::pin(std::future::ready(res))
    }
}

async fn open_store(
    js: &async_nats::jetstream::Context,
    config: &Config,
) -> anyhow::Result<KvStore> {
    let mut last = None;
    for _ in 0..20 {
        match KvStore::open(
            js,
            &config.nats.presence_bucket,
            config.nats.replicas,
            config.router.delete_marker_ttl,
        )
        .await
        {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::warn!(error = %e, "presence bucket not available yet");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot open the presence bucket (is JetStream enabled?): {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Runs a router until SIGTERM/SIGINT, then finishes in-flight requests.
pub(crate) async fn router(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (client, _link) = nats::connect(
        &config.nats,
        "switchboard-router",
        health.clone(),
        metrics.clone(),
    )
    .await
    .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
    let js = async_nats::jetstream::new(client.clone());
    let store = open_store(&js, &config).await?;
    let edges = Arc::new(switchboard_router::nats::NatsEdges::new(client.clone()));
    let router = Router::new(
        config.router.clone(),
        Arc::new(store),
        edges,
        metrics.clone(),
    );
    router
        .start_watch()
        .await
        .context("cannot watch the presence bucket")?;
    let tasks = TaskTracker::new();
    let stop_requests = CancellationToken::new();
    switchboard_router::nats::serve(
        router.clone(),
        client.clone(),
        tasks.clone(),
        stop_requests.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot subscribe the router subjects: {e}"))?;
    router.spawn_liveness(shutdown.clone());
    let listener = bind(config.router.listen).await?;
    let addr = listener.local_addr()?;
    health.set_ready();
    tracing::info!(%addr, "router listening");

    let stop_http = CancellationToken::new();
    let server = tokio::spawn(h::serve(
        listener,
        Arc::new(RouterHttp {
            health: health.clone(),
            metrics,
        }),
        stop_http.clone(),
    ));
    shutdown.cancelled().await;
    health.set_draining();
    stop_requests.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
    stop_http.cancel();
    let _ = server.await;
    let _ = client.drain().await;
    tracing::info!("router stopped");
    Ok(())
}

/// Runs edge + router in one process with in-memory presence.
pub(crate) async fn standalone(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let edges = LocalEdges::default();
    let router = Router::new(
        config.router.clone(),
        Arc::new(MemoryStore::default()),
        Arc::new(edges.clone()),
        metrics.clone(),
    );
    let node = node_id(&config);
    let edge = Edge::new(
        config.edge.clone(),
        node.clone(),
        Arc::new(LocalRouter(router.clone())),
        metrics,
        health.clone(),
    );
    if edges.edge.set(edge.clone()).is_err() {
        anyhow::bail!("edge wired twice");
    }
    router
        .start_watch()
        .await
        .context("cannot start presence")?;
    edge.spawn_sweeper(shutdown.clone());
    let listener = bind(config.standalone.listen).await?;
    let addr = listener.local_addr()?;
    health.set_ready();
    tracing::info!(node_id = %node, %addr, "standalone listening: ws://{addr}/ws?bizCode=d1&clientId=c1");

    let stop_http = CancellationToken::new();
    let server = tokio::spawn(h::serve(
        listener,
        Arc::new(edge.clone()),
        stop_http.clone(),
    ));
    shutdown.cancelled().await;
    edge.drain(config.edge.drain_window).await;
    stop_http.cancel();
    let _ = server.await;
    tracing::info!("standalone stopped");
    Ok(())
}
