//! Heartbeats, LeaveGroup, the deadlines `tick` fires (sessions, the
//! pending-sync deadline) and the member checks of offset commits.

use bytes::Bytes;

use super::types::*;

impl Group {
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

    pub(super) fn leave_one(
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

    pub(super) fn expire_sessions(&mut self, now_ms: i64, out: &mut Vec<Output>) {
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
    pub(super) fn check_sync_deadline(&mut self, now_ms: i64, out: &mut Vec<Output>) {
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

    pub(super) fn validate_commit(
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

    pub(super) fn transition(&mut self, to: GroupState) {
        debug_assert!(
            to.valid_previous().contains(&self.state),
            "group {:?} -> {:?}",
            self.state,
            to
        );
        self.state = to;
    }

    pub(super) fn index_of(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.member_id == member_id)
    }

    pub(super) fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    pub(super) fn static_index(&self, instance_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.group_instance_id.as_deref() == Some(instance_id))
    }

    /// The member a JoinGroup speaks for: by member id, or by instance id for a
    /// static member restarting with an empty member id.
    pub(super) fn own_index(&self, request: &JoinRequest) -> Option<usize> {
        if request.member_id.is_empty() {
            request
                .group_instance_id
                .as_deref()
                .and_then(|i| self.static_index(i))
        } else {
            self.index_of(&request.member_id)
        }
    }

    pub(super) fn is_pending(&self, member_id: &str) -> bool {
        self.pending_members
            .iter()
            .any(|p| p.member_id == member_id)
    }

    pub(super) fn is_leader(&self, index: usize) -> bool {
        self.leader.as_deref() == Some(self.members[index].member_id.as_str())
    }

    pub(super) fn awaiting_join_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    /// The member a request speaks for. With an instance id, that instance must
    /// be held by this member id: an older id of a restarted static member is
    /// fenced.
    pub(super) fn validate_current_member(
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
    pub(super) fn remove_member_and_update(
        &mut self,
        member_id: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
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
    pub(super) fn detach_member(&mut self, member_id: &str, out: &mut Vec<Output>) {
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

    pub(super) fn selected_metadata(&self, member: &Member) -> Bytes {
        self.protocol_name
            .as_deref()
            .and_then(|p| member.metadata(p))
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn current_member_metadata(&self) -> Vec<JoinMember> {
        self.members
            .iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: self.selected_metadata(m),
            })
            .collect()
    }

    pub(super) fn join_success(
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

    pub(super) fn sync_success(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }
}
