use super::types::*;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
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

fn sync_request(member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> SyncRequest {
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
    let error = |g: &mut Group, request: SyncRequest| sync_answer(&g.sync(request, 9, t), 9).error;
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
            self.clients[client].protocols = self.rng.below(PROTOCOL_SETS.len() as u64) as usize;
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
        let result = self
            .g
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
