//! The web console at `/console`: static pages embedded in the binary
//! (`clients/console/`, and the JS SDK's browser bundle
//! `clients/js/dist/switchboard.js`), put in front of a process's own
//! HTTP handler.
//!
//! - The **client view** (edges with `edge.console`, and `standalone`)
//!   connects to the same origin's `/ws` as any client would.
//! - The **admin view** (routers with `router.console`, and `standalone`)
//!   calls the same origin's API with a key the user types; the page keeps
//!   it in memory only.
//!
//! Nothing here bypasses a check: the pages are plain files, and what they
//! do goes through the WebSocket handshake (tokens, `edge.allowed_origins`)
//! and the API's keys like any other client. Every answer carries a strict
//! `Content-Security-Policy` (scripts from this origin only, no inline
//! script or style, connections to this origin only), `nosniff`, and no
//! framing.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use switchboard_protocol::RefusalCode;
use switchboard_runtime::http::{self as h, Handler, Response, ResponseFuture};

/// Where the console lives.
const PREFIX: &str = "/console";

/// The policy of every console answer: this origin's scripts, styles and
/// connections (`'self'` covers its `ws:`/`wss:`), nothing inline, no
/// plugins, frames, forms or `<base>`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Which views a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Views {
    /// The client view (an edge).
    Client,
    /// The admin view (a router).
    Admin,
    /// Both, with an index page (standalone).
    Both,
}

impl Views {
    fn client(self) -> bool {
        matches!(self, Self::Client | Self::Both)
    }

    fn admin(self) -> bool {
        matches!(self, Self::Admin | Self::Both)
    }

    /// The page `/console/` shows.
    fn landing(self) -> &'static [u8] {
        match self {
            Self::Client => CLIENT_HTML,
            Self::Admin => ADMIN_HTML,
            Self::Both => INDEX_HTML,
        }
    }
}

const INDEX_HTML: &[u8] = include_bytes!("../../../clients/console/index.html");
const CLIENT_HTML: &[u8] = include_bytes!("../../../clients/console/client.html");
const ADMIN_HTML: &[u8] = include_bytes!("../../../clients/console/admin.html");

/// The file `/console/<name>` names for `views`, with its type.
fn asset(views: Views, name: &str) -> Option<(&'static [u8], &'static str)> {
    let (body, ty): (&'static [u8], _) = match name {
        "" => (views.landing(), HTML),
        "console.css" => (include_bytes!("../../../clients/console/console.css"), CSS),
        "ui.js" => (include_bytes!("../../../clients/console/ui.js"), JS),
        "favicon.svg" => (include_bytes!("../../../clients/console/favicon.svg"), SVG),
        "client.html" if views.client() => (CLIENT_HTML, HTML),
        "client.js" if views.client() => (include_bytes!("../../../clients/console/client.js"), JS),
        "switchboard.js" if views.client() => (include_bytes!("../../../clients/js/dist/switchboard.js"), JS),
        "admin.html" if views.admin() => (ADMIN_HTML, HTML),
        "admin.js" if views.admin() => (include_bytes!("../../../clients/console/admin.js"), JS),
        _ => return None,
    };
    Some((body, ty))
}

/// Adds the headers every console answer carries.
fn secure(mut res: Response) -> Response {
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    res
}

/// Answers `path` if it is the console's; `None` for any other path.
fn answer(views: Views, method: &Method, path: &str) -> Option<Response> {
    let rest = path.strip_prefix(PREFIX)?;
    let name = match rest {
        // Relative, so it also works behind a proxy's path prefix.
        "" => {
            let mut res = h::text(
                StatusCode::PERMANENT_REDIRECT,
                Bytes::new(),
                "text/plain; charset=utf-8",
            );
            res.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("console/"));
            return Some(secure(res));
        }
        r => r.strip_prefix('/')?,
    };
    if method != Method::GET && method != Method::HEAD {
        let mut res = h::error(
            StatusCode::METHOD_NOT_ALLOWED,
            RefusalCode::MethodNotAllowed.as_u16(),
            "method not allowed",
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(secure(res));
    }
    let res = match asset(views, name) {
        Some((body, ty)) => h::text(StatusCode::OK, Bytes::from_static(body), ty),
        None => h::error(StatusCode::NOT_FOUND, RefusalCode::NotFound.as_u16(), "not found"),
    };
    Some(secure(res))
}

