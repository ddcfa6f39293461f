//! The clean-shutdown marker of a partition log: what a clean start needs to
//! trust the files on disk without scanning them batch by batch.
//!
//! `PartitionLog::close` (clean shutdown) syncs every segment, makes sure the
//! index files on disk equal the in-memory indexes, and then writes
//! `clean-shutdown` (temp file, fsync, rename, directory fsync): per segment its
//! length, mtime, next offset, max timestamp and the length and CRC32C of its
//! three index files (offset, time, aborted transactions), then a snapshot of
//! the producer state (open transactions included), all under a version and a
//! CRC32C (byte layout in `docs/FORMAT.md`).
//!
//! `PartitionLog::open` reads the marker and deletes it (with a directory
//! fsync) before anything else, so that whatever happens later (appends, a
//! crash) leads to a scanned start. It then trusts the files only if the marker
//! decodes and *agrees with the disk*: the same segment files, each of the
//! recorded length and mtime, index files of the recorded length and CRC32C
//! that also decode as sane indexes for that segment (entries strictly
//! increasing, positions inside the file, offsets inside the segment), and a
//! tail (from the last offset-index entry to the end of each segment) whose
//! batches check out (length, magic, CRC32C) and end where the marker says.
//! Anything else falls back to the full scan. The marker is a hint, never an
//! authority: every byte of it, and of the files it describes, is treated as
//! hostile.
//!
//! What a clean start does not see: a byte changed in the middle of a segment
//! with its length and mtime restored (the scan would have found it). Kafka's
//! clean start trusts its segments the same way.

use std::fs;
use std::io;
use std::path::Path;

use crate::io::disk::Disk;
use crate::io::fs as durable;
use crate::protocol::batch::BATCH_HEADER_LEN;
use crate::storage::producer_state::ProducerStateTable;
use crate::storage::txn_index::ENTRY_BYTES;

/// Name of the marker in a partition directory.
pub const MARKER_FILE: &str = "clean-shutdown";
const MAGIC: [u8; 4] = *b"SLCS";
/// Version of the layout below; a marker of any other version is not trusted.
pub const VERSION: u16 = 3;
/// magic, version, segment count.
const HEADER_BYTES: usize = 4 + 2 + 4;
/// Fixed size of one segment summary.
const SEGMENT_BYTES: usize = 6 * 8 + 6 * 4;
const CRC_BYTES: usize = 4;
/// A marker larger than this is not read (it would describe some 250,000
/// segments, or a million producers): too big to be ours, so not trusted.
const MARKER_BYTES_MAX: u64 = 64 << 20;

/// What the marker records about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    /// Length of the `.log` file.
    pub log_bytes: u64,
    /// mtime of the `.log` file, in nanoseconds since the epoch.
    pub log_mtime_ns: i64,
    /// The offset after the segment's last batch (the cleaner may leave it past
    /// the last batch that survived).
    pub next_offset: i64,
    /// Largest batch max timestamp, -1 if none.
    pub max_timestamp_ms: i64,
    /// Last offset of the batch holding it, -1 if none.
    pub offset_of_max_timestamp: i64,
    pub index_bytes: u32,
    pub index_crc: u32,
    pub time_index_bytes: u32,
    pub time_index_crc: u32,
    /// 0 when the segment has no `.txnindex`.
    pub txn_index_bytes: u32,
    pub txn_index_crc: u32,
}

/// A decoded marker.
#[derive(Debug)]
pub struct CleanShutdown {
    /// In offset order, the last one the active segment.
    pub segments: Vec<SegmentSummary>,
    pub producers: ProducerStateTable,
}

