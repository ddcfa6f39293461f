//! A partition's replication role on the broker that hosts it: the leader's
//! view of its followers (how far each has fetched, when it was last caught
//! up), the in-sync replica set and the high watermark that follows from
//! them; or, on a follower, which leader it fetches from. Pure bookkeeping,
//! no I/O: `local.rs` drives it, `node::replication` runs the fetchers and
//! carries ISR changes to the controller.
//!
//! The rules are Kafka's (`Partition`, `Replica`): the high watermark is the
//! lowest log end offset of the in-sync replicas, counting a replica the
//! leader has asked to add as in sync already and one it has asked to drop
//! as still in sync until the controller commits the change (the "maximal
//! ISR", so the watermark never depends on a change not yet agreed); a
//! follower is caught up when it fetches from the leader's log end offset
//! (or from the end the leader had at its previous fetch); one not caught up
//! for `replica.lag.time.max.ms` is dropped from the ISR; one out of the ISR
//! that reaches the high watermark (and the leader's current epoch) is added
//! back.

use std::collections::BTreeMap;

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// The offset after its last batch, from its last fetch (-1: unknown).
    log_end_offset: i64,
    /// When it was last caught up with the leader's log end (ms).
    last_caught_up_ms: i64,
    /// The leader's log end offset when it last fetched, and when that was.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

/// An ISR change waiting for the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<i32>,
    /// When it was asked for (it is asked again if no answer comes).
    pub since_ms: i64,
}

/// This broker leads the partition.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub leader_epoch: i32,
    /// The epoch this broker took the lead in: it has led without a break
    /// since (a bump that keeps the same leader continues in place).
    pub began_epoch: i32,
    /// Bumped by the controller at every change of the partition (KRaft's
    /// partition epoch); an ISR change names the one it was based on.
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The committed ISR (as in the metadata image).
    pub isr: Vec<i32>,
    pub pending: Option<PendingIsr>,
    followers: BTreeMap<i32, Follower>,
    /// The leader's log end offset when it took the lead: a follower is
    /// added back to the ISR only once it has everything from before this
    /// epoch (Kafka's "the follower has reached the leader epoch start").
    pub epoch_start_offset: i64,
}

/// What the broker is for the partition.
#[derive(Debug, Clone)]
pub enum Role {
    /// Not known yet (before the first image places it).
    Unassigned,
    Leader(Leadership),
    /// Fetches from `leader`, which leads in `leader_epoch`.
    Follower {
        leader: i32,
        leader_epoch: i32,
    },
}

