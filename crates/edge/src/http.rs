//! The edge's HTTP side: `GET /ws` (and its alias `/api/websocket/ws`)
//! admits and upgrades a client, `GET /echo` (only with
//! `edge.echo_endpoint`) upgrades a conformance-test echo, and everything
//! else is the ops endpoints (`/healthz`, `/readyz`, `/metrics`) or 404.
//!
//! An upgraded connection becomes a session task on the edge's tracker,
//! so drain waits for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use switchboard_protocol::RefusalCode;
use switchboard_runtime::http::{self as h, Handler, Response, ResponseFuture};
use switchboard_runtime::ops;

use crate::admit::{self, AdmitError};
use crate::edge::{Edge, EdgeInner};
use crate::handshake;
use crate::session::{self, Io};

impl Edge {
    /// `GET /ws`: admission, then the upgrade and the session.
    async fn upgrade(self, mut req: Request<Incoming>, peer: SocketAddr) -> Response {
        match admit::admit(self.inner(), &req, peer).await {
            Ok(admission) => self.start(&mut req, move |edge, io| session::run(edge, io, admission)),
            Err(e) => self.refuse(e),
        }
    }

    /// `GET /echo` (only with `edge.echo_endpoint`): upgrades without
    /// admission and echoes every message (conformance tests).
    fn upgrade_echo(&self, mut req: Request<Incoming>) -> Response {
        match handshake::check_upgrade(&req) {
            Ok(()) => self.start(&mut req, session::run_echo),
            Err(e) => self.refuse(e.into()),
        }
    }

    /// Answers the upgrade and runs `session` on the upgraded connection,
    /// as a task on the edge's tracker (so drain waits for it).
    fn start<S, F>(&self, req: &mut Request<Incoming>, session: S) -> Response
    where
        S: FnOnce(Arc<EdgeInner>, Io) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        let (res, fut) = match fastwebsockets::upgrade::upgrade(req) {
            Ok(x) => x,
            Err(e) => return self.refuse(AdmitError::UpgradeFailed(e.to_string())),
        };
        let edge = self.inner().clone();
        self.inner().tasks().spawn(async move {
            match fut.await {
                Ok(ws) => session(edge, ws.into_inner()).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        let (parts, _) = res.into_parts();
        http::Response::from_parts(parts, Full::new(Bytes::new()))
    }

    /// Counts a refused handshake and answers it.
    fn refuse(&self, e: AdmitError) -> Response {
        self.inner().metrics().handshake_refusals.inc();
        e.into_response()
    }
}

impl Handler for Edge {
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        let path = req.uri().path();
        let inner = self.inner();
        let res = if path == "/ws" || path == "/api/websocket/ws" {
            if req.method() == Method::GET {
                return Box::pin(self.clone().upgrade(req, peer));
            }
            h::error(
                StatusCode::METHOD_NOT_ALLOWED,
                RefusalCode::MethodNotAllowed.as_u16(),
                "method not allowed",
            )
        } else if path == "/echo" && inner.config().echo_endpoint && req.method() == Method::GET {
            self.upgrade_echo(req)
        } else if let Some(res) = ops::handle(req.method(), path, inner.health(), inner.metrics()) {
            res
        } else {
            h::error(StatusCode::NOT_FOUND, RefusalCode::NotFound.as_u16(), "not found")
        };
        Box::pin(std::future::ready(res))
    }
}
