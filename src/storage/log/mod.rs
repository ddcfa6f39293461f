//! The log of one partition: an ordered list of segments, the last one active.
//!
//! Lives on the partition's owning shard and is reached through `LogRef`
//! (`Rc<RefCell<_>>`). A `RefCell` borrow is never held across an `.await`: each
//! operation does its bookkeeping synchronously, releases the borrow, awaits the
//! I/O, and borrows again to finish.
//!
//! Appends are *reserved* synchronously (offsets and file positions are decided,
//! producer sequences checked, the batch header patched) and then written with
//! io_uring. Several writes to one partition may be in flight; they complete in
//! any order, and the high watermark only moves past a write once every earlier
//! write has completed (`in_flight`).
mod append;
mod read;
mod replicate;
mod retention;
mod state;
#[cfg(test)]
mod tests;
mod truncate;

pub use append::{append, append_marker, settled, sync_log};
pub use read::{offset_for_timestamp, read, read_isolated};
pub use replicate::append_replica;
pub use state::{
    AppendError, AppendOutcome, CleanerState, Isolation, LogRef, PartitionLog, ReadError,
    ReadOutcome,
};
pub use truncate::TruncateError;
