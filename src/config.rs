//! Broker configuration: command-line flags, an optional TOML file, and the
//! broker-level defaults of topic configs.
//!
//! Precedence, lowest first: built-in defaults, the `--config` file, flags.
//! An unknown key in the file or an invalid value stops start-up with a message
//! that names the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use crate::metadata::topic_config::{TopicConfig, TopicConfigError};

/// Command-line flags. Every setting can also be given in the TOML file under
/// the same name with `_` instead of `-`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a Kafka-compatible, thread-per-core event streaming broker"
)]
pub struct Cli {
    /// Address to listen on for Kafka clients [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// host:port that clients are told to connect to (Metadata, FindCoordinator)
    /// [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// Directory holding the logs and internal state; created if missing [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (pinned threads, one per core) [default: all cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This broker's node id [default: 1].
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Cluster id reported to clients [default: generated once and kept in the data dir].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Create a topic when a client asks Metadata for an unknown one and allows
    /// auto-creation (producers do before their first send) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic, and of CreateTopics asking for -1 [default: 1].
    #[arg(long, value_name = "N")]
    pub num_partitions: Option<i32>,
    /// Replicas of each partition of an auto-created topic, and of
    /// CreateTopics asking for -1 (default.replication.factor) [default: 1].
    #[arg(long, value_name = "N")]
    pub default_replication_factor: Option<i16>,
    /// A follower that has not caught up with its leader for this long
    /// leaves the ISR, ms (replica.lag.time.max.ms) [default: 30000].
    #[arg(long, value_name = "MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// How often the high watermarks of replicated partitions are written
    /// to the data dir, ms (replica.high.watermark.checkpoint.interval.ms)
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub replica_high_watermark_checkpoint_interval_ms: Option<u64>,
    /// How often the active controller moves leadership back to preferred
    /// replicas that are live and in sync (auto.leader.rebalance.enable,
    /// leader.imbalance.check.interval.seconds); 0 turns it off [default: 300].
    #[arg(long, value_name = "S")]
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// Largest request frame accepted, in bytes [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub socket_request_max_bytes: Option<u32>,
    /// Smallest session timeout a group member may ask for, ms [default: 6000].
    #[arg(long, value_name = "MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a group member may ask for, ms [default: 1800000].
    #[arg(long, value_name = "MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// How long the first rebalance of an empty group waits for more members, ms [default: 3000].
    #[arg(long, value_name = "MS")]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// Committed offsets of a group without members expire after this long [default: 10080 (7 days)].
    #[arg(long, value_name = "MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// How often retention looks for segments to delete, ms [default: 300000].
    #[arg(long, value_name = "MS")]
    pub log_retention_check_interval_ms: Option<u64>,
    /// How often the log cleaner looks for compacted logs to clean, ms [default: 15000].
    #[arg(long, value_name = "MS")]
    pub log_cleaner_interval_ms: Option<u64>,
    /// Segment size of the internal offsets log, whose closed segments are
    /// compacted (Kafka's offsets.topic.segment.bytes) [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub offsets_topic_segment_bytes: Option<u64>,
    /// Replicas of each partition of the internal offsets log, created once
    /// this many brokers are registered (Kafka's
    /// offsets.topic.replication.factor) [default: 3, or the number of
    /// controller quorum voters when fewer].
    #[arg(long, value_name = "N")]
    pub offsets_topic_replication_factor: Option<i16>,
    /// Replicas of each partition of the internal transaction log (Kafka's
    /// transaction.state.log.replication.factor) [default: 3, or the number
    /// of controller quorum voters when fewer].
    #[arg(long, value_name = "N")]
    pub transaction_state_log_replication_factor: Option<i16>,
    /// Longest transaction timeout a producer may ask for (Kafka's
    /// transaction.max.timeout.ms) [default: 900000].
    #[arg(long, value_name = "MS")]
    pub transaction_max_timeout_ms: Option<i32>,
    /// How often open transactions past their timeout are aborted (Kafka's
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms) [default: 10000].
    #[arg(long, value_name = "MS")]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    /// An idle transactional id is forgotten after this long (Kafka's
    /// transactional.id.expiration.ms) [default: 604800000 (7 days)].
    #[arg(long, value_name = "MS")]
    pub transactional_id_expiration_ms: Option<i64>,
    /// Partitions of the transaction log, fixed once it exists since it
    /// decides where each transactional id lives (Kafka's
    /// transaction.state.log.num.partitions) [default: 50].
    #[arg(long, value_name = "N")]
    pub transaction_state_log_num_partitions: Option<i32>,
    /// The finalized `transaction.version` feature advertised to clients
    /// (KIP-890): 2 lets clients that support it (Java 4, franz-go) skip
    /// AddPartitionsToTxn and bump the epoch at every EndTxn; 0 or 1 keeps
    /// every client on the classic protocol. Also decides how the
    /// coordinator's own aborts (timeouts, fences) bump the epoch
    /// [default: 2, as a new Kafka 4 cluster].
    #[arg(long, value_name = "LEVEL")]
    pub transaction_version: Option<i16>,
    /// I/O driver of the shards: `auto` (io_uring when the kernel allows it,
    /// polling otherwise), `io-uring` or `polling` [default: auto].
    #[arg(long, value_name = "DRIVER")]
    pub io_driver: Option<String>,
    /// How Fetch sends record data: `auto` (partition data of 64 KiB or more goes
    /// from the segment file to the socket with splice, less is copied),
    /// `always` (splice every piece of record data) or `never` (copy through
    /// page-aligned buffers). Splicing needs the io_uring driver [default: auto].
    #[arg(long, value_name = "MODE")]
    pub fetch_zero_copy: Option<String>,
    /// Record bytes one Fetch response carries at most, whatever the client
    /// asks (Kafka's broker `fetch.max.bytes`; one first batch may exceed it,
    /// KIP-74) [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub fetch_max_bytes: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9644);
    /// off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where this node answers the other voters of the metadata quorum
    /// [default: its address in --controller-quorum-voters; none when alone].
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<String>,
    /// The metadata quorum's voters, as Kafka's controller.quorum.voters:
    /// `id@host:port,...` [default: this node alone].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub controller_quorum_voters: Option<String>,
    /// A voter that hears no leader for between this and twice this stands
    /// for election, ms (controller.quorum.election.timeout.ms) [default: 1000].
    #[arg(long, value_name = "MS")]
    pub controller_quorum_election_timeout_ms: Option<u64>,
    /// How often this broker heartbeats the active controller, ms
    /// (broker.heartbeat.interval.ms) [default: 2000].
    #[arg(long, value_name = "MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// A broker whose heartbeats stop for this long is fenced: left out of
    /// Metadata, its partitions led elsewhere, ms (broker.session.timeout.ms)
    /// [default: 9000].
    #[arg(long, value_name = "MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// Request bytes a shard holds at most over all its connections (read and
    /// not yet answered); reading more waits [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    pub shard_max_request_bytes: Option<usize>,
    /// Close a connection whose response has made no progress (the client
    /// stopped reading) for this long [default: 60000].
    #[arg(long, value_name = "MS")]
    pub send_stall_timeout_ms: Option<u64>,
    /// Client connections accepted at most (Kafka's `max.connections`); more
    /// are closed at once. Their descriptors are kept out of what partitions
    /// may use [default: a quarter of the open file limit].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u64>,
    /// Log level filter (e.g. info, debug, sluice=trace); RUST_LOG also works [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Broker default of a topic config, as Kafka names it, e.g.
    /// `--topic-default retention.ms=3600000` (repeatable). Accepted keys:
    /// cleanup.policy, compression.type, delete.retention.ms, flush.messages,
    /// flush.ms, index.interval.bytes, max.message.bytes, message.timestamp.after.max.ms,
    /// message.timestamp.before.max.ms, message.timestamp.type,
    /// min.cleanable.dirty.ratio, min.compaction.lag.ms, min.insync.replicas,
    /// retention.bytes, retention.ms, segment.bytes, segment.ms,
    /// max.compaction.lag.ms; Kafka 3's deprecated message.format.version and
    /// message.downconversion.enable (ignored), message.timestamp.difference.max.ms
    /// (stands in for the before/after pair where they are unset); and, accepted
    /// without effect on one node: file.delete.delay.ms,
    /// follower.replication.throttled.replicas, leader.replication.throttled.replicas,
    /// local.retention.bytes, local.retention.ms, preallocate, remote.storage.enable
    /// (false only), segment.index.bytes, segment.jitter.ms,
    /// unclean.leader.election.enable.
    #[arg(long = "topic-default", value_name = "KEY=VALUE")]
    pub topic_defaults: Vec<String>,
}

