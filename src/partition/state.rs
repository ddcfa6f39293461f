//! What every shard may read of a partition's Kafka state without asking the
//! shard that owns it: its log's watermarks (kept by the storage engine) and
//! the Kafka facts layered on them. The metadata image holds one per
//! partition; the owning shard's [`super::local::Partition`] writes it.
//!
//! On one node the high watermark is the log end offset: every completed
//! write is in the in-sync replica set of one. Replication (issue 15) makes
//! them differ, and the last stable offset (transactions, issue 14) joins them
//! here.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crate::storage::shared::PartitionShared;

/// A partition's state as every shard sees it.
#[derive(Debug, Default)]
pub struct PartitionState {
    /// The log's watermarks, offline flag and "data arrived" event.
    log: Arc<PartitionShared>,
    /// The leader epoch (KIP-101, KIP-320): bumped at each leader change; 0
    /// on a single node, where leadership never moves.
    leader_epoch: AtomicI32,
}

impl PartitionState {
    /// The storage engine's part, for the log of this partition.
    pub fn log_state(&self) -> Arc<PartitionShared> {
        self.log.clone()
    }

    /// The offset after the last batch whose write completed.
    pub fn log_end_offset(&self) -> i64 {
        self.log.high_watermark()
    }

    /// The offset consumers may read up to. On one node: the log end offset.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
    }

    /// The offset read_committed consumers may read up to: the first offset
    /// of the oldest transaction not yet decided, or the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.log.last_stable_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Whether the partition's storage failed: requests get KAFKA_STORAGE_ERROR.
    pub fn is_offline(&self) -> bool {
        self.log.is_offline()
    }

    pub fn set_offline(&self) {
        self.log.set_offline();
    }

    /// A listener for the next high-watermark move (register it, then
    /// re-check the watermark, so that no move is missed).
    pub fn listen(&self) -> event_listener::EventListener {
        self.log.listen()
    }
}
