//! Operational endpoints on every process: `GET /healthz` (alive),
//! `GET /readyz` (connected to the bus and ready; 503 while draining),
//! `GET /metrics` (Prometheus text).

use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, StatusCode};
use switchboard_protocol::codes::RefusalCode;

use crate::http::{self as h, Response};
use crate::metrics::Metrics;

/// Readiness state of a process.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once start-up finished (bus connected, index loaded).
    ready: AtomicBool,
    /// Set while the bus connection is down.
    bus_down: AtomicBool,
    /// Set on SIGTERM: stop taking new work.
    draining: AtomicBool,
}

impl Health {
    /// Marks start-up complete.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
    /// Records whether the bus connection is up.
    pub fn set_bus_up(&self, up: bool) {
        self.bus_down.store(!up, Ordering::Release);
    }
    /// Whether the bus connection is up.
    pub fn bus_up(&self) -> bool {
        !self.bus_down.load(Ordering::Acquire)
    }
    /// Marks the process draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    /// Whether the process is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
    /// Ready for new traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.bus_up() && !self.draining()
    }
}

/// Answers the ops endpoints; `None` for any other path.
pub fn handle(method: &Method, path: &str, health: &Health, metrics: &Metrics) -> Option<Response> {
    let res = match path {
        "/healthz" | "/livez" => h::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => {
            if health.is_ready() {
                h::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            } else {
                let why = if health.draining() {
                    "draining"
                } else if !health.bus_up() {
                    "bus unavailable"
                } else {
                    "starting"
                };
                h::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready", "reason": why}),
                )
            }
        }
        "/metrics" => h::text(
            StatusCode::OK,
            metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(h::error(
            StatusCode::METHOD_NOT_ALLOWED,
            RefusalCode::MethodNotAllowed.as_u16(),
            "method not allowed",
        ));
    }
    Some(res)
}
