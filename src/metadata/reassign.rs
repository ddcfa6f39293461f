//! Partition reassignment (KIP-455), the way KRaft's controller moves a
//! partition: the new replicas are added to the replica list first (they
//! follow the leader and catch up like any follower, outside the ISR);
//! once every one of them is in the ISR, the reassignment completes in the
//! same change that put the last one there: the replicas leaving are taken
//! out of the replica list and the ISR, and, if the leader is one of them,
//! the first live in-sync replica of the new list leads in a new epoch.
//!
//! Whenever a replica leaves the list (a move completing, a cancellation or
//! a new target dropping one being added) the leader epoch is bumped, as
//! Kafka's controller does: a fetch the leaver had under way is from an
//! older epoch, so if it is added again at once, that answer cannot land
//! in its new, empty log.
//!
//! These are pure functions of a partition's [`Placement`]: every node
//! applies the same records to the same placements and gets the same result.

use crate::metadata::Placement;

/// Why a reassignment is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A cancellation of a partition that is not being reassigned
    /// (NO_REASSIGNMENT_IN_PROGRESS).
    NoneInProgress,
    /// INVALID_REPLICA_ASSIGNMENT, and why.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoneInProgress => {
                f.write_str("no reassignment of the partition is in progress")
            }
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}

/// The placement once `target` replicas are asked of `current` (None: the
/// reassignment under way is cancelled, the original replicas kept), in a
/// new partition epoch. A new target replaces one under way: what is added
/// and removed is counted from the original replicas. `live`: whether a
/// broker may lead (registered and not fenced).
pub fn reassigned(
    current: &Placement,
    target: Option<&[i32]>,
    live: impl Fn(i32) -> bool,
) -> Result<Placement, Refusal> {
    let original = current.original();
    let mut next = current.clone();
    match target {
        None if !current.reassigning() => return Err(Refusal::NoneInProgress),
        None => {
            next.replicas = original;
            next.adding.clear();
            next.removing.clear();
        }
        Some(target) => {
            next.adding = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            next.removing = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            next.replicas = target.to_vec();
            next.replicas.extend(&next.removing);
        }
    }
    let replicas = next.replicas.clone();
    next.isr.retain(|r| replicas.contains(r));
    if next.isr.is_empty() {
        return Err(Refusal::Invalid(format!(
            "none of the in-sync replicas {:?} would remain a replica",
            current.isr
        )));
    }
    // A replica being added that leads (it took over in a failover) and is
    // dropped by a cancellation or a new target: another in-sync one leads.
    if next.leader >= 0 && !next.isr.contains(&next.leader) {
        next.leader = first_eligible(&next.replicas, &next.isr, &live).ok_or_else(|| {
            Refusal::Invalid("no live in-sync replica would be left to lead".to_string())
        })?;
    }
    if next.leader != current.leader || dropped_any(current, &next) {
        next.leader_epoch = current.leader_epoch + 1;
    }
    next.partition_epoch += 1;
    complete_if_ready(&mut next, live);
    Ok(next)
}

/// Completes the reassignment under way in `placement` if every replica
/// being added is in the ISR and a replica of the new list can lead;
/// returns whether it did. The partition epoch is the caller's (this is
/// part of the change that made it ready).
pub fn complete_if_ready(placement: &mut Placement, live: impl Fn(i32) -> bool) -> bool {
    if !placement.reassigning() || !placement.adding.iter().all(|r| placement.isr.contains(r)) {
        return false;
    }
    let target = placement.target();
    let isr: Vec<i32> = placement
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    if isr.is_empty() {
        return false;
    }
    let leader = if target.contains(&placement.leader) {
        placement.leader
    } else {
        match first_eligible(&target, &isr, &live) {
            Some(leader) => leader,
            // Every in-sync replica of the new list is fenced: the move
            // waits for one to return (the leader it has keeps leading).
            None => return false,
        }
    };
    // Replicas leave (or the leader changes): a new leader epoch. A move
    // that only adds replicas keeps the epoch, and its leader carries on.
    if leader != placement.leader || !placement.removing.is_empty() {
        placement.leader = leader;
        placement.leader_epoch += 1;
    }
    placement.replicas = target;
    placement.isr = isr;
    placement.adding.clear();
    placement.removing.clear();
    true
}

/// Whether some replica of `before` is not one of `after`'s.
fn dropped_any(before: &Placement, after: &Placement) -> bool {
    before.replicas.iter().any(|r| !after.replicas.contains(r))
}

