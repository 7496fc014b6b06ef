//! A small hyper 1 server: accept loop with HTTP/1.1 upgrades (WebSockets),
//! limits on connections that are not upgraded yet (header and handshake
//! timeouts, a cap on connections in progress), graceful stop on a token,
//! and JSON replies.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use switchboard_protocol::codes::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Response body type of every handler.
pub type Body = Full<Bytes>;
/// Response type of every handler.
pub type Response = http::Response<Body>;
/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Something that answers HTTP requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Never fails: errors are responses.
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture;
}

/// `[http]`: limits of the HTTP server of every process (edge, router,
/// standalone) on connections that are not (yet) WebSockets: handshakes in
/// progress, API requests, idle keep-alive connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Time a client has to send a whole request head, from the accept (or
    /// from the end of the previous response on a keep-alive connection).
    /// Silent connections and clients that dribble their headers
    /// (slowloris) are closed after it; so is an idle keep-alive
    /// connection. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Upgrade deadline, and the most one request may take: from the accept
    /// (or from the start of the previous request on a keep-alive
    /// connection) until the next request starts or the connection is
    /// upgraded. Covers slow handshakes, slow request bodies, and clients
    /// that do not read their responses. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections served at once that are not upgraded (handshakes in
    /// progress, API requests, idle keep-alive connections). Past it a new
    /// connection gets `429 Too Many Requests` with `Retry-After: 1` at
    /// once and is closed. Default 2048.
    pub max_pending_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(15),
            max_pending_connections: 2048,
        }
    }
}

