//! Sparse offset and time indexes of one segment.
//!
//! An entry is added when at least `index.interval.bytes` of log data were
//! appended since the previous one (and always for a segment's first batch), so
//! a lookup lands at most one interval plus one batch before the wanted offset.
//!
//! On disk (`<base>.index`, `<base>.timeindex`), big-endian, fixed-size entries:
//! ```text
//! offset index: | relative offset u32 | file position u32 |      8 bytes
//! time index:   | timestamp i64       | relative offset u32 |   12 bytes
//! ```
//! The in-memory vectors are the authority while a segment is open; files are
//! written when a segment is closed (roll, clean shutdown) and are only trusted
//! at start-up after a sanity check against the log (see `segment.rs`).

/// One offset index entry: the batch whose base offset is `base_offset + relative_offset`
/// starts at `position` in the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time index entry: batches from `relative_offset` on have timestamps >= the
/// previous entries' `timestamp_ms`; this entry's timestamp is the largest seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        debug_assert!(self.entries.last().is_none_or(|last| {
            last.relative_offset < entry.relative_offset && last.position < entry.position
        }));
        self.entries.push(entry);
    }

    /// The entry with the largest relative offset <= `relative_offset`, or the
    /// segment start when there is none.
    pub fn lookup(&self, relative_offset: u32) -> OffsetEntry {
        let count = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if count == 0 {
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
        } else {
            self.entries[count - 1]
        }
    }

    pub fn first(&self) -> Option<OffsetEntry> {
        self.entries.first().copied()
    }

    /// The entry with the largest position <= `position`.
    pub fn last_at_or_below_position(&self, position: u32) -> Option<OffsetEntry> {
        let count = self.entries.partition_point(|e| e.position <= position);
        count.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries at or beyond `position` (after truncating the log there).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Parses an index file. Returns None if it is malformed: a partial entry, or
    /// entries not strictly increasing, or a position at or past `log_bytes`.
    pub fn decode(bytes: &[u8], log_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if u64::from(entry.position) >= log_bytes {
                return None;
            }
            if let Some(last) = index.entries.last() {
                if last.relative_offset >= entry.relative_offset || last.position >= entry.position
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records that the batch at `relative_offset` raised the segment's max timestamp.
    pub fn push(&mut self, entry: TimeEntry) {
        if self
            .entries
            .last()
            .is_none_or(|last| entry.timestamp_ms > last.timestamp_ms)
        {
            self.entries.push(entry);
        }
    }

    /// The relative offset to start scanning from for the first batch with a
    /// timestamp >= `timestamp_ms`: the last entry whose timestamp is below it.
    pub fn lookup(&self, timestamp_ms: i64) -> u32 {
        let count = self
            .entries
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        if count == 0 {
            0
        } else {
            self.entries[count - 1].relative_offset
        }
    }

    /// The entry with the largest timestamp (and relative offset), if any.
    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    pub fn truncate_to_relative_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let entry = TimeEntry {
                timestamp_ms: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(last) = index.entries.last() {
                if last.timestamp_ms >= entry.timestamp_ms
                    || last.relative_offset > entry.relative_offset
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lookup_finds_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(OffsetEntry {
            relative_offset: 0,
            position: 0,
        });
        index.push(OffsetEntry {
            relative_offset: 10,
            position: 4100,
        });
        index.push(OffsetEntry {
            relative_offset: 25,
            position: 8300,
        });
        assert_eq!(index.lookup(0).position, 0);
        assert_eq!(index.lookup(9).position, 0);
        assert_eq!(index.lookup(10).position, 4100);
        assert_eq!(index.lookup(24).position, 4100);
        assert_eq!(index.lookup(1000).position, 8300);
        index.truncate_to_position(8300);
        assert_eq!(index.lookup(1000).position, 4100);
    }

    #[test]
    fn decode_rejects_damaged_files() {
        let mut index = OffsetIndex::default();
        index.push(OffsetEntry {
            relative_offset: 0,
            position: 0,
        });
        index.push(OffsetEntry {
            relative_offset: 5,
            position: 100,
        });
        let bytes = index.encode();
        assert!(OffsetIndex::decode(&bytes, 200).is_some());
        assert!(
            OffsetIndex::decode(&bytes[..7], 200).is_none(),
            "partial entry"
        );
        assert!(
            OffsetIndex::decode(&bytes, 100).is_none(),
            "position past the log"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert!(
            OffsetIndex::decode(&swapped, 200).is_none(),
            "not increasing"
        );
    }

    #[test]
    fn time_lookup() {
        let mut index = TimeIndex::default();
        index.push(TimeEntry {
            timestamp_ms: 100,
            relative_offset: 0,
        });
        index.push(TimeEntry {
            timestamp_ms: 90,
            relative_offset: 3,
        }); // not a new max: ignored
        index.push(TimeEntry {
            timestamp_ms: 200,
            relative_offset: 7,
        });
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(150), 0);
        assert_eq!(index.lookup(250), 7);
        let decoded = TimeIndex::decode(&index.encode()).unwrap();
        assert_eq!(decoded.lookup(250), 7);
    }

    proptest! {
        /// lookup agrees with a linear scan over any increasing entry set.
        #[test]
        fn lookup_matches_linear_scan(mut offsets in proptest::collection::btree_set(0u32..100_000, 0..200), probe in 0u32..110_000) {
            let mut index = OffsetIndex::default();
            let entries: Vec<OffsetEntry> = std::mem::take(&mut offsets).into_iter().enumerate()
                .map(|(i, o)| OffsetEntry { relative_offset: o, position: (i as u32) * 64 }).collect();
            for e in &entries { index.push(*e); }
            let expected = entries.iter().rev().find(|e| e.relative_offset <= probe).copied()
                .unwrap_or(OffsetEntry { relative_offset: 0, position: 0 });
            prop_assert_eq!(index.lookup(probe), expected);
            let round = OffsetIndex::decode(&index.encode(), u64::MAX).unwrap();
            prop_assert_eq!(round.lookup(probe), expected);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), log_bytes in any::<u64>()) {
            let _ = OffsetIndex::decode(&bytes, log_bytes);
            let _ = TimeIndex::decode(&bytes);
        }
    }
}
