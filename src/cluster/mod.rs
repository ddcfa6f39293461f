//! The metadata quorum: the cluster's metadata log replicated by Raft among
//! the controller voters, the role KRaft plays in Kafka (docs/CLUSTER.md).
//!
//! Consensus is openraft's; this module is the one seam to it: every openraft
//! type stays in here. What it adds is the durable storage openraft asks for,
//! on Sluice's own storage layer:
//!
//! - [`log_store`]: the Raft log as a partition log, `__cluster_metadata-0`
//!   (KRaft's name), one record batch per entry at the entry's index; the
//!   vote, and what was purged, in a `quorum-state` file.
//! - [`network`]: openraft's messages between the voters' controller
//!   listeners, over `io::rpc`.
//! - [`quorum`]: one node's member of the quorum: start, write, status.
//! - [`replay`]: the committed log read back before the shards start.
//! - [`state_machine`]: applies committed entries to a [`Machine`] (the
//!   metadata image, through a trait, so that `metadata` need not know about
//!   Raft), and keeps its snapshots as checkpoint files.

pub mod log_store;
pub mod network;
pub mod quorum;
pub mod replay;
pub mod state_machine;
#[cfg(test)]
mod tests;
pub mod types;

pub use network::ControllerHandler;
pub use quorum::{Quorum, QuorumConfig, QuorumStatus, WriteError};
pub use state_machine::{Machine, Raft};
pub use types::{Applied, Command, NodeId, TypeConfig};
