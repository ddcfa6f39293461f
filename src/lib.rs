//! # Sluice
//!
//! A Kafka-compatible event streaming broker: thread-per-core, io_uring appends,
//! page-cache reads.
//!
//! ## Layers
//! Lowest first. A module imports only from its own layer or below, and no two
//! files import each other, directly or round a loop; `tests/architecture.rs`
//! checks both on every test run (and that no file passes 1,000 lines of code).
//!
//! | layer | modules | what |
//! |---|---|---|
//! | 0 | [`protocol`] | wire format: framing, record batches, the record parser, compression, Produce's per-record checks; no I/O |
//! | 0 | [`metrics`] | a registry every layer writes to; renders a snapshot handed to it |
//! | 1 | [`io`] | bytes between memory, files and sockets: chains of memory and file slices, aligned buffers, splice |
//! | 2 | [`storage`] | segments, indexes, the partition log, group commit, producer state, compaction; its own config type |
//! | 3 | [`runtime`] | generic thread-per-core pieces: cross-shard queues, byte budgets, signals, the descriptor budget, the partition→shard hash |
//! | 4 | [`node`], [`metadata`], [`group`], [`partition`], [`txn`], [`cluster`], [`config`] | the Kafka state of one node: what shards share and what each holds, the metadata image and controller, consumer groups, the partitions' life on their shards, the transaction coordinator, the metadata quorum (Raft) |
//! | 5 | [`server`] | listeners, connections, the registry of APIs and dispatch, one handler per Kafka API |
//! | 6 | [`broker`] | start-up (lock, replay metadata, bind, start shards) and shutdown |
//!
//! `main.rs` parses the configuration and runs [`broker`].
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

pub mod broker;
pub mod cluster;
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
pub mod txn;
