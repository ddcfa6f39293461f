//! The partition layer, between the handlers and the storage engine.
//!
//! - `state.rs`: what every shard may read of a partition's Kafka state (the
//!   log's watermarks, the leader epoch; later the last stable offset and
//!   the ISR), held in the metadata image.
//! - `local.rs`: a partition on the shard that owns it (its log and its
//!   state); the handlers' Produce, Fetch, ListOffsets and DeleteRecords go
//!   through it.
//! - `internal.rs`: a partition of an internal topic as the coordinator
//!   that leads it writes to it.
//! - `housekeeping.rs`: the per-shard life of the partitions: opened at start,
//!   retention, periodic flushes, log cleaning and high watermark
//!   checkpoints in the background, closed at shutdown; and their figures
//!   for `/metrics`.

pub mod housekeeping;
pub mod internal;
pub mod local;
pub mod replica;
pub mod state;
#[cfg(test)]
mod tests;

pub use housekeeping::{
    close_owned_logs, open_owned_logs, samples, start_cleaner, start_hw_checkpoints,
    start_periodic_flush, start_retention,
};
