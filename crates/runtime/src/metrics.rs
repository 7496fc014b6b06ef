//! The Prometheus metrics of every Switchboard process. Handles for hot
//! paths are created once; recording is an atomic add.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Modes with their own counter; anything else counts as `other`.
const MODES: [u16; 10] = [0, 1, 2, 3, 4, 100, 200, 300, 400, 500];

/// Counters per frame mode.
#[derive(Debug)]
pub struct ByMode {
    known: [Counter; MODES.len()],
    other: Counter,
}

impl ByMode {
    fn new(family: &Family<Labels, Counter>) -> Self {
        let get = |m: String| family.get_or_create_owned(&vec![("mode", m)]);
        Self {
            known: MODES.map(|m| get(m.to_string())),
            other: get("other".to_owned()),
        }
    }

    /// The counter of `mode`.
    pub fn get(&self, mode: u16) -> &Counter {
        MODES
            .iter()
            .position(|&m| m == mode)
            .map_or(&self.other, |i| &self.known[i])
    }
}

/// All metrics of a process (edge and router metrics both exist everywhere;
/// a process only moves the ones it owns).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open client connections on this process (`switchboard_connections`).
    pub connections: Gauge,
    /// Client frames received, by mode.
    pub frames_received: ByMode,
    /// Frames written to clients, by mode.
    pub frames_sent: ByMode,
    /// Frames handed to local sockets by deliveries.
    pub deliveries: Counter,
    /// Connections closed because their send queue overflowed.
    pub slow_consumer_closes: Counter,
    /// Connections that asked to recover (SPEC §7) and were recovered.
    pub recoveries: Counter,
    /// Connections that asked to recover and got `recovered: false`.
    pub recoveries_failed: Counter,
    /// Connections closed with 1012 to recover because a delivery from a
    /// history partition's owner may have been lost and could not be
    /// healed in place.
    pub recovery_closes: Counter,
    /// Connections healed from the log in place because a delivery from a
    /// history partition's owner may have been lost.
    pub heals: Counter,
    /// Router: time to resolve one send and hand its deliveries to the bus.
    pub route_duration: Histogram,
    /// Edge: time from a client send to the router's answer.
    pub send_duration: Histogram,
    /// Presence entries in this router's index.
    pub presence_entries: Gauge,
    /// Reconnections to NATS.
    pub nats_reconnects: Counter,
    /// Failed attempts to connect to NATS (unreachable, TLS, or refused
    /// credentials: the log says which).
    pub nats_connect_failures: Counter,
    /// Publishes or subscribes NATS denied for lack of a permission.
    pub nats_permission_violations: Counter,
    /// Nodes purged after their heartbeats stopped.
    pub nodes_purged: Counter,
    /// Times the NATS client dropped messages of a subscription that fell
    /// behind (deliveries or requests were lost).
    pub nats_slow_consumer: Counter,
    /// Handshakes refused before the upgrade.
    pub handshake_refusals: Counter,
    /// Connections answered 429 at once because `http.max_pending_connections`
    /// were already being served.
    pub http_connections_refused: Counter,
    /// Connections closed because their request head did not arrive within
    /// `http.header_read_timeout` or their first response was not ready
    /// within `http.handshake_timeout` (silent and slowloris clients).
    pub http_timeouts: Counter,
    /// Failed `accept(2)` calls (EMFILE, ENFILE, ...).
    pub accept_errors: Counter,
    /// Edge: handshakes refused (429) by a per-bizCode connection cap (the
    /// bizCode's own limit or `edge.max_connections_per_biz`).
    pub biz_connection_refusals: Counter,
    /// Edge: client sends refused (1005) by their bizCode's sends/s limit.
    pub biz_send_refusals: Counter,
    /// Router: API calls refused (429/1005) by the rate limit per API key
    /// and bizCode (`api.rate_per_sec`).
    pub api_rate_limited: Counter,
    /// Router: recipients that acknowledged a delivery with a receipt in
    /// time.
    pub receipts_acked: Counter,
    /// Router: recipients that did not acknowledge a delivery with a
    /// receipt before its timeout.
    pub receipts_unacked: Counter,
    /// Router: receipt waits in flight (API sends and client sends with
    /// `ack`).
    pub receipt_waits: Gauge,
    /// Receipt waits refused by a cap: API sends (429/1005) over
    /// `api.max_receipt_waits` or `api.max_receipt_waits_per_key`, client
    /// sends (1005) over `edge.max_acks_in_flight` or the router's cap.
    pub receipt_refusals: Counter,
    /// Edge: client acks (mode 3) not forwarded to the routers (over
    /// `edge.ack_rate_per_sec`, or the bus refused the publish).
    pub acks_dropped: Counter,
    /// Connection events stored (JetStream PubAck, or taken by the
    /// in-memory consumer in `standalone`).
    pub events_published: Counter,
    /// Connection events dropped because the publish queue was full.
    pub events_dropped: Counter,
    /// Connection events whose publish failed or timed out.
    pub events_failed: Counter,
    api_requests: Family<Labels, Counter>,
    api_duration: Family<Labels, Histogram>,
    /// Router/standalone: webhook events by outcome
    /// (`switchboard_webhook_events_total{outcome}`).
    pub webhook_events: WebhookEvents,
    webhook_requests: Family<Labels, Counter>,
    webhook_duration: Histogram,
}

