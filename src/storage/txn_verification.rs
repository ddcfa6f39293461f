//! KIP-890 part 1 verification guards of one partition (Kafka's
//! `VerificationStateEntry`): a transactional write from a producer with no
//! transaction open on the partition is made only after its transaction
//! coordinator confirmed the partition is in the transaction, and only if
//! no marker landed in between. The guard taken before asking the
//! coordinator is the proof: a marker that ends the transaction drops it,
//! so a late write holding it is refused.
//!
//! Used by the data partitions (`partition::local`) and the offsets log's
//! partitions (`group::txn_offsets`) alike.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
struct Entry {
    guard: u64,
    epoch: i16,
    /// Taken for a transaction-version-2 client (Produce v12+,
    /// TxnOffsetCommit v5+), whose next transaction may begin while the
    /// last one's markers are still being written.
    tv2: bool,
}

/// The verifications under way on one partition, per producer id.
#[derive(Debug, Default)]
pub struct Verifications {
    entries: HashMap<i64, Entry>,
    next_guard: u64,
}

impl Verifications {
    /// The guard for `producer_id`'s write at `epoch`: the one under way at
    /// that epoch, else a new one.
    pub fn begin(&mut self, producer_id: i64, epoch: i16, tv2: bool) -> u64 {
        if let Some(entry) = self.entries.get(&producer_id) {
            if entry.epoch == epoch {
                return entry.guard;
            }
        }
        self.next_guard += 1;
        let guard = self.next_guard;
        self.entries
            .insert(producer_id, Entry { guard, epoch, tv2 });
        guard
    }

    /// Whether `guard` is still `producer_id`'s verification at `epoch`.
    pub fn holds(&self, producer_id: i64, epoch: i16, guard: Option<u64>) -> bool {
        match (guard, self.entries.get(&producer_id)) {
            (Some(guard), Some(entry)) => entry.guard == guard && entry.epoch == epoch,
            _ => false,
        }
    }

    /// The write it guarded is in the log (its transaction is now open there).
    pub fn used(&mut self, producer_id: i64) {
        self.entries.remove(&producer_id);
    }

    /// A marker of `producer_id` at `marker_epoch` is being written: a
    /// verification for the transaction it ends is dropped. Under the
    /// classic protocol that is any; under TV2 only one older than the
    /// marker's epoch (the next transaction runs at the marker's epoch, as
    /// Kafka keeps it).
    pub fn on_marker(&mut self, producer_id: i64, marker_epoch: i16) {
        if self
            .entries
            .get(&producer_id)
            .is_some_and(|e| !e.tv2 || e.epoch < marker_epoch)
        {
            self.entries.remove(&producer_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_ends_classic_verifications_and_older_tv2_ones() {
        let mut v = Verifications::default();
        let classic = v.begin(1, 3, false);
        assert_eq!(v.begin(1, 3, false), classic, "reused at the same epoch");
        assert!(v.holds(1, 3, Some(classic)));
        assert!(!v.holds(1, 4, Some(classic)) && !v.holds(1, 3, None));
        v.on_marker(1, 3);
        assert!(!v.holds(1, 3, Some(classic)), "a classic marker ends it");

        let next = v.begin(2, 5, true);
        v.on_marker(2, 5);
        assert!(
            v.holds(2, 5, Some(next)),
            "TV2: the next transaction's survives"
        );
        v.on_marker(2, 6);
        assert!(!v.holds(2, 5, Some(next)), "an older TV2 one does not");

        let g = v.begin(3, 0, true);
        v.used(3);
        assert!(!v.holds(3, 0, Some(g)));
        assert_ne!(v.begin(3, 0, true), g, "guards are never reused");
    }
}
