//! A small hyper 1 server: accept loop with HTTP/1.1 upgrades (WebSockets),
//! graceful stop on a token, and JSON replies.

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
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// Accepts connections on `listener` until `shutdown`, serving each with
/// `handler`. Connections in progress get a graceful HTTP shutdown; upgraded
/// connections belong to whoever upgraded them.
pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let fut = handler.call(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "http connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
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
