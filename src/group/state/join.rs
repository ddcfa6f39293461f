//! JoinGroup: admitting members (KIP-394 member ids, KIP-345 static
//! members), preparing and completing a rebalance, electing the leader and
//! choosing the protocol.

use bytes::Bytes;

use super::types::*;

impl Group {
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

    pub(super) fn handle_join(
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

    pub(super) fn validate_join(
        &self,
        request: &JoinRequest,
        config: &GroupConfig,
    ) -> Result<(), GroupError> {
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
    pub(super) fn accepts_joining_member(&self, request: &JoinRequest, max_size: usize) -> bool {
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
    pub(super) fn supports_protocols(&self, request: &JoinRequest) -> bool {
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

    pub(super) fn join_new_member(
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

    pub(super) fn join_known_member(
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

    pub(super) fn answer_current_generation(
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

    pub(super) fn add_member_and_rebalance(
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

    pub(super) fn update_member_and_rebalance(
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
    pub(super) fn replace_static_member(
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
    pub(super) fn static_rejoin_while_stable(
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

    pub(super) fn fence_parked_requests(&mut self, index: usize, out: &mut Vec<Output>) {
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

    pub(super) fn rename_member(&mut self, index: usize, new_member_id: &str) {
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

    pub(super) fn maybe_prepare_rebalance(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        use GroupState::*;
        if matches!(self.state, Stable | CompletingRebalance | Empty) {
            self.prepare_rebalance(now_ms, out);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, now_ms: i64, out: &mut Vec<Output>) {
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
    pub(super) fn check_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
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

    pub(super) fn initial_delay_expired(
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

    pub(super) fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// The end of PreparingRebalance (Kafka's onCompleteJoin).
    pub(super) fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
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
    pub(super) fn drop_members_not_rejoined(&mut self, out: &mut Vec<Output>) {
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
    pub(super) fn elect_joined_leader(&mut self) -> bool {
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

    pub(super) fn init_next_generation(&mut self) {
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
    pub(super) fn answer_parked_joins(&mut self, now_ms: i64, out: &mut Vec<Output>) {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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
    pub(super) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    // ---------------------------------------------------------------- SyncGroup
}
