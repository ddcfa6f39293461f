//! One client connection: a read loop that cuts frames and starts a task per
//! request, and a write loop that sends responses in request order.
//!
//! Limits per connection (why: a client must not make the broker buffer without
//! bound): at most `IN_FLIGHT_REQUESTS_MAX` requests and `IN_FLIGHT_BYTES_MAX`
//! request bytes are being handled at once; past that the read loop stops reading
//! and TCP pushes back on the client. A single frame larger than the byte budget
//! (up to `socket.request.max.bytes`) is still admitted when nothing else is in
//! flight, so any legal request makes progress.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use compio::io::AsyncReadExt;
use compio::BufResult;
use event_listener::Event;
use futures_util::future::{select, Either};

use kafka_protocol::messages::ApiKey;

use crate::io::chain::Chain;
use crate::io::send;
use crate::node::shard::Admission;
use crate::node::shard::Shard;
use crate::protocol::frame;
use crate::runtime::budget::ByteBudget;
use crate::server::fetch_sessions::FetchSessions;

/// Requests of one connection being handled at once. Kafka handles one at a
/// time per connection; pipelining a few more keeps a shard busy without letting
/// one client hog it.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;
/// Request bytes of one connection being handled at once.
pub const IN_FLIGHT_BYTES_MAX: usize = 64 << 20;
/// Size of each socket read when no frame length asks for more. Small, because
/// an idle connection keeps a read (and its buffer) pending: thousands of idle
/// clients then cost megabytes, not gigabytes.
const READ_CHUNK_BYTES: usize = 4 << 10;

/// What the write loop does with a handled request.
pub enum Reply {
    /// Send this complete response frame.
    Frame(Bytes),
    /// Send this frame, parts of which may still be in segment files (Fetch).
    Chain(Chain),
    /// Send nothing (Produce with acks=0).
    Nothing,
    /// Close the connection.
    Close,
}

/// Context of one request for its handler.
pub struct RequestContext {
    pub conn: Rc<Connection>,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// A connection; lives on one shard.
pub struct Connection {
    pub shard: Rc<Shard>,
    stream: compio::net::TcpStream,
    pub peer: SocketAddr,
    /// Request bytes of this connection being handled (`IN_FLIGHT_BYTES_MAX`).
    in_flight_bytes: ByteBudget,
    /// Set when the connection must close (a malformed request, a write error).
    closing: Cell<bool>,
    /// KIP-227 fetch sessions opened on this connection.
    pub fetch_sessions: RefCell<FetchSessions>,
    /// Whether a Fetch of this connection is being handled. Fetches of one
    /// connection run one at a time: their responses can be large (a slow reader
    /// must not pin many of them in memory) and a fetch session's epochs are
    /// sequential anyway.
    fetch_in_flight: Cell<bool>,
    fetch_done: Event,
}

/// A request being handled: its task and its size against the byte budget.
struct InFlight {
    task: compio::runtime::JoinHandle<Reply>,
    /// The request's bytes in the shard's budget, given back once its response
    /// is ready (or when this is dropped with the connection).
    admission: Admission,
    bytes: usize,
    correlation_id: i32,
    /// Holds the connection's fetch slot until its response is written.
    is_fetch: bool,
}

/// Serves a connection until it closes, each request handled by `handler`
/// (`dispatch::handle`: a parameter, so that this file, below dispatch and
/// the handlers, knows none of them; generic, so that nothing is boxed).
pub async fn serve<H, F>(
    shard: Rc<Shard>,
    stream: compio::net::TcpStream,
    peer: SocketAddr,
    handler: H,
) where
    H: Fn(Rc<Connection>, Bytes) -> F,
    F: Future<Output = Reply> + 'static,
{
    let _ = stream.set_nodelay(true);
    let conn = Rc::new(Connection {
        shard,
        stream,
        peer,
        in_flight_bytes: ByteBudget::new(IN_FLIGHT_BYTES_MAX),
        closing: Cell::new(false),
        fetch_sessions: RefCell::new(FetchSessions::default()),
        fetch_in_flight: Cell::new(false),
        fetch_done: Event::new(),
    });
    tracing::debug!(%peer, shard = conn.shard.id, "connection opened");
    let metrics = conn.shard.metrics();
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = async_channel::bounded::<InFlight>(IN_FLIGHT_REQUESTS_MAX);
    let writer = compio::runtime::spawn(write_loop(conn.clone(), rx));
    read_loop(&conn, tx, &handler).await;
    let _ = writer.await;
    conn.shard
        .metrics()
        .connections
        .fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, "connection closed");
}

