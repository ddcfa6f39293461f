//! Sending a response chain to a socket: memory pieces with vectored writes,
//! file pieces with splice through a pipe (file → pipe → socket, two io_uring
//! operations per pipeful, no copy through user space).
//!
//! The socket is corked while a chain with file pieces goes out, so that the
//! response header and the spliced data leave in full segments rather than one
//! small packet per piece. Pipes come from a per-shard pool; a pipe is returned
//! only when empty (an error halfway leaves data in it, and it is dropped).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use bytes::Bytes;
use compio::driver::SharedFd;
use compio::fs::pipe::{self, Receiver, Sender};
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use compio::BufResult;

use crate::io::aligned::AlignedBuf;
use crate::io::chain::{Chain, FileSlice, Piece};

/// Pipe size asked for (the default limit for unprivileged processes,
/// `/proc/sys/fs/pipe-max-size`): each splice moves up to this much.
const PIPE_BYTES: usize = 1 << 20;
/// Pipes kept per shard for reuse.
const POOL_MAX: usize = 16;
/// iovecs per vectored write (Linux accepts at most 1024).
const IOVECS_PER_WRITE: usize = 512;
/// Bytes per write of memory pieces: progress is marked after each.
const WRITE_UNIT_BYTES: usize = 1 << 20;

/// A pipe used as the kernel-side buffer of splice.
pub struct SplicePipe {
    rx: Receiver,
    tx: Sender,
    capacity: usize,
}

impl SplicePipe {
    async fn new() -> io::Result<SplicePipe> {
        let (rx, tx) = pipe::anonymous().await?;
        let fd = tx.as_raw_fd();
        use nix::fcntl::{fcntl, FcntlArg};
        // The kernel may grant less than asked (pipe-max-size); what it granted counts.
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as libc::c_int));
        let capacity = fcntl(fd, FcntlArg::F_GETPIPE_SZ).map_err(io::Error::from)?;
        if capacity <= 0 {
            return Err(io::Error::other("pipe has no capacity"));
        }
        Ok(SplicePipe {
            rx,
            tx,
            capacity: capacity as usize,
        })
    }
}

/// The pipes of one shard.
#[derive(Default)]
pub struct PipePool {
    pipes: RefCell<Vec<SplicePipe>>,
}

impl PipePool {
    async fn take(&self) -> io::Result<SplicePipe> {
        let pooled = self.pipes.borrow_mut().pop();
        match pooled {
            Some(pipe) => Ok(pipe),
            None => SplicePipe::new().await,
        }
    }

    fn give_back(&self, pipe: SplicePipe) {
        let mut pipes = self.pipes.borrow_mut();
        // A pipe the kernel would not enlarge (over the per-user pipe budget)
        // is not kept: each splice through it would move only a few pages.
        if pipes.len() < POOL_MAX && pipe.capacity >= PIPE_BYTES {
            pipes.push(pipe);
        }
    }
}

/// Where one response goes, and when it last made progress (a connection's
/// watchdog closes it when a response stops moving, see `connection.rs`).
pub struct Destination<'a> {
    pub stream: &'a TcpStream,
    pub pipes: &'a PipePool,
    pub progress: &'a Cell<Instant>,
}

impl Destination<'_> {
    fn moved(&self) {
        self.progress.set(Instant::now());
    }
}

/// Sends `chain` whole, or fails (the connection must then close: part of a
/// frame may have gone out).
pub async fn send_chain(to: &Destination<'_>, chain: Chain) -> io::Result<()> {
    if !chain.has_file_pieces() {
        let memory: Vec<Bytes> = chain
            .into_pieces()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Memory(bytes) => Some(bytes),
                Piece::File(_) => None,
            })
            .collect();
        return write_memory(to, memory).await;
    }
    let socket = socket2::SockRef::from(to.stream);
    let _ = socket.set_cork(true);
    let result = async {
        let mut memory = Vec::new();
        for piece in chain.into_pieces() {
            match piece {
                Piece::Memory(bytes) => memory.push(bytes),
                Piece::File(slice) => {
                    write_memory(to, std::mem::take(&mut memory)).await?;
                    send_file(to, slice).await?;
                }
            }
        }
        write_memory(to, memory).await
    }
    .await;
    let _ = socket.set_cork(false);
    result
}

