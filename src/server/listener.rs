//! Listening sockets: one per shard, all bound to the same address with
//! SO_REUSEPORT so that the kernel balances accepted connections over shards.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use event_listener::Event;
use futures_util::future::{select, Either};
use socket2::{Domain, Protocol, Socket, Type};

use crate::node::shard::Shard;
use crate::server::{connection, dispatch};

/// Pending connections the kernel may queue per listener.
const LISTEN_BACKLOG: i32 = 1024;
/// The first pause after a failed accept, doubled on each failure in a row.
const ACCEPT_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest pause between accepts while they keep failing.
const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds `count` listeners on `addr`. With port 0 the first gets an ephemeral port
/// and the others bind the same one.
///
/// SO_REUSEPORT lets any process of the same user join the port, and the
/// kernel would then spread new connections over two unrelated brokers. So the
/// port must be free before the shards bind it (a probe without SO_REUSEPORT,
/// which fails while anyone listens there: "Address already in use", as Kafka
/// fails), and afterwards no listening socket on it may belong to anyone else
/// (which catches two brokers starting at the same moment).
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    let ours: Vec<u64> = listeners
        .iter()
        .map(|l| nix::sys::stat::fstat(l.as_raw_fd()).map(|st| st.st_ino))
        .collect::<Result<_, _>>()?;
    if let Some(other) = foreign_listener(bound, &ours)? {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "Address already in use: another process also listens on {other} (SO_REUSEPORT)"
            ),
        ));
    }
    Ok(listeners)
}

/// A listening TCP socket on `addr`'s port whose address overlaps `addr` and
/// whose inode is not in `ours`, from /proc/net/tcp and /proc/net/tcp6.
fn foreign_listener(addr: SocketAddr, ours: &[u64]) -> io::Result<Option<SocketAddr>> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // No IPv6 in this kernel: nothing listens there.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for line in text.lines().skip(1) {
            let Some(entry) = parse_proc_net_tcp_line(line) else {
                continue;
            };
            const TCP_LISTEN: u8 = 0x0A;
            let overlaps = entry.local.port() == addr.port()
                && (entry.local.ip() == addr.ip()
                    || entry.local.ip().is_unspecified()
                    || addr.ip().is_unspecified());
            if entry.state == TCP_LISTEN && overlaps && !ours.contains(&entry.inode) {
                return Ok(Some(entry.local));
            }
        }
    }
    Ok(None)
}

struct ProcNetTcpEntry {
    local: SocketAddr,
    state: u8,
    inode: u64,
}