impl CleanShutdown {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.segments.len() * SEGMENT_BYTES + 64);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_be_bytes());
        for s in &self.segments {
            for field in [
                s.base_offset,
                s.log_bytes as i64,
                s.log_mtime_ns,
                s.next_offset,
                s.max_timestamp_ms,
                s.offset_of_max_timestamp,
            ] {
                out.extend_from_slice(&field.to_be_bytes());
            }
            for field in [
                s.index_bytes,
                s.index_crc,
                s.time_index_bytes,
                s.time_index_crc,
                s.txn_index_bytes,
                s.txn_index_crc,
            ] {
                out.extend_from_slice(&field.to_be_bytes());
            }
        }
        self.producers.encode_snapshot(&mut out);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a marker; Err says why it is not trusted. Checks the CRC32C
    /// first, then every field for consistency on its own; agreement with the
    /// files is checked by the caller.
    pub fn decode(bytes: &[u8]) -> Result<CleanShutdown, &'static str> {
        let body_len = bytes
            .len()
            .checked_sub(CRC_BYTES)
            .filter(|&n| n >= HEADER_BYTES)
            .ok_or("too short")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().map_err(|_| "crc")?) {
            return Err("CRC32C mismatch");
        }
        if body[0..4] != MAGIC {
            return Err("not a clean-shutdown marker");
        }
        if u16::from_be_bytes([body[4], body[5]]) != VERSION {
            return Err("unknown version");
        }
        let count = u32::from_be_bytes(body[6..10].try_into().map_err(|_| "count")?) as usize;
        if count == 0 || count > (body.len() - HEADER_BYTES) / SEGMENT_BYTES {
            return Err("segment count out of range");
        }
        let mut segments: Vec<SegmentSummary> = Vec::with_capacity(count);
        for chunk in
            body[HEADER_BYTES..HEADER_BYTES + count * SEGMENT_BYTES].chunks_exact(SEGMENT_BYTES)
        {
            let i64_at =
                |i: usize| i64::from_be_bytes(chunk[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let u32_at = |i: usize| {
                let at = 48 + i * 4;
                u32::from_be_bytes(chunk[at..at + 4].try_into().unwrap_or([0; 4]))
            };
            let s = SegmentSummary {
                base_offset: i64_at(0),
                log_bytes: i64_at(1) as u64,
                log_mtime_ns: i64_at(2),
                next_offset: i64_at(3),
                max_timestamp_ms: i64_at(4),
                offset_of_max_timestamp: i64_at(5),
                index_bytes: u32_at(0),
                index_crc: u32_at(1),
                time_index_bytes: u32_at(2),
                time_index_crc: u32_at(3),
                txn_index_bytes: u32_at(4),
                txn_index_crc: u32_at(5),
            };
            check_segment(&s)?;
            if let Some(previous) = segments.last() {
                if previous.next_offset > s.base_offset {
                    return Err("segments overlap or are out of order");
                }
            }
            segments.push(s);
        }
        let log_end_offset = segments.last().map_or(0, |s| s.next_offset);
        let producers_at = HEADER_BYTES + count * SEGMENT_BYTES;
        let (producers, used) =
            ProducerStateTable::decode_snapshot(&body[producers_at..], log_end_offset)
                .ok_or("malformed producer-state snapshot")?;
        if producers_at + used != body.len() {
            return Err("trailing bytes");
        }
        Ok(CleanShutdown {
            segments,
            producers,
        })
    }
}

/// The rules one segment summary must follow on its own.
fn check_segment(s: &SegmentSummary) -> Result<(), &'static str> {
    if s.base_offset < 0 || s.next_offset < s.base_offset {
        return Err("segment offsets out of range");
    }
    // Index positions and relative offsets are u32.
    if s.log_bytes > u64::from(u32::MAX) || s.next_offset - s.base_offset > i64::from(u32::MAX) {
        return Err("segment too large");
    }
    if !s.index_bytes.is_multiple_of(8)
        || !s.time_index_bytes.is_multiple_of(12)
        || !s.txn_index_bytes.is_multiple_of(ENTRY_BYTES as u32)
    {
        return Err("index length is not a whole number of entries");
    }
    if (s.log_bytes == 0) != (s.index_bytes == 0) {
        return Err("index and log disagree on being empty");
    }
    // At most one entry per batch, and a batch takes at least its header: this
    // also bounds what is read of an index file before it is checked.
    let batches_max = s.log_bytes / BATCH_HEADER_LEN as u64 + 1;
    if u64::from(s.index_bytes / 8) > batches_max
        || u64::from(s.time_index_bytes / 12) > batches_max
        || u64::from(s.txn_index_bytes / ENTRY_BYTES as u32) > batches_max
    {
        return Err("more index entries than the log has batches");
    }
    if s.max_timestamp_ms >= 0 {
        if !(s.base_offset..s.next_offset).contains(&s.offset_of_max_timestamp) {
            return Err("offset of the max timestamp outside the segment");
        }
    } else if s.max_timestamp_ms != -1 || s.offset_of_max_timestamp != -1 {
        return Err("max timestamp out of range");
    }
    if (s.max_timestamp_ms >= 0) != (s.time_index_bytes > 0) {
        return Err("time index and max timestamp disagree");
    }
    Ok(())
}

