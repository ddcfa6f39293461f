//! # Sluice
//!
//! A Kafka-compatible event streaming broker: thread-per-core, io_uring appends,
//! page-cache reads.
//!
//! ## Map
//! | module | what it is |
//! |---|---|
//! | [`config`] | flags, TOML file, topic config defaults |
//! | [`broker`] | start-up (lock, replay metadata, bind, start shards) and shutdown |
//! | [`runtime`] | shards: pinned threads with a compio runtime each; the partition→shard hash; cross-shard queues |
//! | [`server`] | listeners, connections, dispatch, one handler per Kafka API |
//! | [`protocol`] | framing, version registry, record-batch validation (no I/O) |
//! | [`storage`] | partition logs: segments, indexes, append, read, group commit, producer state |
//! | [`group`] | consumer groups: the rebalance state machine, coordinators per shard, committed offsets in an internal log |
//! | [`metadata`] | topics and configs: an immutable image, changed only by the controller through the metadata log |
//!
//! ## How a request travels
//! ```text
//!  client ──TCP──▶ shard k (SO_REUSEPORT picked it)
//!                  connection read loop: frame (length checked) ─▶ task per request
//!                  dispatch: api key/version check ─▶ decode (kafka-protocol) ─▶ handler
//!                  handler: partitions grouped by owner shard = hash(topic, partition) % shards
//!                     ├── owned here  ─▶ run as a local task
//!                     └── owned by j  ─▶ closure over shard j's bounded queue ─▶ task on j
//!                                        (append: reserve offsets, io_uring write, group commit)
//!                                        (fetch: index lookup, pread from the page cache)
//!                  ◀── results on oneshot channels, gathered in request order
//!                  connection write loop: responses strictly in request order
//! ```
//! Dependencies run one way: `protocol` depends on nothing of ours; `storage`
//! on `protocol`; `metadata` on `storage`; `server` on everything; nothing
//! depends on `server` except start-up.

pub mod broker;
pub mod config;
pub mod group;
pub mod io;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod storage;
