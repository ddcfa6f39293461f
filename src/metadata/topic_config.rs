//! Topic configs: the keys Kafka clients know, their defaults, parsing and validation.
//!
//! One table (`CONFIG_DEFS`) drives parsing, DescribeConfigs and the help text, so a key
//! is added in exactly one place.

use std::collections::BTreeMap;

pub use crate::protocol::batch::TimestampType;
pub use crate::storage::config::CleanupPolicy;
use crate::storage::config::LogConfig;

/// The effective configuration of one topic (broker defaults overlaid by topic overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub cleanup_policy: CleanupPolicy,
    pub max_message_bytes: i32,
    pub message_timestamp_type: TimestampType,
    pub min_insync_replicas: i32,
    /// When every in-sync replica of a partition is gone, a replica out of
    /// sync may lead (losing what it lacks) rather than none.
    pub unclean_leader_election: bool,
    /// Sync after this many messages; 1 (the default) syncs every append before acknowledging.
    pub flush_messages: i64,
    /// Sync at least this often, in milliseconds.
    pub flush_ms: i64,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub compression_type: String,
    pub index_interval_bytes: u32,
    /// A CreateTime batch older than this (relative to the broker clock) is refused.
    pub message_timestamp_before_max_ms: i64,
    /// A CreateTime batch further in the future than this is refused.
    pub message_timestamp_after_max_ms: i64,
    /// Deprecated in Kafka 3.6 (KIP-937): stands in for the two above where
    /// they are left at their default (Kafka's `LogConfig` does the same).
    pub message_timestamp_difference_max_ms: i64,
    /// Deprecated, ignored: the record format is always v2 (Kafka ignores it
    /// from 3.0 and removed it in 4.0); kept so that tools written for Kafka 3
    /// can set it and read it back.
    pub message_format_version: String,
    /// Deprecated, ignored: Sluice never converts batches down to v0/v1.
    pub message_downconversion_enable: bool,
    /// KIP-354: a dirty record waits at most this long for compaction.
    pub max_compaction_lag_ms: i64,
    /// Kafka configs accepted, validated and reported, that change nothing
    /// here (see [`ACCEPTED_ONLY`]): key -> value as set.
    pub accepted: BTreeMap<&'static str, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {message}")]
pub struct TopicConfigError {
    pub key: String,
    pub message: String,
}

/// A config's type as DescribeConfigs v3+ reports it (Kafka's ConfigType codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One known topic config key.
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigKind,
    pub default: &'static str,
    /// Parses `value` into `config`, or says why it is invalid.
    apply: fn(&mut TopicConfig, &str) -> Result<(), String>,
    /// The current value of `config` as Kafka prints it.
    show: fn(&TopicConfig) -> String,
}

fn parse_i64(value: &str, min: i64) -> Result<i64, String> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not an integer"))?;
    if n < min {
        return Err(format!("{n} is below the minimum {min}"));
    }
    Ok(n)
}

fn parse_i32(value: &str, min: i32) -> Result<i32, String> {
    let n = parse_i64(value, i64::from(min))?;
    i32::try_from(n).map_err(|_| format!("{n} does not fit in 32 bits"))
}

/// Smallest segment we accept: a few batches. Kafka 4 requires 1 MiB; tests of
/// segment rolling want smaller, so we allow down to 1 KiB.
pub const SEGMENT_BYTES_MIN: i64 = 1024;
/// Offset and time index entries store 32-bit positions, so a segment stays below 2 GiB.
pub const SEGMENT_BYTES_MAX: i64 = i32::MAX as i64;

/// Kafka topic configs that Sluice accepts, checks and reports (so that tools
/// and clients written for Kafka can set them) but that change nothing here:
/// replication throttles, preallocation,
/// index sizing (indexes are in memory), the delay before deleting a file
/// (files being read stay readable anyway), roll jitter, tiered-storage
/// retention (tiered storage itself is refused).
pub const ACCEPTED_ONLY: &[&str] = &[
    "file.delete.delay.ms",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "preallocate",
    "remote.storage.enable",
    "segment.index.bytes",
    "segment.jitter.ms",
];

