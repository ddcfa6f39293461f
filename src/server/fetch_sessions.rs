//! KIP-227 fetch sessions: what a connection's sessions remember of the
//! partitions they fetch, so that an incremental Fetch carries only changes.
//! Kept per connection (see docs/IDENTITIES.md): a session is usable only by
//! the connection that made it.

use std::collections::HashMap;

use indexmap::IndexMap;
use uuid::Uuid;

/// Fetch sessions one connection may hold. Clients use one per broker connection.
pub const FETCH_SESSIONS_PER_CONNECTION_MAX: usize = 8;
/// One partition of a fetch, as requested (or remembered by a session).
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub(crate) topic_name: String,
    pub(crate) topic_id: Uuid,
    pub(crate) partition: i32,
    pub(crate) fetch_offset: i64,
    pub(crate) partition_max_bytes: i32,
    /// KIP-320: the leader epoch the client believes in (-1: unchecked).
    pub(crate) current_leader_epoch: i32,
    /// A follower's: the epoch of its last batch (-1: none).
    pub(crate) last_fetched_epoch: i32,
}

/// What a session remembers of a partition: where the client is, and what it
/// was last told, so that an incremental response can leave unchanged partitions out.
#[derive(Debug, Clone)]
pub(crate) struct SessionPartition {
    pub(crate) wanted: Wanted,
    pub(crate) last_high_watermark: i64,
    pub(crate) last_stable_offset: i64,
    pub(crate) last_log_start_offset: i64,
}

#[derive(Debug, Default)]
pub(crate) struct FetchSession {
    /// The epoch the next request must carry.
    pub(crate) next_epoch: i32,
    pub(crate) partitions: IndexMap<(String, Uuid, i32), SessionPartition>,
}

/// The fetch sessions of one connection.
#[derive(Debug, Default)]
pub struct FetchSessions {
    pub(crate) sessions: HashMap<i32, FetchSession>,
    pub(crate) next_id: i32,
}

impl FetchSessions {
    pub(crate) fn new_id(&mut self) -> Option<i32> {
        if self.sessions.len() >= FETCH_SESSIONS_PER_CONNECTION_MAX {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1).max(1);
        Some(self.next_id)
    }
}
