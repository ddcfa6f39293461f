//! What every shard may read of a partition's Kafka state without asking the
//! shard that owns it: its log's watermarks (kept by the storage engine) and
//! the Kafka facts layered on them. The metadata image holds one per
//! partition; the owning shard's [`super::local::Partition`] writes it.
//!
//! A partition with one replica has its high watermark at its log end
//! offset: every completed write is in the in-sync replica set of one. A
//! replicated partition's high watermark is kept by its leader (the lowest
//! log end offset of the in-sync replicas) and, on a follower, is the
//! leader's as last fetched; consumers never read past it, and the last
//! stable offset is never above it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use crate::storage::shared::PartitionShared;

/// Identifies a partition on its shard: the topic id (so that a topic deleted and
/// re-created under the same name is a different log) and the partition number.
pub type PartitionKey = (uuid::Uuid, i32);

/// A partition's state as every shard sees it.
#[derive(Debug, Default)]
pub struct PartitionState {
    /// The log's watermarks, offline flag and "data arrived" event.
    log: Arc<PartitionShared>,
    /// The leader epoch (KIP-101, KIP-320) this broker knows the partition
    /// in: bumped at each leader change.
    leader_epoch: AtomicI32,
    /// Whether the high watermark is kept apart from the log end offset
    /// (the partition has more than one replica).
    replicated: AtomicBool,
    /// A replicated partition's high watermark.
    replicated_high_watermark: AtomicI64,
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

    /// The offset consumers may read up to: the log end offset with one
    /// replica, else what the in-sync replicas all have (never above this
    /// replica's own end).
    pub fn high_watermark(&self) -> i64 {
        let end = self.log_end_offset();
        if self.replicated.load(Ordering::Acquire) {
            self.replicated_high_watermark
                .load(Ordering::Acquire)
                .min(end)
        } else {
            end
        }
    }

    /// The offset read_committed consumers may read up to: the first offset
    /// of the oldest transaction not yet decided, or the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.log.last_stable_offset().min(self.high_watermark())
    }

    /// Whether the high watermark is kept apart from the log end offset.
    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// Keeps the high watermark apart from the log end offset (more than
    /// one replica), starting from `high_watermark`; or not.
    pub(super) fn set_replicated(&self, replicated: bool, high_watermark: i64) {
        self.replicated_high_watermark
            .store(high_watermark, Ordering::Release);
        self.replicated.store(replicated, Ordering::Release);
        self.log.notify();
    }

    /// Moves a replicated partition's high watermark to `offset` (only
    /// forward, except `force`: a follower takes its leader's) and wakes
    /// the fetches waiting for data. Returns whether it moved.
    pub(super) fn advance_high_watermark(&self, offset: i64, force: bool) -> bool {
        let old = self.replicated_high_watermark.load(Ordering::Acquire);
        if offset == old || (offset < old && !force) {
            return false;
        }
        self.replicated_high_watermark
            .store(offset, Ordering::Release);
        self.log.notify();
        true
    }

    /// The high watermark as last stored (a replicated partition's; the
    /// log end offset is not applied).
    pub(super) fn stored_high_watermark(&self) -> i64 {
        self.replicated_high_watermark.load(Ordering::Acquire)
    }

    pub(super) fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// Wakes whoever waits on the partition (a change of role).
    pub(super) fn notify(&self) {
        self.log.notify();
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
