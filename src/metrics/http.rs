//! A minimal HTTP/1.1 server for `/metrics`, `/healthz`, `/readyz` and, where pgch
//! runs, the status page at `/` (and `/status.json`, the same facts as `pgch status`).
//!
//! Hand-written on tokio rather than a web framework: a few read-only `GET` routes,
//! one request per connection (`Connection: close`), bounded request size and read time
//! — Prometheus and probes need nothing more, and pgch stays free of a second HTTP stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{health, MetricsError};

/// Longest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound metrics endpoint.
pub struct Server {
    listener: TcpListener,
    status: Option<Arc<dyn StatusPages>>,
}

/// The status page's two forms, given by `pgch run` (`status::page`): the
/// endpoint serves them without knowing what a status holds.
pub trait StatusPages: Send + Sync + 'static {
    /// The HTML page at `/`.
    fn html(&self) -> BoxFuture<'_, String>;
    /// The same facts as JSON at `/status.json`.
    fn json(&self) -> BoxFuture<'_, String>;
}

impl Server {
    /// Binds `addr` now, so a taken port is a start-up error, not a silent absence.
    pub async fn bind(addr: SocketAddr) -> Result<Server, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Server {
            listener,
            status: None,
        })
    }

    /// Serves the status page at `/` and `/status.json`.
    pub fn with_status(mut self, pages: Arc<dyn StatusPages>) -> Server {
        self.status = Some(pages);
        self
    }

    /// The bound address (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the task is aborted; each connection in its own task.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, self.status.clone()));
                    }
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "metrics endpoint cannot accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}

/// Answers one request on `stream`.
async fn serve(mut stream: TcpStream, status: Option<Arc<dyn StatusPages>>) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let (status, content_type, body, head_only) = match parse_request_line(&head) {
        Some((method, path)) => {
            let head_only = method == "HEAD";
            if method != "GET" && !head_only {
                (405, "text/plain", "only GET and HEAD\n".to_string(), false)
            } else {
                let (code, ct, body) = match (path, &status) {
                    ("/", Some(pages)) => (200, "text/html; charset=utf-8", pages.html().await),
                    ("/status.json", Some(pages)) => (200, "application/json", pages.json().await),
                    _ => route(path),
                };
                (code, ct, body, head_only)
            }
        }
        None => (400, "text/plain", "bad request\n".to_string(), false),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Reads until the end of the request head; `None` on EOF, error or an oversized head.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
}

/// `(method, path without query)` of the request line.
fn parse_request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

/// Status, content type and body for `path`.
fn route(path: &str) -> (u16, &'static str, String) {
    match path {
        "/metrics" => match super::global().render() {
            Ok(text) => (200, METRICS_CONTENT_TYPE, text),
            Err(e) => (500, "text/plain", format!("{e}\n")),
        },
        "/healthz" => verdict_response(health::liveness(), "alive"),
        "/readyz" => verdict_response(health::readiness(), "ready"),
        "/" => (
            200,
            "text/plain",
            "pgch: / /status.json /metrics /healthz /readyz\n".to_string(),
        ),
        _ => (
            404,
            "text/plain",
            "not found: /metrics /healthz /readyz\n".to_string(),
        ),
    }
}

fn verdict_response(v: health::Verdict, ok_word: &str) -> (u16, &'static str, String) {
    if v.ready {
        (200, "text/plain", format!("{ok_word}\n"))
    } else {
        let mut body = format!("not {ok_word}:\n");
        for r in &v.reasons {
            body.push_str("- ");
            body.push_str(r);
            body.push('\n');
        }
        (503, "text/plain", body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_gives_method_and_path_without_query() {
        assert_eq!(
            parse_request_line("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line("GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line("garbage"), None);
    }

    #[tokio::test]
    async fn serves_metrics_health_and_not_found() {
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let task = server.spawn();
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        assert!(metrics.contains(super::super::BUILD_INFO), "{metrics}");
        let health = get("/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