/// The TOML file. Unknown keys are refused so that a typo is not silently ignored.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised_listener: Option<String>,
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    node_id: Option<i32>,
    cluster_id: Option<String>,
    auto_create_topics: Option<bool>,
    num_partitions: Option<i32>,
    default_replication_factor: Option<i16>,
    replica_lag_time_max_ms: Option<u64>,
    replica_high_watermark_checkpoint_interval_ms: Option<u64>,
    leader_imbalance_check_interval_seconds: Option<u64>,
    socket_request_max_bytes: Option<u32>,
    io_driver: Option<String>,
    fetch_zero_copy: Option<String>,
    fetch_max_bytes: Option<usize>,
    metrics_listen: Option<SocketAddr>,
    controller_listen: Option<String>,
    controller_quorum_voters: Option<String>,
    controller_quorum_election_timeout_ms: Option<u64>,
    broker_heartbeat_interval_ms: Option<u64>,
    broker_session_timeout_ms: Option<u64>,
    send_stall_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    shard_max_request_bytes: Option<usize>,
    log_retention_check_interval_ms: Option<u64>,
    log_cleaner_interval_ms: Option<u64>,
    offsets_topic_segment_bytes: Option<u64>,
    offsets_topic_replication_factor: Option<i16>,
    transaction_state_log_replication_factor: Option<i16>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    group_initial_rebalance_delay_ms: Option<i64>,
    offsets_retention_minutes: Option<i64>,
    transaction_max_timeout_ms: Option<i32>,
    transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    transactional_id_expiration_ms: Option<i64>,
    transaction_state_log_num_partitions: Option<i32>,
    transaction_version: Option<i16>,
    log_level: Option<String>,
    /// `[topic_defaults]` table: `"retention.ms" = 3600000`.
    topic_defaults: Option<BTreeMap<String, toml::Value>>,
}

