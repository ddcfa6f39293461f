//! Request/response over TCP between brokers: length-prefixed frames (a
//! big-endian u32, then the bytes), one request at a time per connection,
//! each call bounded by a deadline. What the bytes mean is the caller's.
//!
//! The client connects lazily and drops its connection on any error or
//! timeout, so the next call starts on a fresh one (a late answer can never
//! be taken for the next call's). The server side reads a request, awaits
//! the handler and writes its answer, until the peer goes away, sends a
//! frame over the size limit, stays silent past [`IDLE_TIMEOUT`] or sends a
//! frame slower than [`FRAME_TIMEOUT`]. A frame's memory grows as its bytes
//! arrive (a header alone cannot make the server allocate its length), and
//! at most [`CONNECTIONS_MAX`] connections are served at once.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use compio::BufResult;
use futures_util::future::{select, Either};

/// Frames larger than this are refused (a snapshot of the metadata image
/// travels in one frame; 256 MiB is far above any that fits in memory here).
pub const FRAME_BYTES_MAX: usize = 256 << 20;
/// A served connection with no request for this long is closed (the quorum
/// sends heartbeats many times a second).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Once a frame's header is read, its body must follow within this.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed as they are accepted (the
/// peers are the other brokers: a handful each).
pub const CONNECTIONS_MAX: usize = 256;
/// A frame's buffer grows by at most this much per read.
const READ_CHUNK: usize = 1 << 20;

async fn read_header(stream: &mut TcpStream) -> io::Result<usize> {
    let BufResult(result, header) = stream.read_exact([0u8; 4]).await;
    result?;
    let len = u32::from_be_bytes(header) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (the limit is {FRAME_BYTES_MAX})"),
        ));
    }
    Ok(len)
}

/// The `len` bytes of a frame's body, in chunks: memory follows the bytes
/// that actually arrived.
async fn read_body(stream: &mut TcpStream, len: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        let chunk = (len - body.len()).min(READ_CHUNK);
        let BufResult(result, part) = stream.read_exact(vec![0u8; chunk]).await;
        result?;
        body.extend_from_slice(&part);
    }
    Ok(body)
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = read_header(stream).await?;
    read_body(stream, len).await
}

async fn write_frame(stream: &mut TcpStream, body: Vec<u8>) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= FRAME_BYTES_MAX)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&body);
    let BufResult(result, _) = stream.write_all(framed).await;
    result
}

/// `future`, or a `TimedOut` error after `timeout`.
pub async fn with_deadline<T>(
    timeout: Duration,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let future = std::pin::pin!(future);
    let sleep = std::pin::pin!(compio::time::sleep(timeout));
    match select(future, sleep).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

/// One peer's client end.
pub struct RpcClient {
    addr: String,
    stream: Option<TcpStream>,
}

impl RpcClient {
    pub fn new(addr: impl Into<String>) -> RpcClient {
        RpcClient {
            addr: addr.into(),
            stream: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and returns the answer, within `timeout` (connecting
    /// included).
    pub async fn call(&mut self, request: Vec<u8>, timeout: Duration) -> io::Result<Vec<u8>> {
        let result = with_deadline(timeout, self.exchange(request)).await;
        if result.is_err() {
            // Whatever was in flight on it is abandoned with it.
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: Vec<u8>) -> io::Result<Vec<u8>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr.as_str()).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        write_frame(stream, request).await?;
        read_frame(stream).await
    }
}

/// Binds `addr` for [`serve`].
pub fn bind(addr: &str) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts connections on `listener` until `stop` completes, answering each
/// request frame with `handle`'s answer. Each connection runs as its own task.
pub async fn serve<H, F>(
    listener: std::net::TcpListener,
    handle: H,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    H: Fn(SocketAddr, Vec<u8>) -> F + Clone + 'static,
    F: Future<Output = Vec<u8>> + 'static,
{
    let listener = TcpListener::from_std(listener)?;
    let mut stop = std::pin::pin!(stop);
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accept = std::pin::pin!(listener.accept());
        let (stream, peer) = match select(accept, stop.as_mut()).await {
            Either::Left((Ok(accepted), _)) => accepted,
            Either::Left((Err(error), _)) => {
                // Out of descriptors, typically: give the others time to
                // close some rather than spin.
                tracing::warn!(%error, "accepting a peer's connection failed");
                compio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Either::Right(_) => return Ok(()),
        };
        if open.get() >= CONNECTIONS_MAX {
            tracing::warn!(%peer, "refusing a peer's connection: {CONNECTIONS_MAX} are open");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        open.set(open.get() + 1);
        let open = open.clone();
        compio::runtime::spawn(async move {
            serve_connection(stream, peer, handle).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn serve_connection<H, F>(mut stream: TcpStream, peer: SocketAddr, handle: H)
where
    H: Fn(SocketAddr, Vec<u8>) -> F,
    F: Future<Output = Vec<u8>>,
{
    loop {
        let request = match with_deadline(IDLE_TIMEOUT, read_header(&mut stream)).await {
            Ok(len) => with_deadline(FRAME_TIMEOUT, read_body(&mut stream, len)).await,
            Err(error) => Err(error),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                if error.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, %error, "closing a peer's connection");
                }
                return;
            }
        };
        let answer = handle(peer, request).await;
        if let Err(error) = write_frame(&mut stream, answer).await {
            tracing::debug!(%peer, %error, "answer not sent");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    /// Answers arrive; a frame over the limit closes the connection; a
    /// server that does not answer is a timeout, and the next call works on
    /// a new connection; a closed port is an error, not a hang.
    #[test]
    fn calls_answers_limits_and_deadlines() {
        run(async {
            let listener = bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (stop_tx, stop_rx) = futures_channel::oneshot::channel::<()>();
            let server = compio::runtime::spawn(serve(
                listener,
                |_, request: Vec<u8>| async move {
                    if request == b"slow" {
                        compio::time::sleep(Duration::from_secs(5)).await;
                    }
                    let mut answer = b"re: ".to_vec();
                    answer.extend_from_slice(&request);
                    answer
                },
                async {
                    let _ = stop_rx.await;
                },
            ));
            let mut client = RpcClient::new(addr.clone());
            let answer = client.call(b"one".to_vec(), Duration::from_secs(2)).await;
            assert_eq!(answer.unwrap(), b"re: one");
            let slow = client
                .call(b"slow".to_vec(), Duration::from_millis(100))
                .await;
            assert_eq!(slow.unwrap_err().kind(), io::ErrorKind::TimedOut);
            let answer = client.call(b"two".to_vec(), Duration::from_secs(2)).await;
            assert_eq!(answer.unwrap(), b"re: two", "not the slow call's answer");

            // A header announcing more than the limit: the server hangs up.
            let mut raw = TcpStream::connect(addr.as_str()).await.unwrap();
            let header = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
            let BufResult(written, _) = raw.write_all(header).await;
            written.unwrap();
            let BufResult(read, _) =
                compio::io::AsyncRead::read(&mut raw, Vec::with_capacity(16)).await;
            assert_eq!(read.unwrap(), 0, "the connection is closed");

            let _ = stop_tx.send(());
            server.await.unwrap().unwrap();
            let mut closed = RpcClient::new(addr);
            let refused = closed.call(b"x".to_vec(), Duration::from_secs(2)).await;
            assert!(refused.is_err());
        });
    }
}
