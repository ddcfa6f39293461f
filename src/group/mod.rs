//! Consumer groups: the classic rebalance protocol and committed offsets.
//!
//! Each group lives on one shard of one broker, its *coordinator*: the broker
//! that leads the group's partition of the internal offsets log
//! (`__sluice_offsets`, [`offsets::OFFSETS_PARTITIONS`] partitions, partition
//! = hash(group id)), on the shard that owns that partition. As in Kafka, the
//! mapping depends on the group id only, so it survives a change of `--cores`
//! and moves with the partition's leadership.
//!
//! - `state.rs`: the state machine of one group (pure, no I/O, time passed in).
//! - `offsets.rs`: committed offsets, kept in memory and appended to the offsets
//!   log before a commit is acknowledged; rebuilt from the log when the
//!   broker takes the lead of a partition of it.
//! - `coordinator.rs`: one per shard; owns the groups of that shard, parks
//!   JoinGroup/SyncGroup requests until the state machine answers them, and
//!   runs the timers (session expiry, rebalance deadlines, offset expiry).

pub mod coordinator;
pub mod offsets;
pub mod state;
pub mod txn_offsets;

use crate::runtime::shard_for_partition;

/// The shard that coordinates `group_id`.
pub fn coordinator_shard(group_id: &str, shard_count: usize) -> usize {
    shard_for_partition(
        offsets::OFFSETS_TOPIC,
        offsets::offsets_partition(group_id),
        shard_count,
    )
}
