//! Start-up and shutdown of each process kind: bind, run until the
//! shutdown token, drain, and call NATS `drain()` last.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http::Request;
use hyper::body::Incoming;
use switchboard_edge::{AuthMode, Edge, Verifier};
use switchboard_log::{JetStreamLog, MemoryLog, PartitionLog};
use switchboard_protocol::subject;
use switchboard_router::api::Api;
use switchboard_router::{BizRegistry, History, MemoryRegistry, MemoryStore, Router};
use switchboard_runtime::events::{Events, JetStreamSink, MemorySink};
use switchboard_runtime::http::{self as h, Handler, ResponseFuture};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::ops::Health;
use switchboard_runtime::{nats, shutdown};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::console::{self, Views};
use crate::local::{LocalEdges, LocalRouter};

mod router;
mod setup;
mod webhooks;

pub(crate) use router::router;
use setup::{api_config, bind};

fn node_id(config: &Config) -> String {
    let name = if config.edge.node_name.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_default()
    } else {
        config.edge.node_name.clone()
    };
    switchboard_edge::new_node_id(&name)
}

/// Runs an edge until SIGTERM/SIGINT, then drains.
///
/// The listener opens before NATS is reached: `/readyz` answers 503 (and
/// WebSocket upgrades are refused) until the bus is up.
pub(crate) async fn edge(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let node = node_id(&config);
    let verifier = verifier(&config)?;
    let name = format!("switchboard-edge {node}");
    let (client, link) = nats::connect(
        &config.nats,
        &name,
        subject::EDGE_INBOX_PREFIX,
        health.clone(),
        metrics.clone(),
    )
    .await?;
    tracing::info!(url = %config.nats.redacted_url(), auth = config.nats.auth_method(), "connecting to NATS");
    // The NATS tasks (route batcher, inbox, heartbeat, resyncs), stopped and
    // awaited after the drain, before the client drains.
    let bus_tasks = switchboard_edge::nats::Tasks::default();
    let router = Arc::new(switchboard_edge::nats::NatsRouter::new(client.clone(), &bus_tasks));
    let edge = Edge::new(
        edge_config(&config),
        node.clone(),
        router,
        verifier,
        metrics.clone(),
        health.clone(),
    );
    // Recovery reads the partitions' logs (SPEC §7).
    let js = async_nats::jetstream::new(client.clone());
    edge.set_history(
        Arc::new(JetStreamLog::new(js, config.history.log_config())),
        &config.history,
    );
    // Connection events (README "Connection events"); routers create the
    // stream, an edge only publishes to it.
    let publisher = if config.events.enabled {
        let js = async_nats::jetstream::new(client.clone());
        let (sink, publisher) = JetStreamSink::spawn(js, &config.events, metrics.clone());
        edge.set_events(Events::new(Arc::new(sink), &node));
        Some(publisher)
    } else {
        None
    };
    let listener = bind(config.edge.listen, config.edge.listen_backlog)?;
    let addr = listener.local_addr()?;
    let stop_http = CancellationToken::new();
    let server = tokio::spawn(h::serve(
        listener,
        console::maybe(Arc::new(edge.clone()), Views::Client, config.edge.console),
        stop_http.clone(),
        config.http.clone(),
        metrics,
    ));
    // Waits for the first connection to NATS (the subscription is flushed).
    let attached = tokio::select! {
        r = switchboard_edge::nats::attach(edge.clone(), client.clone(), link, shutdown.clone(), &bus_tasks) => Some(r),
        () = shutdown.cancelled() => None,
    };
    let mut result = Ok(());
    match attached {
        Some(Ok(())) => {
            edge.spawn_sweeper(shutdown.clone());
            health.set_ready();
            tracing::info!(node_id = %node, %addr, "edge listening");
            shutdown.cancelled().await;
            edge.drain(config.edge.drain_window).await;
        }
        Some(Err(e)) => result = Err(anyhow::anyhow!("cannot subscribe the node inbox: {e}")),
        None => tracing::info!("stopped before NATS was reached"),
    }
    stop_http.cancel();
    let _ = server.await;
    bus_tasks.shutdown(config.edge.close_grace).await;
    if let Some(p) = publisher {
        p.close(config.edge.close_grace).await;
    }
    let _ = client.drain().await;
    tracing::info!(node_id = %node, "edge stopped");
    result
}