impl Connection {
    /// Closes both directions so that a pending read returns at once.
    fn shut_down(&self) {
        self.closing.set(true);
        // Wake a read loop waiting for a slot or for budget: it must see `closing`.
        self.fetch_done.notify(usize::MAX);
        self.in_flight_bytes.wake_all();
        // shutdown(2) does not close the descriptor, which `self.stream` owns.
        let _ =
            nix::sys::socket::shutdown(self.stream.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    /// Waits until no Fetch of this connection is being handled, then claims the slot.
    async fn claim_fetch_slot(&self) {
        while self.fetch_in_flight.get() && !self.closing.get() {
            let listener = self.fetch_done.listen();
            if !self.fetch_in_flight.get() {
                break;
            }
            listener.await;
        }
        self.fetch_in_flight.set(true);
    }

    fn release_fetch_slot(&self) {
        self.fetch_in_flight.set(false);
        self.fetch_done.notify(usize::MAX);
    }
}

/// Reads until `buf` holds at least `wanted` bytes. False on EOF, error or shutdown.
async fn fill(conn: &Connection, buf: &mut BytesMut, wanted: usize) -> bool {
    while buf.len() < wanted {
        if conn.closing.get() {
            return false;
        }
        let mut owned = std::mem::take(buf);
        owned.reserve((wanted - owned.len()).max(READ_CHUNK_BYTES));
        let mut stream = &conn.stream;
        // `append` reads after the bytes already buffered (`read` would overwrite them).
        let read = std::pin::pin!(stream.append(owned));
        let stop = std::pin::pin!(conn.shard.node.shutdown.wait());
        match select(read, stop).await {
            Either::Left((BufResult(Ok(0), _), _)) => return false,
            Either::Left((BufResult(Ok(_), filled), _)) => *buf = filled,
            Either::Left((BufResult(Err(error), _), _)) => {
                tracing::debug!(peer = %conn.peer, %error, "read failed");
                return false;
            }
            // Shutdown: stop reading; what is in flight still completes.
            Either::Right(_) => return false,
        }
    }
    true
}

async fn read_loop<H, F>(conn: &Rc<Connection>, tx: async_channel::Sender<InFlight>, handler: &H)
where
    H: Fn(Rc<Connection>, Bytes) -> F,
    F: Future<Output = Reply> + 'static,
{
    let max_frame = conn.shard.node.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        if !fill(conn, &mut buf, 4).await {
            return;
        }
        let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let length = match frame::check_length(length, max_frame) {
            Ok(length) => length,
            Err(error) => {
                tracing::warn!(peer = %conn.peer, %error, "closing connection");
                conn.shut_down();
                return;
            }
        };
        // Held from before the body is read until the response is ready.
        let admission = conn.shard.admit(4 + length).await;
        if !fill(conn, &mut buf, 4 + length).await {
            return;
        }
        buf.advance(4);
        let request: Bytes = buf.split_to(length).freeze();
        conn.shard.metrics().add_in(4 + length);
        conn.in_flight_bytes
            .take(length, || conn.closing.get())
            .await;
        let prefix = frame::peek_header(&request);
        let correlation_id = prefix.map_or(-1, |h| h.correlation_id);
        let is_fetch = prefix.is_some_and(|h| h.api_key == ApiKey::Fetch as i16);
        if is_fetch {
            conn.claim_fetch_slot().await;
        }
        let task = compio::runtime::spawn(handler(conn.clone(), request));
        if tx
            .send(InFlight {
                task,
                admission,
                bytes: length,
                correlation_id,
                is_fetch,
            })
            .await
            .is_err()
        {
            return; // the writer stopped: the connection is closing
        }
        if conn.closing.get() {
            return;
        }
    }
}

async fn write_loop(conn: Rc<Connection>, rx: async_channel::Receiver<InFlight>) {
    while let Ok(mut in_flight) = rx.recv().await {
        let reply = (&mut in_flight.task).await;
        drop(in_flight.admission);
        conn.in_flight_bytes.give_back(in_flight.bytes);
        let reply = reply.unwrap_or_else(|error| {
            tracing::error!(peer = %conn.peer, correlation_id = in_flight.correlation_id, ?error, "request handler failed; closing connection");
            Reply::Close
        });
        let keep_going = write_reply(&conn, reply).await;
        if in_flight.is_fetch {
            conn.release_fetch_slot();
        }
        if !keep_going {
            return;
        }
    }
}

/// Sends one reply; false when the connection must close.
async fn write_reply(conn: &Connection, reply: Reply) -> bool {
    let chain = match reply {
        Reply::Frame(bytes) => Chain::from(bytes),
        Reply::Chain(chain) => chain,
        Reply::Nothing => return true,
        Reply::Close => {
            conn.shut_down();
            return false;
        }
    };
    conn.shard.metrics().add_out(chain.len());
    let progress = Cell::new(Instant::now());
    let to = send::Destination {
        stream: &conn.stream,
        pipes: &conn.shard.pipes,
        progress: &progress,
    };
    // A client that stops reading must not hold the response (file
    // descriptors, a kernel worker blocked in splice, memory) forever: when
    // nothing has moved for the stall timeout, the connection closes.
    let stall = Duration::from_millis(conn.shard.node.config.send_stall_timeout_ms);
    let watchdog = async {
        loop {
            let idle = progress.get().elapsed();
            if idle >= stall {
                return;
            }
            compio::time::sleep(stall - idle).await;
        }
    };
    let send = std::pin::pin!(send::send_chain(&to, chain));
    let watchdog = std::pin::pin!(watchdog);
    match select(send, watchdog).await {
        Either::Left((Ok(()), _)) => true,
        Either::Left((Err(error), _)) => {
            tracing::debug!(peer = %conn.peer, %error, "write failed");
            conn.shut_down();
            false
        }
        Either::Right(((), _)) => {
            tracing::warn!(peer = %conn.peer, ?stall, "response made no progress; closing connection");
            conn.shut_down();
            false
        }
    }
}
