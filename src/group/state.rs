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

use std::collections::{BTreeSet, HashMap};

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
    fn valid_previous(self) -> &'static [GroupState] {
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
    fn error(member_id: String, error: GroupError) -> JoinResponse {
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
    fn error(error: GroupError) -> SyncResponse {
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
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    /// The member is removed once `now` passes this without a heartbeat.
    session_deadline_ms: i64,
    /// Has not received a JoinGroup answer yet, so it has no member id to heartbeat
    /// with: it is held to the new-member timeout even while awaiting the rebalance.
    is_new: bool,
}

impl Member {
    fn new(member_id: String, request: JoinRequest, id: RequestId, now_ms: i64) -> Member {
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
    fn update(&mut self, request: JoinRequest) {
        self.client_id = request.client_id;
        self.client_host = request.client_host;
        self.session_timeout_ms = request.session_timeout_ms;
        self.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.protocols = request.protocols;
    }

    fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata)
    }

    fn supports(&self, protocol: &str) -> bool {
        self.metadata(protocol).is_some()
    }

    /// Restarts the heartbeat clock (Kafka's completeAndScheduleNextHeartbeatExpiration).
    fn touch(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }

    /// Members parked in JoinGroup/SyncGroup are kept alive by the rebalance,
    /// except new members, which have their own join timeout.
    fn session_expired(&self, now_ms: i64) -> bool {
        let parked = self.awaiting_join.is_some() || self.awaiting_sync.is_some();
        self.session_deadline_ms < now_ms && (self.is_new || !parked)
    }
}

/// A KIP-394 member id handed out with MemberIdRequired, not yet used to join.
#[derive(Debug, Clone)]
struct PendingMember {
    member_id: String,
    deadline_ms: i64,
}

/// When PreparingRebalance ends.
#[derive(Debug, Clone, Copy)]
enum JoinTimer {
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
    group_id: String,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    /// Always a member when there are members; None otherwise.
    leader: Option<String>,
    /// In join order: the order decides leader fallback and vote ties.
    members: Vec<Member>,
    pending_members: Vec<PendingMember>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    sync_deadline_ms: Option<i64>,
    join_timer: Option<JoinTimer>,
    /// A member joined during the initial delay, which may therefore be extended.
    new_member_added: bool,
    /// From the last config seen: rebalances started by LeaveGroup need it too.
    initial_delay_ms: i64,
}