/// A [`ConfigDef`] for a key of [`ACCEPTED_ONLY`]: `check` validates a value,
/// which is then kept as given in `TopicConfig::accepted`.
macro_rules! accepted_only {
    ($name:literal, $kind:ident, $default:literal, $check:expr) => {
        ConfigDef {
            name: $name,
            kind: ConfigKind::$kind,
            default: $default,
            apply: |c, v| {
                let check: fn(&str) -> Result<(), String> = $check;
                check(v.trim())?;
                c.accepted.insert($name, v.trim().to_string());
                Ok(())
            },
            show: |c| {
                c.accepted
                    .get($name)
                    .cloned()
                    .unwrap_or_else(|| $default.to_string())
            },
        }
    };
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{value}` is not true or false")),
    }
}

/// `*`, empty, or `partition:broker` pairs separated by commas (Kafka's
/// throttled-replicas lists).
fn check_replica_list(value: &str) -> Result<(), String> {
    if value.is_empty() || value == "*" {
        return Ok(());
    }
    for pair in value.split(',') {
        let valid = pair.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<i32>().is_ok() && b.trim().parse::<i32>().is_ok()
        });
        if !valid {
            return Err(format!("`{pair}` is not partition:broker"));
        }
    }
    Ok(())
}

pub static CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        kind: ConfigKind::List,
        default: "delete",
        apply: |c, v| {
            let mut policy = CleanupPolicy {
                delete: false,
                compact: false,
            };
            for part in v.split(',').map(str::trim) {
                match part {
                    "delete" => policy.delete = true,
                    "compact" => policy.compact = true,
                    other => return Err(format!("`{other}` is not delete or compact")),
                }
            }
            c.cleanup_policy = policy;
            Ok(())
        },
        show: |c| match (c.cleanup_policy.compact, c.cleanup_policy.delete) {
            (true, true) => "compact,delete".into(),
            (true, false) => "compact".into(),
            _ => "delete".into(),
        },
    },
    ConfigDef {
        name: "compression.type",
        kind: ConfigKind::String,
        default: "producer",
        apply: |c, v| match v {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => {
                c.compression_type = v.to_string();
                Ok(())
            }
            _ => Err(format!("`{v}` is not a known compression type")),
        },
        show: |c| c.compression_type.clone(),
    },
    ConfigDef {
        name: "delete.retention.ms",
        kind: ConfigKind::Long,
        default: "86400000",
        apply: |c, v| {
            c.delete_retention_ms = parse_i64(v, 0)?;
            Ok(())
        },
        show: |c| c.delete_retention_ms.to_string(),
    },
    ConfigDef {
        name: "flush.messages",
        kind: ConfigKind::Long,
        default: "1",
        apply: |c, v| {
            c.flush_messages = parse_i64(v, 1)?;
            Ok(())
        },
        show: |c| c.flush_messages.to_string(),
    },
    ConfigDef {
        name: "flush.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        apply: |c, v| {
            c.flush_ms = parse_i64(v, 0)?;
            Ok(())
        },
        show: |c| c.flush_ms.to_string(),
    },
    ConfigDef {
        name: "index.interval.bytes",
        kind: ConfigKind::Int,
        default: "4096",
        apply: |c, v| {
            c.index_interval_bytes = parse_i32(v, 0)? as u32;
            Ok(())
        },
        show: |c| c.index_interval_bytes.to_string(),
    },
    ConfigDef {
        name: "max.message.bytes",
        kind: ConfigKind::Int,
        default: "1048588",
        apply: |c, v| {
            c.max_message_bytes = parse_i32(v, 0)?;
            Ok(())
        },
        show: |c| c.max_message_bytes.to_string(),
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        apply: |c, v| {
            c.message_timestamp_after_max_ms = parse_i64(v, 0)?;
            Ok(())
        },
        show: |c| c.message_timestamp_after_max_ms.to_string(),
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        apply: |c, v| {
            c.message_timestamp_before_max_ms = parse_i64(v, 0)?;
            Ok(())
        },
        show: |c| c.message_timestamp_before_max_ms.to_string(),
    },
    ConfigDef {
        name: "message.timestamp.difference.max.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        apply: |c, v| {
            c.message_timestamp_difference_max_ms = parse_i64(v, 0)?;
            Ok(())
        },
        show: |c| c.message_timestamp_difference_max_ms.to_string(),
    },
    ConfigDef {
        name: "message.downconversion.enable",
        kind: ConfigKind::Boolean,
        default: "true",
        apply: |c, v| {
            c.message_downconversion_enable = parse_bool(v)?;
            Ok(())
        },
        show: |c| c.message_downconversion_enable.to_string(),
    },
    ConfigDef {
        name: "message.format.version",
        kind: ConfigKind::String,
        default: "3.0-IV1",
        apply: |c, v| {
            check_kafka_version(v.trim())?;
            c.message_format_version = v.trim().to_string();
            Ok(())
        },
        show: |c| c.message_format_version.clone(),
    },
    ConfigDef {
        name: "message.timestamp.type",
        kind: ConfigKind::String,
        default: "CreateTime",
        apply: |c, v| {
            c.message_timestamp_type = match v {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err(format!("`{v}` is not CreateTime or LogAppendTime")),
            };
            Ok(())
        },
        show: |c| match c.message_timestamp_type {
            TimestampType::CreateTime => "CreateTime".into(),
            TimestampType::LogAppendTime => "LogAppendTime".into(),
        },
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        apply: |c, v| {
            c.max_compaction_lag_ms = parse_i64(v, 1)?;
            Ok(())
        },
        show: |c| c.max_compaction_lag_ms.to_string(),
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigKind::Double,
        default: "0.5",
        apply: |c, v| {
            let ratio: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{v}` is not a number"))?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!("{ratio} is not between 0 and 1"));
            }
            c.min_cleanable_dirty_ratio = ratio;
            Ok(())
        },
        show: |c| c.min_cleanable_dirty_ratio.to_string(),
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        kind: ConfigKind::Long,
        default: "0",
        apply: |c, v| {
            c.min_compaction_lag_ms = parse_i64(v, 0)?;
            Ok(())
        },
        show: |c| c.min_compaction_lag_ms.to_string(),
    },
    ConfigDef {
        name: "min.insync.replicas",
        kind: ConfigKind::Int,
        default: "1",
        apply: |c, v| {
            c.min_insync_replicas = parse_i32(v, 1)?;
            Ok(())
        },
        show: |c| c.min_insync_replicas.to_string(),
    },
    ConfigDef {
        name: "retention.bytes",
        kind: ConfigKind::Long,
        default: "-1",
        apply: |c, v| {
            c.retention_bytes = parse_i64(v, -1)?;
            Ok(())
        },
        show: |c| c.retention_bytes.to_string(),
    },
    ConfigDef {
        name: "retention.ms",
        kind: ConfigKind::Long,
        default: "604800000",
        apply: |c, v| {
            c.retention_ms = parse_i64(v, -1)?;
            Ok(())
        },
        show: |c| c.retention_ms.to_string(),
    },
    ConfigDef {
        name: "segment.bytes",
        kind: ConfigKind::Int,
        default: "1073741824",
        apply: |c, v| {
            let n = parse_i64(v, SEGMENT_BYTES_MIN)?;
            if n > SEGMENT_BYTES_MAX {
                return Err(format!("{n} is above the maximum {SEGMENT_BYTES_MAX}"));
            }
            c.segment_bytes = n as u64;
            Ok(())
        },
        show: |c| c.segment_bytes.to_string(),
    },
    ConfigDef {
        name: "segment.ms",
        kind: ConfigKind::Long,
        default: "604800000",
        apply: |c, v| {
            c.segment_ms = parse_i64(v, 1)?;
            Ok(())
        },
        show: |c| c.segment_ms.to_string(),
    },
    accepted_only!("file.delete.delay.ms", Long, "60000", |v| parse_i64(v, 0)
        .map(drop)),
    accepted_only!(
        "follower.replication.throttled.replicas",
        List,
        "",
        check_replica_list
    ),
    accepted_only!(
        "leader.replication.throttled.replicas",
        List,
        "",
        check_replica_list
    ),
    accepted_only!("local.retention.bytes", Long, "-2", |v| parse_i64(v, -2)
        .map(drop)),
    accepted_only!("local.retention.ms", Long, "-2", |v| parse_i64(v, -2)
        .map(drop)),
    accepted_only!("preallocate", Boolean, "false", |v| parse_bool(v).map(drop)),
    accepted_only!(
        "remote.storage.enable",
        Boolean,
        "false",
        |v| match parse_bool(v)? {
            false => Ok(()),
            true => Err("tiered storage (KIP-405) is not supported".to_string()),
        }
    ),
    accepted_only!("segment.index.bytes", Int, "10485760", |v| parse_i32(v, 4)
        .map(drop)),
    accepted_only!("segment.jitter.ms", Long, "0", |v| parse_i64(v, 0)
        .map(drop)),
    ConfigDef {
        name: "unclean.leader.election.enable",
        kind: ConfigKind::Boolean,
        default: "false",
        apply: |c, v| {
            c.unclean_leader_election = parse_bool(v)?;
            Ok(())
        },
        show: |c| c.unclean_leader_election.to_string(),
    },
];

