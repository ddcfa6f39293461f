//! The storage engine: per partition a directory of segment files named by base
//! offset, each a `.log` of record batches exactly as clients sent them (offsets
//! assigned by the broker), with sparse offset and time indexes.
//!
//! - `shared.rs`: a log's watermarks as every shard reads them.
//! - `config.rs`: the part of a topic's configuration the engine uses.
//! - `segment.rs`: one segment, its start-up scan and recovery of a torn tail.
//! - `index.rs`: the sparse offset and time indexes.
//! - `log/`: a partition log: `state.rs` (open, close, the segment list),
//!   `append.rs` (reserve, write with io_uring, wait for group commit),
//!   `read.rs` (read by offset, look up by timestamp), `retention.rs`
//!   (segment rolls, retention, DeleteRecords).
//! - `commit.rs`: group commit, one fdatasync round for every waiting append of a shard.
//! - `producer_state.rs`: idempotent-producer sequence tracking and each
//!   producer's open transaction (the last stable offset comes from it).
//! - `txn_index.rs`: a segment's aborted transactions (Kafka's `.txnindex`).
//! - `clean_shutdown.rs`: the marker a clean shutdown leaves so that the next
//!   start can trust the files instead of scanning them.
//! - `cleaner.rs`: log compaction, a pass over one compacted log.
//! - `replay.rs`: reading an internal log's records back (start-up, a
//!   coordinator's load).
//!
//! The on-disk format is described in `docs/FORMAT.md`.

pub mod clean_shutdown;
pub mod cleaner;
pub mod commit;
pub mod config;
pub mod epochs;
pub mod hw_checkpoint;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod replay;
pub mod segment;
pub mod shared;
pub mod txn_index;
pub mod txn_verification;
