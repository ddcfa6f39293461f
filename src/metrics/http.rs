//! The `/metrics` endpoint: a small HTTP/1.1 server on its own thread and port
//! (`--metrics-listen`, off by default), away from the shards. A scrape asks
//! every shard for its partitions over the cross-shard queues, then renders.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::metrics::{render, PartitionSample};
use crate::runtime::queue;

/// Largest request head read; anything longer is answered 400.
const REQUEST_HEAD_MAX: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves scrapes on `listener` (bound by start-up, before the shards start,
/// so that a port in use fails the start) on a thread of its own until shutdown.
pub fn start(broker: Arc<Broker>, listener: TcpListener) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(broker, listener))?;
    tracing::info!(%local, "metrics endpoint listening (GET /metrics)");
    Ok(local)
}

fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "metrics endpoint: no runtime; not serving");
            return;
        }
    };
    while !broker.shutdown.is_triggered() {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = answer(&broker, &runtime, stream) {
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
    broker: &Arc<Broker>,
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
    let partitions = runtime.block_on(collect_partitions(broker));
    respond(&mut stream, "200 OK", &render(broker, &partitions))
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

/// Asks every shard for the partitions it owns; a shard that does not answer
/// within `IO_TIMEOUT` (stuck, or its queue full) is left out of this scrape.
async fn collect_partitions(broker: &Arc<Broker>) -> Vec<PartitionSample> {
    let calls = broker.shards.iter().map(|handle| {
        let call = queue::call(&handle.sender, |shard| async move {
            let image = shard.broker.image();
            let logs = shard.logs.borrow();
            let mut samples = Vec::with_capacity(logs.len());
            for ((topic_id, partition), log) in logs.iter() {
                let Some(topic) = image.topic_by_id(topic_id) else {
                    continue;
                };
                let log = log.borrow();
                samples.push(PartitionSample {
                    topic: topic.name.to_string(),
                    partition: *partition,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.high_watermark(),
                    size_bytes: log.size_bytes(),
                    segments: log.segment_count(),
                });
            }
            samples
        });
        compio::time::timeout(IO_TIMEOUT, call)
    });
    let mut all: Vec<PartitionSample> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(|answer| answer.ok().and_then(Result::ok))
        .flatten()
        .collect();
    all.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    all
}