fn edge_config(config: &Config) -> switchboard_edge::EdgeConfig {
    let mut edge = config.edge.clone();
    edge.require_registration = config.api.require_registration;
    edge
}

/// The client token verifier, `None` (and a loud warning) when auth is off.
fn verifier(config: &Config) -> anyhow::Result<Option<Arc<Verifier>>> {
    if config.auth.mode == AuthMode::Off {
        tracing::warn!(
            "CLIENT AUTHENTICATION IS OFF: any token (or none) is accepted. \
             Set auth.mode = \"jwt\" for anything but local development."
        );
        return Ok(None);
    }
    let pem = match &config.auth.public_key_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    let v = Verifier::new(&config.auth, pem.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(algorithm = %config.auth.algorithm, "client authentication: JWT");
    Ok(Some(Arc::new(v)))
}

/// `standalone`'s HTTP side: the API, then the edge (WebSocket and ops).
struct StandaloneHttp {
    api: Api,
    edge: Edge,
}

impl Handler for StandaloneHttp {
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        if Api::owns(req.uri().path()) {
            let api = self.api.clone();
            return Box::pin(async move { api.handle(req).await });
        }
        self.edge.call(req, peer)
    }
}

/// Runs edge + router in one process with in-memory presence.
pub(crate) async fn standalone(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let edges = LocalEdges::default();
    let node = node_id(&config);
    // The log in memory: this process is the only writer of every
    // partition (docs/recovery.md, "Standalone").
    let log: Arc<dyn PartitionLog> = Arc::new(MemoryLog::new(
        config.history.log_config(),
        config.history.standalone_max_bytes,
    ));
    let history = History::new(log.clone(), config.history.clone(), &node);
    let registry: Arc<dyn BizRegistry> = Arc::new(MemoryRegistry::default());
    let router = Router::new(
        config.router_config(),
        Arc::new(MemoryStore::default()),
        registry.clone(),
        Arc::new(switchboard_router::store::MemoryMembers::default()),
        Arc::new(edges.clone()),
        Some(Arc::new(history)),
        metrics.clone(),
    );
    let edge = Edge::new(
        edge_config(&config),
        node.clone(),
        Arc::new(LocalRouter(router.clone())),
        verifier(&config)?,
        metrics.clone(),
        health.clone(),
    );
    edge.set_history(log, &config.history);
    // Events go through a bounded in-process channel to the webhook
    // dispatcher (which logs each at debug level, `switchboard::events`).
    let mut hooks = None;
    if config.events.enabled {
        let (sink, rx) = MemorySink::new(config.events.queue, config.events.store_timeout, metrics.clone());
        let events = Events::new(Arc::new(sink), &node);
        router.set_events(events.clone());
        edge.set_events(events);
        hooks = Some(webhooks::standalone(&config, rx, registry, metrics.clone(), &shutdown)?);
    }
    if edges.edge.set(edge.clone()).is_err() {
        anyhow::bail!("edge wired twice");
    }
    router.start_watch().await.context("cannot start presence")?;
    router.spawn_member_sweeper(shutdown.clone());
    edge.spawn_sweeper(shutdown.clone());
    let listener = bind(config.standalone.listen, config.standalone.listen_backlog)?;
    let addr = listener.local_addr()?;
    let mut api = Api::new(
        router.clone(),
        api_config(&config, true),
        health.clone(),
        metrics.clone(),
    );
    if let Some(hooks) = hooks {
        api = api.with_webhooks(hooks);
    }
    health.set_ready();
    tracing::info!(node_id = %node, %addr, "standalone listening: ws://{addr}/ws?bizCode=d1&clientId=c1");

    let stop_http = CancellationToken::new();
    let http = StandaloneHttp {
        api,
        edge: edge.clone(),
    };
    let server = tokio::spawn(h::serve(
        listener,
        console::maybe(Arc::new(http), Views::Both, config.standalone.console),
        stop_http.clone(),
        config.http.clone(),
        metrics,
    ));
    shutdown.cancelled().await;
    edge.drain(config.edge.drain_window).await;
    stop_http.cancel();
    let _ = server.await;
    tracing::info!("standalone stopped");
    Ok(())
}
