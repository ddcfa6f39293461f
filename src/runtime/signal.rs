//! Signals between the threads of one process, awaited without blocking a
//! shard's runtime: the shutdown signal, and a barrier shards meet at.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_listener::Event;

/// Set once, observed by every accept loop and connection.
#[derive(Default)]
pub struct ShutdownSignal {
    stopping: AtomicBool,
    event: Event,
}

impl ShutdownSignal {
    pub fn trigger(&self) {
        self.stopping.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }
    pub fn is_triggered(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
    /// Completes when shutdown is triggered.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}

/// A barrier that shards await without blocking their runtime, so that they keep
/// serving cross-shard work while they wait.
pub struct AsyncBarrier {
    remaining: AtomicUsize,
    event: Event,
}

impl AsyncBarrier {
    pub fn new(count: usize) -> AsyncBarrier {
        AsyncBarrier {
            remaining: AtomicUsize::new(count),
            event: Event::new(),
        }
    }
    pub async fn wait(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.event.notify(usize::MAX);
            return;
        }
        loop {
            let listener = self.event.listen();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            listener.await;
        }
    }
}