/// The resolved configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub node_id: i32,
    /// None: read from or generated into the data dir at start-up.
    pub cluster_id: Option<String>,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub replica_lag_time_max_ms: u64,
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    /// 0: never (auto.leader.rebalance.enable=false).
    pub leader_imbalance_check_interval_seconds: u64,
    pub socket_request_max_bytes: u32,
    pub io_driver: IoDriver,
    pub fetch_zero_copy: FetchZeroCopy,
    pub metrics_listen: Option<SocketAddr>,
    /// The metadata quorum's voters by node id (this node among them).
    pub quorum_voters: BTreeMap<u64, String>,
    /// Where to answer the other voters; None when this node is the only one
    /// and no address was given.
    pub controller_listen: Option<String>,
    pub controller_quorum_election_timeout_ms: u64,
    /// broker.heartbeat.interval.ms
    pub broker_heartbeat_interval_ms: u64,
    /// broker.session.timeout.ms
    pub broker_session_timeout_ms: u64,
    pub send_stall_timeout_ms: u64,
    /// None: a quarter of the open file limit (see `runtime::descriptors`).
    pub max_connections: Option<u64>,
    pub shard_max_request_bytes: usize,
    /// Record bytes of one Fetch response at most (Kafka's broker `fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    pub log_retention_check_interval_ms: u64,
    pub log_cleaner_interval_ms: u64,
    pub offsets_topic_segment_bytes: u64,
    pub offsets_topic_replication_factor: i16,
    pub transaction_state_log_replication_factor: i16,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_initial_rebalance_delay_ms: i64,
    pub offsets_retention_minutes: i64,
    pub transaction_max_timeout_ms: i32,
    pub transaction_abort_interval_ms: u64,
    pub transactional_id_expiration_ms: i64,
    pub transaction_state_log_num_partitions: i32,
    /// The finalized `transaction.version` (0-2).
    pub transaction_version: i16,
    pub log_level: String,
    /// Topic config defaults at broker level (source DEFAULT or broker overrides).
    pub topic_defaults: TopicConfig,
    /// Keys the operator set at broker level, reported as source STATIC_BROKER_CONFIG.
    pub topic_default_overrides: BTreeMap<String, String>,
}

