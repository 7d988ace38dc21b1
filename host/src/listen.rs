//! The HTTP connections the API is served on, with the bounds a server facing slow or hostile
//! clients needs (axum's own `serve` sets none of them):
//!
//! - **At most `max_connections` open at once.** Past the cap the listener stops accepting;
//!   new connections wait in the kernel's backlog until one closes, so a flood of idle sockets
//!   cannot use up the process's file descriptors (the outgoing requests and the store need
//!   theirs too).
//! - **Headers within `header_timeout`.** A connection that has not sent a whole request head
//!   in time is closed — also an idle keep-alive connection waiting for its next request — so
//!   slow, half-sent requests free their place (slowloris).
//! - **Request bodies** are read within [`crate::api::BODY_TIMEOUT`] (see `api::read_body`).
//! - **Every answer in the API's JSON error shape.** hyper answers a request head it cannot
//!   parse (a URI over 64 KiB, a head over its buffer, bytes that are not HTTP) by itself, with
//!   an empty body; [`JsonParseErrors`] gives those answers the same `{"error": …}` body every
//!   route uses.
//! - **Graceful shutdown**: when `shutdown` resolves, no new connection is accepted, idle ones
//!   are closed and requests in flight finish.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Pause after an accept error that is not about one connection (out of file descriptors):
/// trying again at once would spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// Serves `app` on `listener` until `shutdown` resolves, then waits for requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);

    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::error!(%error, "cannot accept connections; trying again");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection; nothing to report.
            let _ = connection.await;
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors that concern one connection only (the peer went away during the handshake).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection whose automatic parse-error answers carry the API's JSON error body.
///
/// hyper writes those answers itself (status 400, 414 or 431, `content-length: 0`, then it
/// closes the connection), before any route runs. No route of the API ever answers 400, 414
/// or 431 without a body and its `content-type`, so a response head of that shape can only
/// be one of them; it is replaced, whole, by the same status with a JSON body. Writes are
/// not vectored, so a response head reaches this adapter in one buffer.
pub struct JsonParseErrors<S> {
    inner: S,
    /// A replacement being written: its bytes, how many are out, and how many bytes of the
    /// original write to report once it is out.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonParseErrors<S> {
    pub fn new(inner: S) -> JsonParseErrors<S> {
        JsonParseErrors {
            inner,
            replacing: None,
        }
    }
}

/// The JSON answer for one of hyper's automatic parse-error heads, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let end = text.find("\r\n\r\n")?;
    let (status_line, headers) = text[..end].split_once("\r\n").unwrap_or((&text[..end], ""));
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let (code, message) = match &status[..status.len().min(4)] {
        "400 " => ("bad_request", "the request is not valid HTTP"),
        "414 " => (
            "uri_too_long",
            "the request URI is longer than this server accepts",
        ),
        "431 " => (
            "headers_too_large",
            "the request's headers are larger than this server accepts",
        ),
        _ => return None,
    };
    let lines: Vec<String> = headers.split("\r\n").map(str::to_ascii_lowercase).collect();
    let bare = lines.iter().any(|l| l == "content-length: 0")
        && !lines.iter().any(|l| l.starts_with("content-type:"));
    if !bare || end + 4 != head.len() {
        return None;
    }
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            match replacement(buf) {
                Some(bytes) => self.replacing = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        let this = &mut *self;
        let (bytes, written, claim) = this.replacing.as_mut().expect("set above");
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let claim = *claim;
        this.replacing = None;
        Poll::Ready(Ok(claim))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_parse_error_heads_are_replaced() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 10:00:00 GMT\r\n\r\n";
        let json = String::from_utf8(replacement(bare).unwrap()).unwrap();
        assert!(
            json.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"),
            "{json}"
        );
        let body: serde_json::Value =
            serde_json::from_str(json.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");

        // The API's own answers have a body and a content type: untouched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n";
        assert_eq!(replacement(ours), None);
        let no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(replacement(no_content), None);
        // A head followed by more bytes is not hyper's lone error answer.
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx";
        assert_eq!(replacement(with_body), None);
    }
}
