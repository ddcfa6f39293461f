//! SyncGroup: collecting the leader's assignments and answering every
//! member with its own.

use std::collections::HashMap;

use bytes::Bytes;

use super::types::*;

impl Group {
    pub fn sync(&mut self, request: SyncRequest, id: RequestId, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        match self.validate_sync(&request) {
            Ok(index) => self.handle_sync(index, request, id, now_ms, &mut out),
            Err(error) => out.push(Output::Sync(id, SyncResponse::error(error))),
        }
        out
    }

    pub(super) fn validate_sync(&self, request: &SyncRequest) -> Result<usize, GroupError> {
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

    pub(super) fn handle_sync(
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
    pub(super) fn park_sync(
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
    pub(super) fn set_assignments(&mut self, assignments: &[(String, Bytes)]) {
        let by_member: HashMap<&str, &Bytes> =
            assignments.iter().map(|(m, a)| (m.as_str(), a)).collect();
        for member in &mut self.members {
            member.assignment = by_member
                .get(member.member_id.as_str())
                .map(|a| (*a).clone())
                .unwrap_or_default();
        }
    }

    pub(super) fn answer_parked_syncs(
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

    pub(super) fn sync_received(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    pub(super) fn clear_pending_sync(&mut self) {
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
    }

    // ---------------------------------------------------------------- Heartbeat
}