/// How Fetch sends record data (`--fetch-zero-copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchZeroCopy {
    Auto,
    Always,
    Never,
}

/// Which compio driver the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring when available (probed at start), else polling.
    Auto,
    IoUring,
    /// epoll-based; what runs where io_uring is blocked (Docker's default seccomp profile).
    Polling,
}

/// Kafka's default request size limit (`socket.request.max.bytes`).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: u32 = 100 * 1024 * 1024;

/// Record bytes of one Fetch response at most, by default. Kafka's is 55 MiB;
/// Sluice's is smaller because a librdkafka consumer reads each response into
/// a buffer of its own, and one above 32 MiB is fresh memory every time (a
/// page fault per 4 KiB): on this project's machine librdkafka consumed 726-766
/// MB/s with 55 MiB responses and 1,194-1,213 MB/s with 8 MiB ones, level with
/// 4 MiB and ahead of every other size from 1 to 55 MiB (BENCHMARKS.md,
/// "Fetch response size").
pub const FETCH_MAX_BYTES_DEFAULT: usize = 8 << 20;
/// Largest accepted `--fetch-max-bytes`: a response (one KIP-74 first batch
/// over it included) stays far below the 2 GiB a frame can hold.
pub const FETCH_MAX_BYTES_LIMIT: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{name}`: {message}")]
    Invalid { name: String, message: String },
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Resolves flags over the optional file over the defaults.
    pub fn resolve(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };

        let listen_text = cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:9092".to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{listen_text}` is not HOST:PORT with a numeric host"),
            )
        })?;
        let (advertised_host, advertised_port) =
            match cli.advertised_listener.or(file.advertised_listener) {
                Some(text) => parse_host_port(&text).ok_or_else(|| {
                    invalid("advertised-listener", format!("`{text}` is not HOST:PORT"))
                })?,
                None => (listen.ip().to_string(), i32::from(listen.port())),
            };
        let cores_available = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = cli.cores.or(file.cores).unwrap_or(cores_available);
        if cores == 0 || cores > 1024 {
            return Err(invalid(
                "cores",
                format!("{cores} is not between 1 and 1024"),
            ));
        }
        let node_id = cli.node_id.or(file.node_id).unwrap_or(1);
        if node_id < 0 {
            return Err(invalid("node-id", "must not be negative"));
        }
        let controller_listen = cli.controller_listen.or(file.controller_listen);
        let quorum_voters = match cli
            .controller_quorum_voters
            .or(file.controller_quorum_voters)
        {
            Some(text) => {
                let voters = crate::cluster::QuorumConfig::parse_voters(&text)
                    .map_err(|m| invalid("controller-quorum-voters", m))?;
                if !voters.contains_key(&(node_id as u64)) {
                    return Err(invalid(
                        "controller-quorum-voters",
                        format!("node {node_id} (--node-id) is not among the voters"),
                    ));
                }
                voters
            }
            // Alone: the address is never dialled.
            None => BTreeMap::from([(
                node_id as u64,
                controller_listen
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:0".to_string()),
            )]),
        };
        let controller_listen = match controller_listen {
            Some(addr) => Some(addr),
            None if quorum_voters.len() > 1 => Some(quorum_voters[&(node_id as u64)].clone()),
            None => None,
        };
        let controller_quorum_election_timeout_ms = cli
            .controller_quorum_election_timeout_ms
            .or(file.controller_quorum_election_timeout_ms)
            .unwrap_or(1000);
        if !(10..=600_000).contains(&controller_quorum_election_timeout_ms) {
            return Err(invalid(
                "controller-quorum-election-timeout-ms",
                "must be between 10 and 600000",
            ));
        }
        let broker_heartbeat_interval_ms = cli
            .broker_heartbeat_interval_ms
            .or(file.broker_heartbeat_interval_ms)
            .unwrap_or(2000);
        let broker_session_timeout_ms = cli
            .broker_session_timeout_ms
            .or(file.broker_session_timeout_ms)
            .unwrap_or(9000);
        if !(10..=600_000).contains(&broker_heartbeat_interval_ms) {
            return Err(invalid(
                "broker-heartbeat-interval-ms",
                "must be between 10 and 600000",
            ));
        }
        if broker_session_timeout_ms <= broker_heartbeat_interval_ms {
            return Err(invalid(
                "broker-session-timeout-ms",
                format!(
                    "must be longer than the heartbeat interval ({broker_heartbeat_interval_ms} ms)"
                ),
            ));
        }
        let default_replication_factor = cli
            .default_replication_factor
            .or(file.default_replication_factor)
            .unwrap_or(1);
        if !(1..=100).contains(&default_replication_factor) {
            return Err(invalid(
                "default-replication-factor",
                "must be between 1 and 100",
            ));
        }
        let replica_lag_time_max_ms = cli
            .replica_lag_time_max_ms
            .or(file.replica_lag_time_max_ms)
            .unwrap_or(30_000);
        if !(100..=3_600_000).contains(&replica_lag_time_max_ms) {
            return Err(invalid(
                "replica-lag-time-max-ms",
                "must be between 100 and 3600000",
            ));
        }
        let replica_high_watermark_checkpoint_interval_ms = cli
            .replica_high_watermark_checkpoint_interval_ms
            .or(file.replica_high_watermark_checkpoint_interval_ms)
            .unwrap_or(5_000);
        if !(10..=3_600_000).contains(&replica_high_watermark_checkpoint_interval_ms) {
            return Err(invalid(
                "replica-high-watermark-checkpoint-interval-ms",
                "must be between 10 and 3600000",
            ));
        }
        let num_partitions = cli.num_partitions.or(file.num_partitions).unwrap_or(1);
        if !(1..=crate::metadata::PARTITIONS_PER_TOPIC_MAX).contains(&num_partitions) {
            return Err(invalid(
                "num-partitions",
                format!("{num_partitions} is out of range"),
            ));
        }
        let socket_request_max_bytes = cli
            .socket_request_max_bytes
            .or(file.socket_request_max_bytes)
            .unwrap_or(SOCKET_REQUEST_MAX_BYTES_DEFAULT);
        if socket_request_max_bytes < 1024 {
            return Err(invalid("socket-request-max-bytes", "must be at least 1024"));
        }
        let io_driver = match cli.io_driver.or(file.io_driver).as_deref() {
            None | Some("auto") => IoDriver::Auto,
            Some("io-uring") | Some("io_uring") => IoDriver::IoUring,
            Some("polling") => IoDriver::Polling,
            Some(other) => {
                return Err(invalid(
                    "io-driver",
                    format!("`{other}` is not auto, io-uring or polling"),
                ))
            }
        };
        let send_stall_timeout_ms = cli
            .send_stall_timeout_ms
            .or(file.send_stall_timeout_ms)
            .unwrap_or(60_000);
        if send_stall_timeout_ms == 0 {
            return Err(invalid("send-stall-timeout-ms", "must be above 0"));
        }
        let max_connections = cli.max_connections.or(file.max_connections);
        if max_connections == Some(0) {
            return Err(invalid("max-connections", "must be above 0"));
        }
        let fetch_max_bytes = cli
            .fetch_max_bytes
            .or(file.fetch_max_bytes)
            .unwrap_or(FETCH_MAX_BYTES_DEFAULT);
        if !(1024..=FETCH_MAX_BYTES_LIMIT).contains(&fetch_max_bytes) {
            return Err(invalid(
                "fetch-max-bytes",
                format!("must be from 1024 to {FETCH_MAX_BYTES_LIMIT}"),
            ));
        }
        let fetch_zero_copy = match cli.fetch_zero_copy.or(file.fetch_zero_copy).as_deref() {
            None | Some("auto") => FetchZeroCopy::Auto,
            Some("always") => FetchZeroCopy::Always,
            Some("never") => FetchZeroCopy::Never,
            Some(other) => {
                return Err(invalid(
                    "fetch-zero-copy",
                    format!("`{other}` is not auto, always or never"),
                ))
            }
        };
        let group_min_session_timeout_ms = cli
            .group_min_session_timeout_ms
            .or(file.group_min_session_timeout_ms)
            .unwrap_or(6000);
        let group_max_session_timeout_ms = cli
            .group_max_session_timeout_ms
            .or(file.group_max_session_timeout_ms)
            .unwrap_or(1_800_000);
        if group_min_session_timeout_ms < 1
            || group_max_session_timeout_ms < group_min_session_timeout_ms
        {
            return Err(invalid(
                "group-min-session-timeout-ms",
                "must be positive and not above group-max-session-timeout-ms",
            ));
        }
        let group_initial_rebalance_delay_ms = cli
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
            .unwrap_or(3000);
        if group_initial_rebalance_delay_ms < 0 {
            return Err(invalid(
                "group-initial-rebalance-delay-ms",
                "must not be negative",
            ));
        }
        let offsets_retention_minutes = cli
            .offsets_retention_minutes
            .or(file.offsets_retention_minutes)
            .unwrap_or(7 * 24 * 60);
        if offsets_retention_minutes < 1 {
            return Err(invalid("offsets-retention-minutes", "must be at least 1"));
        }
        let transaction_max_timeout_ms = cli
            .transaction_max_timeout_ms
            .or(file.transaction_max_timeout_ms)
            .unwrap_or(900_000);
        if transaction_max_timeout_ms < 1 {
            return Err(invalid("transaction-max-timeout-ms", "must be at least 1"));
        }
        let transaction_abort_interval_ms = cli
            .transaction_abort_timed_out_transaction_cleanup_interval_ms
            .or(file.transaction_abort_timed_out_transaction_cleanup_interval_ms)
            .unwrap_or(10_000);
        if transaction_abort_interval_ms < 1 {
            return Err(invalid(
                "transaction-abort-timed-out-transaction-cleanup-interval-ms",
                "must be at least 1",
            ));
        }
        let transactional_id_expiration_ms = cli
            .transactional_id_expiration_ms
            .or(file.transactional_id_expiration_ms)
            .unwrap_or(604_800_000);
        if transactional_id_expiration_ms < 1 {
            return Err(invalid(
                "transactional-id-expiration-ms",
                "must be at least 1",
            ));
        }
        let transaction_state_log_num_partitions = cli
            .transaction_state_log_num_partitions
            .or(file.transaction_state_log_num_partitions)
            .unwrap_or(50);
        if !(1..=1000).contains(&transaction_state_log_num_partitions) {
            return Err(invalid(
                "transaction-state-log-num-partitions",
                "must be between 1 and 1000",
            ));
        }
        let transaction_version = cli
            .transaction_version
            .or(file.transaction_version)
            .unwrap_or(2);
        if !(0..=2).contains(&transaction_version) {
            return Err(invalid("transaction-version", "must be 0, 1 or 2"));
        }
        let log_retention_check_interval_ms = cli
            .log_retention_check_interval_ms
            .or(file.log_retention_check_interval_ms)
            .unwrap_or(300_000);
        if log_retention_check_interval_ms < 10 {
            return Err(invalid(
                "log-retention-check-interval-ms",
                "must be at least 10",
            ));
        }
        let log_cleaner_interval_ms = cli
            .log_cleaner_interval_ms
            .or(file.log_cleaner_interval_ms)
            .unwrap_or(15_000);
        if log_cleaner_interval_ms < 10 {
            return Err(invalid("log-cleaner-interval-ms", "must be at least 10"));
        }
        let offsets_topic_segment_bytes = cli
            .offsets_topic_segment_bytes
            .or(file.offsets_topic_segment_bytes)
            .unwrap_or(crate::group::offsets::OFFSETS_SEGMENT_BYTES);
        let segment_range = crate::metadata::topic_config::SEGMENT_BYTES_MIN as u64
            ..=crate::metadata::topic_config::SEGMENT_BYTES_MAX as u64;
        if !segment_range.contains(&offsets_topic_segment_bytes) {
            return Err(invalid(
                "offsets-topic-segment-bytes",
                format!(
                    "must be between {} and {}",
                    segment_range.start(),
                    segment_range.end()
                ),
            ));
        }
        // Kafka's default of 3 would leave a smaller cluster without
        // groups or transactions; the voters are the cluster's planned size.
        let internal_default = 3.min(quorum_voters.len().max(1) as i16);
        let offsets_topic_replication_factor = cli
            .offsets_topic_replication_factor
            .or(file.offsets_topic_replication_factor)
            .unwrap_or(internal_default);
        let transaction_state_log_replication_factor = cli
            .transaction_state_log_replication_factor
            .or(file.transaction_state_log_replication_factor)
            .unwrap_or(internal_default);
        for (flag, factor) in [
            (
                "offsets-topic-replication-factor",
                offsets_topic_replication_factor,
            ),
            (
                "transaction-state-log-replication-factor",
                transaction_state_log_replication_factor,
            ),
        ] {
            if !(1..=100).contains(&factor) {
                return Err(invalid(flag, "must be between 1 and 100"));
            }
            // Every broker is a voter: more replicas than voters can never be placed.
            if factor as usize > quorum_voters.len() {
                return Err(invalid(
                    flag,
                    format!(
                        "{factor} replicas need {factor} brokers, but --controller-quorum-voters names {}",
                        quorum_voters.len()
                    ),
                ));
            }
        }
        let cluster_id = cli.cluster_id.or(file.cluster_id);
        if let Some(id) = &cluster_id {
            if id.is_empty() || id.len() > 64 {
                return Err(invalid("cluster-id", "must be 1 to 64 characters"));
            }
        }

        let mut topic_default_overrides = BTreeMap::new();
        for (key, value) in file.topic_defaults.unwrap_or_default() {
            let text = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            topic_default_overrides.insert(key, text);
        }
        for pair in cli.topic_defaults {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid("topic-default", format!("`{pair}` is not KEY=VALUE")))?;
            topic_default_overrides.insert(key.trim().to_string(), value.trim().to_string());
        }
        let topic_defaults = TopicConfig::default()
            .with_overrides(&topic_default_overrides)
            .map_err(|TopicConfigError { key, message }| {
                invalid(&format!("topic-default {key}"), message)
            })?;

        Ok(Config {
            listen,
            advertised_host,
            advertised_port,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            cores,
            node_id,
            cluster_id,
            auto_create_topics: cli
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            num_partitions,
            default_replication_factor,
            replica_lag_time_max_ms,
            replica_high_watermark_checkpoint_interval_ms,
            leader_imbalance_check_interval_seconds: cli
                .leader_imbalance_check_interval_seconds
                .or(file.leader_imbalance_check_interval_seconds)
                .unwrap_or(300),
            socket_request_max_bytes,
            io_driver,
            fetch_zero_copy,
            fetch_max_bytes,
            metrics_listen: cli.metrics_listen.or(file.metrics_listen),
            quorum_voters,
            controller_listen,
            controller_quorum_election_timeout_ms,
            broker_heartbeat_interval_ms,
            broker_session_timeout_ms,
            send_stall_timeout_ms,
            max_connections,
            shard_max_request_bytes: cli
                .shard_max_request_bytes
                .or(file.shard_max_request_bytes)
                .unwrap_or(256 << 20),
            log_retention_check_interval_ms,
            log_cleaner_interval_ms,
            offsets_topic_segment_bytes,
            offsets_topic_replication_factor,
            transaction_state_log_replication_factor,
            transaction_max_timeout_ms,
            transaction_abort_interval_ms,
            transactional_id_expiration_ms,
            transaction_state_log_num_partitions,
            transaction_version,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms,
            offsets_retention_minutes,
            log_level: cli
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            topic_defaults,
            topic_default_overrides,
        })
    }

    /// A configuration for tests and embedding: defaults, with the given listener and data dir.
    pub fn for_tests(listen: SocketAddr, data_dir: PathBuf, cores: usize) -> Config {
        let cli = Cli {
            listen: Some(listen.to_string()),
            data_dir: Some(data_dir),
            cores: Some(cores),
            ..Cli::default()
        };
        Config::resolve(cli).expect("test configuration is valid")
    }
}

