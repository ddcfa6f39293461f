//! The state machine of one classic consumer group: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup as Kafka's `GroupCoordinator` runs them.
//!
//! Pure and synchronous: no I/O, no clock (time comes in as `now_ms`), no
//! offsets. The broker parks JoinGroup/SyncGroup requests under a [`RequestId`],
//! delivers the [`Output`]s every call returns (answers may come from a later
//! call than the one that parked the request), and calls [`Group::tick`]
//! periodically so that deadlines fire.
//!
//! Kafka's purgatory timers become deadlines checked by `tick` (the rebalance
//! one also at the end of every call that can complete it):
//! - each member's heartbeat deadline (session timeout, or
//!   [`NEW_MEMBER_JOIN_TIMEOUT_MS`] for a member that never got a member id);
//! - the PreparingRebalance deadline, including the initial rebalance delay;
//! - the pending-sync deadline: members that got a JoinGroup answer but never
//!   sent SyncGroup are removed after the rebalance timeout;
//! - KIP-394 pending member ids, forgotten after their session timeout.

mod join;
mod membership;
mod sync;
#[cfg(test)]
mod tests;
mod types;

pub use types::{
    Group, GroupConfig, GroupError, GroupState, JoinMember, JoinRequest, JoinResponse, LeaveMember,
    MemberDescription, Output, RequestId, SyncRequest, SyncResponse,
    DEFAULT_INITIAL_REBALANCE_DELAY_MS, DEFAULT_MAX_SESSION_TIMEOUT_MS, DEFAULT_MAX_SIZE,
    DEFAULT_MIN_SESSION_TIMEOUT_MS, NEW_MEMBER_JOIN_TIMEOUT_MS, NO_GENERATION, UNKNOWN_MEMBER_ID,
};