/// Parses one socket line of /proc/net/tcp{,6}:
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`,
/// addresses as hex words in host byte order, then `:PORT` in hex.
fn parse_proc_net_tcp_line(line: &str) -> Option<ProcNetTcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (address, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match address.len() {
        8 => {
            let word = u32::from_str_radix(address, 16).ok()?;
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(word.to_ne_bytes()))
        }
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(address.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(ProcNetTcpEntry {
        local: SocketAddr::new(ip, port),
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// Counts a shard's open connections so that shutdown can wait for them.
#[derive(Default)]
pub struct ConnectionCount {
    open: Cell<usize>,
    closed: Event,
}

impl ConnectionCount {
    fn enter(self: &Rc<Self>) -> ConnectionGuard {
        self.open.set(self.open.get() + 1);
        ConnectionGuard(self.clone())
    }
    async fn wait_all_closed(&self) {
        while self.open.get() > 0 {
            let listener = self.closed.listen();
            if self.open.get() == 0 {
                break;
            }
            listener.await;
        }
    }
}

struct ConnectionGuard(Rc<ConnectionCount>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.closed.notify(usize::MAX);
    }
}

/// Whether the broker holds `--max-connections` connections already (over
/// all shards; shards may overshoot by one each at the same instant).
fn at_connection_limit(shard: &Shard) -> bool {
    let open: i64 = shard
        .node
        .metrics
        .shards
        .iter()
        .map(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    open >= 0 && open as u64 >= shard.node.descriptors.connections_max
}

/// Counts a connection closed at once for the limit; logs the first and then
/// every doubling, so a storm of them cannot flood the log.
fn refuse(shard: &Shard, peer: SocketAddr) {
    let refused = shard.node.metrics.shards[shard.id]
        .connections_refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if refused.is_power_of_two() {
        tracing::warn!(
            shard = shard.id,
            %peer,
            refused_so_far = refused,
            max_connections = shard.node.descriptors.connections_max,
            "connection closed at once: the broker holds --max-connections connections"
        );
    }
}

/// Accepts connections until shutdown, then waits for every connection of this
/// shard to finish its in-flight requests.
pub async fn serve(shard: Rc<Shard>, listener: std::net::TcpListener) {
    let listener = match compio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(shard = shard.id, %error, "cannot register the listener");
            return;
        }
    };
    let count = Rc::new(ConnectionCount::default());
    let mut accept_failures: u32 = 0;
    loop {
        let accept = std::pin::pin!(listener.accept());
        let stop = std::pin::pin!(shard.node.shutdown.wait());
        match select(accept, stop).await {
            Either::Left((Ok((stream, peer)), _)) => {
                accept_failures = 0;
                if at_connection_limit(&shard) {
                    refuse(&shard, peer);
                    drop(stream);
                    continue;
                }
                let guard = count.enter();
                let shard = shard.clone();
                compio::runtime::spawn(async move {
                    connection::serve(shard, stream, peer, dispatch::handle).await;
                    drop(guard);
                })
                .detach();
            }
            Either::Left((Err(error), _)) => {
                // EMFILE and friends: the connection stays in the kernel's
                // backlog; back off (10 ms doubling to 1 s) instead of spinning,
                // and log the first failure and then every doubling of the run.
                accept_failures = accept_failures.saturating_add(1);
                let delay = ACCEPT_BACKOFF_MIN
                    .saturating_mul(1 << (accept_failures - 1).min(7))
                    .min(ACCEPT_BACKOFF_MAX);
                if accept_failures.is_power_of_two() {
                    tracing::warn!(
                        shard = shard.id,
                        %error,
                        failures_in_a_row = accept_failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "accept failed"
                    );
                }
                let sleep = std::pin::pin!(compio::time::sleep(delay));
                let stop = std::pin::pin!(shard.node.shutdown.wait());
                if let Either::Right(_) = select(sleep, stop).await {
                    break;
                }
            }
            Either::Right(_) => break,
        }
    }
    drop(listener);
    count.wait_all_closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse() {
        // 127.0.0.1:45988 listening, inode 123456 (a little-endian host's view).
        let v4 = "   0: 0100007F:B3A4 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        let entry = parse_proc_net_tcp_line(v4).expect("parses");
        if cfg!(target_endian = "little") {
            assert_eq!(entry.local, "127.0.0.1:45988".parse().unwrap());
        }
        assert_eq!((entry.state, entry.inode), (0x0A, 123_456));
        let v6 = "   1: 00000000000000000000000000000000:2384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0000000000000000 100 0 0 10 0";
        let entry = parse_proc_net_tcp_line(v6).expect("parses");
        assert_eq!(entry.local, "[::]:9092".parse().unwrap());
        assert!(parse_proc_net_tcp_line("  sl  local_address rem_address   st").is_none());
    }

    #[test]
    fn a_second_group_of_listeners_on_a_port_is_refused() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        let error = bind_reuseport(addr, 2).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        // Listeners of another process joining with SO_REUSEPORT (the probe
        // is skipped here by binding directly) are found in /proc/net/tcp.
        let stranger = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        stranger.set_reuse_port(true).unwrap();
        stranger.bind(&addr.into()).unwrap();
        stranger.listen(8).unwrap();
        let ours: Vec<u64> = first
            .iter()
            .map(|l| nix::sys::stat::fstat(l.as_raw_fd()).unwrap().st_ino)
            .collect();
        assert_eq!(foreign_listener(addr, &ours).unwrap(), Some(addr));
        drop(stranger);
        assert_eq!(foreign_listener(addr, &ours).unwrap(), None);
    }
}