/// A JoinGroup refused: the member id to answer with, and why.
type JoinRejection = (String, GroupError);

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

    /// A JoinGroup; the response may come now (in the returned outputs) or later
    /// (from tick/sync/another join).
    pub fn join(
        &mut self,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
        config: &GroupConfig,
        new_member_id: impl FnOnce() -> String,
    ) -> Vec<Output> {
        self.initial_delay_ms = config.initial_rebalance_delay_ms;
        let mut out = Vec::new();
        if let Err((member_id, error)) =
            self.handle_join(request, id, now_ms, config, new_member_id, &mut out)
        {
            out.push(Output::Join(id, JoinResponse::error(member_id, error)));
        }
        // Kafka tries to complete the rebalance after every JoinGroup.
        self.check_join(now_ms, &mut out);
        out
    }

    fn handle_join(
        &mut self,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
        config: &GroupConfig,
        new_member_id: impl FnOnce() -> String,
        out: &mut Vec<Output>,
    ) -> Result<(), JoinRejection> {
        self.validate_join(&request, config)
            .map_err(|e| (request.member_id.clone(), e))?;
        if !self.accepts_joining_member(&request, config.max_size) {
            // Kafka drops an existing member that cannot rejoin a full group.
            self.detach_member(&request.member_id, out);
            return Err((
                UNKNOWN_MEMBER_ID.to_string(),
                GroupError::GroupMaxSizeReached,
            ));
        }
        if !self.supports_protocols(&request) {
            return Err((request.member_id, GroupError::InconsistentGroupProtocol));
        }
        if request.member_id.is_empty() {
            let member_id = new_member_id();
            self.join_new_member(request, member_id, id, now_ms, out)
        } else {
            self.join_known_member(request, id, now_ms, out)
        }
    }

    fn validate_join(&self, request: &JoinRequest, config: &GroupConfig) -> Result<(), GroupError> {
        let timeouts = config.min_session_timeout_ms..=config.max_session_timeout_ms;
        if self.group_id.is_empty() {
            Err(GroupError::InvalidGroupId)
        } else if !timeouts.contains(&request.session_timeout_ms) {
            Err(GroupError::InvalidSessionTimeout)
        } else if self.state == GroupState::Dead {
            // Deleted meanwhile: the client rediscovers the coordinator and retries.
            Err(GroupError::CoordinatorNotAvailable)
        } else {
            Ok(())
        }
    }

    /// group.max.size. While rebalancing, only the rejoined members count, so
    /// the members that rejoin last are the ones left out.
    fn accepts_joining_member(&self, request: &JoinRequest, max_size: usize) -> bool {
        let existing = self.own_index(request).map(|i| &self.members[i]);
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                existing.is_some_and(|m| m.awaiting_join.is_some())
                    || self.awaiting_join_count() < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                existing.is_some() || self.members.len() < max_size
            }
        }
    }

    /// The protocol type must match the group's, and some protocol must be one
    /// that every other member supports.
    fn supports_protocols(&self, request: &JoinRequest) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return false;
        }
        // The joiner's own current entry does not count: it is being replaced.
        let own = self.own_index(request);
        let others: Vec<&Member> = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != own)
            .map(|(_, m)| m)
            .collect();
        request
            .protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    fn join_new_member(
        &mut self,
        request: JoinRequest,
        member_id: String,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), JoinRejection> {
        let static_index = request
            .group_instance_id
            .as_deref()
            .and_then(|i| self.static_index(i));
        if let Some(index) = static_index {
            self.replace_static_member(index, member_id, request, id, now_ms, out);
        } else if request.require_known_member_id && request.group_instance_id.is_none() {
            // KIP-394: hand out the id and make the client come back with it, so a
            // client that times out and retries does not leave a member behind.
            let deadline_ms = now_ms + i64::from(request.session_timeout_ms);
            self.pending_members.push(PendingMember {
                member_id: member_id.clone(),
                deadline_ms,
            });
            return Err((member_id, GroupError::MemberIdRequired));
        } else {
            self.add_member_and_rebalance(member_id, request, id, now_ms, out);
        }
        Ok(())
    }

    fn join_known_member(
        &mut self,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), JoinRejection> {
        if request.group_instance_id.is_none() && self.is_pending(&request.member_id) {
            let member_id = request.member_id.clone();
            self.add_member_and_rebalance(member_id, request, id, now_ms, out);
            return Ok(());
        }
        let index = self
            .validate_current_member(&request.member_id, request.group_instance_id.as_deref())
            .map_err(|e| (request.member_id.clone(), e))?;
        let unchanged = self.members[index].protocols == request.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(index, request, id, now_ms, out)
            }
            // The member probably missed its JoinGroup answer: repeat it.
            GroupState::CompletingRebalance if unchanged => {
                self.answer_current_generation(index, id, now_ms, out)
            }
            // A leader's rejoin forces a rebalance: it is how the leader reacts to
            // changes the metadata does not show (new partitions, for consumers).
            GroupState::Stable if unchanged && !self.is_leader(index) => {
                self.answer_current_generation(index, id, now_ms, out)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(index, request, id, now_ms, out)
            }
            GroupState::Empty | GroupState::Dead => {
                return Err((request.member_id, GroupError::UnknownMemberId));
            }
        }
        Ok(())
    }

    fn answer_current_generation(
        &mut self,
        index: usize,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        self.members[index].touch(now_ms);
        let member_id = self.members[index].member_id.clone();
        let members = if self.is_leader(index) {
            self.current_member_metadata()
        } else {
            Vec::new()
        };
        let leader = self.leader.clone().unwrap_or_default();
        out.push(Output::Join(
            id,
            self.join_success(member_id, leader, members),
        ));
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        debug_assert!(
            self.index_of(&member_id).is_none(),
            "member id {member_id} handed out twice"
        );
        self.pending_members.retain(|p| p.member_id != member_id);
        if self.state == GroupState::PreparingRebalance && self.generation_id == 0 {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        self.members
            .push(Member::new(member_id, request, id, now_ms));
        self.maybe_prepare_rebalance(now_ms, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        index: usize,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let member = &mut self.members[index];
        member.update(request);
        if let Some(old) = member.awaiting_join.replace(id) {
            // Superseded by the retry; the old request's connection is likely gone.
            out.push(Output::Join(
                old,
                JoinResponse::error(member.member_id.clone(), GroupError::RebalanceInProgress),
            ));
        }
        self.maybe_prepare_rebalance(now_ms, out);
    }

    /// KIP-345: a static member restarted (empty member id, known instance id).
    /// It takes over the old member's slot under a new id; the old id is fenced.
    fn replace_static_member(
        &mut self,
        index: usize,
        new_member_id: String,
        request: JoinRequest,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let leader_before = self.leader.clone().unwrap_or_default();
        self.fence_parked_requests(index, out);
        self.rename_member(index, &new_member_id);
        let member = &mut self.members[index];
        member.update(request);
        member.awaiting_join = Some(id);
        member.touch(now_ms);
        match self.state {
            GroupState::Stable => {
                self.static_rejoin_while_stable(index, leader_before, now_ms, out)
            }
            // The leader may be assigning to the old member id: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, out),
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// A restarted static member keeps its generation and assignment unless the
    /// group's protocol would change. It is told the leader as it was before the
    /// restart, so a restarted leader does not run an assignment that a Stable
    /// group would ignore; its SyncGroup returns the stored assignment.
    fn static_rejoin_while_stable(
        &mut self,
        index: usize,
        leader_before: String,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        if self.select_protocol() != self.protocol_name {
            self.maybe_prepare_rebalance(now_ms, out);
            return;
        }
        let member = &mut self.members[index];
        let Some(id) = member.awaiting_join.take() else {
            return;
        };
        let member_id = member.member_id.clone();
        out.push(Output::Join(
            id,
            self.join_success(member_id, leader_before, Vec::new()),
        ));
    }

    fn fence_parked_requests(&mut self, index: usize, out: &mut Vec<Output>) {
        let member = &mut self.members[index];
        if let Some(old) = member.awaiting_join.take() {
            out.push(Output::Join(
                old,
                JoinResponse::error(member.member_id.clone(), GroupError::FencedInstanceId),
            ));
        }
        if let Some(old) = member.awaiting_sync.take() {
            out.push(Output::Sync(
                old,
                SyncResponse::error(GroupError::FencedInstanceId),
            ));
        }
    }

    fn rename_member(&mut self, index: usize, new_member_id: &str) {
        let old = std::mem::replace(
            &mut self.members[index].member_id,
            new_member_id.to_string(),
        );
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new_member_id.to_string());
        }
        if self.pending_sync.remove(&old) {
            self.pending_sync.insert(new_member_id.to_string());
        }
    }

    // ---------------------------------------------------------------- rebalance

    fn maybe_prepare_rebalance(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        use GroupState::*;
        if matches!(self.state, Stable | CompletingRebalance | Empty) {
            self.prepare_rebalance(now_ms, out);
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting in SyncGroup must rejoin instead.
            for member in &mut self.members {
                member.assignment = Bytes::new();
            }
            self.answer_parked_syncs(Some(GroupError::RebalanceInProgress), now_ms, out);
        }
        self.clear_pending_sync();
        let timeout = self.rebalance_timeout_ms();
        let timer = if self.state == GroupState::Empty {
            self.new_member_added = false;
            let delay = self.initial_delay_ms.max(0);
            let remaining_ms = (timeout - delay).max(0);
            JoinTimer::Initial {
                deadline_ms: now_ms + delay,
                delay_ms: delay,
                configured_ms: delay,
                remaining_ms,
            }
        } else {
            JoinTimer::Normal {
                deadline_ms: now_ms + timeout,
            }
        };
        self.join_timer = Some(timer);
        self.transition(GroupState::PreparingRebalance);
        self.check_join(now_ms, out);
    }

    /// Ends PreparingRebalance if its timer allows.
    fn check_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        match self.join_timer {
            Some(JoinTimer::Initial {
                deadline_ms,
                delay_ms,
                configured_ms,
                remaining_ms,
            }) => {
                if now_ms >= deadline_ms {
                    self.initial_delay_expired(now_ms, delay_ms, configured_ms, remaining_ms, out);
                }
            }
            Some(JoinTimer::Normal { deadline_ms }) => {
                if now_ms >= deadline_ms || self.all_members_joined() {
                    self.complete_join(now_ms, out);
                }
            }
            None => self.complete_join(now_ms, out),
        }
    }

    fn initial_delay_expired(
        &mut self,
        now_ms: i64,
        delay_ms: i64,
        configured_ms: i64,
        remaining_ms: i64,
        out: &mut Vec<Output>,
    ) {
        if self.new_member_added && remaining_ms != 0 {
            // More members are arriving: wait for them a little longer.
            self.new_member_added = false;
            let delay = configured_ms.min(remaining_ms);
            let remaining_ms = (remaining_ms - delay_ms).max(0);
            self.join_timer = Some(JoinTimer::Initial {
                deadline_ms: now_ms + delay,
                delay_ms: delay,
                configured_ms,
                remaining_ms,
            });
        } else {
            self.complete_join(now_ms, out);
        }
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// The end of PreparingRebalance (Kafka's onCompleteJoin).
    fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.join_timer = None;
        self.drop_members_not_rejoined(out);
        if !self.elect_joined_leader() && !self.members.is_empty() {
            // Only static members that have not rejoined are left: wait another
            // round; their sessions expire them if they never come back.
            let deadline_ms = now_ms + self.rebalance_timeout_ms();
            self.join_timer = Some(JoinTimer::Normal { deadline_ms });
            return;
        }
        self.init_next_generation();
        if self.state == GroupState::Empty {
            return;
        }
        self.answer_parked_joins(now_ms, out);
        self.pending_sync = self.members.iter().map(|m| m.member_id.clone()).collect();
        self.sync_deadline_ms = Some(now_ms + self.rebalance_timeout_ms());
    }

    /// Dynamic members that did not rejoin in time are gone; static ones keep
    /// their slot until their session expires (KIP-345).
    fn drop_members_not_rejoined(&mut self, out: &mut Vec<Output>) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in gone {
            self.detach_member(&member_id, out);
        }
    }

    /// Keeps the leader if it rejoined, else picks the first member that did.
    /// False if nobody rejoined.
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.as_deref() else {
            return false;
        };
        if self
            .member(leader)
            .is_some_and(|m| m.awaiting_join.is_some())
        {
            return true;
        }
        match self.members.iter().find(|m| m.awaiting_join.is_some()) {
            Some(joined) => {
                self.leader = Some(joined.member_id.clone());
                true
            }
            None => false,
        }
    }

    fn init_next_generation(&mut self) {
        self.generation_id = self.generation_id.wrapping_add(1);
        self.clear_pending_sync();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty);
        } else {
            self.protocol_name = self.select_protocol();
            self.transition(GroupState::CompletingRebalance);
        }
    }

    /// Answers every parked JoinGroup with the new generation; the leader also
    /// gets every member's metadata to compute the assignment.
    fn answer_parked_joins(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let mut parked = Vec::new();
        for member in &mut self.members {
            member.touch(now_ms);
            member.is_new = false;
            if let Some(id) = member.awaiting_join.take() {
                parked.push((id, member.member_id.clone()));
            }
        }
        let leader = self.leader.clone().unwrap_or_default();
        for (id, member_id) in parked {
            let members = if member_id == leader {
                self.current_member_metadata()
            } else {
                Vec::new()
            };
            out.push(Output::Join(
                id,
                self.join_success(member_id, leader.clone(), members),
            ));
        }
    }

    /// The protocol every member supports, chosen by vote: each member votes for
    /// the first such protocol in its own preference order; a tie goes to the
    /// protocol voted for first.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for member in &self.members {
            let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            else {
                continue;
            };
            match votes.iter_mut().find(|(voted, _)| voted == name) {
                Some((_, count)) => *count += 1,
                None => votes.push((name.as_str(), 1)),
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, most)| count > most) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    /// The longest rebalance timeout of the members bounds how long a rebalance waits.
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    // ---------------------------------------------------------------- SyncGroup

    pub fn sync(&mut self, request: SyncRequest, id: RequestId, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        match self.validate_sync(&request) {
            Ok(index) => self.handle_sync(index, request, id, now_ms, &mut out),
            Err(error) => out.push(Output::Sync(id, SyncResponse::error(error))),
        }
        out
    }

    fn validate_sync(&self, request: &SyncRequest) -> Result<usize, GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let index =
            self.validate_current_member(&request.member_id, request.group_instance_id.as_deref())?;
        let mismatch =
            |asked: &Option<String>, ours: &Option<String>| asked.is_some() && asked != ours;
        if request.generation_id != self.generation_id {
            Err(GroupError::IllegalGeneration)
        } else if mismatch(&request.protocol_type, &self.protocol_type)
            || mismatch(&request.protocol_name, &self.protocol_name)
        {
            Err(GroupError::InconsistentGroupProtocol)
        } else {
            Ok(index)
        }
    }

    fn handle_sync(
        &mut self,
        index: usize,
        request: SyncRequest,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                out.push(Output::Sync(
                    id,
                    SyncResponse::error(GroupError::UnknownMemberId),
                ));
            }
            GroupState::PreparingRebalance => {
                out.push(Output::Sync(
                    id,
                    SyncResponse::error(GroupError::RebalanceInProgress),
                ));
            }
            GroupState::CompletingRebalance => self.park_sync(index, request, id, now_ms, out),
            GroupState::Stable => {
                let member_id = self.members[index].member_id.clone();
                self.sync_received(&member_id);
                self.members[index].touch(now_ms);
                let assignment = self.members[index].assignment.clone();
                out.push(Output::Sync(id, self.sync_success(assignment)));
            }
        }
    }

    /// Followers wait for the leader; the leader's assignment answers everyone.
    fn park_sync(
        &mut self,
        index: usize,
        request: SyncRequest,
        id: RequestId,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let member = &mut self.members[index];
        member.touch(now_ms);
        if let Some(old) = member.awaiting_sync.replace(id) {
            out.push(Output::Sync(
                old,
                SyncResponse::error(GroupError::RebalanceInProgress),
            ));
        }
        let member_id = member.member_id.clone();
        self.sync_received(&member_id);
        if self.is_leader(index) {
            self.set_assignments(&request.assignments);
            self.answer_parked_syncs(None, now_ms, out);
            self.transition(GroupState::Stable);
        }
    }

    /// Members the leader left out get an empty assignment; unknown ids are ignored.
    fn set_assignments(&mut self, assignments: &[(String, Bytes)]) {
        let by_member: HashMap<&str, &Bytes> =
            assignments.iter().map(|(m, a)| (m.as_str(), a)).collect();
        for member in &mut self.members {
            member.assignment = by_member
                .get(member.member_id.as_str())
                .map(|a| (*a).clone())
                .unwrap_or_default();
        }
    }

    fn answer_parked_syncs(
        &mut self,
        error: Option<GroupError>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let mut parked = Vec::new();
        for member in &mut self.members {
            if let Some(id) = member.awaiting_sync.take() {
                // The session restarts once the member has its answer.
                member.touch(now_ms);
                parked.push((id, member.assignment.clone()));
            }
        }
        for (id, assignment) in parked {
            let response = match error {
                Some(error) => SyncResponse::error(error),
                None => self.sync_success(assignment),
            };
            out.push(Output::Sync(id, response));
        }
    }

    fn sync_received(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    fn clear_pending_sync(&mut self) {
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
    }

    // ---------------------------------------------------------------- Heartbeat

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let index = self.validate_current_member(member_id, group_instance_id)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members[index].touch(now_ms);
                Ok(())
            }
            GroupState::PreparingRebalance => {
                // Still alive, but must rejoin.
                self.members[index].touch(now_ms);
                Err(GroupError::RebalanceInProgress)
            }
        }
    }

    // ---------------------------------------------------------------- LeaveGroup

    /// LeaveGroup (v3+ batches several members): per-member results, plus
    /// outputs of any rebalance this completes. A Dead group answers every
    /// member with CoordinatorNotAvailable (Kafka puts it at the top level).
    pub fn leave(
        &mut self,
        members: &[LeaveMember],
        now_ms: i64,
    ) -> (Vec<Result<(), GroupError>>, Vec<Output>) {
        let mut out = Vec::new();
        if self.state == GroupState::Dead {
            return (
                vec![Err(GroupError::CoordinatorNotAvailable); members.len()],
                out,
            );
        }
        let results = members
            .iter()
            .map(|m| self.leave_one(m, now_ms, &mut out))
            .collect();
        (results, out)
    }

    fn leave_one(
        &mut self,
        leaving: &LeaveMember,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        let instance = leaving.group_instance_id.as_deref();
        let index = if leaving.member_id.is_empty() {
            // Administrative removal of a static member by instance id alone.
            instance
                .and_then(|i| self.static_index(i))
                .ok_or(GroupError::UnknownMemberId)?
        } else if self.is_pending(&leaving.member_id) {
            self.pending_members
                .retain(|p| p.member_id != leaving.member_id);
            self.check_join(now_ms, out);
            return Ok(());
        } else {
            self.validate_current_member(&leaving.member_id, instance)?
        };
        let member_id = self.members[index].member_id.clone();
        self.remove_member_and_update(&member_id, now_ms, out);
        Ok(())
    }

    // ---------------------------------------------------------------- timers

    /// Expires members whose session timed out and KIP-394 member ids never
    /// used; ends a PreparingRebalance whose members all rejoined or whose
    /// deadline passed (removing dynamic members that did not rejoin), with the
    /// initial-rebalance delay for an Empty group; removes members that never
    /// sent SyncGroup within the rebalance timeout.
    pub fn tick(&mut self, now_ms: i64, config: &GroupConfig) -> Vec<Output> {
        self.initial_delay_ms = config.initial_rebalance_delay_ms;
        let mut out = Vec::new();
        if self.state == GroupState::Dead {
            return out;
        }
        self.pending_members.retain(|p| p.deadline_ms >= now_ms);
        self.expire_sessions(now_ms, &mut out);
        self.check_join(now_ms, &mut out);
        self.check_sync_deadline(now_ms, &mut out);
        out
    }

    fn expire_sessions(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.session_expired(now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            // An earlier removal may have completed a rebalance that revived it.
            if self
                .member(&member_id)
                .is_some_and(|m| m.session_expired(now_ms))
            {
                self.remove_member_and_update(&member_id, now_ms, out);
            }
        }
    }

    /// Members that got the new generation but never sent SyncGroup are removed.
    fn check_sync_deadline(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let Some(deadline_ms) = self.sync_deadline_ms else {
            return;
        };
        let syncing = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if now_ms < deadline_ms || !syncing {
            return;
        }
        let missing = std::mem::take(&mut self.pending_sync);
        self.sync_deadline_ms = None;
        if missing.is_empty() {
            return;
        }
        for member_id in &missing {
            self.detach_member(member_id, out);
        }
        self.prepare_rebalance(now_ms, out);
    }

    // ---------------------------------------------------------------- offsets

    /// May this member commit offsets for this generation? (OffsetCommit.) A
    /// generation below zero from an empty group is a "simple" commit by a
    /// client that does not use group management.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, false)
    }

    /// The TxnOffsetCommit variant: old versions carry no member id or
    /// generation, so member-less commits are accepted even by a non-empty
    /// group, and a CompletingRebalance group does not refuse them.
    pub fn validate_txn_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, true)
    }

    fn validate_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        transactional: bool,
    ) -> Result<(), GroupError> {
        let as_member = generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some();
        if self.state == GroupState::Dead {
            Err(GroupError::CoordinatorNotAvailable)
        } else if generation_id < 0 && self.members.is_empty() {
            Ok(())
        } else if as_member {
            self.validate_current_member(member_id, group_instance_id)?;
            if generation_id != self.generation_id {
                Err(GroupError::IllegalGeneration)
            } else if !transactional && self.state == GroupState::CompletingRebalance {
                // The member has its new generation but not its assignment yet.
                Err(GroupError::RebalanceInProgress)
            } else {
                Ok(())
            }
        } else if transactional {
            Ok(())
        } else {
            // When the group has members, only members may commit.
            Err(GroupError::UnknownMemberId)
        }
    }

    // ---------------------------------------------------------------- deletion

    /// Drops everything (DeleteGroups); fails the parked requests with
    /// CoordinatorNotAvailable, which makes clients rediscover and rejoin.
    pub fn mark_dead(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        for member in self.members.drain(..) {
            if let Some(id) = member.awaiting_join {
                let response = JoinResponse::error(
                    member.member_id.clone(),
                    GroupError::CoordinatorNotAvailable,
                );
                out.push(Output::Join(id, response));
            }
            if let Some(id) = member.awaiting_sync {
                out.push(Output::Sync(
                    id,
                    SyncResponse::error(GroupError::CoordinatorNotAvailable),
                ));
            }
        }
        self.pending_members.clear();
        self.clear_pending_sync();
        self.join_timer = None;
        self.leader = None;
        self.protocol_name = None;
        self.transition(GroupState::Dead);
        out
    }

    // ---------------------------------------------------------------- helpers

    fn transition(&mut self, to: GroupState) {
        debug_assert!(
            to.valid_previous().contains(&self.state),
            "group {:?} -> {:?}",
            self.state,
            to
        );
        self.state = to;
    }

    fn index_of(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.member_id == member_id)
    }

    fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    fn static_index(&self, instance_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.group_instance_id.as_deref() == Some(instance_id))
    }

    /// The member a JoinGroup speaks for: by member id, or by instance id for a
    /// static member restarting with an empty member id.
    fn own_index(&self, request: &JoinRequest) -> Option<usize> {
        if request.member_id.is_empty() {
            request
                .group_instance_id
                .as_deref()
                .and_then(|i| self.static_index(i))
        } else {
            self.index_of(&request.member_id)
        }
    }

    fn is_pending(&self, member_id: &str) -> bool {
        self.pending_members
            .iter()
            .any(|p| p.member_id == member_id)
    }

    fn is_leader(&self, index: usize) -> bool {
        self.leader.as_deref() == Some(self.members[index].member_id.as_str())
    }

    fn awaiting_join_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    /// The member a request speaks for. With an instance id, that instance must
    /// be held by this member id: an older id of a restarted static member is
    /// fenced.
    fn validate_current_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<usize, GroupError> {
        match group_instance_id {
            Some(instance) => {
                let index = self
                    .static_index(instance)
                    .ok_or(GroupError::UnknownMemberId)?;
                if self.members[index].member_id == member_id {
                    Ok(index)
                } else {
                    Err(GroupError::FencedInstanceId)
                }
            }
            None => self.index_of(member_id).ok_or(GroupError::UnknownMemberId),
        }
    }

    /// Removes a member (left, expired) and moves the group on.
    fn remove_member_and_update(&mut self, member_id: &str, now_ms: i64, out: &mut Vec<Output>) {
        self.detach_member(member_id, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now_ms, out)
            }
            GroupState::PreparingRebalance => self.check_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Takes a member out, answering its parked requests with UnknownMemberId
    /// (a live client then rejoins from scratch).
    fn detach_member(&mut self, member_id: &str, out: &mut Vec<Output>) {
        let Some(index) = self.index_of(member_id) else {
            return;
        };
        let member = self.members.remove(index);
        if let Some(id) = member.awaiting_join {
            out.push(Output::Join(
                id,
                JoinResponse::error(UNKNOWN_MEMBER_ID.to_string(), GroupError::UnknownMemberId),
            ));
        }
        if let Some(id) = member.awaiting_sync {
            out.push(Output::Sync(
                id,
                SyncResponse::error(GroupError::UnknownMemberId),
            ));
        }
        self.sync_received(member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.first().map(|m| m.member_id.clone());
        }
    }

    fn selected_metadata(&self, member: &Member) -> Bytes {
        self.protocol_name
            .as_deref()
            .and_then(|p| member.metadata(p))
            .cloned()
            .unwrap_or_default()
    }

    fn current_member_metadata(&self) -> Vec<JoinMember> {
        self.members
            .iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: self.selected_metadata(m),
            })
            .collect()
    }

    fn join_success(
        &self,
        member_id: String,
        leader: String,
        members: Vec<JoinMember>,
    ) -> JoinResponse {
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id,
            members,
        }
    }

    fn sync_success(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupError::*;
    use GroupState::*;

    const T0: i64 = 1_000_000;
    const SESSION_MS: i64 = 10_000;
    const REBALANCE_MS: i64 = 30_000;

    fn cfg(initial_delay_ms: i64) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: initial_delay_ms,
            ..GroupConfig::default()
        }
    }

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn request(member_id: &str, protocols: &[(&str, &str)]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: SESSION_MS as i32,
            rebalance_timeout_ms: REBALANCE_MS as i32,
            protocol_type: "consumer".to_string(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), bytes(m)))
                .collect(),
            require_known_member_id: false,
        }
    }

    fn consumer(member_id: &str) -> JoinRequest {
        request(member_id, &[("range", "topics")])
    }

    fn static_consumer(member_id: &str, instance: &str) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some(instance.to_string()),
            ..consumer(member_id)
        }
    }

    fn named(id: &str) -> impl FnOnce() -> String {
        let id = id.to_string();
        move || id
    }

    fn unnamed() -> impl FnOnce() -> String {
        || panic!("no new member id expected")
    }

    fn sync_request(
        member_id: &str,
        generation_id: i32,
        assignments: &[(&str, &str)],
    ) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            generation_id,
            protocol_type: Some("consumer".to_string()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), bytes(a)))
                .collect(),
        }
    }

    fn join_answer(out: &[Output], id: RequestId) -> JoinResponse {
        out.iter()
            .find_map(|o| match o {
                Output::Join(i, r) if *i == id => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no JoinGroup answer for {id} in {out:?}"))
    }

    fn sync_answer(out: &[Output], id: RequestId) -> SyncResponse {
        out.iter()
            .find_map(|o| match o {
                Output::Sync(i, r) if *i == id => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no SyncGroup answer for {id} in {out:?}"))
    }

    fn leave_one(
        g: &mut Group,
        member_id: &str,
        instance: Option<&str>,
        now: i64,
    ) -> (Result<(), GroupError>, Vec<Output>) {
        let member = LeaveMember {
            member_id: member_id.to_string(),
            group_instance_id: instance.map(str::to_string),
        };
        let (results, out) = g.leave(&[member], now);
        assert_eq!(results.len(), 1);
        (results[0], out)
    }

    /// Members join at T0 during the initial delay (ids named in order, the
    /// first leads), complete generation 1, and all sync at the returned time;
    /// member `x` is assigned "A-x".
    fn stable_group(requests: Vec<JoinRequest>, ids: &[&str]) -> (Group, i64) {
        let c = cfg(3_000);
        let mut g = Group::new("g".to_string());
        for (i, (r, id)) in requests.into_iter().zip(ids).enumerate() {
            assert!(g.join(r, i as RequestId + 1, T0, &c, named(id)).is_empty());
        }
        let mut out = g.tick(T0 + 3_000, &c);
        if out.is_empty() {
            out = g.tick(T0 + 6_000, &c);
        }
        assert_eq!(out.len(), ids.len());
        assert_eq!(g.state(), CompletingRebalance);
        let t = T0 + 6_000;
        let leader = g.leader().unwrap().to_string();
        for (i, id) in ids.iter().enumerate().filter(|(_, id)| **id != leader) {
            assert!(g
                .sync(sync_request(id, 1, &[]), 100 + i as RequestId, t)
                .is_empty());
        }
        let assignments: Vec<(String, Bytes)> = ids
            .iter()
            .map(|id| (id.to_string(), bytes(&format!("A-{id}"))))
            .collect();
        let out = g.sync(
            SyncRequest {
                assignments,
                ..sync_request(&leader, 1, &[])
            },
            200,
            t,
        );
        assert_eq!(out.len(), ids.len());
        assert_eq!(g.state(), Stable);
        (g, t)
    }

    fn stable_pair() -> (Group, i64) {
        stable_group(vec![consumer(""), consumer("")], &["a", "b"])
    }

    #[test]
    fn names_and_codes() {
        assert_eq!(PreparingRebalance.name(), "PreparingRebalance");
        assert_eq!(CompletingRebalance.name(), "CompletingRebalance");
        assert_eq!(Dead.name(), "Dead");
        assert_eq!(MemberIdRequired.code(), 79);
        assert_eq!(FencedInstanceId.code(), 82);
        assert_eq!(UnknownServerError.code(), -1);
    }

    #[test]
    fn two_members_join_one_rebalance_and_sync() {
        let c = cfg(3_000);
        let mut g = Group::new("g".to_string());
        assert!(g.join(consumer(""), 1, T0, &c, named("a")).is_empty());
        assert_eq!(g.state(), PreparingRebalance);
        let b = request("", &[("range", "topics-b")]);
        assert!(g.join(b, 2, T0 + 100, &c, named("b")).is_empty());
        // "b" arrived during the initial delay, so it is extended once.
        assert!(g.tick(T0 + 3_000, &c).is_empty());
        let out = g.tick(T0 + 6_000, &c);
        assert_eq!(out.len(), 2);
        let (ja, jb) = (join_answer(&out, 1), join_answer(&out, 2));
        assert_eq!(
            (
                ja.error,
                ja.generation_id,
                ja.member_id.as_str(),
                ja.leader.as_str()
            ),
            (None, 1, "a", "a")
        );
        assert_eq!(
            (
                jb.error,
                jb.generation_id,
                jb.member_id.as_str(),
                jb.leader.as_str()
            ),
            (None, 1, "b", "a")
        );
        assert_eq!(ja.protocol_name.as_deref(), Some("range"));
        assert_eq!(ja.protocol_type.as_deref(), Some("consumer"));
        let subscriptions: Vec<(&str, Bytes)> = ja
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), m.metadata.clone()))
            .collect();
        assert_eq!(
            subscriptions,
            vec![("a", bytes("topics")), ("b", bytes("topics-b"))]
        );
        assert!(jb.members.is_empty());
        assert_eq!(g.state(), CompletingRebalance);

        // The follower waits for the leader's assignment.
        assert!(g.sync(sync_request("b", 1, &[]), 3, T0 + 6_100).is_empty());
        let out = g.sync(
            sync_request("a", 1, &[("a", "A"), ("b", "B")]),
            4,
            T0 + 6_200,
        );
        assert_eq!(sync_answer(&out, 3).assignment, bytes("B"));
        let leader_answer = sync_answer(&out, 4);
        assert_eq!(
            (leader_answer.error, leader_answer.assignment),
            (None, bytes("A"))
        );
        assert_eq!(leader_answer.protocol_name.as_deref(), Some("range"));
        assert_eq!(g.state(), Stable);
        // A repeated SyncGroup in Stable gets the stored assignment at once.
        assert_eq!(
            sync_answer(&g.sync(sync_request("b", 1, &[]), 5, T0 + 6_300), 5).assignment,
            bytes("B")
        );
        let described = g.members();
        assert_eq!(described[1].assignment, bytes("B"));
        assert_eq!(described[1].metadata, bytes("topics-b"));
        assert_eq!(
            g.selected_protocol_metadata(),
            vec![bytes("topics"), bytes("topics-b")]
        );
    }

    #[test]
    fn third_member_triggers_a_rebalance() {
        let (mut g, t) = stable_pair();
        let c = cfg(3_000);
        assert!(g.join(consumer(""), 10, t, &c, named("c")).is_empty());
        assert_eq!(g.state(), PreparingRebalance);
        assert_eq!(g.heartbeat("a", None, 1, t + 10), Err(RebalanceInProgress));
        assert_eq!(g.heartbeat("b", None, 1, t + 10), Err(RebalanceInProgress));
        // Commits of the old generation are still accepted while preparing.
        assert_eq!(g.validate_offset_commit("a", None, 1), Ok(()));
        assert!(g.join(consumer("a"), 11, t + 20, &c, unnamed()).is_empty());
        let out = g.join(consumer("b"), 12, t + 30, &c, unnamed());
        assert_eq!(out.len(), 3);
        for (id, member) in [(10, "c"), (11, "a"), (12, "b")] {
            let answer = join_answer(&out, id);
            assert_eq!(
                (
                    answer.generation_id,
                    answer.member_id.as_str(),
                    answer.leader.as_str()
                ),
                (2, member, "a")
            );
        }
        assert_eq!(join_answer(&out, 11).members.len(), 3);
        assert_eq!(g.state(), CompletingRebalance);
        assert_eq!(g.heartbeat("c", None, 2, t + 40), Ok(()));
    }

    #[test]
    fn session_timeout_evicts_a_member() {
        let (mut g, t) = stable_pair();
        let c = cfg(3_000);
        assert_eq!(g.heartbeat("a", None, 1, t + 8_000), Ok(()));
        assert!(g.tick(t + SESSION_MS, &c).is_empty());
        assert_eq!(g.member_count(), 2);
        assert!(g.tick(t + SESSION_MS + 1, &c).is_empty());
        assert_eq!(g.member_count(), 1);
        assert_eq!(g.state(), PreparingRebalance);
        assert_eq!(
            g.heartbeat("b", None, 1, t + SESSION_MS + 2),
            Err(UnknownMemberId)
        );
        assert_eq!(
            g.heartbeat("a", None, 1, t + SESSION_MS + 2),
            Err(RebalanceInProgress)
        );
        let out = g.join(consumer("a"), 20, t + SESSION_MS + 3, &c, unnamed());
        let answer = join_answer(&out, 20);
        assert_eq!(
            (
                answer.generation_id,
                answer.leader.as_str(),
                answer.members.len()
            ),
            (2, "a", 1)
        );
    }

    #[test]
    fn all_members_expiring_empties_the_group() {
        let (mut g, t) = stable_pair();
        let c = cfg(3_000);
        assert!(g.tick(t + SESSION_MS + 1, &c).is_empty());
        assert_eq!(
            (g.state(), g.generation_id(), g.member_count()),
            (Empty, 2, 0)
        );
        assert_eq!(g.protocol_name(), None);
        assert_eq!(g.leader(), None);
    }

    #[test]
    fn rebalance_deadline_removes_members_that_did_not_rejoin() {
        let (mut g, t) = stable_pair();
        let c = cfg(3_000);
        assert!(g.join(consumer(""), 10, t, &c, named("c")).is_empty());
        assert!(g.join(consumer("a"), 11, t + 100, &c, unnamed()).is_empty());
        // "b" stays alive (heartbeats) but never rejoins.
        let mut now = t;
        let mut out = Vec::new();
        while out.is_empty() {
            now += 1_000;
            assert_eq!(g.heartbeat("b", None, 1, now), Err(RebalanceInProgress));
            out = g.tick(now, &c);
        }
        assert_eq!(now, t + REBALANCE_MS);
        assert_eq!(out.len(), 2);
        assert_eq!(join_answer(&out, 10).generation_id, 2);
        assert_eq!(join_answer(&out, 11).members.len(), 2);
        assert_eq!(g.member_count(), 2);
        assert_eq!(g.heartbeat("b", None, 1, now), Err(UnknownMemberId));
    }

    #[test]
    fn static_member_not_rejoining_keeps_its_slot_until_its_session_expires() {
        let (mut g, t) = stable_group(
            vec![static_consumer("", "ia"), static_consumer("", "ib")],
            &["a", "b"],
        );
        let c = cfg(3_000);
        assert!(g
            .join(static_consumer("a", "ia"), 10, t, &c, unnamed())
            .is_empty());
        for now in (t + 9_000..t + REBALANCE_MS).step_by(9_000) {
            assert_eq!(
                g.heartbeat("b", Some("ib"), 1, now),
                Err(RebalanceInProgress)
            );
            assert!(g.tick(now, &c).is_empty());
        }
        // The deadline passes; static "b" stays, without a JoinGroup answer.
        let out = g.tick(t + REBALANCE_MS, &c);
        assert_eq!(out.len(), 1);
        assert_eq!(join_answer(&out, 10).members.len(), 2);
        assert_eq!(
            (g.member_count(), g.state(), g.generation_id()),
            (2, CompletingRebalance, 2)
        );
        // The new generation restarts every session; without heartbeats "b" then expires.
        assert_eq!(
            g.heartbeat("a", Some("ia"), 2, t + REBALANCE_MS + 5_000),
            Ok(())
        );
        assert!(g.tick(t + REBALANCE_MS + SESSION_MS, &c).is_empty());
        assert_eq!(g.member_count(), 2);
        assert!(g.tick(t + REBALANCE_MS + SESSION_MS + 1, &c).is_empty());
        assert_eq!(g.member_count(), 1);
        assert_eq!(g.state(), PreparingRebalance);
    }

    #[test]
    fn new_member_waiting_too_long_is_dropped() {
        let (mut g, t) = stable_group(
            vec![
                JoinRequest {
                    rebalance_timeout_ms: 600_000,
                    ..consumer("")
                },
                consumer(""),
            ],
            &["a", "b"],
        );
        let c = cfg(3_000);
        assert!(g.join(consumer(""), 10, t, &c, named("c")).is_empty());
        let mut now = t;
        let out = loop {
            now += 1_000;
            for member in ["a", "b"] {
                assert_eq!(g.heartbeat(member, None, 1, now), Err(RebalanceInProgress));
            }
            let out = g.tick(now, &c);
            if !out.is_empty() {
                break out;
            }
        };
        assert_eq!(now, t + NEW_MEMBER_JOIN_TIMEOUT_MS + 1_000);
        let answer = join_answer(&out, 10);
        assert_eq!(
            (answer.error, answer.member_id.as_str()),
            (Some(UnknownMemberId), "")
        );
        assert_eq!(g.member_count(), 2);
    }

    #[test]
    fn kip_394_two_step_join() {
        let c = cfg(0);
        let mut g = Group::new("g".to_string());
        let first = JoinRequest {
            require_known_member_id: true,
            ..consumer("")
        };
        let out = g.join(first.clone(), 1, T0, &c, named("m1"));
        let answer = join_answer(&out, 1);
        assert_eq!(
            (
                answer.error,
                answer.member_id.as_str(),
                answer.generation_id
            ),
            (Some(MemberIdRequired), "m1", -1)
        );
        assert_eq!((g.state(), g.member_count()), (Empty, 0));
        assert_eq!(g.heartbeat("m1", None, 0, T0), Err(UnknownMemberId));
        // With no initial delay the rebalance completes at once.
        let out = g.join(
            JoinRequest {
                member_id: "m1".to_string(),
                ..first.clone()
            },
            2,
            T0 + 10,
            &c,
            unnamed(),
        );
        let answer = join_answer(&out, 2);
        assert_eq!(
            (answer.error, answer.generation_id, answer.leader.as_str()),
            (None, 1, "m1")
        );
        assert!(!g.is_pending("m1"));
        assert_eq!(
            g.sync(sync_request("m1", 1, &[("m1", "A")]), 20, T0 + 10)
                .len(),
            1
        );
        // An id nobody handed out.
        let out = g.join(consumer("bogus"), 3, T0 + 20, &c, unnamed());
        assert_eq!(join_answer(&out, 3).error, Some(UnknownMemberId));

        // A pending id holds up a rebalance until it joins...
        assert_eq!(
            join_answer(&g.join(first.clone(), 4, T0 + 30, &c, named("m2")), 4).error,
            Some(MemberIdRequired)
        );
        assert!(g.join(consumer("m1"), 5, T0 + 40, &c, unnamed()).is_empty());
        let out = g.join(
            JoinRequest {
                member_id: "m2".to_string(),
                ..first.clone()
            },
            6,
            T0 + 50,
            &c,
            unnamed(),
        );
        assert_eq!(join_answer(&out, 5).generation_id, 2);
        assert_eq!(join_answer(&out, 6).generation_id, 2);
        assert_eq!(g.sync(sync_request("m1", 2, &[]), 21, T0 + 55).len(), 1);

        // ...or until it expires after its session timeout.
        assert_eq!(
            join_answer(&g.join(first.clone(), 7, T0 + 60, &c, named("m3")), 7).error,
            Some(MemberIdRequired)
        );
        assert!(g.join(consumer("m1"), 8, T0 + 70, &c, unnamed()).is_empty());
        assert!(g.join(consumer("m2"), 9, T0 + 80, &c, unnamed()).is_empty());
        assert!(g.tick(T0 + 60 + SESSION_MS, &c).is_empty());
        let out = g.tick(T0 + 61 + SESSION_MS, &c);
        assert_eq!(join_answer(&out, 8).generation_id, 3);
        assert_eq!(join_answer(&out, 9).generation_id, 3);
        let out = g.join(
            JoinRequest {
                member_id: "m3".to_string(),
                ..first
            },
            10,
            T0 + 62 + SESSION_MS,
            &c,
            unnamed(),
        );
        assert_eq!(join_answer(&out, 10).error, Some(UnknownMemberId));
    }

    #[test]
    fn pending_member_may_leave() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        let first = JoinRequest {
            require_known_member_id: true,
            ..consumer("")
        };
        assert_eq!(
            join_answer(&g.join(first, 1, t, &c, named("p")), 1).error,
            Some(MemberIdRequired)
        );
        assert!(g.join(consumer("a"), 2, t, &c, unnamed()).is_empty());
        assert!(g.join(consumer("b"), 3, t, &c, unnamed()).is_empty());
        let (result, out) = leave_one(&mut g, "p", None, t);
        assert_eq!(result, Ok(()));
        assert_eq!(join_answer(&out, 2).generation_id, 2);
    }

    #[test]
    fn static_member_restart_keeps_assignment_and_fences_old_id() {
        let (mut g, t) = stable_group(vec![static_consumer("", "ia"), consumer("")], &["a", "b"]);
        let c = cfg(3_000);
        let out = g.join(static_consumer("", "ia"), 10, t + 100, &c, named("a2"));
        let answer = join_answer(&out, 10);
        assert_eq!(answer.error, None);
        assert_eq!((answer.member_id.as_str(), answer.generation_id), ("a2", 1));
        // The leader is reported as it was, so the restarted leader does not assign.
        assert_eq!(answer.leader, "a");
        assert!(answer.members.is_empty());
        assert_eq!(
            (g.state(), g.generation_id(), g.leader()),
            (Stable, 1, Some("a2"))
        );

        assert_eq!(
            g.heartbeat("a", Some("ia"), 1, t + 200),
            Err(FencedInstanceId)
        );
        assert_eq!(g.heartbeat("a", None, 1, t + 200), Err(UnknownMemberId));
        assert_eq!(
            g.validate_offset_commit("a", Some("ia"), 1),
            Err(FencedInstanceId)
        );
        let fenced_sync = SyncRequest {
            group_instance_id: Some("ia".to_string()),
            ..sync_request("a", 1, &[])
        };
        assert_eq!(
            sync_answer(&g.sync(fenced_sync, 11, t + 200), 11).error,
            Some(FencedInstanceId)
        );
        let out = g.join(static_consumer("a", "ia"), 12, t + 200, &c, unnamed());
        assert_eq!(join_answer(&out, 12).error, Some(FencedInstanceId));

        let sync = SyncRequest {
            group_instance_id: Some("ia".to_string()),
            ..sync_request("a2", 1, &[])
        };
        let answer = sync_answer(&g.sync(sync, 13, t + 300), 13);
        assert_eq!((answer.error, answer.assignment), (None, bytes("A-a")));
        assert_eq!(g.heartbeat("a2", Some("ia"), 1, t + 400), Ok(()));
        assert_eq!(g.heartbeat("b", None, 1, t + 400), Ok(()));
        assert_eq!(g.state(), Stable);
    }

    #[test]
    fn static_restart_that_changes_the_protocol_rebalances() {
        let both = [("range", "r"), ("roundrobin", "x")];
        let a = JoinRequest {
            group_instance_id: Some("ia".to_string()),
            ..request("", &both)
        };
        let (mut g, t) = stable_group(vec![a, request("", &both)], &["a", "b"]);
        assert_eq!(g.protocol_name(), Some("range"));
        let c = cfg(3_000);
        let restarted = JoinRequest {
            group_instance_id: Some("ia".to_string()),
            ..request("", &[("roundrobin", "x")])
        };
        assert!(g.join(restarted, 10, t, &c, named("a2")).is_empty());
        assert_eq!(g.state(), PreparingRebalance);
        let out = g.join(request("b", &both), 11, t + 10, &c, unnamed());
        assert_eq!(
            join_answer(&out, 10).protocol_name.as_deref(),
            Some("roundrobin")
        );
        assert_eq!(join_answer(&out, 11).generation_id, 2);
    }

    #[test]
    fn static_restart_while_parked_fences_the_parked_join() {
        let (mut g, t) = stable_group(vec![static_consumer("", "ia"), consumer("")], &["a", "b"]);
        let c = cfg(3_000);
        assert!(g
            .join(static_consumer("a", "ia"), 10, t, &c, unnamed())
            .is_empty());
        let out = g.join(static_consumer("", "ia"), 11, t + 10, &c, named("a2"));
        let fenced = join_answer(&out, 10);
        assert_eq!(
            (fenced.error, fenced.member_id.as_str()),
            (Some(FencedInstanceId), "a")
        );
        let out = g.join(consumer("b"), 12, t + 20, &c, unnamed());
        let answer = join_answer(&out, 11);
        assert_eq!(
            (
                answer.member_id.as_str(),
                answer.leader.as_str(),
                answer.generation_id
            ),
            ("a2", "a2", 2)
        );
    }

    #[test]
    fn leave_group_rebalances_the_remaining_member() {
        let (mut g, t) = stable_pair();
        let c = cfg(3_000);
        assert_eq!(leave_one(&mut g, "zz", None, t).0, Err(UnknownMemberId));
        assert_eq!(leave_one(&mut g, "", None, t).0, Err(UnknownMemberId));
        let (result, out) = leave_one(&mut g, "a", None, t);
        assert_eq!((result, out.len()), (Ok(()), 0));
        assert_eq!((g.state(), g.leader()), (PreparingRebalance, Some("b")));
        assert_eq!(g.heartbeat("b", None, 1, t + 10), Err(RebalanceInProgress));
        let out = g.join(consumer("b"), 10, t + 20, &c, unnamed());
        let answer = join_answer(&out, 10);
        assert_eq!(
            (
                answer.generation_id,
                answer.leader.as_str(),
                answer.members.len()
            ),
            (2, "b", 1)
        );
        // The last member leaving empties the group (the generation still moves on).
        assert_eq!(leave_one(&mut g, "b", None, t + 30).0, Ok(()));
        assert_eq!(
            (g.state(), g.generation_id(), g.member_count()),
            (Empty, 3, 0)
        );
    }

    #[test]
    fn leave_answers_the_leaving_members_parked_join() {
        let (mut g, t) = stable_pair();
        let c = cfg(3_000);
        assert!(g
            .join(
                request("b", &[("range", "new-topics")]),
                10,
                t,
                &c,
                unnamed()
            )
            .is_empty());
        let (result, out) = leave_one(&mut g, "b", None, t + 10);
        assert_eq!(result, Ok(()));
        assert_eq!(join_answer(&out, 10).error, Some(UnknownMemberId));
        assert_eq!(g.member_count(), 1);
    }

    #[test]
    fn static_members_leave_by_instance_id() {
        let (mut g, t) = stable_group(
            vec![static_consumer("", "ia"), static_consumer("", "ib")],
            &["a", "b"],
        );
        assert_eq!(
            leave_one(&mut g, "zz", Some("ia"), t).0,
            Err(FencedInstanceId)
        );
        assert_eq!(
            leave_one(&mut g, "a", Some("nope"), t).0,
            Err(UnknownMemberId)
        );
        assert_eq!(leave_one(&mut g, "", Some("ia"), t).0, Ok(()));
        assert_eq!(leave_one(&mut g, "b", Some("ib"), t).0, Ok(()));
        assert_eq!((g.state(), g.member_count()), (Empty, 0));
        // v3+ batches: one result per member.
        let batch = [
            LeaveMember {
                member_id: "x".to_string(),
                group_instance_id: None,
            },
            LeaveMember {
                member_id: String::new(),
                group_instance_id: Some("ib".to_string()),
            },
        ];
        assert_eq!(
            g.leave(&batch, t).0,
            vec![Err(UnknownMemberId), Err(UnknownMemberId)]
        );
    }

    #[test]
    fn protocol_is_chosen_by_vote() {
        let c = cfg(3_000);
        let vote = |requests: Vec<JoinRequest>| {
            let mut g = Group::new("g".to_string());
            for (i, r) in requests.into_iter().enumerate() {
                assert!(g
                    .join(r, i as RequestId, T0, &c, named(&format!("m{i}")))
                    .is_empty());
            }
            g.tick(T0 + 3_000, &c);
            g.tick(T0 + 6_000, &c);
            assert_eq!(g.state(), CompletingRebalance);
            g.protocol_name().map(str::to_string)
        };
        let rr_first = || request("", &[("roundrobin", "x"), ("range", "r")]);
        let range_first = || request("", &[("range", "r"), ("roundrobin", "x")]);
        assert_eq!(
            vote(vec![rr_first(), range_first(), range_first()]).as_deref(),
            Some("range")
        );
        assert_eq!(
            vote(vec![rr_first(), rr_first(), range_first()]).as_deref(),
            Some("roundrobin")
        );
        // A tie goes to the protocol voted for first.
        assert_eq!(
            vote(vec![rr_first(), range_first()]).as_deref(),
            Some("roundrobin")
        );
        assert_eq!(
            vote(vec![range_first(), rr_first()]).as_deref(),
            Some("range")
        );
        // Members vote only for protocols everyone supports.
        let sticky = request("", &[("sticky", "s"), ("range", "r")]);
        assert_eq!(vote(vec![sticky, range_first()]).as_deref(), Some("range"));
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let c = cfg(0);
        let mut g = Group::new("g".to_string());
        let no_type = JoinRequest {
            protocol_type: String::new(),
            ..consumer("")
        };
        assert_eq!(
            join_answer(&g.join(no_type, 1, T0, &c, unnamed()), 1).error,
            Some(InconsistentGroupProtocol)
        );
        let no_protocols = request("", &[]);
        assert_eq!(
            join_answer(&g.join(no_protocols, 2, T0, &c, unnamed()), 2).error,
            Some(InconsistentGroupProtocol)
        );
        assert_eq!(g.state(), Empty);

        assert_eq!(
            join_answer(&g.join(consumer(""), 3, T0, &c, named("a")), 3).error,
            None
        );
        let connect = JoinRequest {
            protocol_type: "connect".to_string(),
            ..consumer("")
        };
        assert_eq!(
            join_answer(&g.join(connect, 4, T0, &c, unnamed()), 4).error,
            Some(InconsistentGroupProtocol)
        );
        let other = request("", &[("roundrobin", "x")]);
        assert_eq!(
            join_answer(&g.join(other, 5, T0, &c, unnamed()), 5).error,
            Some(InconsistentGroupProtocol)
        );
        assert_eq!(g.member_count(), 1);
        // The only member may switch protocols: nobody else constrains it.
        let out = g.join(request("a", &[("roundrobin", "x")]), 6, T0, &c, unnamed());
        assert_eq!(
            join_answer(&out, 6).protocol_name.as_deref(),
            Some("roundrobin")
        );
    }

    #[test]
    fn invalid_session_timeout_and_group_id() {
        let c = cfg(0);
        let mut g = Group::new("g".to_string());
        for (id, timeout) in [(1, 5_999), (2, 1_800_001)] {
            let r = JoinRequest {
                session_timeout_ms: timeout,
                ..consumer("")
            };
            assert_eq!(
                join_answer(&g.join(r, id, T0, &c, unnamed()), id).error,
                Some(InvalidSessionTimeout)
            );
        }
        let r = JoinRequest {
            session_timeout_ms: 6_000,
            ..consumer("")
        };
        assert_eq!(
            join_answer(&g.join(r, 3, T0, &c, named("a")), 3).error,
            None
        );
        let mut nameless = Group::new(String::new());
        assert_eq!(
            join_answer(&nameless.join(consumer(""), 4, T0, &c, unnamed()), 4).error,
            Some(InvalidGroupId)
        );
    }

    #[test]
    fn initial_rebalance_delay() {
        let c = cfg(3_000);
        let mut g = Group::new("g".to_string());
        assert!(g.join(consumer(""), 1, T0, &c, named("a")).is_empty());
        assert!(g.tick(T0 + 2_999, &c).is_empty());
        assert_eq!(g.state(), PreparingRebalance);
        // Not even a complete group ends the initial delay early.
        assert!(g
            .join(consumer(""), 2, T0 + 2_000, &c, named("b"))
            .is_empty());
        assert!(
            g.tick(T0 + 3_000, &c).is_empty(),
            "extended for the newcomer"
        );
        assert!(g.tick(T0 + 5_999, &c).is_empty());
        assert_eq!(g.tick(T0 + 6_000, &c).len(), 2);

        // The extensions stop at the rebalance timeout.
        let short = JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..consumer("")
        };
        let mut g = Group::new("g".to_string());
        assert!(g.join(short.clone(), 1, T0, &c, named("a")).is_empty());
        assert!(g
            .join(short.clone(), 2, T0 + 1_000, &c, named("b"))
            .is_empty());
        assert!(g.tick(T0 + 3_000, &c).is_empty());
        assert!(g.join(short, 3, T0 + 4_000, &c, named("c")).is_empty());
        assert!(g.tick(T0 + 4_999, &c).is_empty());
        assert_eq!(g.tick(T0 + 5_000, &c).len(), 3);

        // An Empty group that had generations waits the delay once, unextended.
        let mut g = Group::new("g".to_string());
        assert_eq!(g.join(consumer(""), 1, T0, &c, named("a")).len(), 0);
        assert_eq!(g.tick(T0 + 3_000, &c).len(), 1);
        assert_eq!(leave_one(&mut g, "a", None, T0 + 3_100).0, Ok(()));
        assert_eq!(g.state(), Empty);
        assert!(g
            .join(consumer(""), 2, T0 + 4_000, &c, named("b"))
            .is_empty());
        assert!(g
            .join(consumer(""), 3, T0 + 5_000, &c, named("c"))
            .is_empty());
        assert_eq!(g.tick(T0 + 7_000, &c).len(), 2);
    }

    #[test]
    fn offset_commit_validation() {
        let g = Group::new("g".to_string());
        assert_eq!(g.validate_offset_commit("", None, -1), Ok(()));
        assert_eq!(g.validate_offset_commit("someone", None, -1), Ok(()));
        assert_eq!(
            g.validate_offset_commit("someone", None, 3),
            Err(UnknownMemberId)
        );

        let (mut g, t) = stable_pair();
        assert_eq!(g.validate_offset_commit("", None, -1), Err(UnknownMemberId));
        assert_eq!(g.validate_txn_offset_commit("", None, -1), Ok(()));
        assert_eq!(g.validate_offset_commit("a", None, 1), Ok(()));
        assert_eq!(
            g.validate_offset_commit("a", None, 0),
            Err(IllegalGeneration)
        );
        assert_eq!(
            g.validate_offset_commit("a", None, -1),
            Err(IllegalGeneration)
        );
        assert_eq!(
            g.validate_offset_commit("zz", None, 1),
            Err(UnknownMemberId)
        );
        assert_eq!(
            g.validate_offset_commit("a", Some("ia"), 1),
            Err(UnknownMemberId)
        );

        let c = cfg(3_000);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(
            g.validate_offset_commit("b", None, 1),
            Ok(()),
            "PreparingRebalance still accepts"
        );
        assert_eq!(
            join_answer(&g.join(consumer("b"), 11, t, &c, unnamed()), 11).generation_id,
            2
        );
        assert_eq!(
            g.validate_offset_commit("b", None, 2),
            Err(RebalanceInProgress)
        );
        assert_eq!(g.validate_txn_offset_commit("b", None, 2), Ok(()));
        assert_eq!(
            g.validate_offset_commit("b", None, 1),
            Err(IllegalGeneration)
        );

        g.mark_dead();
        assert_eq!(
            g.validate_offset_commit("", None, -1),
            Err(CoordinatorNotAvailable)
        );
    }

    #[test]
    fn heartbeat_in_each_state() {
        let c = cfg(0);
        let mut g = Group::new("g".to_string());
        assert_eq!(g.heartbeat("a", None, 0, T0), Err(UnknownMemberId));
        assert_eq!(g.heartbeat("", None, -1, T0), Err(UnknownMemberId));

        let (mut g, t) = stable_pair();
        assert_eq!(g.heartbeat("a", None, 1, t), Ok(()));
        assert_eq!(g.heartbeat("a", None, 2, t), Err(IllegalGeneration));
        assert_eq!(g.heartbeat("zz", None, 1, t), Err(UnknownMemberId));
        assert_eq!(g.heartbeat("a", Some("ia"), 1, t), Err(UnknownMemberId));

        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(g.heartbeat("b", None, 1, t), Err(RebalanceInProgress));
        assert_eq!(g.heartbeat("b", None, 0, t), Err(IllegalGeneration));
        assert_eq!(
            join_answer(&g.join(consumer("b"), 11, t, &c, unnamed()), 11).generation_id,
            2
        );
        assert_eq!(g.state(), CompletingRebalance);
        assert_eq!(g.heartbeat("b", None, 2, t), Ok(()));
        assert_eq!(g.heartbeat("b", None, 1, t), Err(IllegalGeneration));

        g.mark_dead();
        assert_eq!(g.heartbeat("b", None, 2, t), Err(CoordinatorNotAvailable));
    }

    #[test]
    fn sync_errors() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        let error =
            |g: &mut Group, request: SyncRequest| sync_answer(&g.sync(request, 9, t), 9).error;
        assert_eq!(
            error(&mut g, sync_request("zz", 1, &[])),
            Some(UnknownMemberId)
        );
        assert_eq!(
            error(&mut g, sync_request("a", 2, &[])),
            Some(IllegalGeneration)
        );
        let wrong_type = SyncRequest {
            protocol_type: Some("connect".to_string()),
            ..sync_request("a", 1, &[])
        };
        assert_eq!(error(&mut g, wrong_type), Some(InconsistentGroupProtocol));
        let wrong_name = SyncRequest {
            protocol_name: Some("roundrobin".to_string()),
            ..sync_request("a", 1, &[])
        };
        assert_eq!(error(&mut g, wrong_name), Some(InconsistentGroupProtocol));
        let right_name = SyncRequest {
            protocol_name: Some("range".to_string()),
            ..sync_request("a", 1, &[])
        };
        assert_eq!(error(&mut g, right_name), None);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(
            error(&mut g, sync_request("b", 1, &[])),
            Some(RebalanceInProgress)
        );
    }

    #[test]
    fn leader_assignment_fills_missing_members_with_nothing() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(g.join(consumer("b"), 11, t, &c, unnamed()).len(), 2);
        assert!(g.sync(sync_request("b", 2, &[]), 12, t).is_empty());
        let out = g.sync(sync_request("a", 2, &[("a", "A2"), ("ghost", "G")]), 13, t);
        assert_eq!(
            sync_answer(&out, 12),
            SyncResponse {
                error: None,
                protocol_type: Some("consumer".to_string()),
                protocol_name: Some("range".to_string()),
                assignment: Bytes::new(),
            }
        );
        assert_eq!(sync_answer(&out, 13).assignment, bytes("A2"));
    }

    #[test]
    fn rejoin_without_change_answers_at_once() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        let answer = join_answer(&g.join(consumer("b"), 10, t, &c, unnamed()), 10);
        assert_eq!(
            (
                answer.generation_id,
                answer.leader.as_str(),
                answer.members.len()
            ),
            (1, "a", 0)
        );
        assert_eq!(g.state(), Stable);
        // Changed metadata forces a rebalance.
        assert!(g
            .join(
                request("b", &[("range", "more-topics")]),
                11,
                t,
                &c,
                unnamed()
            )
            .is_empty());
        assert_eq!(g.state(), PreparingRebalance);
        let out = g.join(consumer("a"), 12, t, &c, unnamed());
        assert_eq!(join_answer(&out, 11).generation_id, 2);
        // In CompletingRebalance a repeated join gets the same answer again, members included for the leader.
        let again = join_answer(&g.join(consumer("a"), 13, t, &c, unnamed()), 13);
        assert_eq!((again.generation_id, again.members.len()), (2, 2));
        assert_eq!(g.state(), CompletingRebalance);
    }

    #[test]
    fn leader_rejoin_while_stable_rebalances() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(g.state(), PreparingRebalance);
    }

    #[test]
    fn superseded_join_is_answered() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        let out = g.join(consumer("a"), 11, t + 10, &c, unnamed());
        assert_eq!(join_answer(&out, 10).error, Some(RebalanceInProgress));
        assert_eq!(
            join_answer(&g.join(consumer("b"), 12, t + 20, &c, unnamed()), 11).generation_id,
            2
        );
    }

    #[test]
    fn members_that_never_sync_are_removed() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(g.join(consumer("b"), 11, t, &c, unnamed()).len(), 2);
        // The leader syncs; "b" heartbeats but never syncs.
        assert_eq!(
            g.sync(sync_request("a", 2, &[("a", "A"), ("b", "B")]), 12, t)
                .len(),
            1
        );
        assert_eq!(g.state(), Stable);
        let mut now = t;
        while g.member_count() == 2 {
            now += 1_000;
            assert_eq!(g.heartbeat("b", None, 2, now), Ok(()));
            assert_eq!(g.heartbeat("a", None, 2, now), Ok(()));
            assert!(g.tick(now, &c).is_empty());
        }
        assert_eq!(now, t + REBALANCE_MS);
        assert_eq!(g.state(), PreparingRebalance);
        assert_eq!(g.heartbeat("a", None, 2, now), Err(RebalanceInProgress));
    }

    #[test]
    fn a_leader_that_never_syncs_releases_the_followers() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        assert_eq!(g.join(consumer("b"), 11, t, &c, unnamed()).len(), 2);
        assert!(g.sync(sync_request("b", 2, &[]), 12, t).is_empty());
        for now in (t + 5_000..t + REBALANCE_MS).step_by(5_000) {
            assert_eq!(g.heartbeat("a", None, 2, now), Ok(()));
            assert!(g.tick(now, &c).is_empty());
        }
        assert!(g.tick(t + REBALANCE_MS - 1, &c).is_empty());
        let out = g.tick(t + REBALANCE_MS, &c);
        assert_eq!(sync_answer(&out, 12).error, Some(RebalanceInProgress));
        assert_eq!((g.member_count(), g.leader()), (1, Some("b")));
    }

    #[test]
    fn group_max_size() {
        let (mut g, t) = stable_pair();
        let c = GroupConfig {
            max_size: 2,
            ..cfg(0)
        };
        let answer = join_answer(&g.join(consumer(""), 10, t, &c, named("c")), 10);
        assert_eq!(
            (answer.error, answer.member_id.as_str()),
            (Some(GroupMaxSizeReached), "")
        );
        assert_eq!(
            join_answer(&g.join(consumer("b"), 11, t, &c, unnamed()), 11).error,
            None
        );
        // While rebalancing, the members that rejoin last are the ones left out.
        let c = GroupConfig { max_size: 1, ..c };
        assert!(g.join(consumer("a"), 12, t, &c, unnamed()).is_empty());
        let out = g.join(consumer("b"), 13, t, &c, unnamed());
        assert_eq!(join_answer(&out, 13).error, Some(GroupMaxSizeReached));
        assert_eq!(join_answer(&out, 12).generation_id, 2);
        assert_eq!(g.member_count(), 1);
    }

    #[test]
    fn mark_dead_answers_parked_requests() {
        let (mut g, t) = stable_pair();
        let c = cfg(0);
        assert!(g.join(consumer("a"), 10, t, &c, unnamed()).is_empty());
        let out = g.mark_dead();
        assert_eq!(join_answer(&out, 10).error, Some(CoordinatorNotAvailable));
        assert_eq!((g.state(), g.member_count()), (Dead, 0));
        assert_eq!(
            join_answer(&g.join(consumer(""), 11, t, &c, unnamed()), 11).error,
            Some(CoordinatorNotAvailable)
        );
        assert_eq!(
            sync_answer(&g.sync(sync_request("a", 1, &[]), 12, t), 12).error,
            Some(CoordinatorNotAvailable)
        );
        assert_eq!(
            g.leave(
                &[LeaveMember {
                    member_id: "a".to_string(),
                    group_instance_id: None
                }],
                t
            )
            .0,
            vec![Err(CoordinatorNotAvailable)]
        );
        assert!(g.tick(t + 1_000_000, &c).is_empty());
    }

    // ------------------------------------------------------------ randomized

    /// Structural invariants that hold after every call.
    fn check_invariants(g: &Group) {
        let ids: BTreeSet<&str> = g.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(ids.len(), g.members.len(), "duplicate member ids");
        let instances: Vec<&str> = g
            .members
            .iter()
            .filter_map(|m| m.group_instance_id.as_deref())
            .collect();
        assert_eq!(
            instances.iter().collect::<BTreeSet<_>>().len(),
            instances.len(),
            "duplicate instance ids"
        );
        match g.leader.as_deref() {
            Some(leader) => assert!(ids.contains(leader), "leader {leader} is not a member"),
            None => assert!(g.members.is_empty(), "members without a leader"),
        }
        assert!(g
            .pending_members
            .iter()
            .all(|p| !ids.contains(p.member_id.as_str())));
        assert!(g.pending_sync.iter().all(|m| ids.contains(m.as_str())));
        let parked_joins = g.members.iter().any(|m| m.awaiting_join.is_some());
        let parked_syncs = g.members.iter().any(|m| m.awaiting_sync.is_some());
        let protocol_supported = g
            .protocol_name
            .as_deref()
            .is_some_and(|p| g.members.iter().all(|m| m.supports(p)));
        match g.state {
            Empty | Dead => assert!(g.members.is_empty() && g.join_timer.is_none()),
            PreparingRebalance => {
                assert!(!parked_syncs && g.join_timer.is_some() && g.pending_sync.is_empty())
            }
            CompletingRebalance => {
                assert!(!parked_joins && protocol_supported);
                assert!(
                    g.pending_sync.contains(g.leader.as_deref().unwrap()),
                    "leader has not synced"
                );
                assert!(g.sync_deadline_ms.is_some());
            }
            Stable => assert!(!parked_joins && !parked_syncs && protocol_supported),
        }
        if g.state != PreparingRebalance {
            assert!(g.join_timer.is_none());
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const PROTOCOL_SETS: [&[(&str, &str)]; 3] = [
        &[("range", "r")],
        &[("range", "r"), ("rr", "x")],
        &[("rr", "x"), ("range", "r")],
    ];

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Next {
        Join,
        Sync,
        Heartbeat,
    }

    struct Client {
        member_id: String,
        instance: Option<String>,
        generation: i32,
        leader: bool,
        group: Vec<String>,
        protocols: usize,
        next: Next,
    }

    struct Sim {
        rng: Rng,
        g: Group,
        cfg: GroupConfig,
        now: i64,
        next_request: RequestId,
        next_member: u64,
        clients: Vec<Client>,
        /// Which client made each JoinGroup/SyncGroup request.
        owner: HashMap<RequestId, usize>,
        answered: BTreeSet<RequestId>,
        open: BTreeSet<RequestId>,
        generation: i32,
        stable_seen: bool,
    }

    impl Sim {
        fn new(seed: u64) -> Sim {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let cfg = GroupConfig {
                initial_rebalance_delay_ms: [0, 3_000][rng.below(2) as usize],
                max_size: 4,
                ..cfg(0)
            };
            let clients = (0..5)
                .map(|i| Client {
                    member_id: String::new(),
                    instance: (i % 2 == 0).then(|| format!("instance-{i}")),
                    generation: -1,
                    leader: false,
                    group: Vec::new(),
                    protocols: i % PROTOCOL_SETS.len(),
                    next: Next::Join,
                })
                .collect();
            Sim {
                rng,
                g: Group::new("random".to_string()),
                cfg,
                now: T0,
                next_request: 1,
                next_member: 0,
                clients,
                owner: HashMap::new(),
                answered: BTreeSet::new(),
                open: BTreeSet::new(),
                generation: 0,
                stable_seen: false,
            }
        }

        fn issue(&mut self, client: usize) -> RequestId {
            let id = self.next_request;
            self.next_request += 1;
            self.owner.insert(id, client);
            self.open.insert(id);
            id
        }

        fn deliver(&mut self, out: Vec<Output>) {
            for output in out {
                let id = output.request_id();
                let client = *self.owner.get(&id).expect("answer to a request never made");
                assert!(self.answered.insert(id), "request {id} answered twice");
                self.open.remove(&id);
                match output {
                    Output::Join(_, answer) => self.on_join(client, answer),
                    Output::Sync(_, answer) => {
                        self.clients[client].next = if answer.error.is_none() {
                            Next::Heartbeat
                        } else {
                            Next::Join
                        };
                    }
                }
            }
            self.check();
        }

        fn on_join(&mut self, client: usize, answer: JoinResponse) {
            let c = &mut self.clients[client];
            match answer.error {
                None => {
                    c.leader = answer.leader == answer.member_id;
                    c.member_id = answer.member_id;
                    c.generation = answer.generation_id;
                    c.group = answer.members.into_iter().map(|m| m.member_id).collect();
                    c.next = Next::Sync;
                }
                Some(MemberIdRequired) => c.member_id = answer.member_id,
                Some(UnknownMemberId | FencedInstanceId) => c.member_id.clear(),
                Some(_) => c.next = Next::Join,
            }
        }

        /// Every unanswered request is parked in the group, and vice versa.
        fn check(&mut self) {
            check_invariants(&self.g);
            assert!(
                self.g.generation_id >= self.generation,
                "generation went back"
            );
            self.generation = self.g.generation_id;
            self.stable_seen |= self.g.state == Stable;
            let parked: BTreeSet<RequestId> = self
                .g
                .members
                .iter()
                .flat_map(|m| m.awaiting_join.into_iter().chain(m.awaiting_sync))
                .collect();
            assert_eq!(
                self.open, parked,
                "unanswered requests must be exactly the parked ones"
            );
        }

        fn step(&mut self) {
            let client = self.rng.below(self.clients.len() as u64) as usize;
            let behaved = self.rng.chance(75);
            let action = if behaved {
                self.clients[client].next
            } else {
                [Next::Join, Next::Sync, Next::Heartbeat][self.rng.below(3) as usize]
            };
            match self.rng.below(12) {
                0..=1 => self.advance(),
                2 => self.leave(client),
                3 => self.misc(client),
                _ => match action {
                    Next::Join => self.join(client),
                    Next::Sync => self.sync(client),
                    Next::Heartbeat => self.heartbeat(client),
                },
            }
        }

        fn join(&mut self, client: usize) {
            if self.rng.chance(5) {
                self.clients[client].protocols =
                    self.rng.below(PROTOCOL_SETS.len() as u64) as usize;
            }
            let c = &self.clients[client];
            let mut request = JoinRequest {
                group_instance_id: c.instance.clone(),
                session_timeout_ms: 6_000 + self.rng.below(6_000) as i32,
                rebalance_timeout_ms: 6_000 + self.rng.below(14_000) as i32,
                require_known_member_id: self.rng.chance(50),
                ..request(&c.member_id, PROTOCOL_SETS[c.protocols])
            };
            if self.rng.chance(3) {
                request.protocol_type = "other".to_string();
            }
            if self.rng.chance(3) {
                request.session_timeout_ms = 1_000;
            }
            let id = self.issue(client);
            let fresh = format!("m{}", self.next_member);
            self.next_member += 1;
            let out = self.g.join(request, id, self.now, &self.cfg, move || fresh);
            self.deliver(out);
        }

        fn sync(&mut self, client: usize) {
            let c = &self.clients[client];
            let mut assignments: Vec<(String, Bytes)> = Vec::new();
            if c.leader {
                for member in &c.group {
                    if !self.rng.chance(10) {
                        assignments.push((member.clone(), bytes(&format!("to-{member}"))));
                    }
                }
            }
            let generation = if self.rng.chance(5) {
                c.generation + 1
            } else {
                c.generation
            };
            let request = SyncRequest {
                member_id: c.member_id.clone(),
                group_instance_id: c.instance.clone(),
                generation_id: generation,
                protocol_type: None,
                protocol_name: None,
                assignments,
            };
            let id = self.issue(client);
            let out = self.g.sync(request, id, self.now);
            self.deliver(out);
        }

        fn heartbeat(&mut self, client: usize) {
            let c = &self.clients[client];
            let result =
                self.g
                    .heartbeat(&c.member_id, c.instance.as_deref(), c.generation, self.now);
            if result.is_err() {
                self.clients[client].next = Next::Join;
            }
            if result == Err(UnknownMemberId) || result == Err(FencedInstanceId) {
                self.clients[client].member_id.clear();
            }
            self.check();
        }

        fn leave(&mut self, client: usize) {
            let c = &self.clients[client];
            let member = LeaveMember {
                member_id: c.member_id.clone(),
                group_instance_id: c.instance.clone(),
            };
            let (results, out) = self.g.leave(&[member], self.now);
            assert_eq!(results.len(), 1);
            self.clients[client].member_id.clear();
            self.clients[client].next = Next::Join;
            self.deliver(out);
        }

        fn advance(&mut self) {
            self.now += self.rng.below(4_000) as i64;
            let out = self.g.tick(self.now, &self.cfg);
            self.deliver(out);
        }

        /// Restarts, stale ids and commits.
        fn misc(&mut self, client: usize) {
            let c = &self.clients[client];
            match self.rng.below(3) {
                0 => {
                    // A restart: the member id is forgotten (a static one stays in the group).
                    self.clients[client].member_id.clear();
                    self.clients[client].next = Next::Join;
                }
                1 => {
                    let _ = self.g.validate_offset_commit(
                        &c.member_id,
                        c.instance.as_deref(),
                        c.generation,
                    );
                    let _ = self.g.validate_txn_offset_commit(
                        &c.member_id,
                        c.instance.as_deref(),
                        c.generation,
                    );
                }
                _ => {
                    let id = self.issue(client);
                    let out = self
                        .g
                        .join(consumer("stale-id"), id, self.now, &self.cfg, unnamed());
                    self.deliver(out);
                }
            }
        }

        /// Clients stop; the group must answer everything and empty itself.
        fn drain(&mut self) {
            let end = self.now + 2 * NEW_MEMBER_JOIN_TIMEOUT_MS;
            while self.now < end {
                self.now += 100;
                let out = self.g.tick(self.now, &self.cfg);
                self.deliver(out);
            }
            assert_eq!(
                self.answered.len(),
                self.owner.len(),
                "requests left unanswered"
            );
            assert_eq!((self.g.state, self.g.members.len()), (Empty, 0));
        }
    }

    #[test]
    fn randomized_sequences_keep_the_invariants() {
        let mut stable_runs = 0;
        for seed in 1..=40 {
            let mut sim = Sim::new(seed);
            for _ in 0..1_500 {
                sim.step();
            }
            sim.drain();
            stable_runs += usize::from(sim.stable_seen);
        }
        assert!(
            stable_runs >= 20,
            "only {stable_runs} runs ever reached Stable"
        );
    }
}