/// The first replica, in replica order, that is in sync and live.
fn first_eligible(replicas: &[i32], isr: &[i32], live: &impl Fn(i32) -> bool) -> Option<i32> {
    replicas
        .iter()
        .copied()
        .find(|&r| isr.contains(&r) && live(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(replicas: &[i32], isr: &[i32], leader: i32) -> Placement {
        Placement {
            isr: isr.to_vec(),
            leader,
            ..Placement::new(replicas.to_vec())
        }
    }

    #[test]
    fn new_replicas_follow_first_and_the_old_leave_once_they_are_in_sync() {
        let all = |_| true;
        let current = placement(&[1, 2, 3], &[1, 2, 3], 1);
        let moving = reassigned(&current, Some(&[2, 3, 4]), all).unwrap();
        assert_eq!(moving.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (moving.adding.clone(), moving.removing.clone()),
            (vec![4], vec![1])
        );
        assert_eq!(
            (moving.leader, moving.leader_epoch, moving.partition_epoch),
            (1, 0, 1)
        );
        assert_eq!(moving.isr, vec![1, 2, 3]);
        assert_eq!(moving.original(), vec![2, 3, 1]);
        assert_eq!(moving.target(), vec![2, 3, 4]);
        // Broker 4 joins the ISR: the move completes in that change, and the
        // leader, which is leaving, hands over to the first of the new list.
        let mut joined = moving.clone();
        joined.isr = vec![1, 2, 3, 4];
        assert!(complete_if_ready(&mut joined, all));
        assert_eq!(joined.replicas, vec![2, 3, 4]);
        assert_eq!(joined.isr, vec![2, 3, 4]);
        assert_eq!((joined.leader, joined.leader_epoch), (2, 1));
        assert!(!joined.reassigning());
        // Not before: 4 is not in sync yet.
        let mut waiting = moving;
        assert!(!complete_if_ready(&mut waiting, all));
        assert!(waiting.reassigning());
    }

    #[test]
    fn a_move_that_only_adds_keeps_the_leader_epoch() {
        let current = placement(&[1, 2], &[1, 2], 1);
        let mut grown = reassigned(&current, Some(&[1, 2, 3]), |_| true).unwrap();
        grown.isr = vec![1, 2, 3];
        assert!(complete_if_ready(&mut grown, |_| true));
        assert_eq!((grown.replicas.clone(), grown.leader), (vec![1, 2, 3], 1));
        assert_eq!((grown.leader_epoch, grown.partition_epoch), (0, 1));
    }

    #[test]
    fn a_move_that_adds_nothing_completes_at_once() {
        let current = placement(&[1, 2, 3], &[1, 2, 3], 3);
        let shrunk = reassigned(&current, Some(&[1, 2]), |_| true).unwrap();
        assert_eq!(
            (shrunk.replicas.clone(), shrunk.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert_eq!(
            (shrunk.leader, shrunk.leader_epoch, shrunk.partition_epoch),
            (1, 1, 1)
        );
        assert!(!shrunk.reassigning());
        // A new order of the same replicas changes the preferred leader only.
        let reordered = reassigned(&current, Some(&[3, 1, 2]), |_| true).unwrap();
        assert_eq!(reordered.replicas, vec![3, 1, 2]);
        assert_eq!(reordered.leader, 3);
        assert!(!reordered.reassigning());
    }

    #[test]
    fn cancelling_restores_the_original_replicas_and_a_new_target_replaces_the_old() {
        let current = placement(&[1, 2], &[1, 2], 1);
        let moving = reassigned(&current, Some(&[3, 4]), |_| true).unwrap();
        assert_eq!(
            (moving.adding.clone(), moving.removing.clone()),
            (vec![3, 4], vec![1, 2])
        );
        // 3 caught up, then leadership moved to it in a failover.
        let mut failed_over = moving.clone();
        failed_over.isr = vec![2, 3];
        failed_over.leader = 3;
        failed_over.leader_epoch = 1;
        let cancelled = reassigned(&failed_over, None, |_| true).unwrap();
        assert_eq!(cancelled.replicas, vec![1, 2]);
        assert_eq!(cancelled.isr, vec![2]);
        assert_eq!((cancelled.leader, cancelled.leader_epoch), (2, 2));
        assert!(!cancelled.reassigning());
        // A new target while moving counts from the original replicas.
        let retargeted = reassigned(&moving, Some(&[1, 5]), |_| true).unwrap();
        assert_eq!(retargeted.replicas, vec![1, 5, 2]);
        assert_eq!(
            (retargeted.adding.clone(), retargeted.removing.clone()),
            (vec![5], vec![2])
        );
        // Nothing to cancel.
        assert_eq!(
            reassigned(&current, None, |_| true),
            Err(Refusal::NoneInProgress)
        );
    }

    #[test]
    fn a_move_waits_for_a_live_in_sync_leader_and_never_empties_the_isr() {
        let current = placement(&[1, 2], &[1], 1);
        // 2 is out of sync: moving to 2 alone waits until it is in sync.
        let mut to_two = reassigned(&current, Some(&[2]), |_| true).unwrap();
        assert_eq!(
            (to_two.replicas.clone(), to_two.isr.clone()),
            (vec![2, 1], vec![1])
        );
        assert!(to_two.reassigning());
        to_two.isr = vec![1, 2];
        assert!(complete_if_ready(&mut to_two, |_| true));
        assert_eq!(
            (to_two.replicas.clone(), to_two.isr.clone(), to_two.leader),
            (vec![2], vec![2], 2)
        );
        // Cancelling when only added replicas are in sync would empty the ISR.
        let mut only_new = reassigned(&current, Some(&[3]), |_| true).unwrap();
        only_new.isr = vec![3];
        only_new.leader = 3;
        assert!(matches!(
            reassigned(&only_new, None, |_| true),
            Err(Refusal::Invalid(_))
        ));
        // Moving from 1 to 2 and 3: 2 and 3 in sync but fenced, so 1 keeps
        // leading and the move waits.
        let mut moving = reassigned(&current, Some(&[2, 3]), |_| true).unwrap();
        moving.isr = vec![1, 2, 3];
        assert!(!complete_if_ready(&mut moving, |b| b == 1));
        assert!(complete_if_ready(&mut moving, |b| b == 3));
        assert_eq!((moving.leader, moving.replicas.clone()), (3, vec![2, 3]));
    }
}
