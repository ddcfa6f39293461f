//! The file-descriptor budget: how the process's descriptors are shared out
//! between client connections, partition logs and everything else, so that no
//! single request can take them all.
//!
//! Every segment of every partition holds up to
//! [`DESCRIPTORS_PER_SEGMENT`] descriptors; every connection one. Without a
//! budget, one CreateTopics of many partitions used the last descriptors, and
//! from then on the broker could accept no connection at all. Kafka's
//! operators raise the limit by hand; Redpanda refuses partitions beyond a
//! per-core budget. Sluice does both: it raises the soft limit to the hard one
//! at start, and refuses CreateTopics / CreatePartitions that would leave too
//! few descriptors for connections, the internal logs and segment rolls.

use crate::storage::segment::{segments_open, DESCRIPTORS_PER_SEGMENT};

/// Descriptors kept for everything that is neither a connection nor a
/// segment, whatever the shard count: standard streams, the data-dir lock,
/// the metrics listener and its connections, temporary files of the cleaner
/// and of durable replaces, start-up reads.
const RESERVED_FIXED: u64 = 64;
/// Per shard: its listener, its io_uring ring and eventfds, its pool of
/// splice pipes (16 pipes, two ends each) and pipes in use beyond the pool.
const RESERVED_PER_SHARD: u64 = 48;
/// The share of the log descriptors that new partitions may not take, so that
/// existing partitions can still roll new segments.
const ROLL_HEADROOM_PERCENT: u64 = 10;
/// Without `--max-connections`, connections may use this share of the limit.
const CONNECTIONS_DEFAULT_PERCENT: u64 = 25;
/// The fewest connections a budget allows, however small the limit.
const CONNECTIONS_MIN: u64 = 16;

/// How the descriptor limit is shared out. Immutable after start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// RLIMIT_NOFILE (the soft limit, after raising it to the hard one).
    pub limit: u64,
    /// Client connections accepted at most; more are closed at once.
    pub connections_max: u64,
    /// Kept for everything else (64, and 48 per shard: see `RESERVED_FIXED`).
    pub reserved: u64,
    /// Descriptors segments may hold in all.
    pub segments_max: u64,
    /// Of those, what new partitions may take (the rest is for rolls).
    pub new_partitions_max: u64,
}

/// `percent` per cent of `n`, rounded down, without overflow (an unlimited
/// RLIMIT_NOFILE is `u64::MAX`).
fn percent_of(n: u64, percent: u64) -> u64 {
    (u128::from(n) * u128::from(percent) / 100) as u64
}

impl DescriptorBudget {
    /// The budget for `limit` descriptors and `shards` shards;
    /// `connections_max` of None takes a quarter of the limit.
    pub fn new(limit: u64, shards: usize, connections_max: Option<u64>) -> DescriptorBudget {
        let connections_max = connections_max
            .unwrap_or(percent_of(limit, CONNECTIONS_DEFAULT_PERCENT))
            .max(CONNECTIONS_MIN);
        let reserved =
            RESERVED_FIXED.saturating_add(RESERVED_PER_SHARD.saturating_mul(shards as u64));
        let segments_max = limit.saturating_sub(connections_max.saturating_add(reserved));
        let new_partitions_max = segments_max - percent_of(segments_max, ROLL_HEADROOM_PERCENT);
        DescriptorBudget {
            limit,
            connections_max,
            reserved,
            segments_max,
            new_partitions_max,
        }
    }

    /// Descriptors the open segments may hold now.
    pub fn segment_descriptors(&self) -> u64 {
        segments_open() * DESCRIPTORS_PER_SEGMENT
    }

    /// Whether `partitions` new partitions (one segment each) fit; if not, a
    /// message that names the limit and what to do.
    pub fn check_new_partitions(&self, partitions: u64) -> Result<(), String> {
        let in_use = self.segment_descriptors();
        let wanted = partitions * DESCRIPTORS_PER_SEGMENT;
        if in_use + wanted <= self.new_partitions_max {
            return Ok(());
        }
        let room = self.new_partitions_max.saturating_sub(in_use) / DESCRIPTORS_PER_SEGMENT;
        Err(format!(
            "not enough file descriptors for {partitions} more partition(s): room for {room}. \
             The open file limit is {} (RLIMIT_NOFILE); {} are kept for connections \
             (--max-connections), {} for the broker itself, and {}% of the rest for segment \
             rolls; the {} segments open may hold {in_use}. Raise the limit (ulimit -n, or \
             LimitNOFILE= in a systemd unit) or delete topics",
            self.limit,
            self.connections_max,
            self.reserved,
            ROLL_HEADROOM_PERCENT,
            segments_open(),
        ))
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as brokers do (the soft
/// limit is often 1024). Returns (before, after); after = before if it could
/// not be raised.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok((soft, hard)),
        Err(error) => {
            tracing::warn!(%error, soft, hard, "cannot raise the open file limit");
            Ok((soft, soft))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_shares_out_the_limit() {
        let budget = DescriptorBudget::new(20_000, 2, None);
        assert_eq!(budget.connections_max, 5_000);
        assert_eq!(budget.reserved, 64 + 2 * 48);
        assert_eq!(budget.segments_max, 20_000 - 5_000 - 160);
        assert_eq!(budget.new_partitions_max, 14_840 - 1_484);
        let explicit = DescriptorBudget::new(1 << 20, 2, Some(10_000));
        assert_eq!(explicit.connections_max, 10_000);
        // A limit too small for anything leaves no room for partitions, never a wrap.
        let tiny = DescriptorBudget::new(100, 4, None);
        assert_eq!((tiny.segments_max, tiny.new_partitions_max), (0, 0));
        assert!(tiny.check_new_partitions(1).is_err());
        // An unlimited limit (RLIM_INFINITY) and a huge --max-connections never overflow.
        let unlimited = DescriptorBudget::new(u64::MAX, 2, None);
        assert_eq!(unlimited.connections_max, u64::MAX / 4);
        assert!(unlimited.new_partitions_max > u64::MAX / 2);
        let huge = DescriptorBudget::new(1 << 20, 2, Some(u64::MAX));
        assert_eq!((huge.segments_max, huge.new_partitions_max), (0, 0));
    }

    #[test]
    fn the_refusal_names_the_limit() {
        let budget = DescriptorBudget::new(1_000, 1, Some(100));
        let message = budget.check_new_partitions(1_000_000).unwrap_err();
        assert!(message.contains("open file limit is 1000"), "{message}");
        assert!(message.contains("--max-connections"), "{message}");
    }
}