impl HttpConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.header_read_timeout < Duration::from_millis(100) {
            problems.push("http.header_read_timeout must be at least 100ms".into());
        }
        if self.handshake_timeout < self.header_read_timeout {
            problems.push("http.handshake_timeout must be at least http.header_read_timeout".into());
        }
        if self.max_pending_connections == 0 {
            problems.push("http.max_pending_connections must be positive".into());
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, serving each with
/// `handler` within the limits of `config`. Connections in progress get a
/// graceful HTTP shutdown; upgraded connections belong to whoever upgraded
/// them (and no longer count as pending).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    config: HttpConfig,
    metrics: Arc<Metrics>,
) {
    let pending = Arc::new(Semaphore::new(config.max_pending_connections));
    let mut accept_log = RateLimitedLog::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so at most once a second.
                    metrics.accept_errors.inc();
                    accept_log.warn(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let handler = handler.clone();
        let pending = pending.clone();
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        let config = config.clone();
        tokio::spawn(async move {
            // Every request start re-arms the deadline: a connection must
            // start its next request (or upgrade) within the timeout of the
            // previous one, whatever it does in between (a slow body, a
            // response it does not read). A handler that knowingly waits
            // before it answers extends it (`RequestDeadline`).
            let request_deadline = RequestDeadline::new(config.handshake_timeout, pending, permit);
            let on_start = request_deadline.clone();
            let svc = service_fn(move |mut req: Request<Incoming>| {
                on_start.restart();
                req.extensions_mut().insert(on_start.clone());
                let fut = handler.call(req, peer);
                let on_done = on_start.clone();
                async move {
                    let mut res = fut.await;
                    if !on_done.reclaim() {
                        // Its pending slot went to another connection
                        // while it waited: this one ends with its answer.
                        res.headers_mut()
                            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(res)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let deadline = tokio::time::sleep(config.handshake_timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            if e.is_timeout() {
                                metrics.http_timeouts.inc();
                            }
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                        return;
                    }
                    () = request_deadline.0.changed.notified() => {
                        deadline.as_mut().reset(request_deadline.at());
                    }
                    () = &mut deadline => {
                        metrics.http_timeouts.inc();
                        tracing::debug!(%peer, "request not answered within the handshake timeout, closing");
                        return;
                    }
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                        return;
                    }
                }
            }
        });
    }
}

/// The deadline of the request in progress on a connection, found in the
/// request's extensions: `http.handshake_timeout` from the request's start,
/// unless its handler extends it because it knowingly waits before it
/// answers (an API send waiting up to `ackTimeoutMs` for its delivery
/// receipts). Such a request does not count toward
/// `http.max_pending_connections` while it waits (its own cap bounds it):
/// waiting sends must not lock new connections out.
#[derive(Debug, Clone)]
pub struct RequestDeadline(Arc<DeadlineState>);

#[derive(Debug)]
struct DeadlineState {
    at: std::sync::Mutex<tokio::time::Instant>,
    changed: Notify,
    timeout: Duration,
    /// The connection's slot in `http.max_pending_connections`: given
    /// back while an extended request waits, taken again after it.
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    pending: Arc<Semaphore>,
}

impl RequestDeadline {
    fn new(timeout: Duration, pending: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(DeadlineState {
            at: std::sync::Mutex::new(tokio::time::Instant::now() + timeout),
            changed: Notify::new(),
            timeout,
            permit: std::sync::Mutex::new(Some(permit)),
            pending,
        }))
    }

    /// Takes the connection's pending slot back after an extended request;
    /// `false` when none is free (the connection should then close).
    fn reclaim(&self) -> bool {
        let mut permit = self.0.permit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if permit.is_none() {
            *permit = self.0.pending.clone().try_acquire_owned().ok();
        }
        permit.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, tokio::time::Instant> {
        self.0.at.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new request starts: `http.handshake_timeout` from now.
    fn restart(&self) {
        *self.lock() = tokio::time::Instant::now() + self.0.timeout;
        self.0.changed.notify_one();
    }

    /// Gives the request in progress `extra` time beyond
    /// `http.handshake_timeout`, from now (never shortens it).
    pub fn extend(&self, extra: Duration) {
        drop(
            self.0
                .permit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let at = tokio::time::Instant::now() + self.0.timeout + extra;
        let mut cur = self.lock();
        if at > *cur {
            *cur = at;
            drop(cur);
            self.0.changed.notify_one();
        }
    }

    fn at(&self) -> tokio::time::Instant {
        *self.lock()
    }
}

/// Answers `429 Too Many Requests` without reading the request, then
/// closes (lingering briefly so the request in flight does not turn the
/// close into a reset that loses the answer).
async fn refuse_busy(mut stream: TcpStream) {
    let body = format!(
        r#"{{"code":{},"msg":"too many connections in progress, retry later"}}"#,
        ErrorCode::RateLimited.as_u16()
    );
    let res = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let linger = async {
        stream.write_all(res.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), linger).await;
}

/// A warning that is logged at most once a second, with the number of
/// occurrences it stood for.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = http::Response::new(Full::new(Bytes::from(bytes)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// `{code, msg}` with a status: the shape of every refusal.
pub fn error(status: StatusCode, code: u16, msg: &str) -> Response {
    #[derive(Serialize)]
    struct E<'a> {
        code: u16,
        msg: &'a str,
    }
    json(status, &E { code, msg })
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 9110 §11.1: `bearer`, `BEARER`), spaces around
/// the token are skipped. `None` when the header is missing, not text, of
/// another scheme, without a token, or sent more than once (it is not a
/// list field: which copy counts would be ambiguous).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response {
    let mut res = http::Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    res
}

#[cfg(test)]
mod bearer_tests {
    use super::*;

    fn token_of(values: &[&str]) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(
                header::AUTHORIZATION,
                header::HeaderValue::from_str(v).expect("header value"),
            );
        }
        bearer_token(&headers).map(str::to_owned)
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer k1", "bearer k1", "BEARER k1", "bEaReR   k1 ", "Bearer\tk1"] {
            assert_eq!(token_of(&[v]).as_deref(), Some("k1"), "{v:?}");
        }
        for v in ["Basic k1", "Bearerk1", "Bearer", "Bearer   ", "k1", "Bearer-x k1"] {
            assert_eq!(token_of(&[v]), None, "{v:?}");
        }
        assert_eq!(token_of(&[]), None);
        assert_eq!(token_of(&["Bearer k1", "Bearer k2"]), None, "two headers");
    }
}