/// Webhook events by outcome: each event counts once per attempt that
/// failed (`retried`), and once at its end (`delivered`, `dead_letter`
/// once `webhooks.max_attempts` failed, or `dropped` when `standalone`'s
/// queue of its bizCode was full).
#[derive(Debug)]
pub struct WebhookEvents {
    /// Delivered: the endpoint answered 2xx.
    pub delivered: Counter,
    /// An attempt failed; the event will be tried again.
    pub retried: Counter,
    /// Every attempt failed: given up.
    pub dead_letter: Counter,
    /// Not queued (`standalone`: the bizCode's queue was full).
    pub dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let received = Family::<Labels, Counter>::default();
        registry.register("frames_received", "Client frames received by mode", received.clone());
        let sent = Family::<Labels, Counter>::default();
        registry.register("frames_sent", "Frames sent to clients by mode", sent.clone());
        let deliveries = Counter::default();
        registry.register("deliveries", "Frames delivered to local sockets", deliveries.clone());
        let slow = Counter::default();
        registry.register(
            "slow_consumer_closes",
            "Connections closed with 4008 because their send queue overflowed",
            slow.clone(),
        );
        let recoveries = Counter::default();
        registry.register(
            "recoveries",
            "Connections that asked to recover (recover=<seq>&epoch=<epoch>) and were recovered",
            recoveries.clone(),
        );
        let recoveries_failed = Counter::default();
        registry.register(
            "recoveries_failed",
            "Connections that asked to recover and got recovered:false",
            recoveries_failed.clone(),
        );
        let recovery_closes = Counter::default();
        registry.register(
            "recovery_closes",
            "Connections closed with 1012 to recover: a delivery from a history partition's owner may have been lost and could not be healed in place, or a replay could not complete",
            recovery_closes.clone(),
        );
        let heals = Counter::default();
        registry.register(
            "heals",
            "Connections healed from the log in place because a delivery from a history partition's owner may have been lost",
            heals.clone(),
        );
        let route_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "route_duration_seconds",
            "Time to route one send (every send, refused ones included; a batch counts each send at its share of the batch time)",
            route_duration.clone(),
        );
        let send_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "send_duration_seconds",
            "Edge: client send to router answer",
            send_duration.clone(),
        );
        let presence_entries = Gauge::default();
        registry.register(
            "presence_entries",
            "Presence entries in the router index",
            presence_entries.clone(),
        );
        let nats_reconnects = Counter::default();
        registry.register("nats_reconnects", "Reconnections to NATS", nats_reconnects.clone());
        let nats_connect_failures = Counter::default();
        registry.register(
            "nats_connect_failures",
            "Failed attempts to connect to NATS (unreachable, TLS or refused credentials)",
            nats_connect_failures.clone(),
        );
        let nats_permission_violations = Counter::default();
        registry.register(
            "nats_permission_violations",
            "Publishes or subscribes NATS denied for lack of a permission",
            nats_permission_violations.clone(),
        );
        let nodes_purged = Counter::default();
        registry.register("nodes_purged", "Edge nodes purged after silence", nodes_purged.clone());
        let nats_slow_consumer = Counter::default();
        registry.register(
            "nats_slow_consumer",
            "Times the NATS client dropped messages of a subscription that fell behind",
            nats_slow_consumer.clone(),
        );
        let handshake_refusals = Counter::default();
        registry.register(
            "handshake_refusals",
            "WebSocket handshakes refused before the upgrade",
            handshake_refusals.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "Connections answered 429 because http.max_pending_connections were in progress",
            http_connections_refused.clone(),
        );
        let http_timeouts = Counter::default();
        registry.register(
            "http_timeouts",
            "Connections closed for a request head or first response later than its timeout",
            http_timeouts.clone(),
        );
        let accept_errors = Counter::default();
        registry.register("accept_errors", "Failed accept calls", accept_errors.clone());
        let biz_limit_refusals = Family::<Labels, Counter>::default();
        registry.register(
            "biz_limit_refusals",
            "Edge: refusals by a per-bizCode limit: kind=connections (handshake 429), kind=sends (reply 1005)",
            biz_limit_refusals.clone(),
        );
        let kind = |k: &str| biz_limit_refusals.get_or_create_owned(&vec![("kind", k.to_owned())]);
        let api_rate_limited = Counter::default();
        registry.register(
            "api_rate_limited",
            "API calls refused with 429/1005 by the rate limit per API key and bizCode",
            api_rate_limited.clone(),
        );
        let receipts = Family::<Labels, Counter>::default();
        registry.register(
            "receipts",
            "Router: recipients of deliveries with a receipt, by outcome (acked in time, unacked at the timeout)",
            receipts.clone(),
        );
        let receipt_outcome = |k: &str| receipts.get_or_create_owned(&vec![("outcome", k.to_owned())]);
        let receipt_waits = Gauge::default();
        registry.register(
            "receipt_waits",
            "Router: delivery receipt waits in flight",
            receipt_waits.clone(),
        );
        let receipt_refusals = Counter::default();
        registry.register(
            "receipt_refusals",
            "Sends with a receipt refused (429 or 1005) by a cap on receipt waits",
            receipt_refusals.clone(),
        );
        let acks_dropped = Counter::default();
        registry.register(
            "acks_dropped",
            "Edge: client acks (mode 3) not forwarded: over edge.ack_rate_per_sec or refused by the bus",
            acks_dropped.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Connection events stored (JetStream PubAck, or handed to the in-process consumer in standalone)",
            events_published.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Connection events dropped because the publish queue (events.queue) was full",
            events_dropped.clone(),
        );
        let events_failed = Counter::default();
        registry.register(
            "events_failed",
            "Connection events whose publish failed or was not acknowledged in time",
            events_failed.clone(),
        );
        let api_requests = Family::<Labels, Counter>::default();
        registry.register(
            "api_requests",
            "HTTP API requests by call and status",
            api_requests.clone(),
        );
        let api_duration = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_1, 2.0, 14))) as fn() -> Histogram,
        );
        registry.register(
            "api_request_duration_seconds",
            "HTTP API latency by call",
            api_duration.clone(),
        );
        let webhook_events = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_events",
            "Webhook events by outcome: delivered, retried (an attempt failed), dead_letter (every attempt failed), dropped (standalone queue full)",
            webhook_events.clone(),
        );
        let outcome = |o: &str| webhook_events.get_or_create_owned(&vec![("outcome", o.to_owned())]);
        let webhook_requests = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook calls by result: 2xx, 3xx (redirects are not followed), 4xx, 5xx, timeout, error",
            webhook_requests.clone(),
        );
        // Every result exists from the start (dashboards query them).
        for result in ["2xx", "3xx", "4xx", "5xx", "timeout", "error"] {
            let _ = webhook_requests.get_or_create_owned(&vec![("result", result.to_owned())]);
        }
        let webhook_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "webhook_request_duration_seconds",
            "Time of one webhook call, to the end of its response or failure",
            webhook_duration.clone(),
        );
        Self {
            webhook_events: WebhookEvents {
                delivered: outcome("delivered"),
                retried: outcome("retried"),
                dead_letter: outcome("dead_letter"),
                dropped: outcome("dropped"),
            },
            webhook_requests,
            webhook_duration,
            api_requests,
            api_duration,
            frames_received: ByMode::new(&received),
            frames_sent: ByMode::new(&sent),
            registry,
            connections,
            deliveries,
            slow_consumer_closes: slow,
            recoveries,
            recoveries_failed,
            recovery_closes,
            heals,
            route_duration,
            send_duration,
            presence_entries,
            nats_reconnects,
            nats_connect_failures,
            nats_permission_violations,
            nodes_purged,
            nats_slow_consumer,
            handshake_refusals,
            http_connections_refused,
            http_timeouts,
            accept_errors,
            biz_connection_refusals: kind("connections"),
            biz_send_refusals: kind("sends"),
            api_rate_limited,
            receipts_acked: receipt_outcome("acked"),
            receipts_unacked: receipt_outcome("unacked"),
            receipt_waits,
            receipt_refusals,
            acks_dropped,
            events_published,
            events_dropped,
            events_failed,
        }
    }

    /// Records one API request.
    pub fn api_request(&self, call: &'static str, status: u16, seconds: f64) {
        self.api_requests
            .get_or_create(&vec![("call", call.to_owned()), ("status", status.to_string())])
            .inc();
        self.api_duration
            .get_or_create(&vec![("call", call.to_owned())])
            .observe(seconds);
    }

    /// Records one webhook call: its result class and duration.
    pub fn webhook_request(&self, result: &'static str, seconds: f64) {
        self.webhook_requests
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
        self.webhook_duration.observe(seconds);
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = Metrics::new();
        m.frames_received.get(100).inc();
        m.frames_received.get(7).inc();
        m.connections.set(3);
        let text = m.render();
        assert!(text.contains("switchboard_connections 3"), "{text}");
        assert!(
            text.contains(r#"switchboard_frames_received_total{mode="100"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchboard_frames_received_total{mode="other"} 1"#),
            "{text}"
        );
        assert!(text.contains("switchboard_route_duration_seconds_bucket"), "{text}");
        m.biz_send_refusals.inc();
        let text = m.render();
        assert!(
            text.contains(r#"switchboard_biz_limit_refusals_total{kind="sends"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchboard_biz_limit_refusals_total{kind="connections"} 0"#),
            "{text}"
        );
        assert!(text.contains("switchboard_api_rate_limited_total 0"), "{text}");
        m.webhook_events.dead_letter.inc();
        m.webhook_request("5xx", 0.01);
        let text = m.render();
        for line in [
            r#"switchboard_webhook_events_total{outcome="dead_letter"} 1"#,
            r#"switchboard_webhook_events_total{outcome="delivered"} 0"#,
            r#"switchboard_webhook_requests_total{result="5xx"} 1"#,
            "switchboard_webhook_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }
}