/// Checks a Kafka version string as `message.format.version` takes it
/// (Kafka's `MetadataVersion.fromVersionString`): 0.8.0 to 0.11.0, 1.0 to
/// 3.9, optionally with an `-IVn` suffix or further numbers
/// (`0.10.0.0`, `2.8-IV1`, `3.0`).
fn check_kafka_version(version: &str) -> Result<(), String> {
    let refuse = || format!("`{version}` is not a valid Kafka version");
    let release = version.split_once("-IV").map_or(version, |(release, iv)| {
        if iv.is_empty() || !iv.bytes().all(|b| b.is_ascii_digit()) {
            ""
        } else {
            release
        }
    });
    let parts: Vec<u32> = release
        .split('.')
        .map(|p| p.parse().map_err(|_| refuse()))
        .collect::<Result<_, _>>()?;
    let known = match parts.as_slice() {
        [0, minor, _, ..] => (8..=11).contains(minor),
        [1, minor, ..] => *minor <= 1,
        [2, minor, ..] => *minor <= 8,
        [3, minor, ..] => *minor <= 9,
        _ => false,
    };
    if known {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// Why a deprecated config is accepted although Sluice does not use it as
/// Kafka 3 did; logged when an operator or client sets it.
pub fn deprecation_note(name: &str) -> Option<&'static str> {
    match name {
        "message.format.version" => Some(
            "deprecated and ignored: the record format is always v2 (Kafka ignores it from 3.0 and removed it in 4.0)",
        ),
        "message.downconversion.enable" => Some(
            "deprecated and ignored: batches are never converted down to message format v0/v1 (removed in Kafka 4.0)",
        ),
        "message.timestamp.difference.max.ms" => Some(
            "deprecated: used as message.timestamp.before.max.ms and message.timestamp.after.max.ms where those are not set (KIP-937; removed in Kafka 4.0)",
        ),
        _ => None,
    }
}

/// IncrementalAlterConfigs' operations on a config (KIP-339).
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
pub const OP_APPEND: i8 = 2;
pub const OP_SUBTRACT: i8 = 3;

/// One IncrementalAlterConfigs change: (name, operation, value).
pub type ConfigOp = (String, i8, Option<String>);

/// A topic's overrides after IncrementalAlterConfigs' `ops`, applied in
/// order to `overrides` (its effective config `effective` gives a list's
/// current items when it has no override). Only `cleanup.policy` is a list
/// (APPEND, SUBTRACT). The new overrides are validated by the caller.
pub fn incremental_overrides(
    overrides: &BTreeMap<String, String>,
    effective: &TopicConfig,
    ops: &[ConfigOp],
) -> Result<BTreeMap<String, String>, String> {
    let mut configs = overrides.clone();
    for (key, op, value) in ops {
        let value = value.clone().unwrap_or_default();
        match *op {
            OP_SET => {
                configs.insert(key.clone(), value);
            }
            OP_DELETE => {
                configs.remove(key);
            }
            OP_APPEND | OP_SUBTRACT if key == "cleanup.policy" => {
                let current = configs.get(key).cloned().unwrap_or_else(|| {
                    effective.show(config_def("cleanup.policy").expect("known config"))
                });
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if *op == OP_APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                configs.insert(key.clone(), items.join(","));
            }
            OP_APPEND | OP_SUBTRACT => return Err(format!("{key} is not a list config")),
            other => return Err(format!("unknown config operation {other}")),
        }
    }
    Ok(configs)
}

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIG_DEFS.iter().find(|d| d.name == name)
}

