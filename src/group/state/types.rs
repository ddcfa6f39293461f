//! The group's data: members, states, requests and answers, and what
//! callers read of a group. The transitions are in `join.rs`, `sync.rs` and
//! `membership.rs`.

use std::collections::BTreeSet;

use bytes::Bytes;

pub type RequestId = u64;

/// The member id of a client the coordinator has not named yet.
pub const UNKNOWN_MEMBER_ID: &str = "";
/// The generation in error responses and in "simple" (non-member) offset commits.
pub const NO_GENERATION: i32 = -1;
/// How long a new member may wait in JoinGroup before it is dropped (Kafka's
/// `NewMemberJoinTimeoutMs`): without a member id it cannot heartbeat, and a
/// client that gave up would otherwise linger as a defunct member.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;
/// group.min.session.timeout.ms
pub const DEFAULT_MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
/// group.max.session.timeout.ms
pub const DEFAULT_MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;
/// group.initial.rebalance.delay.ms
pub const DEFAULT_INITIAL_REBALANCE_DELAY_MS: i64 = 3_000;
/// group.max.size (Kafka's default is Integer.MAX_VALUE).
pub const DEFAULT_MAX_SIZE: usize = i32::MAX as usize;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Kafka's group.initial.rebalance.delay.ms.
    pub initial_rebalance_delay_ms: i64,
    /// Kafka's group.max.size.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: DEFAULT_MIN_SESSION_TIMEOUT_MS,
            max_session_timeout_ms: DEFAULT_MAX_SESSION_TIMEOUT_MS,
            initial_rebalance_delay_ms: DEFAULT_INITIAL_REBALANCE_DELAY_MS,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The state's name as Kafka reports it (DescribeGroups, ListGroups).
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// The states a group may move to this one from (Kafka's `validPreviousStates`).
    pub(super) fn valid_previous(self) -> &'static [GroupState] {
        use GroupState::*;
        match self {
            Empty => &[PreparingRebalance],
            PreparingRebalance => &[Stable, CompletingRebalance, Empty],
            CompletingRebalance => &[PreparingRebalance],
            Stable => &[CompletingRebalance],
            Dead => &[Stable, PreparingRebalance, CompletingRebalance, Empty, Dead],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the generation is not the group's current one")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the allowed range")]
    InvalidSessionTimeout,
    #[error("a member id is required: rejoin with the one given")]
    MemberIdRequired,
    #[error("the group instance id is now held by another member id")]
    FencedInstanceId,
    #[error("the group has reached its maximum size")]
    GroupMaxSizeReached,
    #[error("the group id is invalid")]
    InvalidGroupId,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("unknown server error")]
    UnknownServerError,
}

impl GroupError {
    /// The Kafka protocol error code.
    pub fn code(&self) -> i16 {
        match self {
            GroupError::UnknownMemberId => 25,
            GroupError::IllegalGeneration => 22,
            GroupError::RebalanceInProgress => 27,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::MemberIdRequired => 79,
            GroupError::FencedInstanceId => 82,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::InvalidGroupId => 24,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::UnknownServerError => -1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: the broker passes the session timeout (as Kafka does).
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394); ignored for static members, as in Kafka.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only for the leader.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    pub(super) fn error(member_id: String, error: GroupError) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation_id: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// (member id, assignment); only the leader's are used.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub(super) fn error(error: GroupError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer to a parked request, to be delivered by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Join(RequestId, JoinResponse),
    Sync(RequestId, SyncResponse),
}

impl Output {
    pub fn request_id(&self) -> RequestId {
        match self {
            Output::Join(id, _) | Output::Sync(id, _) => *id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the selected protocol; empty unless the group is Stable (as Kafka describes it).
    pub metadata: Bytes,
    /// Empty unless the group is Stable.
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout_ms: i32,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) awaiting_join: Option<RequestId>,
    pub(super) awaiting_sync: Option<RequestId>,
    /// The member is removed once `now` passes this without a heartbeat.
    pub(super) session_deadline_ms: i64,
    /// Has not received a JoinGroup answer yet, so it has no member id to heartbeat
    /// with: it is held to the new-member timeout even while awaiting the rebalance.
    pub(super) is_new: bool,
}

impl Member {
    pub(super) fn new(
        member_id: String,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
    ) -> Member {
        Member {
            member_id,
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(id),
            awaiting_sync: None,
            session_deadline_ms: now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS,
            is_new: true,
        }
    }