/// mtime of a file in nanoseconds since the epoch (as recorded in the marker).
pub fn mtime_ns(metadata: &fs::Metadata) -> io::Result<i64> {
    let modified = metadata.modified()?;
    let since = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| io::Error::other("mtime before the epoch"))?;
    i64::try_from(since.as_nanos()).map_err(|_| io::Error::other("mtime out of range"))
}

/// Writes the marker durably: temp file, fsync, rename, directory fsync.
pub fn write(disk: &Disk, dir: &Path, marker: &CleanShutdown) -> io::Result<()> {
    disk.write_durably(&dir.join(MARKER_FILE), &marker.encode())
}

/// Reads the marker (None if there is none, or it is implausibly large) and
/// deletes it, with its temp file, making the deletion durable: after this a
/// crash means a scanned start.
pub fn take(disk: &Disk, dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let path = dir.join(MARKER_FILE);
    let bytes = match fs::metadata(&path) {
        Ok(m) if m.len() <= MARKER_BYTES_MAX => Some(fs::read(&path)?),
        Ok(_) => Some(Vec::new()), // too large: present, but not trusted
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    disk.remove_durably(dir, &[path.clone(), durable::temp_path(&path)])?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchHeader;
    use proptest::prelude::*;

    fn summary(base_offset: i64, next_offset: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset,
            log_bytes: 4096,
            log_mtime_ns: 1_700_000_000_123_456_789,
            next_offset,
            max_timestamp_ms: 1_000,
            offset_of_max_timestamp: next_offset - 1,
            index_bytes: 16,
            index_crc: 0xdead_beef,
            time_index_bytes: 12,
            time_index_crc: 0x1234_5678,
            txn_index_bytes: 34,
            txn_index_crc: 0x9abc_def0,
        }
    }

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: 2,
        }
    }

    fn marker() -> CleanShutdown {
        let mut producers = ProducerStateTable::default();
        for i in 0..7 {
            producers.record(&header(42, 3, i * 2, i64::from(i) * 2));
        }
        producers.record(&header(7, 0, 0, 20));
        CleanShutdown {
            segments: vec![summary(0, 10), summary(10, 22), summary(22, 30)],
            producers,
        }
    }

    #[test]
    fn round_trip() {
        let original = marker();
        let bytes = original.encode();
        let decoded = CleanShutdown::decode(&bytes).expect("decodes");
        assert_eq!(decoded.segments, original.segments);
        assert_eq!(decoded.producers.producer_count(), 2);
        assert_eq!(decoded.encode(), bytes, "re-encodes to the same bytes");
        // The snapshot keeps the last five batches of producer 42.
        assert_eq!(
            decoded.producers.check(&header(42, 3, 6, -1)),
            Ok(crate::storage::producer_state::SequenceCheck::Duplicate { base_offset: 6 })
        );
        assert_eq!(
            decoded.producers.check(&header(42, 3, 14, -1)),
            Ok(crate::storage::producer_state::SequenceCheck::Append)
        );
    }

    /// Re-signs `bytes` after a change, so that the field checks (not the CRC) are tested.
    fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - CRC_BYTES;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn hostile_markers_are_refused() {
        let good = marker().encode();
        assert!(CleanShutdown::decode(&[]).is_err());
        assert!(CleanShutdown::decode(&good[..good.len() - 1]).is_err());
        for position in 0..good.len() {
            let mut flipped = good.clone();
            flipped[position] ^= 0x01;
            assert!(
                CleanShutdown::decode(&flipped).is_err(),
                "a flipped bit at {position} went unnoticed"
            );
        }
        // A marker of the layout before transactions (1): scanned instead.
        let mut version = good.clone();
        version[5] = 1;
        assert_eq!(
            CleanShutdown::decode(&resign(version)).unwrap_err(),
            "unknown version"
        );
        let mut count = good.clone();
        count[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            CleanShutdown::decode(&resign(count)).unwrap_err(),
            "segment count out of range"
        );
        let mut trailing = good[..good.len() - CRC_BYTES].to_vec();
        trailing.push(0);
        trailing.extend_from_slice(&[0; CRC_BYTES]);
        assert_eq!(
            CleanShutdown::decode(&resign(trailing)).unwrap_err(),
            "trailing bytes"
        );
        // Field rules, each broken in a re-signed marker.
        type Breaker = Box<dyn Fn(&mut CleanShutdown)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("overlap", Box::new(|m| m.segments[1].base_offset = 5)),
            ("negative", Box::new(|m| m.segments[0].next_offset = -1)),
            ("huge", Box::new(|m| m.segments[2].log_bytes = 1 << 40)),
            ("partial entry", Box::new(|m| m.segments[0].index_bytes = 9)),
            (
                "partial time entry",
                Box::new(|m| m.segments[0].time_index_bytes = 13),
            ),
            (
                "empty log, index",
                Box::new(|m| m.segments[0].log_bytes = 0),
            ),
            // 4096 bytes hold at most 4096 / 61 + 1 = 68 batches.
            (
                "index too big",
                Box::new(|m| m.segments[0].index_bytes = 8 * 69),
            ),
            (
                "time index too big",
                Box::new(|m| m.segments[0].time_index_bytes = 12 * 69),
            ),
            (
                "partial txn entry",
                Box::new(|m| m.segments[0].txn_index_bytes = 35),
            ),
            (
                "txn index too big",
                Box::new(|m| m.segments[0].txn_index_bytes = 34 * 69),
            ),
            (
                "max ts offset",
                Box::new(|m| m.segments[1].offset_of_max_timestamp = 22),
            ),
            (
                "no time index",
                Box::new(|m| m.segments[1].time_index_bytes = 0),
            ),
            ("bad -1", Box::new(|m| m.segments[1].max_timestamp_ms = -7)),
            (
                "producer offset past the end",
                Box::new(|m| {
                    let mut producers = ProducerStateTable::default();
                    producers.record(&header(1, 0, 0, 30));
                    m.producers = producers;
                }),
            ),
        ];
        for (what, break_it) in cases {
            let mut m = marker();
            break_it(&mut m);
            assert!(CleanShutdown::decode(&m.encode()).is_err(), "{what}");
        }
    }

    #[test]
    fn hostile_producer_snapshots_are_refused() {
        /// (producer id, epoch, coordinator epoch, open transaction's first
        /// offset, [(first sequence, last sequence, base offset)])
        type Producer = (i64, i16, i32, i64, Vec<(i32, i32, i64)>);
        let encode = |producers: &[Producer]| {
            let mut out = (producers.len() as u32).to_be_bytes().to_vec();
            for (id, epoch, coordinator_epoch, txn_first, batches) in producers {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&coordinator_epoch.to_be_bytes());
                out.extend_from_slice(&txn_first.to_be_bytes());
                out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // last timestamp
                out.push(batches.len() as u8);
                for (first, last, base) in batches {
                    out.extend_from_slice(&first.to_be_bytes());
                    out.extend_from_slice(&last.to_be_bytes());
                    out.extend_from_slice(&base.to_be_bytes());
                }
            }
            out
        };
        let ok = encode(&[
            (1, 0, -1, -1, vec![(0, 1, 0), (2, 3, 2)]),
            (2, 0, 4, 4, vec![(0, 0, 4)]),
            // Only a coordinator epoch left (its batches went with an epoch bump).
            (3, 1, 2, -1, vec![]),
        ]);
        let (table, used) = ProducerStateTable::decode_snapshot(&ok, 5).unwrap();
        assert_eq!((table.producer_count(), used), (3, ok.len()));
        assert_eq!(table.open_transactions(), [(2, 0, 4)]);
        let bad = [
            encode(&[
                (2, 0, -1, -1, vec![(0, 0, 0)]),
                (1, 0, -1, -1, vec![(0, 0, 1)]),
            ]), // ids not increasing
            encode(&[
                (1, 0, -1, -1, vec![(0, 0, 0)]),
                (1, 0, -1, -1, vec![(0, 0, 1)]),
            ]), // id repeated
            encode(&[(-1, 0, -1, -1, vec![(0, 0, 0)])]), // negative id
            encode(&[(1, 0, -1, -1, vec![])]),           // says nothing
            encode(&[(1, 0, -1, -1, vec![(0, 0, 0); 6])]), // too many
            encode(&[(1, 0, -1, -1, vec![(0, 1, 2), (2, 3, 1)])]), // offsets decrease
            encode(&[(1, 0, -1, -1, vec![(0, 0, 5)])]),  // past the log end
            encode(&[(1, 0, -1, -1, vec![(-3, 0, 0)])]), // negative sequence
            encode(&[(1, 0, -1, 5, vec![(0, 0, 0)])]),   // transaction past the log end
            encode(&[(1, 0, -1, -2, vec![(0, 0, 0)])]),  // transaction offset invalid
            encode(&[(1, 0, -2, -1, vec![(0, 0, 0)])]),  // coordinator epoch invalid
            {
                // A last timestamp below -1.
                let mut bytes = encode(&[(1, 0, -1, -1, vec![(0, 0, 0)])]);
                bytes[26..34].copy_from_slice(&(-2i64).to_be_bytes());
                bytes
            },
            encode(&[
                (1, 0, -1, 0, vec![(0, 0, 0)]),
                (2, 0, -1, 0, vec![(0, 0, 1)]),
            ]), // two open at 0
        ];
        for (i, bytes) in bad.iter().enumerate() {
            assert!(
                ProducerStateTable::decode_snapshot(bytes, 5).is_none(),
                "case {i}"
            );
        }
        // A count far beyond the bytes is refused before anything is allocated.
        let mut huge = ok.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(ProducerStateTable::decode_snapshot(&huge, 5).is_none());
        assert!(ProducerStateTable::decode_snapshot(&ok[..ok.len() - 1], 5).is_none());
    }

    #[test]
    fn write_then_take_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(take(&Disk::Real, dir.path()).unwrap().is_none());
        write(&Disk::Real, dir.path(), &marker()).unwrap();
        assert!(!durable::temp_path(&dir.path().join(MARKER_FILE)).exists());
        let bytes = take(&Disk::Real, dir.path()).unwrap().expect("present");
        assert!(CleanShutdown::decode(&bytes).is_ok());
        assert!(!dir.path().join(MARKER_FILE).exists(), "deleted by take");
        assert!(take(&Disk::Real, dir.path()).unwrap().is_none());
    }

    mod with_a_log {
        use super::super::*;
        use crate::storage::config::LogConfig;

        use crate::protocol::batch::validate_records;
        use crate::protocol::encode::{self, ProducerFields};
        use crate::storage::commit::GroupCommit;
        use crate::storage::log::{append, LogRef, PartitionLog};
        use crate::storage::segment::{segment_file_name, Segment};
        use bytes::Bytes;
        use kafka_protocol::records::Compression;

        use std::path::PathBuf;
        use std::rc::Rc;

        fn run<F: std::future::Future>(f: F) -> F::Output {
            compio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(f)
        }

        fn open(dir: &Path) -> LogRef {
            let config = LogConfig {
                segment_bytes: 2048,
                index_interval_bytes: 256,
                ..LogConfig::default()
            };
            PartitionLog::open_private("t", 0, dir.to_path_buf(), config).expect("log opens")
        }

        /// 60 batches of 2 records (2 KiB segments roll often), the last 10
        /// from an idempotent producer; then a clean close.
        fn fill_and_close(dir: &Path) {
            run(async {
                let commit = Rc::new(GroupCommit::default());
                let log = open(dir);
                for i in 0..60i64 {
                    let producer = (i >= 50).then_some(ProducerFields {
                        producer_id: 9,
                        producer_epoch: 0,
                        base_sequence: (i as i32 - 50) * 2,
                    });
                    let records: Vec<_> = (0..2)
                        .map(|r| {
                            encode::record(
                                r,
                                1_000 + i * 10 + r,
                                Some(Bytes::from(format!("k{i}"))),
                                Some(Bytes::from(vec![b'v'; 100])),
                                producer,
                            )
                        })
                        .collect();
                    let batch = encode::encode_batch(&records, Compression::None);
                    let validated = validate_records(&batch, usize::MAX).unwrap();
                    append(&log, &commit, batch, &validated, true)
                        .await
                        .unwrap();
                }
                log.borrow_mut().close().unwrap();
                let late = encode::encode_batch(
                    &[encode::record(
                        0,
                        0,
                        None,
                        Some(Bytes::from_static(b"x")),
                        None,
                    )],
                    Compression::None,
                );
                let validated = validate_records(&late, usize::MAX).unwrap();
                assert!(
                    append(&log, &commit, late, &validated, true).await.is_err(),
                    "a closed log takes no appends"
                );
            });
        }

        fn segment_path(dir: &Path, base: i64, extension: &str) -> PathBuf {
            dir.join(segment_file_name(base, extension))
        }

        /// (base, next offset, bytes, index, time index, max timestamp, its offset, created)
        type SegmentView = (i64, i64, u64, Vec<u8>, Vec<u8>, i64, i64, i64);

        /// What a log knows of its segments, and its producer state, for comparing opens.
        fn state(log: &LogRef) -> (Vec<SegmentView>, Vec<u8>) {
            let log = log.borrow();
            let segments = log
                .segments
                .iter()
                .map(|s| {
                    (
                        s.base_offset,
                        s.next_offset,
                        s.reserved_bytes,
                        s.index.encode(),
                        s.time_index.encode(),
                        s.max_timestamp_ms,
                        s.offset_of_max_timestamp,
                        s.created_ms,
                    )
                })
                .collect();
            let mut producers = Vec::new();
            log.producers.encode_snapshot(&mut producers);
            (segments, producers)
        }

        #[test]
        fn a_clean_open_equals_a_scanned_one() {
            let dir = tempfile::tempdir().unwrap();
            fill_and_close(dir.path());
            let marker =
                CleanShutdown::decode(&fs::read(dir.path().join(MARKER_FILE)).unwrap()).unwrap();
            assert!(marker.segments.len() > 3, "several segments");
            assert_eq!(marker.producers.producer_count(), 1);
            // Clean: from the marker. Then scanned: the same files without one.
            let clean = open(dir.path());
            assert!(
                !dir.path().join(MARKER_FILE).exists(),
                "the marker is gone once opened"
            );
            let clean_state = state(&clean);
            assert_eq!(clean.borrow().log_end_offset(), 120);
            drop(clean);
            let scanned = open(dir.path());
            assert_eq!(
                state(&scanned),
                clean_state,
                "a clean open leaves the log as a scan does"
            );
            let scanned = scanned.borrow();
            assert_eq!(scanned.segments.len(), marker.segments.len());
            for (summary, segment) in marker.segments.iter().zip(&scanned.segments) {
                assert_eq!(segment.base_offset, summary.base_offset);
                assert_eq!(segment.next_offset, summary.next_offset);
                assert_eq!(segment.max_timestamp_ms, summary.max_timestamp_ms);
                assert_eq!(
                    segment.offset_of_max_timestamp,
                    summary.offset_of_max_timestamp
                );
                assert_eq!(crc32c::crc32c(&segment.index.encode()), summary.index_crc);
                assert_eq!(
                    crc32c::crc32c(&segment.time_index.encode()),
                    summary.time_index_crc
                );
            }
            let mut snapshot = Vec::new();
            scanned.producers.encode_snapshot(&mut snapshot);
            let mut from_marker = Vec::new();
            marker.producers.encode_snapshot(&mut from_marker);
            assert_eq!(
                snapshot, from_marker,
                "the snapshot is the state the scan rebuilds"
            );
        }

        /// Opens segment `base` (closed unless `active`) against `summary` after
        /// `index` replaced its offset index, with the summary re-signed to
        /// match: only the structural checks stand between the file and trust.
        fn open_with_index(
            dir: &Path,
            summary: &SegmentSummary,
            index: &[u8],
            active: bool,
        ) -> Result<(), String> {
            fs::write(segment_path(dir, summary.base_offset, "index"), index).unwrap();
            let forged = SegmentSummary {
                index_bytes: index.len() as u32,
                index_crc: crc32c::crc32c(index),
                ..*summary
            };
            Segment::open_clean(
                &segment_path(dir, summary.base_offset, "log"),
                &forged,
                active,
                0,
            )
            .map(|_| ())
        }

        fn entry(relative_offset: u32, position: u32) -> Vec<u8> {
            [relative_offset.to_be_bytes(), position.to_be_bytes()].concat()
        }

        #[test]
        fn hostile_index_files_are_never_trusted() {
            let dir = tempfile::tempdir().unwrap();
            fill_and_close(dir.path());
            let marker =
                CleanShutdown::decode(&fs::read(dir.path().join(MARKER_FILE)).unwrap()).unwrap();
            let closed = marker.segments[1];
            let good = fs::read(segment_path(dir.path(), closed.base_offset, "index")).unwrap();
            assert!(good.len() >= 16, "at least two entries");
            assert_eq!(open_with_index(dir.path(), &closed, &good, false), Ok(()));
            let span = (closed.next_offset - closed.base_offset) as u32;
            let second = u32::from_be_bytes(good[12..16].try_into().unwrap());
            let cases: Vec<(&str, Vec<u8>)> = vec![
                ("partial entry", good[..good.len() - 3].to_vec()),
                (
                    "position past the file",
                    [entry(0, 0), entry(1, closed.log_bytes as u32 + 10)].concat(),
                ),
                (
                    "positions decrease",
                    [entry(0, 0), entry(1, second), entry(2, second - 1)].concat(),
                ),
                (
                    "offsets decrease",
                    [entry(0, 0), entry(2, second), entry(1, second + 1)].concat(),
                ),
                (
                    "offset past the segment",
                    [entry(0, 0), entry(span, second)].concat(),
                ),
                ("first batch not indexed", entry(0, second)),
                ("empty for a non-empty log", Vec::new()),
                (
                    "entry inside a batch",
                    [entry(0, 0), entry(1, second + 1)].concat(),
                ),
            ];
            for (what, index) in cases {
                let result = open_with_index(dir.path(), &closed, &index, false);
                assert!(result.is_err(), "{what}: trusted");
            }
            // The time index: same rules, and its last entry is the max timestamp.
            fs::write(segment_path(dir.path(), closed.base_offset, "index"), &good).unwrap();
            let time_path = segment_path(dir.path(), closed.base_offset, "timeindex");
            let time_good = fs::read(&time_path).unwrap();
            let forge_time = |bytes: &[u8]| {
                fs::write(&time_path, bytes).unwrap();
                let forged = SegmentSummary {
                    time_index_bytes: bytes.len() as u32,
                    time_index_crc: crc32c::crc32c(bytes),
                    ..closed
                };
                Segment::open_clean(
                    &segment_path(dir.path(), closed.base_offset, "log"),
                    &forged,
                    false,
                    0,
                )
                .map(|_| ())
            };
            assert_eq!(forge_time(&time_good), Ok(()));
            assert!(time_good.len() > 12, "every batch raised the max timestamp");
            assert!(
                forge_time(&time_good[..12]).is_err(),
                "entries short of the max"
            );
            let mut later = time_good.clone();
            let last = later.len() - 12;
            later[last..last + 8].copy_from_slice(&(closed.max_timestamp_ms + 1).to_be_bytes());
            assert!(forge_time(&later).is_err(), "max timestamp disagrees");
            assert!(
                forge_time(&[&time_good[..], &time_good[time_good.len() - 12..]].concat()).is_err(),
                "repeated entry"
            );
        }

        #[test]
        fn a_marker_that_lies_about_the_log_is_not_trusted() {
            let dir = tempfile::tempdir().unwrap();
            fill_and_close(dir.path());
            let bytes = fs::read(dir.path().join(MARKER_FILE)).unwrap();
            let marker = CleanShutdown::decode(&bytes).unwrap();
            let active = *marker.segments.last().unwrap();
            let path = segment_path(dir.path(), active.base_offset, "log");
            let open = |summary: &SegmentSummary, is_active| {
                Segment::open_clean(&path, summary, is_active, 0).map(|_| ())
            };
            assert_eq!(open(&active, true), Ok(()));
            let lies = [
                (
                    "next offset too high",
                    SegmentSummary {
                        next_offset: active.next_offset + 1,
                        ..active
                    },
                ),
                (
                    "next offset too low",
                    SegmentSummary {
                        next_offset: active.next_offset - 1,
                        ..active
                    },
                ),
                (
                    "length",
                    SegmentSummary {
                        log_bytes: active.log_bytes - 1,
                        ..active
                    },
                ),
                (
                    "mtime",
                    SegmentSummary {
                        log_mtime_ns: active.log_mtime_ns + 1,
                        ..active
                    },
                ),
                (
                    "max timestamp below the tail's",
                    SegmentSummary {
                        max_timestamp_ms: 0,
                        ..active
                    },
                ),
            ];
            for (what, summary) in lies {
                assert!(open(&summary, true).is_err(), "{what}: trusted");
            }
            // A flipped byte in the tail (the last indexed batch on) is caught by its CRC.
            let mut log_bytes = fs::read(&path).unwrap();
            let at = log_bytes.len() - 5;
            log_bytes[at] ^= 0x20;
            let modified = fs::metadata(&path).unwrap().modified().unwrap();
            fs::write(&path, &log_bytes).unwrap();
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
            assert!(open(&active, true)
                .unwrap_err()
                .contains("invalid batch in the tail"));
            // And the whole log then falls back to the scan, which takes the
            // damaged last batch for a torn write and cuts it off.
            let log = open_log_after(dir.path(), &bytes);
            assert_eq!(log.borrow().log_end_offset(), 118);
        }

        fn open_log_after(dir: &Path, marker: &[u8]) -> LogRef {
            fs::write(dir.join(MARKER_FILE), marker).unwrap();
            open(dir)
        }

        #[test]
        fn the_marker_of_other_files_is_not_trusted() {
            let dir = tempfile::tempdir().unwrap();
            fill_and_close(dir.path());
            let bytes = fs::read(dir.path().join(MARKER_FILE)).unwrap();
            let marker = CleanShutdown::decode(&bytes).unwrap();
            // A segment file too many: the marker does not describe the directory.
            let extra = segment_path(
                dir.path(),
                marker.segments.last().unwrap().next_offset + 100,
                "log",
            );
            fs::write(&extra, b"").unwrap();
            let dir_path = dir.path().to_path_buf();
            let reason = open_clean_reason(&dir_path, &bytes);
            assert!(reason.contains("segment files differ"), "{reason}");
            fs::remove_file(&extra).unwrap();
            assert_eq!(open_clean_reason(&dir_path, &bytes), "trusted");
        }

        /// Why `PartitionLog::open` would not trust `marker` for `dir` ("trusted" if it would).
        fn open_clean_reason(dir: &Path, marker: &[u8]) -> String {
            let marker = CleanShutdown::decode(marker).unwrap();
            let mut bases: Vec<i64> = fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| {
                    crate::storage::segment::parse_segment_file_name(
                        &e.unwrap().file_name().to_string_lossy(),
                    )
                })
                .collect();
            bases.sort_unstable();
            if !marker
                .segments
                .iter()
                .map(|s| s.base_offset)
                .eq(bases.iter().copied())
            {
                return "the segment files differ".to_string();
            }
            for (i, s) in marker.segments.iter().enumerate() {
                let active = i + 1 == marker.segments.len();
                if let Err(e) =
                    Segment::open_clean(&segment_path(dir, s.base_offset, "log"), s, active, 0)
                {
                    return e;
                }
            }
            "trusted".to_string()
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = CleanShutdown::decode(&bytes);
            // Also past the CRC check.
            if bytes.len() >= HEADER_BYTES + CRC_BYTES {
                let mut signed = bytes.clone();
                signed[..4].copy_from_slice(&MAGIC);
                signed[4..6].copy_from_slice(&VERSION.to_be_bytes());
                let _ = CleanShutdown::decode(&resign(signed));
            }
            let _ = ProducerStateTable::decode_snapshot(&bytes, i64::MAX);
        }
    }
}