/// A process's handler with the console in front of it.
struct Console {
    /// The process's own handler: every other path.
    inner: Arc<dyn Handler>,
    /// What this process serves.
    views: Views,
}

impl Handler for Console {
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        match answer(self.views, req.method(), req.uri().path()) {
            Some(res) => Box::pin(std::future::ready(res)),
            None => self.inner.call(req, peer),
        }
    }
}

/// `inner` with the console's `views` in front of it when `on`, else
/// `inner` as it is.
pub(crate) fn maybe(inner: Arc<dyn Handler>, views: Views, on: bool) -> Arc<dyn Handler> {
    if !on {
        return inner;
    }
    tracing::info!(?views, "web console at /console");
    Arc::new(Console { inner, views })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(views: Views, path: &str) -> Option<(u16, Option<String>)> {
        answer(views, &Method::GET, path).map(|r| {
            let ty = r
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (r.status().as_u16(), ty)
        })
    }

    #[test]
    fn each_process_serves_its_views_only() {
        assert_eq!(get(Views::Client, "/ws"), None);
        assert_eq!(get(Views::Client, "/consoles"), None);
        assert_eq!(get(Views::Client, "/console").map(|r| r.0), Some(308));
        assert_eq!(get(Views::Client, "/console/client.js").map(|r| r.0), Some(200));
        assert_eq!(get(Views::Client, "/console/switchboard.js").map(|r| r.0), Some(200));
        assert_eq!(get(Views::Client, "/console/admin.html").map(|r| r.0), Some(404));
        assert_eq!(get(Views::Admin, "/console/client.html").map(|r| r.0), Some(404));
        assert_eq!(get(Views::Admin, "/console/switchboard.js").map(|r| r.0), Some(404));
        assert_eq!(get(Views::Admin, "/console/admin.js").map(|r| r.0), Some(200));
        assert_eq!(get(Views::Both, "/console/../api/websocket/x").map(|r| r.0), Some(404));
        for v in [Views::Client, Views::Admin, Views::Both] {
            assert_eq!(get(v, "/console/"), Some((200, Some(HTML.to_owned()))));
            assert_eq!(get(v, "/console/console.css"), Some((200, Some(CSS.to_owned()))));
            assert_eq!(get(v, "/console/ui.js"), Some((200, Some(JS.to_owned()))));
        }
    }

    #[test]
    fn every_answer_is_locked_down() {
        for (method, path) in [
            (Method::GET, "/console/"),
            (Method::GET, "/console/nope"),
            (Method::POST, "/console/client.html"),
            (Method::GET, "/console"),
        ] {
            let res = answer(Views::Both, &method, path).expect("a console path");
            let hdr = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            assert_eq!(hdr("content-security-policy").as_deref(), Some(CSP), "{path}");
            assert_eq!(hdr("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
            assert_eq!(hdr("x-frame-options").as_deref(), Some("DENY"), "{path}");
        }
        let res = answer(Views::Both, &Method::POST, "/console/").expect("a console path");
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn the_pages_carry_no_inline_script_or_style() {
        for page in [INDEX_HTML, CLIENT_HTML, ADMIN_HTML] {
            let text = String::from_utf8_lossy(page);
            for (i, _) in text.match_indices("<script") {
                let tag = &text[i..text[i..].find('>').map_or(text.len(), |e| i + e)];
                assert!(tag.contains("src="), "inline script: {tag}");
            }
            assert!(!text.contains("<style") && !text.contains("style="), "inline style");
            let handler = text.split(|c: char| c.is_whitespace()).find(|w| {
                w.strip_prefix("on")
                    .and_then(|r| r.split_once('='))
                    .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase()))
            });
            assert_eq!(handler, None, "an inline event handler");
        }
    }
}
