//! A TCP proxy for fault injection: forwards connections to a target until
//! cut (open connections are closed, new ones refused at once), then again
//! once healed. Put on one link between brokers, it lets a test partition the
//! network on loopback.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

struct State {
    cut: AtomicBool,
    stopped: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// A proxy's port, bound before its target is known (so that ports picked
/// for the brokers afterwards cannot be this one).
pub struct Bound {
    listener: TcpListener,
}

impl Bound {
    pub fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Starts forwarding what arrives to `target`.
    pub fn forward_to(self, target: String) -> Proxy {
        Proxy::start_on(self.listener, target)
    }
}

impl Proxy {
    /// Binds a free loopback port for a proxy.
    pub fn bind() -> Bound {
        Bound {
            listener: TcpListener::bind("127.0.0.1:0").expect("proxy binds"),
        }
    }

    /// A proxy on a free loopback port forwarding to `target`.
    pub fn start(target: String) -> Proxy {
        Proxy::bind().forward_to(target)
    }

    fn start_on(listener: TcpListener, target: String) -> Proxy {
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accepting = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) =
                    TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(2))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    // Registered under the lock `cut` takes: a connection
                    // made while the link was being cut goes at once.
                    let mut open = accepting.open.lock().unwrap();
                    if accepting.cut.load(Ordering::Acquire) {
                        continue;
                    }
                    let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    open.push(c);
                    open.push(s);
                }
                let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                pump(c, s);
                pump(server, client);
            }
        });
        Proxy { port, state }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        let mut open = self.state.open.lock().unwrap();
        self.state.cut.store(true, Ordering::Release);
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        self.cut();
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either ends, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
