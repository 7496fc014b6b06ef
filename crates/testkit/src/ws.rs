//! A WebSocket test client speaking JSON text frames.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How the server closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Close code (1005 if the frame had none, 1006 if there was no frame).
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// A connected client.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects; on an HTTP refusal returns its status and body.
    ///
    /// # Errors
    /// `(status, body)` of a refused handshake, or `(0, error)` if the
    /// connection itself failed.
    pub async fn connect(url: &str) -> Result<Self, (u16, String)> {
        Self::connect_with(url, &[]).await
    }

    /// Connects with extra request headers.
    ///
    /// # Errors
    /// As [`Ws::connect`].
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, (u16, String)> {
        let mut req = url.into_client_request().map_err(|e| (0, e.to_string()))?;
        for (k, v) in headers {
            let name = http_name(k);
            let value = v.parse().map_err(|_| (0, "bad header value".to_owned()))?;
            req.headers_mut().insert(name, value);
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(Error::Http(res)) => {
                let status = res.status().as_u16();
                let body = res
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(e) => Err((0, e.to_string())),
        }
    }

    /// Connects and reads the welcome (mode 0), which must come first.
    ///
    /// # Panics
    /// If the connection is refused or the first frame is not a welcome.
    pub async fn join(url: &str) -> (Self, Value) {
        let mut ws = Self::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url} refused: {e:?}"));
        let welcome = ws.recv().await;
        assert_eq!(welcome["mode"], 0, "first frame must be the welcome: {welcome}");
        (ws, welcome)
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a raw text frame.
    ///
    /// # Panics
    /// If the connection is gone.
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send text frame");
    }

    /// Sends a binary frame.
    ///
    /// # Panics
    /// If the connection is gone.
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.stream
            .send(Message::binary(data))
            .await
            .expect("send binary frame");
    }

    /// The next text frame as JSON, or `None` after `timeout`.
    ///
    /// # Panics
    /// If the connection closes or a frame is not JSON.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("connection ended while waiting for a frame"),
                Ok(Some(Err(e))) => panic!("connection failed while waiting for a frame: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("not JSON ({e}): {t}")))
                }
                Message::Close(c) => panic!("closed while waiting for a frame: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next text frame as JSON.
    ///
    /// # Panics
    /// If none comes within [`crate::patience`].
    pub async fn recv(&mut self) -> Value {
        self.recv_timeout(crate::patience())
            .await
            .expect("no frame within patience")
    }

    /// The next frame of `mode`, skipping presence notices (mode 400) and
    /// heartbeat replies when looking for something else.
    ///
    /// # Panics
    /// If another kind of frame comes first, or none within patience.
    pub async fn recv_mode(&mut self, mode: u64) -> Value {
        loop {
            let v = self.recv().await;
            if v["mode"] == mode {
                return v;
            }
            assert!(
                v["mode"] == 400 || v["mode"] == 1,
                "expected a mode {mode} frame, got {v}"
            );
        }
    }

    /// Asserts no frame other than presence notices arrives for `d`.
    ///
    /// # Panics
    /// If one does.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(v) = self.recv_timeout(left).await {
                assert_eq!(v["mode"], 400, "expected silence, got {v}");
            }
        }
    }

    /// The next text frame as JSON within `timeout` (`Ok(None)`: none came),
    /// or how the connection ended; never panics.
    ///
    /// # Errors
    /// The close (1006 for a connection that broke without one).
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Value>, Closed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Err(_))) => {
                    return Err(Closed {
                        code: 1006,
                        reason: String::new(),
                    })
                }
                Ok(Some(Ok(Message::Close(c)))) => return Err(closed_by(c)),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str(t.as_str()) {
                        return Ok(Some(v));
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends a JSON value; false if the connection is gone.
    pub async fn try_send(&mut self, v: &Value) -> bool {
        self.stream.send(Message::Text(v.to_string().into())).await.is_ok()
    }

    /// Reads until the server closes; returns the close code and reason.
    /// Frames before the close are returned too.
    pub async fn closed_within(&mut self, timeout: Duration) -> (Option<Closed>, Vec<Value>) {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return (None, frames),
                Ok(None) | Ok(Some(Err(_))) => {
                    return (
                        Some(Closed {
                            code: 1006,
                            reason: String::new(),
                        }),
                        frames,
                    )
                }
                Ok(Some(Ok(Message::Close(c)))) => return (Some(closed_by(c)), frames),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str(t.as_str()) {
                        frames.push(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Reads until the server closes and returns the close.
    ///
    /// # Panics
    /// If it does not close within patience.
    pub async fn closed(&mut self) -> Closed {
        self.closed_within(crate::patience())
            .await
            .0
            .expect("server did not close the connection")
    }

    /// Sends a ping frame.
    ///
    /// # Panics
    /// If the connection is gone.
    pub async fn ping(&mut self, payload: &[u8]) {
        self.stream
            .send(Message::Ping(payload.to_vec().into()))
            .await
            .expect("send ping");
    }

    /// Waits for a pong (skipping text frames).
    pub async fn pong(&mut self) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + crate::patience();
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(Message::Pong(p)))) => return Some(p.to_vec()),
                Ok(Some(Ok(_))) => {}
                _ => return None,
            }
        }
    }

    /// Resets the TCP connection (RST, no close frame): a client whose
    /// network or process died.
    pub fn reset(self) {
        if let MaybeTlsStream::Plain(tcp) = self.stream.get_ref() {
            let _ = tcp.set_zero_linger();
        }
    }

    /// Closes normally.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// The close a close frame says (1005: none given).
fn closed_by(c: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Closed {
    c.map_or(
        Closed {
            code: 1005,
            reason: String::new(),
        },
        |c| Closed {
            code: u16::from(c.code),
            reason: c.reason.to_string(),
        },
    )
}

fn http_name(k: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("valid header name")
}
