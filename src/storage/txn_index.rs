//! The aborted-transaction index of a segment (Kafka's `.txnindex`): one
//! entry per transaction whose ABORT marker is in the segment, so that a
//! `read_committed` Fetch can tell consumers which records to drop without
//! the broker reading them.
//!
//! An entry is 34 big-endian bytes: `int16 version` (0), `int64 producer id`,
//! `int64 first offset` (the transaction's first batch on this partition),
//! `int64 last offset` (the ABORT marker), `int64 last stable offset` (the
//! first offset of the oldest transaction still open when the marker was
//! written, or the marker's offset + 1). Entries are in marker order.
//!
//! Kept in memory while the broker runs and written with the other index
//! files when a segment is closed; rebuilt from the markers by the start-up
//! scan.

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

pub const ENTRY_BYTES: usize = 34;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnIndex {
    entries: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// Adds the entry of an ABORT marker; markers come in offset order.
    pub fn push(&mut self, entry: AbortedTxn) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|last| last.last_offset < entry.last_offset));
        self.entries.push(entry);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in marker order.
    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Keeps the entries whose marker `keep` says is still in the log (the
    /// cleaner removed the others' markers).
    pub fn retain_markers(&mut self, mut keep: impl FnMut(i64) -> bool) {
        self.entries.retain(|e| keep(e.last_offset));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the entries of markers at or after `offset` (a rollback).
    pub fn truncate_from(&mut self, offset: i64) {
        let keep = self.entries.partition_point(|e| e.last_offset < offset);
        self.entries.truncate(keep);
    }

    /// Adds to `out` the transactions that overlap `[fetch_offset, upper)`,
    /// as Kafka's `collectAbortedTxns` does; returns true once an entry shows
    /// that no later segment can hold one (its last stable offset is at or
    /// past `upper`: every transaction open before `upper` had ended there).
    pub fn collect(&self, fetch_offset: i64, upper: i64, out: &mut Vec<AbortedTxn>) -> bool {
        for entry in &self.entries {
            if entry.last_offset >= fetch_offset && entry.first_offset < upper {
                out.push(*entry);
            }
            if entry.last_stable_offset >= upper {
                return true;
            }
        }
        false
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&0i16.to_be_bytes());
            for field in [
                e.producer_id,
                e.first_offset,
                e.last_offset,
                e.last_stable_offset,
            ] {
                out.extend_from_slice(&field.to_be_bytes());
            }
        }
        out
    }

    /// Parses an index file of a segment holding offsets
    /// `[base_offset, next_offset)`. None if it is not one: not whole
    /// entries, a version other than 0, a marker outside the segment, markers
    /// out of order, or offsets that do not fit together.
    pub fn decode(bytes: &[u8], base_offset: i64, next_offset: i64) -> Option<TxnIndex> {
        if !bytes.len().is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        let mut entries: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
        for chunk in bytes.chunks_exact(ENTRY_BYTES) {
            if chunk[0..2] != [0, 0] {
                return None;
            }
            let at = |i: usize| {
                let start = 2 + i * 8;
                i64::from_be_bytes(chunk[start..start + 8].try_into().unwrap_or([0; 8]))
            };
            let entry = AbortedTxn {
                producer_id: at(0),
                first_offset: at(1),
                last_offset: at(2),
                last_stable_offset: at(3),
            };
            let sane = entry.producer_id >= 0
                && (0..=entry.last_offset).contains(&entry.first_offset)
                && (base_offset..next_offset).contains(&entry.last_offset)
                // Another producer's open transaction may have begun earlier.
                && (0..=entry.last_offset + 1).contains(&entry.last_stable_offset)
                && entries
                    .last()
                    .is_none_or(|last| last.last_offset < entry.last_offset);
            if !sane {
                return None;
            }
            entries.push(entry);
        }
        Some(TxnIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn round_trip_and_hostile_files() {
        let mut index = TxnIndex::default();
        index.push(entry(1, 10, 20, 21));
        index.push(entry(2, 5, 30, 12));
        let bytes = index.encode();
        assert_eq!(bytes.len(), 2 * ENTRY_BYTES);
        assert_eq!(TxnIndex::decode(&bytes, 15, 40), Some(index.clone()));
        // Not whole entries; a marker outside the segment; a version of 1.
        assert_eq!(TxnIndex::decode(&bytes[..40], 15, 40), None);
        assert_eq!(TxnIndex::decode(&bytes, 25, 40), None);
        assert_eq!(TxnIndex::decode(&bytes, 15, 30), None);
        let mut versioned = bytes.clone();
        versioned[1] = 1;
        assert_eq!(TxnIndex::decode(&versioned, 15, 40), None);
        // Out of order.
        let mut swapped = bytes[ENTRY_BYTES..].to_vec();
        swapped.extend_from_slice(&bytes[..ENTRY_BYTES]);
        assert_eq!(TxnIndex::decode(&swapped, 15, 40), None);
        // Every flipped byte decodes to something sane or to None, never a panic.
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x80;
            let _ = TxnIndex::decode(&flipped, 15, 40);
        }
    }

    #[test]
    fn collect_takes_what_overlaps_and_stops_at_the_stable_offset() {
        let mut index = TxnIndex::default();
        index.push(entry(1, 0, 4, 5));
        index.push(entry(2, 3, 9, 6));
        index.push(entry(3, 12, 15, 16));
        index.push(entry(4, 20, 25, 26));
        let mut out = Vec::new();
        // [5, 13): producer 1 ended before 5; 2 overlaps; 3 starts at 12 < 13;
        // its stable offset 16 >= 13 ends the search.
        assert!(index.collect(5, 13, &mut out));
        assert_eq!(
            out.iter().map(|e| e.producer_id).collect::<Vec<_>>(),
            [2, 3]
        );
        out.clear();
        assert!(!index.collect(0, 100, &mut out), "no entry bounds 100");
        assert_eq!(out.len(), 4);
        index.truncate_from(15);
        assert_eq!(index.len(), 2);
    }
}