impl Default for TopicConfig {
    /// Kafka's defaults, except `flush.messages=1`: Sluice acknowledges only what is on disk.
    fn default() -> Self {
        let mut config = TopicConfig {
            retention_ms: 0,
            retention_bytes: 0,
            segment_bytes: 0,
            segment_ms: 0,
            cleanup_policy: CleanupPolicy {
                delete: true,
                compact: false,
            },
            max_message_bytes: 0,
            message_timestamp_type: TimestampType::CreateTime,
            min_insync_replicas: 0,
            unclean_leader_election: false,
            flush_messages: 0,
            flush_ms: 0,
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.0,
            compression_type: String::new(),
            index_interval_bytes: 0,
            message_timestamp_before_max_ms: 0,
            message_timestamp_after_max_ms: 0,
            message_timestamp_difference_max_ms: 0,
            message_format_version: String::new(),
            message_downconversion_enable: true,
            max_compaction_lag_ms: 0,
            accepted: BTreeMap::new(),
        };
        for def in CONFIG_DEFS {
            (def.apply)(&mut config, def.default).expect("built-in default parses");
        }
        config
    }
}

impl TopicConfig {
    /// This config with `overrides` applied; fails on an unknown key or invalid value.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, TopicConfigError> {
        let mut config = self.clone();
        for (key, value) in overrides {
            let def = config_def(key).ok_or_else(|| TopicConfigError {
                key: key.clone(),
                message: "unknown topic config".to_string(),
            })?;
            (def.apply)(&mut config, value).map_err(|message| TopicConfigError {
                key: key.clone(),
                message,
            })?;
        }
        Ok(config)
    }

    /// The value of `name` as Kafka prints it.
    pub fn show(&self, def: &ConfigDef) -> String {
        (def.show)(self)
    }

    /// `message.timestamp.before.max.ms`, or the deprecated
    /// `message.timestamp.difference.max.ms` when it is left at its default.
    pub fn timestamp_before_max_ms(&self) -> i64 {
        if self.message_timestamp_before_max_ms != i64::MAX {
            self.message_timestamp_before_max_ms
        } else {
            self.message_timestamp_difference_max_ms
        }
    }

    /// `message.timestamp.after.max.ms`, likewise.
    pub fn timestamp_after_max_ms(&self) -> i64 {
        if self.message_timestamp_after_max_ms != i64::MAX {
            self.message_timestamp_after_max_ms
        } else {
            self.message_timestamp_difference_max_ms
        }
    }

    /// Whether a CreateTime topic bounds its records' timestamps at all (the
    /// default bounds are infinite, and need no record looked at).
    pub fn has_timestamp_bounds(&self) -> bool {
        self.message_timestamp_type == TimestampType::CreateTime
            && (self.timestamp_before_max_ms() != i64::MAX
                || self.timestamp_after_max_ms() != i64::MAX)
    }

    /// The CreateTime timestamps accepted at `now_ms`, `[low, high]`; None on
    /// a LogAppendTime topic (the broker stamps its batches).
    pub fn create_time_range(&self, now_ms: i64) -> Option<(i64, i64)> {
        match self.message_timestamp_type {
            TimestampType::LogAppendTime => None,
            TimestampType::CreateTime => Some((
                now_ms.saturating_sub(self.timestamp_before_max_ms()),
                now_ms.saturating_add(self.timestamp_after_max_ms()),
            )),
        }
    }

    /// Checks a batch's timestamps against the broker clock (CreateTime topics
    /// only; LogAppendTime overwrites them). Kafka's rule: -1 means "no
    /// timestamp", any other negative value is invalid.
    pub fn check_timestamps(
        &self,
        min_timestamp_ms: i64,
        max_timestamp_ms: i64,
        now_ms: i64,
    ) -> Result<(), String> {
        if min_timestamp_ms < -1 || max_timestamp_ms < -1 {
            return Err(format!("negative timestamp {min_timestamp_ms}"));
        }
        if self.message_timestamp_type == TimestampType::LogAppendTime || max_timestamp_ms == -1 {
            return Ok(());
        }
        let before = self.timestamp_before_max_ms();
        let after = self.timestamp_after_max_ms();
        if min_timestamp_ms >= 0 && now_ms.saturating_sub(min_timestamp_ms) > before {
            return Err(format!(
                "timestamp {min_timestamp_ms} is more than message.timestamp.before.max.ms ({before}) in the past"
            ));
        }
        if max_timestamp_ms.saturating_sub(now_ms) > after {
            return Err(format!(
                "timestamp {max_timestamp_ms} is more than message.timestamp.after.max.ms ({after}) in the future"
            ));
        }
        Ok(())
    }

    /// Whether an acknowledged append must wait for fdatasync.
    pub fn sync_every_append(&self) -> bool {
        self.flush_messages <= 1
    }

    /// The part of this config the storage engine uses.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            cleanup_policy: self.cleanup_policy,
            max_message_bytes: self.max_message_bytes,
            message_timestamp_type: self.message_timestamp_type,
            flush_messages: self.flush_messages,
            flush_ms: self.flush_ms,
            index_interval_bytes: self.index_interval_bytes,
            delete_retention_ms: self.delete_retention_ms,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
            max_compaction_lag_ms: self.max_compaction_lag_ms,
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = TopicConfig::default();
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: false
            }
        );
        assert!(c.sync_every_append());
    }

    #[test]
    fn overrides_validate() {
        let base = TopicConfig::default();
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        o.insert("segment.bytes".to_string(), "4096".to_string());
        let c = base.with_overrides(&o).unwrap();
        assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
        assert_eq!(c.segment_bytes, 4096);
        o.insert("segment.bytes".to_string(), "10".to_string());
        assert_eq!(base.with_overrides(&o).unwrap_err().key, "segment.bytes");
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "shred".to_string());
        assert!(base.with_overrides(&o).is_err());
    }

    #[test]
    fn timestamp_bounds() {
        let mut c = TopicConfig::default();
        assert!(c.check_timestamps(0, 10, 1_000).is_ok());
        assert!(c.check_timestamps(-1, -1, 1_000).is_ok(), "no timestamp");
        assert!(c.check_timestamps(-5, 10, 1_000).is_err(), "negative");
        c.message_timestamp_before_max_ms = 100;
        c.message_timestamp_after_max_ms = 50;
        assert!(c.check_timestamps(850, 1_000, 1_000).is_err(), "too old");
        assert!(c.check_timestamps(900, 1_050, 1_000).is_ok());
        assert!(
            c.check_timestamps(950, 1_051, 1_000).is_err(),
            "too far ahead"
        );
        c.message_timestamp_type = TimestampType::LogAppendTime;
        assert!(
            c.check_timestamps(0, 5_000, 1_000).is_ok(),
            "the broker stamps these"
        );
    }

    #[test]
    fn deprecated_configs_are_accepted_and_the_difference_stands_in() {
        let base = TopicConfig::default();
        assert_eq!(base.message_format_version, "3.0-IV1");
        let mut o = BTreeMap::new();
        for good in [
            "0.10.0.0", "0.10.0", "0.8.2", "2.8-IV1", "3.0", "3.9-IV0", "1.1",
        ] {
            o.insert("message.format.version".to_string(), good.to_string());
            let c = base
                .with_overrides(&o)
                .unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(c.message_format_version, good);
        }
        for bad in [
            "", "banana", "0.7.0", "4.0", "3.10", "3.0-IV", "3.0-IVx", "0.10",
        ] {
            o.insert("message.format.version".to_string(), bad.to_string());
            assert!(base.with_overrides(&o).is_err(), "{bad:?} accepted");
        }
        let mut o = BTreeMap::new();
        o.insert(
            "message.downconversion.enable".to_string(),
            "false".to_string(),
        );
        assert!(
            !base
                .with_overrides(&o)
                .unwrap()
                .message_downconversion_enable
        );
        o.insert(
            "message.downconversion.enable".to_string(),
            "no".to_string(),
        );
        assert!(base.with_overrides(&o).is_err());
        // The deprecated difference applies where before/after are unset.
        let mut o = BTreeMap::new();
        o.insert(
            "message.timestamp.difference.max.ms".to_string(),
            "100".to_string(),
        );
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(
            (c.timestamp_before_max_ms(), c.timestamp_after_max_ms()),
            (100, 100)
        );
        assert!(c.check_timestamps(850, 1_000, 1_000).is_err(), "too old");
        assert_eq!(c.create_time_range(1_000), Some((900, 1_100)));
        o.insert(
            "message.timestamp.after.max.ms".to_string(),
            "5".to_string(),
        );
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(
            (c.timestamp_before_max_ms(), c.timestamp_after_max_ms()),
            (100, 5)
        );
        assert!(c.has_timestamp_bounds(), "the difference bounds both sides");
        assert!(
            !base.has_timestamp_bounds(),
            "Kafka's defaults bound nothing"
        );
        assert!(deprecation_note("message.format.version").is_some());
        assert!(deprecation_note("retention.ms").is_none());
    }

    #[test]
    fn the_default_log_config_is_the_storage_engines() {
        assert_eq!(TopicConfig::default().log_config(), LogConfig::default());
    }

    #[test]
    fn kafka_configs_without_an_effect_here_are_accepted_checked_and_shown() {
        let base = TopicConfig::default();
        let mut o = BTreeMap::new();
        o.insert("preallocate".to_string(), "true".to_string());
        o.insert(
            "leader.replication.throttled.replicas".to_string(),
            "0:1,1:1".to_string(),
        );
        o.insert("max.compaction.lag.ms".to_string(), "60000".to_string());
        let c = base.with_overrides(&o).unwrap();
        let show = |c: &TopicConfig, key: &str| c.show(config_def(key).unwrap());
        assert_eq!(show(&c, "preallocate"), "true");
        assert_eq!(show(&c, "leader.replication.throttled.replicas"), "0:1,1:1");
        assert_eq!(show(&base, "preallocate"), "false");
        assert_eq!(c.log_config().max_compaction_lag_ms, 60_000);
        for (key, bad) in [
            ("remote.storage.enable", "true"),
            ("preallocate", "yes"),
            ("segment.index.bytes", "2"),
            ("leader.replication.throttled.replicas", "zero"),
        ] {
            let mut o = BTreeMap::new();
            o.insert(key.to_string(), bad.to_string());
            assert!(base.with_overrides(&o).is_err(), "{key}={bad} accepted");
        }
        for key in ACCEPTED_ONLY {
            assert!(config_def(key).is_some(), "{key} has no definition");
        }
    }

    #[test]
    fn every_default_round_trips_through_show() {
        let c = TopicConfig::default();
        for def in CONFIG_DEFS {
            assert_eq!(c.show(def), def.default, "{}", def.name);
        }
    }
}
