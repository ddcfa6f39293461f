//! The types the quorum is made of: openraft's type configuration for
//! Sluice, and short names for openraft's types under it.

use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use serde::{Deserialize, Serialize};

/// A node's id: Kafka's `node.id`.
pub type NodeId = u64;

/// One command of the metadata log, as the [`Machine`] reads it (a metadata
/// record, encoded by its owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub String);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What applying a command said: nothing, or why the machine refused it (a
/// refusal is deterministic, so every node refuses it alike and the log
/// stays one log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub refused: Option<String>,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.refused {
            None => f.write_str("applied"),
            Some(why) => write!(f, "refused: {why}"),
        }
    }
}

openraft::declare_raft_types!(
    /// Sluice's Raft types: a term is a KRaft leader epoch (one leader per
    /// term), a node is addressed by its controller listener.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::impls::BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
        AsyncRuntime = openraft_rt_compio::CompioRuntime,
);

// Names of openraft's types for this configuration.
pub type Entry = EntryOf<TypeConfig>;
pub type LogId = LogIdOf<TypeConfig>;
pub type Vote = VoteOf<TypeConfig>;
pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = StoredMembershipOf<TypeConfig>;
/// A snapshot's bytes in memory: the metadata image is small.
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;