    /// A rejoin may change protocols, timeouts and (after a static restart) the client.
    pub(super) fn update(&mut self, request: JoinRequest) {
        self.client_id = request.client_id;
        self.client_host = request.client_host;
        self.session_timeout_ms = request.session_timeout_ms;
        self.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.protocols = request.protocols;
    }

    pub(super) fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata)
    }

    pub(super) fn supports(&self, protocol: &str) -> bool {
        self.metadata(protocol).is_some()
    }

    /// Restarts the heartbeat clock (Kafka's completeAndScheduleNextHeartbeatExpiration).
    pub(super) fn touch(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }

    /// Members parked in JoinGroup/SyncGroup are kept alive by the rebalance,
    /// except new members, which have their own join timeout.
    pub(super) fn session_expired(&self, now_ms: i64) -> bool {
        let parked = self.awaiting_join.is_some() || self.awaiting_sync.is_some();
        self.session_deadline_ms < now_ms && (self.is_new || !parked)
    }
}

/// A KIP-394 member id handed out with MemberIdRequired, not yet used to join.
#[derive(Debug, Clone)]
pub(super) struct PendingMember {
    pub(super) member_id: String,
    pub(super) deadline_ms: i64,
}

/// When PreparingRebalance ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum JoinTimer {
    /// An Empty group's first rebalance (Kafka's InitialDelayedJoin): never ends
    /// early; each time it expires with new members arrived meanwhile it runs
    /// again for up to `configured_ms`, until `remaining_ms` (the rebalance
    /// timeout less the first delay) is used up.
    Initial {
        deadline_ms: i64,
        delay_ms: i64,
        configured_ms: i64,
        remaining_ms: i64,
    },
    /// Ends once every member (and pending member) has rejoined, or at the deadline.
    Normal { deadline_ms: i64 },
}

/// One classic consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub(super) group_id: String,
    pub(super) state: GroupState,
    pub(super) generation_id: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol_name: Option<String>,
    /// Always a member when there are members; None otherwise.
    pub(super) leader: Option<String>,
    /// In join order: the order decides leader fallback and vote ties.
    pub(super) members: Vec<Member>,
    pub(super) pending_members: Vec<PendingMember>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub(super) pending_sync: BTreeSet<String>,
    pub(super) sync_deadline_ms: Option<i64>,
    pub(super) join_timer: Option<JoinTimer>,
    /// A member joined during the initial delay, which may therefore be extended.
    pub(super) new_member_added: bool,
    /// From the last config seen: rebalances started by LeaveGroup need it too.
    pub(super) initial_delay_ms: i64,
}

/// A JoinGroup refused: the member id to answer with, and why.
pub(super) type JoinRejection = (String, GroupError);

impl Group {
    pub fn new(group_id: String) -> Group {
        Group {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            join_timer: None,
            new_member_added: false,
            initial_delay_ms: DEFAULT_INITIAL_REBALANCE_DELAY_MS,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> Vec<MemberDescription> {
        let stable = self.state == GroupState::Stable;
        self.members
            .iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    self.selected_metadata(m)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member subscriptions for the current protocol (raw metadata bytes).
    pub fn selected_protocol_metadata(&self) -> Vec<Bytes> {
        let Some(protocol) = self.protocol_name.as_deref() else {
            return Vec::new();
        };
        self.members
            .iter()
            .filter_map(|m| m.metadata(protocol).cloned())
            .collect()
    }

    // ---------------------------------------------------------------- JoinGroup
}