/// Writes memory pieces with vectored writes of at most `IOVECS_PER_WRITE`
/// pieces and `WRITE_UNIT_BYTES` bytes each, marking progress after each.
pub async fn write_memory(to: &Destination<'_>, pieces: Vec<Bytes>) -> io::Result<()> {
    let mut stream = to.stream;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0;
    let mut pieces = pieces.into_iter().peekable();
    loop {
        // Fill a batch, cutting large pieces into units.
        while let Some(piece) = pieces.peek_mut() {
            if batch.len() == IOVECS_PER_WRITE || batch_bytes == WRITE_UNIT_BYTES {
                break;
            }
            let take = piece.len().min(WRITE_UNIT_BYTES - batch_bytes);
            batch.push(piece.split_to(take));
            batch_bytes += take;
            if piece.is_empty() {
                pieces.next();
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let BufResult(result, _) = if batch.len() == 1 {
            let only = batch.pop().expect("one piece");
            let BufResult(result, _) = stream.write_all(only).await;
            BufResult(result, Vec::new())
        } else {
            stream.write_vectored_all(std::mem::take(&mut batch)).await
        };
        result?;
        to.moved();
        batch_bytes = 0;
    }
}

/// Splices `slice` from its file to the socket. Falls back to copying when the
/// kernel refuses to splice from that file before any of it was sent.
async fn send_file(to: &Destination<'_>, slice: FileSlice) -> io::Result<()> {
    let (stream, pipes) = (to.stream, to.pipes);
    let pipe = pipes.take().await?;
    let file = SharedFd::new(slice.file.clone());
    let mut position = slice.position;
    let mut left = slice.len;
    while left > 0 {
        let want = left.min(pipe.capacity);
        let filled = pipe::splice(&file, &pipe.tx, want)
            .offset_in(position as i64)
            .await;
        let filled = match filled {
            Ok(0) => {
                pipes.give_back(pipe);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("segment file ends before position {position}"),
                ));
            }
            Ok(n) => n,
            Err(error) if left == slice.len && cannot_splice(&error) => {
                pipes.give_back(pipe);
                tracing::debug!(%error, "splice from a segment file refused; copying");
                return copy_file(to, &slice).await;
            }
            Err(error) => {
                pipes.give_back(pipe); // nothing entered the pipe
                return Err(error);
            }
        };
        let mut in_pipe = filled;
        while in_pipe > 0 {
            // The pipe is dropped (not returned) on error: data may be left in it.
            let sent = pipe::splice(&pipe.rx, stream, in_pipe)
                .flags(libc::SPLICE_F_MORE)
                .await?;
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted nothing",
                ));
            }
            in_pipe -= sent;
            to.moved();
        }
        position += filled as u64;
        left -= filled;
    }
    pipes.give_back(pipe);
    Ok(())
}

fn cannot_splice(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// The copying fallback for one file slice: pread into a page-aligned buffer
/// (on this thread: the data was just in the page cache), then write.
async fn copy_file(to: &Destination<'_>, slice: &FileSlice) -> io::Result<()> {
    use compio::buf::{IoBufMut, SetLen};
    use std::os::unix::fs::FileExt;
    let mut position = slice.position;
    let mut left = slice.len;
    while left > 0 {
        let chunk = left.min(PIPE_BYTES);
        let mut buf = AlignedBuf::with_capacity(chunk);
        slice
            .file
            .read_exact_at(&mut buf.ensure_init()[..chunk], position)?;
        // SAFETY: `ensure_init` initialized all `chunk` bytes of the capacity.
        unsafe { buf.set_len(chunk) };
        write_memory(to, vec![buf.freeze()]).await?;
        position += chunk as u64;
        left -= chunk;
    }
    Ok(())
}
