//! The generic thread-per-core pieces, nothing Kafka-specific: one pinned
//! thread per core (a shard), each running its own compio runtime (io_uring, or
//! the polling driver where io_uring is unavailable).
//!
//! A partition is owned by exactly one shard ([`shard_for_partition`]), and only
//! that shard touches its log. Work for a partition owned elsewhere travels as a
//! closure over a bounded cross-shard queue ([`queue`]) and its result comes
//! back on a oneshot channel. Shard state is `Rc`, never shared; what shards do
//! share is read without locks (the node's metadata image, atomics).
//!
//! - `queue.rs`: the cross-shard queue, generic over the receiving shard's state.
//! - `budget.rs`: byte budgets that make readers wait (request bytes in flight).
//! - `signal.rs`: the shutdown signal and the barrier shards meet at.
//! - `descriptors.rs`: how the open file limit is shared out.

pub mod budget;
pub mod descriptors;
pub mod queue;
pub mod signal;

/// The shard that owns `topic`'s `partition`: a stable hash of the topic name
/// plus the partition number, so a topic's partitions spread round-robin over
/// the shards.
pub fn shard_for_partition(topic: &str, partition: i32, shard_count: usize) -> usize {
    let hash = crc32c::crc32c(topic.as_bytes()) as usize;
    hash.wrapping_add(partition.max(0) as usize) % shard_count.max(1)
}

/// The shard that runs the metadata controller and owns the metadata log.
pub const CONTROLLER_SHARD: usize = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_over_shards() {
        let shards: Vec<usize> = (0..8)
            .map(|p| shard_for_partition("orders", p, 4))
            .collect();
        for s in 0..4 {
            assert_eq!(shards.iter().filter(|&&x| x == s).count(), 2);
        }
        assert_eq!(
            shard_for_partition("orders", 3, 4),
            shard_for_partition("orders", 3, 4)
        );
        assert_eq!(shard_for_partition("x", 5, 1), 0);
    }
}
