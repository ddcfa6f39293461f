//! Listening sockets: one per shard, all bound to the same address with
//! SO_REUSEPORT so that the kernel balances accepted connections over shards.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use event_listener::Event;
use futures_util::future::{select, Either};
use socket2::{Domain, Protocol, Socket, Type};

use crate::runtime::Shard;
use crate::server::connection;

/// Pending connections the kernel may queue per listener.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds `count` listeners on `addr`. With port 0 the first gets an ephemeral port
/// and the others bind the same one.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
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
    Ok(listeners)
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
    loop {
        let accept = std::pin::pin!(listener.accept());
        let stop = std::pin::pin!(shard.broker.shutdown.wait());
        match select(accept, stop).await {
            Either::Left((Ok((stream, peer)), _)) => {
                let guard = count.enter();
                let shard = shard.clone();
                compio::runtime::spawn(async move {
                    connection::serve(shard, stream, peer).await;
                    drop(guard);
                })
                .detach();
            }
            Either::Left((Err(error), _)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, %error, "accept failed");
                compio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Either::Right(_) => break,
        }
    }
    drop(listener);
    count.wait_all_closed().await;
}