fn parse_host_port(text: &str) -> Option<(String, i32)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        i32::from(port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::resolve(Cli::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(config.auto_create_topics);
        assert_eq!(config.topic_defaults.max_message_bytes, 1_048_588);
    }

    #[test]
    fn fetch_max_bytes_default_and_range() {
        let config = Config::resolve(Cli::default()).unwrap();
        assert_eq!(config.fetch_max_bytes, 8 << 20);
        for bad in [0, 1023, FETCH_MAX_BYTES_LIMIT + 1] {
            let cli = Cli {
                fetch_max_bytes: Some(bad),
                ..Cli::default()
            };
            let err = Config::resolve(cli).unwrap_err();
            assert!(err.to_string().contains("fetch-max-bytes"), "{bad}: {err}");
        }
        let cli = Cli {
            fetch_max_bytes: Some(1024),
            ..Cli::default()
        };
        assert_eq!(Config::resolve(cli).unwrap().fetch_max_bytes, 1024);
    }

    #[test]
    fn unknown_file_key_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nbogus_key = 3\n").unwrap();
        let err = Config::resolve(Cli {
            config: Some(path),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("bogus_key"), "{err}");
    }

    #[test]
    fn invalid_topic_default_names_the_setting() {
        let cli = Cli {
            topic_defaults: vec!["retention.ms=soon".into()],
            ..Cli::default()
        };
        let err = Config::resolve(cli).unwrap_err();
        assert!(err.to_string().contains("retention.ms"), "{err}");
        let cli = Cli {
            topic_defaults: vec!["no.such.config=1".into()],
            ..Cli::default()
        };
        let err = Config::resolve(cli).unwrap_err();
        assert!(err.to_string().contains("no.such.config"), "{err}");
    }

    /// `--help` lists every topic config key, so the help cannot fall behind the table.
    #[test]
    fn help_names_every_topic_config() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for def in crate::metadata::topic_config::CONFIG_DEFS {
            assert!(
                help.contains(def.name),
                "--help does not mention {}",
                def.name
            );
        }
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "num_partitions = 3\ncores = 1\n[topic_defaults]\n\"retention.ms\" = 1000\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(path),
            num_partitions: Some(5),
            ..Cli::default()
        };
        let config = Config::resolve(cli).unwrap();
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.cores, 1);
        assert_eq!(config.topic_defaults.retention_ms, 1000);
    }
}