impl Leadership {
    /// Taking the lead at `leader_epoch` with a log ending at `log_end`:
    /// every follower's position unknown, each in-sync one considered caught
    /// up now (so that none is dropped before it had a chance to fetch).
    pub fn new(
        me: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        log_end: i64,
        now_ms: i64,
    ) -> Leadership {
        let followers = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                let in_sync = isr.contains(&r);
                (
                    r,
                    Follower {
                        log_end_offset: -1,
                        last_caught_up_ms: if in_sync { now_ms } else { 0 },
                        last_fetch_leader_end: -1,
                        last_fetch_ms: 0,
                    },
                )
            })
            .collect();
        Leadership {
            leader_epoch,
            began_epoch: leader_epoch,
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            pending: None,
            followers,
            epoch_start_offset: log_end,
        }
    }

    /// The controller committed a change of the partition within this
    /// leader epoch (an ISR change, a reassignment of replicas).
    pub fn update(&mut self, partition_epoch: i32, replicas: &[i32], isr: &[i32], now_ms: i64) {
        // A change asked for was planned from an older partition epoch:
        // committed (and this is its outcome, which a completed move may
        // have reshaped) or refused. Either way it is pending no more.
        if partition_epoch != self.partition_epoch {
            self.pending = None;
        }
        self.partition_epoch = partition_epoch;
        self.isr = isr.to_vec();
        for &r in replicas {
            self.followers.entry(r).or_insert(Follower {
                log_end_offset: -1,
                last_caught_up_ms: now_ms,
                last_fetch_leader_end: -1,
                last_fetch_ms: 0,
            });
        }
        self.followers.retain(|r, _| replicas.contains(r));
        self.replicas = replicas.to_vec();
    }

    /// A new leader epoch in place: the in-sync followers are refused
    /// (FENCED_LEADER_EPOCH) until their metadata shows it, so their lag
    /// counts from now (Kafka resets the replicas' state on a new epoch).
    pub fn restart_lag_clocks(&mut self, now_ms: i64) {
        for (r, f) in self.followers.iter_mut() {
            if self.isr.contains(r) {
                f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
            }
        }
    }

    /// The ISR the high watermark is computed over: the committed one, with
    /// a pending addition counted in and a pending removal not yet out.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = self.pending.iter().flat_map(|p| p.isr.iter().copied());
        self.isr
            .iter()
            .copied()
            .chain(pending.filter(|r| !self.isr.contains(r)))
    }

    /// A fetch from `replica` at `fetch_offset`, when the leader's log ends
    /// at `log_end`. False if `replica` is not one of the partition's.
    pub fn on_fetch(&mut self, replica: i32, fetch_offset: i64, log_end: i64, now_ms: i64) -> bool {
        let Some(f) = self.followers.get_mut(&replica) else {
            return false;
        };
        if fetch_offset >= log_end {
            f.last_caught_up_ms = now_ms;
        } else if f.last_fetch_leader_end >= 0 && fetch_offset >= f.last_fetch_leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = fetch_offset;
        f.last_fetch_leader_end = log_end;
        f.last_fetch_ms = now_ms;
        true
    }

    /// The high watermark that follows from the followers' positions: the
    /// lowest log end offset in the maximal ISR (the leader's own is
    /// `log_end`); an in-sync follower whose position is unknown holds it.
    pub fn high_watermark(&self, me: i32, log_end: i64) -> Option<i64> {
        let mut lowest = log_end;
        for r in self.maximal_isr() {
            if r == me {
                continue;
            }
            let end = self.followers.get(&r).map_or(-1, |f| f.log_end_offset);
            if end < 0 {
                return None;
            }
            lowest = lowest.min(end);
        }
        Some(lowest)
    }

    /// The in-sync replicas (committed).
    pub fn isr_len(&self) -> usize {
        self.isr.len()
    }

    /// The ISR change to ask the controller for now, if any: followers not
    /// caught up for `lag_max_ms` dropped; followers out of the ISR that
    /// reached the high watermark (and this epoch's start) added. None while
    /// a change is pending, unless it has waited `retry_ms`.
    pub fn isr_change(
        &mut self,
        me: i32,
        high_watermark: i64,
        now_ms: i64,
        lag_max_ms: i64,
        retry_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        if let Some(pending) = &self.pending {
            if now_ms - pending.since_ms < retry_ms {
                return None;
            }
        }
        let mut isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&r| {
                r == me
                    || self
                        .followers
                        .get(&r)
                        .is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        for (&r, f) in &self.followers {
            if !isr.contains(&r)
                && eligible(r)
                && f.log_end_offset >= high_watermark
                && f.log_end_offset >= self.epoch_start_offset
                && now_ms - f.last_caught_up_ms <= lag_max_ms
            {
                isr.push(r);
            }
        }
        if !isr.contains(&me) {
            isr.insert(0, me);
        }
        // In the order of the replica list, as Kafka keeps it.
        isr.sort_by_key(|r| self.replicas.iter().position(|x| x == r));
        let mut committed = self.isr.clone();
        committed.sort_by_key(|r| self.replicas.iter().position(|x| x == r));
        if isr == committed {
            self.pending = None;
            return None;
        }
        self.pending = Some(PendingIsr {
            isr: isr.clone(),
            since_ms: now_ms,
        });
        Some(isr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_is_the_lowest_in_sync_end() {
        let mut l = Leadership::new(1, 3, 0, &[1, 2, 3], &[1, 2, 3], 100, 0);
        // Nobody has fetched: held where it is.
        assert_eq!(l.high_watermark(1, 100), None);
        assert!(l.on_fetch(2, 90, 100, 10));
        assert_eq!(l.high_watermark(1, 100), None, "3 has not fetched");
        assert!(l.on_fetch(3, 100, 100, 10));
        assert_eq!(l.high_watermark(1, 100), Some(90));
        assert!(l.on_fetch(2, 100, 100, 20));
        assert_eq!(l.high_watermark(1, 120), Some(100));
        assert!(!l.on_fetch(7, 100, 100, 20), "not a replica");
    }

    #[test]
    fn a_lagging_follower_is_dropped_and_added_back_once_caught_up() {
        let lag = 30_000;
        let mut l = Leadership::new(1, 0, 0, &[1, 2, 3], &[1, 2, 3], 0, 0);
        l.on_fetch(2, 0, 0, 1_000);
        l.on_fetch(3, 0, 0, 1_000);
        assert_eq!(l.isr_change(1, 0, 1_000, lag, 5_000, |_| true), None);
        // 3 keeps fetching an old offset while the leader's log grows.
        for t in (2_000..40_000).step_by(1_000) {
            l.on_fetch(2, t, t, t);
            l.on_fetch(3, 10, t, t);
        }
        let change = l.isr_change(1, 39_000, 40_000, lag, 5_000, |_| true);
        assert_eq!(change, Some(vec![1, 2]));
        // Pending: counted in the maximal ISR, not asked again at once.
        assert_eq!(l.isr_change(1, 39_000, 40_001, lag, 5_000, |_| true), None);
        assert_eq!(l.high_watermark(1, 50_000), Some(10));
        l.update(1, &[1, 2, 3], &[1, 2], 40_100);
        assert!(l.pending.is_none());
        assert_eq!(l.high_watermark(1, 50_000), Some(39_000));
        // 3 catches up: added back.
        l.on_fetch(3, 50_000, 50_000, 41_000);
        // Not while it is fenced (the controller would refuse the whole change).
        assert_eq!(
            l.isr_change(1, 50_000, 41_000, lag, 5_000, |r| r != 3),
            None
        );
        let change = l.isr_change(1, 50_000, 41_000, lag, 5_000, |_| true);
        assert_eq!(change, Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_behind_the_epoch_start_is_not_added() {
        let mut l = Leadership::new(1, 5, 0, &[1, 2], &[1], 500, 0);
        l.on_fetch(2, 400, 500, 10);
        // At the high watermark, but missing the previous epochs' tail.
        assert_eq!(l.isr_change(1, 400, 10, 30_000, 5_000, |_| true), None);
        l.on_fetch(2, 500, 500, 20);
        assert_eq!(
            l.isr_change(1, 500, 20, 30_000, 5_000, |_| true),
            Some(vec![1, 2])
        );
    }

    #[test]
    fn a_committed_change_of_another_shape_ends_the_pending_one() {
        // Moving from 3 to 4: 4 caught up and its addition is asked for.
        let mut l = Leadership::new(1, 0, 0, &[1, 2, 4, 3], &[1, 2, 3], 100, 0);
        for r in [2, 3, 4] {
            l.on_fetch(r, 100, 100, 10);
        }
        let change = l.isr_change(1, 100, 10, 30_000, 5_000, |_| true);
        assert_eq!(change, Some(vec![1, 2, 4, 3]));
        // Committed with the move's completion: 3 is no replica any more,
        // and the watermark moves at once (not after the retry pause).
        l.update(1, &[1, 2, 4], &[1, 2, 4], 20);
        assert!(l.pending.is_none());
        l.on_fetch(2, 150, 150, 30);
        l.on_fetch(4, 150, 150, 30);
        assert_eq!(l.high_watermark(1, 150), Some(150));
    }
}
