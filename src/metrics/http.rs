//! The `/metrics` endpoint: a small HTTP/1.1 server on its own thread and port
//! (`--metrics-listen`, off by default), away from the shards. The page comes
//! from a function the broker hands it (which asks every shard for its
//! partitions over the cross-shard queues, then renders); this module knows
//! HTTP only.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Largest request head read; anything longer is answered 400.
const REQUEST_HEAD_MAX: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The page of one scrape, produced on the endpoint's own runtime.
pub type Page = Pin<Box<dyn Future<Output = String>>>;

/// Serves scrapes on `listener` (bound by start-up, before the shards start,
/// so that a port in use fails the start) on a thread of its own, each
/// answered with what `page` produces, until `stopping` says so.
pub fn start(
    listener: TcpListener,
    page: impl Fn() -> Page + Send + 'static,
    stopping: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(listener, page, stopping))?;
    tracing::info!(%local, "metrics endpoint listening (GET /metrics)");
    Ok(local)
}

fn serve(listener: TcpListener, page: impl Fn() -> Page, stopping: impl Fn() -> bool) {
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "metrics endpoint: no runtime; not serving");
            return;
        }
    };
    while !stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = answer(&page, &runtime, stream) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn answer(
    page: &impl Fn() -> Page,
    runtime: &compio::runtime::Runtime,
    mut stream: TcpStream,
) -> std::io::Result<()> {
    // One deadline for the whole request head: a client trickling bytes
    // cannot hold the (one-at-a-time) endpoint longer than this.
    let deadline = Instant::now() + IO_TIMEOUT;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > REQUEST_HEAD_MAX {
            return respond(&mut stream, "400 Bad Request", "request head too large\n");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(()); // too slow: dropped without an answer
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return respond(&mut stream, "405 Method Not Allowed", "GET only\n");
    }
    if path != b"/metrics" && !path.starts_with(b"/metrics?") {
        return respond(&mut stream, "404 Not Found", "try /metrics\n");
    }
    let body = runtime.block_on(page());
    respond(&mut stream, "200 OK", &body)
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
