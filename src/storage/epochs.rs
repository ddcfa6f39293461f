//! A log's leader epochs (KIP-101, Kafka's `LeaderEpochFileCache`): for each
//! leader epoch that wrote to the log, the offset of its first batch. Every
//! batch carries the epoch of the leader that appended it; this list says
//! where each epoch's batches begin, so that a replica can ask "where did
//! epoch E end in your log?" (OffsetForLeaderEpoch, Fetch's diverging epoch)
//! and cut its own log where the two diverge.
//!
//! Kept in `leader-epoch-checkpoint` in the partition's directory, in Kafka's
//! text format (a version line `0`, a count line, then `epoch start_offset`
//! lines), written durably whenever a new epoch begins (rare: once per leader
//! change) and after a truncation. A scanned start rebuilds it from the
//! batches themselves.

use std::io;
use std::path::Path;

use crate::io::disk::Disk;

/// The file the epochs are kept in.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Kafka's "no epoch" and "no offset".
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// The leader epochs of one log, oldest first; epochs and start offsets
/// both strictly increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochs {
    /// Notes that a batch of `epoch` starts at `offset`; returns whether that
    /// began a new epoch (then the list must be saved). Epochs below the
    /// latest (a batch written before the epoch list existed, or with a
    /// client's value) are ignored.
    pub fn observe(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(latest, _)) if epoch <= latest => false,
            _ => {
                // A new epoch cannot start below an earlier one's start.
                self.entries.retain(|&(_, start)| start < offset);
                self.entries.push((epoch, offset));
                true
            }
        }
    }

    /// The latest epoch that wrote to the log, or -1.
    pub fn latest(&self) -> i32 {
        self.entries.last().map_or(UNDEFINED_EPOCH, |&(e, _)| e)
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// Where `epoch` ends in a log that ends at `log_end_offset`, as Kafka's
    /// `endOffsetFor` answers: `(epoch, end)` for the latest epoch;
    /// for an older one, the largest epoch at or below it and the start of
    /// the next; `(-1, -1)` for an epoch later than any here (or none known).
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        if epoch < 0 {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        let latest = self.latest();
        if latest == epoch {
            return (epoch, log_end_offset);
        }
        let Some(higher) = self.entries.iter().position(|&(e, _)| e > epoch) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        let next_start = self.entries[higher].1;
        match higher.checked_sub(1) {
            // Older than the earliest epoch kept: its end is where the log's
            // known epochs begin.
            None => (epoch, next_start),
            Some(floor) => (self.entries[floor].0, next_start),
        }
    }

    /// Forgets the epochs that start at or after `end` (the log was cut there).
    pub fn truncate_from_end(&mut self, end: i64) {
        self.entries.retain(|&(_, start)| start < end);
    }

    /// Reads the checkpoint in `dir`: empty if there is none; an unreadable
    /// one is an error (the log cannot answer for its epochs).
    pub fn load(dir: &Path) -> io::Result<LeaderEpochs> {
        let text = match std::fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LeaderEpochs::default()),
            Err(e) => return Err(e),
        };
        parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} in {} is malformed",
                    LEADER_EPOCH_CHECKPOINT,
                    dir.display()
                ),
            )
        })
    }

    /// Writes the checkpoint in `dir` durably.
    pub fn save(&self, disk: &Disk, dir: &Path) -> io::Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        disk.write_durably(&dir.join(LEADER_EPOCH_CHECKPOINT), text.as_bytes())
    }
}

/// Kafka's checkpoint text; None unless well formed with increasing entries.
fn parse(text: &str) -> Option<LeaderEpochs> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<(i32, i64)> = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch: i32 = fields.next()?.parse().ok()?;
        let start: i64 = fields.next()?.parse().ok()?;
        if epoch < 0 || start < 0 {
            return None;
        }
        if entries
            .last()
            .is_some_and(|&(e, s)| epoch <= e || start <= s)
        {
            return None;
        }
        entries.push((epoch, start));
    }
    Some(LeaderEpochs { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka() {
        let mut epochs = LeaderEpochs::default();
        assert!(epochs.observe(0, 0));
        assert!(!epochs.observe(0, 10));
        assert!(epochs.observe(2, 20));
        assert!(epochs.observe(5, 35));
        assert!(!epochs.observe(-1, 40), "a client's -1 is no epoch");
        assert!(!epochs.observe(3, 40), "older than the latest");
        let end = 50;
        assert_eq!(epochs.end_offset_for(5, end), (5, 50));
        assert_eq!(epochs.end_offset_for(2, end), (2, 35));
        // Epoch 1 never wrote here: the one before it, ending where 2 starts.
        assert_eq!(epochs.end_offset_for(1, end), (0, 20));
        assert_eq!(epochs.end_offset_for(0, end), (0, 20));
        assert_eq!(epochs.end_offset_for(9, end), (-1, -1));
        assert_eq!(epochs.end_offset_for(-1, end), (-1, -1));
        epochs.truncate_from_end(35);
        assert_eq!(epochs.latest(), 2);
        assert_eq!(epochs.end_offset_for(2, 30), (2, 30));
    }

    #[test]
    fn an_epoch_older_than_the_first_kept_ends_where_that_one_starts() {
        let mut epochs = LeaderEpochs::default();
        epochs.observe(4, 100);
        epochs.observe(6, 200);
        assert_eq!(epochs.end_offset_for(3, 300), (3, 100));
    }

    #[test]
    fn the_checkpoint_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            LeaderEpochs::load(dir.path()).unwrap(),
            LeaderEpochs::default()
        );
        let mut epochs = LeaderEpochs::default();
        epochs.observe(1, 0);
        epochs.observe(3, 17);
        epochs.save(&Disk::Real, dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n2\n1 0\n3 17\n");
        assert_eq!(LeaderEpochs::load(dir.path()).unwrap(), epochs);
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n1 0\n",
            "0\n2\n3 0\n1 5\n",
            "0\n1\nx y\n",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
