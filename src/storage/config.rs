//! What the storage engine needs of a topic's configuration. The metadata
//! layer keeps the whole topic config (every key Kafka clients know, their
//! sources, parsing) and hands each log this part of it
//! (`TopicConfig::log_config`); field names are the Kafka keys'.

use crate::protocol::batch::TimestampType;

/// How a log's old records go (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention deletes closed segments by age and size.
    pub delete: bool,
    /// The cleaner keeps the latest record of each key.
    pub compact: bool,
}

/// A log's configuration. Defaults are Kafka's, except `flush_messages = 1`:
/// Sluice acknowledges only what is on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub cleanup_policy: CleanupPolicy,
    /// Largest batch; also sizes the decompression limit.
    pub max_message_bytes: i32,
    /// LogAppendTime: the broker stamps each batch as it appends it.
    pub message_timestamp_type: TimestampType,
    /// Sync after this many messages; 1 syncs every append before acknowledging.
    pub flush_messages: i64,
    /// Sync at least this often, in milliseconds.
    pub flush_ms: i64,
    pub index_interval_bytes: u32,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    /// A dirty record is cleaned within this long, whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 604_800_000,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy {
                delete: true,
                compact: false,
            },
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            flush_messages: 1,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

impl LogConfig {
    /// Whether an acknowledged append must wait for fdatasync.
    pub fn sync_every_append(&self) -> bool {
        self.flush_messages <= 1
    }
}
