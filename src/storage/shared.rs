//! The state of a log that every shard may read without asking the owning
//! shard: its watermarks and whether it is offline, as atomics, and the event
//! long-polling fetches wait on. Written only by the owning shard's log.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use event_listener::Event;

/// What every shard may know about a partition without asking its owner.
/// Written only by the owning shard.
#[derive(Debug)]
pub struct PartitionShared {
    /// Offset after the last batch whose write completed (readable by consumers).
    high_watermark: AtomicI64,
    /// The offset `read_committed` consumers may read up to: the first offset
    /// of the oldest undecided transaction, or the high watermark.
    last_stable_offset: AtomicI64,
    log_start_offset: AtomicI64,
    /// True when the partition's storage failed (corruption at start-up, an
    /// fsync error): requests get KAFKA_STORAGE_ERROR.
    offline: AtomicBool,
    /// Notified when the high watermark moves, to wake long-polling fetches.
    data_arrived: Event,
}

impl Default for PartitionShared {
    fn default() -> Self {
        PartitionShared {
            high_watermark: AtomicI64::new(0),
            last_stable_offset: AtomicI64::new(0),
            log_start_offset: AtomicI64::new(0),
            offline: AtomicBool::new(false),
            data_arrived: Event::new(),
        }
    }
}

impl PartitionShared {
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }
    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable_offset.load(Ordering::Acquire)
    }
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }
    pub fn set_offline(&self) {
        self.offline.store(true, Ordering::Release);
        self.data_arrived.notify(usize::MAX);
    }
    pub fn set_log_start_offset(&self, offset: i64) {
        self.log_start_offset.store(offset, Ordering::Release);
    }
    /// Publishes the high watermark and the last stable offset (never above
    /// it), and wakes the fetches waiting for data.
    pub fn set_watermarks(&self, high_watermark: i64, last_stable_offset: i64) {
        debug_assert!(last_stable_offset <= high_watermark);
        // The stable offset first: a reader that sees the new high watermark
        // never sees a stable offset from before it moved.
        self.last_stable_offset
            .store(last_stable_offset, Ordering::Release);
        self.high_watermark.store(high_watermark, Ordering::Release);
        self.data_arrived.notify(usize::MAX);
    }
    /// Wakes the fetches and appends waiting on this partition (its
    /// replicated high watermark moved, or its leadership changed).
    pub fn notify(&self) {
        self.data_arrived.notify(usize::MAX);
    }
    /// A listener to await for the next high-watermark move. Register it before
    /// re-checking the watermark, so that no notification is missed.
    pub fn listen(&self) -> event_listener::EventListener {
        self.data_arrived.listen()
    }
}
