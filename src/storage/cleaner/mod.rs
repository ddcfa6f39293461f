//! Log compaction (`cleanup.policy=compact`): a background cleaner per shard
//! keeps, in the closed segments of a log, only the latest record of each key.
//!
//! A pass over one log:
//! 1. *Plan* (on the shard, one short borrow): the cleanable segments are the
//!    closed ones from the start of the log whose writes are complete and whose
//!    newest record is older than `min.compaction.lag.ms`; the part after the
//!    cleaner checkpoint (the first dirty offset) is the dirty section. A pass
//!    runs when dirty bytes / cleanable bytes >= `min.cleanable.dirty.ratio`, or
//!    when tombstones kept by an earlier pass have become removable.
//! 2. *Clean* (on a blocking thread, `spawn_blocking`): map each key of the dirty
//!    section to its latest offset (a 128-bit keyed hash of the key, at most
//!    `max_keys` of them: past that only a prefix of the dirty section is
//!    cleaned), then rewrite every cleanable segment up to the end of the mapped
//!    range into `<base>.log.cleaned`, keeping the records that are the latest
//!    of their key. Tombstones (null values) already in the clean section go once
//!    their segment is older than `delete.retention.ms` (by its mtime, which a
//!    rewrite preserves, as Kafka does). Records without a key go, as in Kafka.
//!    Transactions (as Kafka's cleaner treats them): the cleanable range ends
//!    at the last stable offset, so every transactional batch in it is
//!    decided. A batch of an aborted transaction (from the aborted-transaction
//!    indexes) is removed and never mapped, so it never displaces a committed
//!    record; a committed transaction's records are compacted like any other.
//!    A marker stays while any batch of its transaction was still in the log
//!    at this pass (emptied or not), and then goes like a tombstone: once it
//!    is in the clean section and its segment was last written longer than
//!    `delete.retention.ms` ago (Kafka's horizon before KIP-534, which counts
//!    per batch from when the marker became removable). A marker after its
//!    producer's last data batch stays too (it holds the producer's latest
//!    epoch for a rebuild from the log), as does the last batch of the range.
//!    A rewritten segment's aborted-transaction index keeps the entries of the
//!    markers it kept.
//!    A batch is rewritten with its original header: base offset, last offset
//!    delta, producer id/epoch, base sequence, base timestamp, attributes and
//!    compression codec (compressed batches are decompressed and compressed
//!    again); retained records are copied byte for byte, so offsets, timestamps,
//!    keys and headers are preserved and only the record count, length, max
//!    timestamp (CreateTime) and CRC change. An emptied batch disappears (an
//!    offset gap), except the last batch of an idempotent producer and the last
//!    batch of the cleanable range, which stay as empty batches (header only),
//!    as Kafka keeps them: the producer state is rebuilt from the log, and a
//!    consumer positioned at the end of the range is not left in a gap. A
//!    segment that ends up empty is removed, except the first segment of the log
//!    (it anchors the log start offset).
//! 3. *Swap* (on the shard, one short borrow): each `.log.cleaned` is renamed
//!    over its `.log` and replaces the segment in memory, with the indexes built
//!    while writing it. A read that holds the old file keeps reading it (Linux
//!    unlink semantics). Appends only touch the active segment, which is never
//!    cleaned, so produce and fetch never wait for the cleaner. Then the
//!    checkpoint is written (`cleaner-checkpoint`: temp file, fsync, rename,
//!    directory fsync, on a blocking thread).
//!
//! A crash at any point leaves either the old or the new version of each
//! segment (both valid) and possibly stray `.cleaned` files, which the next pass
//! removes. Tombstones are only removed once they are in the clean section,
//! i.e. after the pass that removed the older records of their key has been
//! made durable (its checkpoint is written after the directory fsync).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::{Bytes, BytesMut};

use crate::io::disk::Disk;
use crate::protocol::batch::{compute_crc, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD};
use crate::protocol::compression::{compress, decompressed_bytes_max, DecompressError};
use crate::protocol::records::{records_area, RecordIter, RecordView};
use crate::storage::log::{CleanerState, LogRef, PartitionLog};
use crate::storage::segment::{segment_file_name, Segment, SegmentState, INDEX_EXTENSIONS};
use crate::storage::txn_index::TxnIndex;

/// Name of the file holding the cleaner's progress in a partition directory.
pub const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
/// Suffix of the files a pass writes before swapping them in.
const CLEANED_SUFFIX: &str = ".cleaned";
/// The files of a segment a pass may write (`<base>.<extension>.cleaned`).
const CLEANED_EXTENSIONS: [&str; 4] = ["log", "index", "timeindex", "txnindex"];
/// Keys mapped per pass by default (about 24 MiB of map).
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;
/// Read size of the segment scans.
const READ_CHUNK_BYTES: usize = 1 << 20;

// Byte positions in the v2 batch header (see `protocol::batch`).
const AT_BATCH_LENGTH: usize = 8;
const AT_CRC: usize = 17;
const AT_ATTRIBUTES: usize = 21;
const AT_MAX_TIMESTAMP: usize = 35;
const AT_RECORD_COUNT: usize = 57;
const COMPRESSION_MASK: i16 = 0x07;

/// Knobs of a pass.
#[derive(Debug, Clone, Copy)]
pub struct CleanerLimits {
    /// Most keys mapped in one pass; the rest of the dirty section waits.
    pub max_keys: usize,
}

impl Default for CleanerLimits {
    fn default() -> Self {
        CleanerLimits {
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments read and filtered.
    pub segments_scanned: usize,
    /// Segments rewritten (swapped in).
    pub segments_rewritten: usize,
    /// Segments removed because nothing in them survived.
    pub segments_removed: usize,
    pub records_removed: u64,
    /// Transaction markers removed (their transactions' data gone first).
    pub markers_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The new checkpoint: offsets below it are now clean.
    pub first_dirty: i64,
}

/// One cleaning pass over `log` if it is due (see the module doc); None if not.
/// `now_ms` decides the compaction lag and the tombstone horizon.
pub async fn clean(
    log: &LogRef,
    now_ms: i64,
    limits: CleanerLimits,
) -> Result<Option<CleanStats>, String> {
    let Some(plan) = plan(&mut log.borrow_mut(), now_ms, limits)? else {
        return Ok(None);
    };
    let (dir, disk) = (plan.dir.clone(), plan.disk.clone());
    let output = compio::runtime::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(plan)))
            .unwrap_or_else(|_| Err("the cleaner panicked".to_string()))
    })
    .await
    .map_err(|e| format!("cleaner thread: {e:?}"))?;
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            remove_stray_files(&disk, &dir);
            return Err(error);
        }
    };
    let (stats, state) = swap(&mut log.borrow_mut(), output);
    let Some(state) = state else {
        return Ok(Some(stats));
    };
    let written = compio::runtime::spawn_blocking(move || write_checkpoint(&disk, &dir, &state))
        .await
        .map_err(|e| format!("cleaner thread: {e:?}"))
        .and_then(|r| r.map_err(|e| format!("writing the cleaner checkpoint: {e}")));
    if let Err(error) = written {
        // Go on from the last durable checkpoint: tombstones are only removed
        // once the pass that made them the latest of their key is durable.
        log.borrow_mut().cleaner.loaded = false;
        return Err(error);
    }
    Ok(Some(stats))
}

/// A closed segment to clean, with its own descriptor for the blocking thread.
struct PlannedSegment {
    base_offset: i64,
    next_offset: i64,
    size: u64,
    file: fs::File,
    /// The first segment of the log: kept even if emptied.
    is_first: bool,
    /// Its aborted-transaction index (entries of the ABORT markers in it).
    txn_index: TxnIndex,
}

/// The aborted transactions of a log, by producer: (first offset, marker
/// offset) in marker order. A producer's transactions on a partition follow
/// one another, so these ranges do not overlap.
#[derive(Default)]
struct AbortedRanges(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedRanges {
    fn of(segments: &[Segment]) -> AbortedRanges {
        let mut ranges = AbortedRanges::default();
        for entry in segments.iter().flat_map(|s| s.txn_index.entries()) {
            ranges
                .0
                .entry(entry.producer_id)
                .or_default()
                .push((entry.first_offset, entry.last_offset));
        }
        ranges
    }

    /// Whether the batch of `producer_id` at `offset` belongs to an aborted
    /// transaction: the first of the producer's aborted transactions whose
    /// marker comes after it began at or before it.
    fn covers(&self, producer_id: i64, offset: i64) -> bool {
        self.0.get(&producer_id).is_some_and(|ranges| {
            let i = ranges.partition_point(|&(_, marker)| marker < offset);
            ranges.get(i).is_some_and(|&(first, _)| first <= offset)
        })
    }
}

/// Everything the blocking part needs (`Send`).
struct Plan {
    dir: PathBuf,
    /// Where the pass's file operations go.
    disk: Disk,
    segments: Vec<PlannedSegment>,
    first_dirty: i64,
    first_uncleanable: i64,
    delete_retention_ms: i64,
    /// producer id -> base offset of its last batch.
    producer_last_batches: HashMap<i64, i64>,
    /// Every aborted transaction of the log (markers past the range too).
    aborted: AbortedRanges,
    index_interval_bytes: u32,
    now_ms: i64,
    max_keys: usize,
    /// Most bytes a batch may decompress to; a batch beyond it (or one that
    /// does not decompress) is kept as it is.
    decompressed_bytes_max: usize,
}

fn plan(
    log: &mut PartitionLog,
    now_ms: i64,
    limits: CleanerLimits,
) -> Result<Option<Plan>, String> {
    if log.failure.is_some() || log.segments.len() < 2 {
        return Ok(None);
    }
    let config = log.config().clone();
    if !config.cleanup_policy.compact {
        return Ok(None);
    }
    // Below the last stable offset every transaction is decided (and every
    // write complete, it being at most the high watermark).
    let last_stable = log.last_stable_offset();
    let closed = &log.segments[..log.segments.len() - 1];
    let cleanable = closed
        .iter()
        .take_while(|s| {
            let complete = s.next_offset <= last_stable && s.readable_bytes == s.reserved_bytes;
            let newest = if s.max_timestamp_ms >= 0 {
                s.max_timestamp_ms
            } else {
                s.created_ms
            };
            let old_enough = config.min_compaction_lag_ms <= 0
                || s.is_empty()
                || now_ms.saturating_sub(newest) >= config.min_compaction_lag_ms;
            complete && old_enough
        })
        .count();
    if cleanable == 0 {
        return Ok(None);
    }
    if !log.cleaner.loaded {
        log.cleaner = read_checkpoint(&log.dir);
        log.cleaner.loaded = true;
    }
    let first_uncleanable = log.segments[cleanable].base_offset;
    let first_dirty = log
        .cleaner
        .first_dirty
        .clamp(log.segments[0].base_offset, first_uncleanable);
    let segments = &log.segments[..cleanable];
    let total: u64 = segments.iter().map(|s| s.reserved_bytes).sum();
    let dirty: u64 = segments
        .iter()
        .filter(|s| s.next_offset > first_dirty)
        .map(|s| s.reserved_bytes)
        .sum();
    let dirty_enough =
        dirty > 0 && total > 0 && dirty as f64 / total as f64 >= config.min_cleanable_dirty_ratio;
    let tombstones_due = log.cleaner.tombstones_due_ms.is_some_and(|t| now_ms >= t);
    // KIP-354: a dirty record waits at most max.compaction.lag.ms, whatever
    // the dirty ratio (from its segment's first append).
    let lag_due = segments
        .iter()
        .find(|s| s.next_offset > first_dirty)
        .is_some_and(|s| now_ms.saturating_sub(s.created_ms) >= config.max_compaction_lag_ms);
    if !dirty_enough && !tombstones_due && !lag_due {
        return Ok(None);
    }
    let mut planned = Vec::with_capacity(cleanable);
    for (i, s) in segments.iter().enumerate() {
        let file = fs::File::open(&s.log_path)
            .map_err(|e| format!("opening {}: {e}", s.log_path.display()))?;
        planned.push(PlannedSegment {
            base_offset: s.base_offset,
            next_offset: s.next_offset,
            size: s.reserved_bytes,
            file,
            is_first: i == 0,
            txn_index: s.txn_index.clone(),
        });
    }
    Ok(Some(Plan {
        dir: log.dir.clone(),
        disk: log.disk.clone(),
        segments: planned,
        first_dirty,
        first_uncleanable,
        delete_retention_ms: config.delete_retention_ms,
        producer_last_batches: log.producers.last_batch_offsets(),
        aborted: AbortedRanges::of(&log.segments),
        index_interval_bytes: config.index_interval_bytes,
        now_ms,
        max_keys: limits.max_keys,
        decompressed_bytes_max: decompressed_bytes_max(config.max_message_bytes),
    }))
}

/// How one segment came out of a pass.
enum Rewrite {
    /// Nothing to remove: the file stays.
    Unchanged,
    /// Nothing survived: the segment goes.
    Remove,
    /// `<base>.log.cleaned` holds the new contents (and `.txnindex.cleaned`
    /// the aborted-transaction index, if it has entries).
    Replace {
        state: SegmentState,
        size: u64,
        txn_index: TxnIndex,
    },
}

struct SegmentOutcome {
    base_offset: i64,
    original_size: u64,
    rewrite: Rewrite,
    /// Data records and markers the rewrite removes (counted once installed).
    records_removed: u64,
    markers_removed: u64,
}

struct Output {
    segments: Vec<SegmentOutcome>,
    /// The end of the mapped range: the new checkpoint.
    first_dirty: i64,
    tombstones_due_ms: Option<i64>,
}

/// A key's identity in the offset map: a 128-bit keyed hash, so that the map's
/// size does not depend on the keys' (collisions are negligible and cannot be
/// forced from outside, the keys being random per pass).
type KeyId = (u64, u64);

struct KeyHashing(RandomState, RandomState);

impl KeyHashing {
    fn new() -> KeyHashing {
        KeyHashing(RandomState::new(), RandomState::new())
    }
    fn id(&self, key: &[u8]) -> KeyId {
        (self.0.hash_one(key), self.1.hash_one(key))
    }
}

/// The map's own hasher: its keys are hashes already.
#[derive(Default)]
struct KeyIdHasher(u64);

impl Hasher for KeyIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

type OffsetMap = HashMap<KeyId, i64, BuildHasherDefault<KeyIdHasher>>;

/// The blocking part of a pass: map the dirty section, write the cleaned segments.
fn run(plan: Plan) -> Result<Output, String> {
    remove_stray_files(&plan.disk, &plan.dir);
    // What the pass decides from must be durable before what it writes is:
    // a record written but not yet synced (the last stable offset counts
    // completed writes) must not displace one that is. Closed segments are
    // nearly always synced already, so this is cheap. (An ABORT marker past
    // the range may still be in flight: its transaction's abort is durable at
    // the coordinator, which writes the marker again after a crash.)
    for segment in &plan.segments {
        plan.disk
            .sync_file(&segment.file)
            .map_err(|e| format!("syncing segment {}: {e}", segment.base_offset))?;
    }
    let hashing = KeyHashing::new();
    let mut map = OffsetMap::default();
    let end = build_map(&plan, &hashing, &mut map)?;
    let mut segments = Vec::new();
    let mut tombstones_due_ms: Option<i64> = None;
    // Producers with a transactional batch seen since their last marker.
    let mut in_transaction = HashMap::new();
    for segment in plan.segments.iter().filter(|s| s.base_offset < end) {
        let context = FilterContext {
            plan: &plan,
            hashing: &hashing,
            map: &map,
            end,
        };
        let cleaned = clean_segment(&context, segment, &mut in_transaction)?;
        if let Some(due) = cleaned.due {
            tombstones_due_ms = Some(tombstones_due_ms.map_or(due, |t| t.min(due)));
        }
        segments.push(SegmentOutcome {
            base_offset: segment.base_offset,
            original_size: segment.size,
            rewrite: cleaned.rewrite,
            records_removed: cleaned.records_removed,
            markers_removed: cleaned.markers_removed,
        });
    }
    Ok(Output {
        segments,
        first_dirty: end,
        tombstones_due_ms,
    })
}

/// Maps each key of the dirty section to its latest offset; returns the end of
/// the mapped range (the first uncleanable offset, or earlier if the map filled up).
fn build_map(plan: &Plan, hashing: &KeyHashing, map: &mut OffsetMap) -> Result<i64, String> {
    let mut mapped_any = false;
    let dirty = plan
        .segments
        .iter()
        .filter(|s| s.next_offset > plan.first_dirty);
    for segment in dirty {
        let mut reader = BatchReader::new(&segment.file, segment.size);
        while let Some((_, batch)) = reader.next()? {
            let header = BatchHeader::parse(&batch).map_err(|e| e.to_string())?;
            // Markers hold no keys; an aborted record must not displace a
            // committed one.
            if header.last_offset() < plan.first_dirty
                || header.is_control()
                || (header.is_transactional()
                    && plan.aborted.covers(header.producer_id, header.base_offset))
            {
                continue;
            }
            if mapped_any && map.len() >= plan.max_keys {
                return Ok(header.base_offset);
            }
            let area = match records_area(&header, &batch, plan.decompressed_bytes_max) {
                Ok(area) => area,
                // Not mapped: its records neither displace nor are displaced by
                // others (filter_batch keeps the batch as it is).
                Err(error) => {
                    warn_kept_as_is(&plan.dir, &header, &error);
                    continue;
                }
            };
            for record in RecordIter::new(&area, header.record_count) {
                let record = record?;
                let offset = header.base_offset + i64::from(record.offset_delta);
                if let (Some(key), true) = (record.key, offset >= plan.first_dirty) {
                    map.insert(hashing.id(key), offset);
                }
            }
            mapped_any = true;
        }
    }
    Ok(plan.first_uncleanable)
}

struct FilterContext<'a> {
    plan: &'a Plan,
    hashing: &'a KeyHashing,
    map: &'a OffsetMap,
    /// Records at or after this offset were not mapped and are kept as they are.
    end: i64,
}

/// How one segment came out of [`clean_segment`].
struct CleanedSegment {
    rewrite: Rewrite,
    records_removed: u64,
    markers_removed: u64,
    /// When a tombstone or marker it kept may go.
    due: Option<i64>,
}

/// Filters one segment into `<base>.log.cleaned` (created at the first change).
/// `in_transaction` carries, from segment to segment, the producers with a
/// transactional batch seen since their last marker, and whether one of
/// those batches stays.
fn clean_segment(
    context: &FilterContext,
    segment: &PlannedSegment,
    in_transaction: &mut HashMap<i64, bool>,
) -> Result<CleanedSegment, String> {
    let plan = context.plan;
    let modified = segment
        .file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| e.to_string())?;
    let modified_ms = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let tombstones_removable = plan.now_ms.saturating_sub(modified_ms) > plan.delete_retention_ms;
    let tombstone_due = modified_ms
        .saturating_add(plan.delete_retention_ms)
        .saturating_add(1);
    let mut due: Option<i64> = None;
    let mut removed = 0u64;
    let mut removed_markers: Vec<i64> = Vec::new();
    let mut out: Option<BufWriter<fs::File>> = None;
    let mut state = SegmentState::new(segment.base_offset);
    let mut out_position = 0u64;
    let mut reader = BatchReader::new(&segment.file, segment.size);
    while let Some((position, batch)) = reader.next()? {
        let header = BatchHeader::parse(&batch).map_err(|e| e.to_string())?;
        let last_of_range = header.last_offset() + 1 == plan.first_uncleanable;
        let filtered = if header.is_control() {
            // Its transaction's batches seen in this pass, removed or not:
            // the marker waits for a pass that finds none (one is due when
            // this pass removed them all).
            let seen = in_transaction.remove(&header.producer_id);
            if seen == Some(false) {
                due = Some(due.map_or(tombstone_due, |d| d.min(tombstone_due)));
            }
            let data_left = seen.is_some();
            let after_last_data = plan
                .producer_last_batches
                .get(&header.producer_id)
                .is_some_and(|&last| last < header.base_offset);
            if header.base_offset >= context.end || data_left || after_last_data || last_of_range {
                Filtered::Unchanged
            } else if header.base_offset < plan.first_dirty && tombstones_removable {
                removed_markers.push(header.base_offset);
                // Counted as a marker, not as a record.
                Filtered::Dropped { removed: 0 }
            } else {
                due = Some(tombstone_due);
                Filtered::Unchanged
            }
        } else if header.base_offset >= context.end {
            if header.is_transactional() {
                in_transaction.insert(header.producer_id, true);
            }
            Filtered::Unchanged
        } else {
            let aborted = header.is_transactional()
                && plan.aborted.covers(header.producer_id, header.base_offset);
            let retain_empty = (header.has_producer_id()
                && plan.producer_last_batches.get(&header.producer_id)
                    == Some(&header.base_offset))
                || last_of_range;
            let filtered = filter_batch(
                &header,
                &batch,
                plan.decompressed_bytes_max,
                retain_empty,
                |offset, key, is_tombstone| {
                    let Some(key) = key else {
                        return false;
                    };
                    if aborted
                        || context
                            .map
                            .get(&context.hashing.id(key))
                            .is_some_and(|&latest| latest > offset)
                    {
                        return false;
                    }
                    if is_tombstone {
                        if offset < plan.first_dirty && tombstones_removable {
                            return false;
                        }
                        due = Some(tombstone_due);
                    }
                    true
                },
            )?;
            if header.is_transactional() {
                let kept = !matches!(filtered, Filtered::Dropped { .. });
                *in_transaction.entry(header.producer_id).or_default() |= kept;
            }
            filtered
        };
        let (removed_here, written): (u64, &[u8]) = match &filtered {
            Filtered::Unchanged => (0, &batch[..]),
            Filtered::Dropped { removed } => (*removed, &[]),
            Filtered::Rewritten { batch, removed } => (*removed, &batch[..]),
        };
        if !matches!(filtered, Filtered::Unchanged) {
            removed += removed_here;
            if out.is_none() {
                // First change: the output starts as a copy of what came before.
                let file = create_cleaned(plan, segment)?;
                let mut file = BufWriter::with_capacity(READ_CHUNK_BYTES, file);
                copy_range(&segment.file, position, &mut file)?;
                out = Some(file);
            }
        }
        if written.is_empty() {
            continue;
        }
        if let Some(file) = out.as_mut() {
            file.write_all(written).map_err(|e| e.to_string())?;
        }
        let written_header = BatchHeader::parse(written).map_err(|e| e.to_string())?;
        state.note_batch(&written_header, out_position, plan.index_interval_bytes);
        out_position += written.len() as u64;
    }
    let markers_removed = removed_markers.len() as u64;
    let Some(out) = out else {
        return Ok(CleanedSegment {
            rewrite: Rewrite::Unchanged,
            records_removed: 0,
            markers_removed,
            due,
        });
    };
    let file = out.into_inner().map_err(|e| e.error().to_string())?;
    let path = cleaned_path(&plan.dir, segment.base_offset, "log");
    if out_position == 0 && !segment.is_first {
        drop(file);
        let _ = plan.disk.remove(&path);
        return Ok(CleanedSegment {
            rewrite: Rewrite::Remove,
            records_removed: removed,
            markers_removed,
            due,
        });
    }
    plan.disk.sync_file(&file).map_err(|e| e.to_string())?;
    // Tombstone horizons count from when the segment was written, not cleaned.
    file.set_modified(modified).map_err(|e| e.to_string())?;
    let mut txn_index = segment.txn_index.clone();
    txn_index.retain_markers(|marker| !removed_markers.contains(&marker));
    let mut indexes = vec![
        ("index", state.index.encode()),
        ("timeindex", state.time_index.encode()),
    ];
    if !txn_index.is_empty() {
        indexes.push(("txnindex", txn_index.encode()));
    }
    for (extension, bytes) in indexes {
        plan.disk
            .write(
                &cleaned_path(&plan.dir, segment.base_offset, extension),
                &bytes,
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(CleanedSegment {
        rewrite: Rewrite::Replace {
            state,
            size: out_position,
            txn_index,
        },
        records_removed: removed,
        markers_removed,
        due,
    })
}

fn create_cleaned(plan: &Plan, segment: &PlannedSegment) -> Result<fs::File, String> {
    let path = cleaned_path(&plan.dir, segment.base_offset, "log");
    plan.disk
        .create(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

fn cleaned_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!(
        "{}{CLEANED_SUFFIX}",
        segment_file_name(base_offset, extension)
    ))
}

/// Removes `.cleaned` files left by an interrupted pass.
fn remove_stray_files(disk: &Disk, dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(CLEANED_SUFFIX)
        {
            let _ = disk.remove(&entry.path());
        }
    }
}

/// Copies bytes `[0, len)` of `file` to `out`.
fn copy_range(file: &fs::File, len: u64, out: &mut impl Write) -> Result<(), String> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES.min(len as usize)];
    let mut position = 0u64;
    while position < len {
        let want = ((len - position) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..want], position)
            .map_err(|e| e.to_string())?;
        out.write_all(&buf[..want]).map_err(|e| e.to_string())?;
        position += want as u64;
    }
    Ok(())
}

/// Installs the outcome of a pass (on the shard). Returns the stats, and the
/// cleaner state to persist (None if the log went away meanwhile).
fn swap(log: &mut PartitionLog, output: Output) -> (CleanStats, Option<CleanerState>) {
    let mut stats = CleanStats {
        segments_scanned: output.segments.len(),
        first_dirty: output.first_dirty,
        ..CleanStats::default()
    };
    let (dir, disk) = (log.dir.clone(), log.disk.clone());
    let discard = |outcome: &SegmentOutcome| {
        if let Rewrite::Replace { .. } = outcome.rewrite {
            for extension in CLEANED_EXTENSIONS {
                let _ = disk.remove(&cleaned_path(&dir, outcome.base_offset, extension));
            }
        }
    };
    if log.failure.is_some() {
        output.segments.iter().for_each(discard);
        return (stats, None);
    }
    for outcome in output.segments {
        let index = log
            .segments
            .iter()
            .position(|s| s.base_offset == outcome.base_offset);
        // Retention or DeleteRecords may have removed the segment meanwhile; the
        // active segment is never replaced.
        let Some(index) = index.filter(|&i| {
            i + 1 < log.segments.len() && log.segments[i].reserved_bytes == outcome.original_size
        }) else {
            discard(&outcome);
            continue;
        };
        stats.bytes_before += outcome.original_size;
        match outcome.rewrite {
            Rewrite::Unchanged => stats.bytes_after += outcome.original_size,
            // Retention removed the segments before it meanwhile: the first
            // segment stays (it anchors the log start), uncleaned this time.
            Rewrite::Remove if index == 0 => stats.bytes_after += outcome.original_size,
            Rewrite::Remove => {
                let segment = log.segments.remove(index);
                // Readers holding the file keep it readable until they finish.
                segment.remove_files(&disk);
                stats.segments_removed += 1;
                stats.records_removed += outcome.records_removed;
                stats.markers_removed += outcome.markers_removed;
            }
            Rewrite::Replace {
                state,
                size,
                txn_index,
            } => {
                let installed =
                    install_segment(&disk, &dir, &log.segments[index], state, size, txn_index);
                match installed {
                    Ok(segment) => {
                        log.segments[index] = segment;
                        stats.segments_rewritten += 1;
                        stats.bytes_after += size;
                        stats.records_removed += outcome.records_removed;
                        stats.markers_removed += outcome.markers_removed;
                    }
                    Err(error) => {
                        tracing::warn!(topic = %log.topic, partition = log.partition, %error, "cannot swap in a cleaned segment");
                        for extension in CLEANED_EXTENSIONS {
                            let _ =
                                disk.remove(&cleaned_path(&dir, outcome.base_offset, extension));
                        }
                        stats.bytes_after += outcome.original_size;
                    }
                }
            }
        }
    }
    log.cleaner.first_dirty = output.first_dirty;
    log.cleaner.tombstones_due_ms = output.tombstones_due_ms;
    if stats.segments_rewritten + stats.segments_removed > 0 {
        tracing::info!(
            topic = %log.topic,
            partition = log.partition,
            rewritten = stats.segments_rewritten,
            removed = stats.segments_removed,
            records_removed = stats.records_removed,
            markers_removed = stats.markers_removed,
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            "log compacted"
        );
    }
    (stats, Some(log.cleaner))
}

/// Renames the cleaned files over the segment's and opens the result.
fn install_segment(
    disk: &Disk,
    dir: &Path,
    old: &Segment,
    mut state: SegmentState,
    size: u64,
    txn_index: TxnIndex,
) -> io::Result<Segment> {
    let base = old.base_offset;
    // Old indexes go first, so that they are never paired with the new log.
    for extension in INDEX_EXTENSIONS {
        disk.remove(&dir.join(segment_file_name(base, extension)))?;
    }
    disk.rename(&cleaned_path(dir, base, "log"), &old.log_path)?;
    for extension in INDEX_EXTENSIONS {
        let _ = disk.rename(
            &cleaned_path(dir, base, extension),
            &dir.join(segment_file_name(base, extension)),
        );
    }
    let file = disk.open_rw(&old.log_path)?;
    // An emptied last batch may have gone: the segment still spans its offsets.
    state.next_offset = state.next_offset.max(old.next_offset);
    let mut segment = Segment::from_state(old.log_path.clone(), file, state, size, old.created_ms);
    segment.txn_index = txn_index;
    Ok(segment)
}

fn read_checkpoint(dir: &Path) -> CleanerState {
    let Ok(text) = fs::read_to_string(dir.join(CHECKPOINT_FILE)) else {
        return CleanerState::default();
    };
    let mut fields = text.split_whitespace().map(|f| f.parse::<i64>().ok());
    let first_dirty = fields.next().flatten().unwrap_or(0);
    let tombstones_due_ms = fields.next().flatten().filter(|&t| t >= 0);
    CleanerState {
        loaded: true,
        first_dirty,
        tombstones_due_ms,
    }
}

/// After the log was truncated to `end`: what the checkpoint calls clean
/// must end there, or records appended again above `end` would be taken as
/// already cleaned and never compacted.
pub(in crate::storage) fn truncate_checkpoint(disk: &Disk, dir: &Path, end: i64) -> io::Result<()> {
    let state = read_checkpoint(dir);
    if state.first_dirty <= end {
        return Ok(());
    }
    write_checkpoint(
        disk,
        dir,
        &CleanerState {
            first_dirty: end,
            ..state
        },
    )
}

/// Writes the checkpoint durably: temp file, fsync, rename, directory fsync
/// (which also makes the pass's renames durable).
fn write_checkpoint(disk: &Disk, dir: &Path, state: &CleanerState) -> io::Result<()> {
    let text = format!(
        "{} {}\n",
        state.first_dirty,
        state.tombstones_due_ms.unwrap_or(-1)
    );
    disk.write_durably(&dir.join(CHECKPOINT_FILE), text.as_bytes())
}

/// Reads the batches of a segment file in order, in large chunks.
struct BatchReader<'a> {
    file: &'a fs::File,
    position: u64,
    end: u64,
    chunk: Vec<u8>,
    chunk_start: u64,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a fs::File, end: u64) -> BatchReader<'a> {
        BatchReader {
            file,
            position: 0,
            end,
            chunk: Vec::new(),
            chunk_start: 0,
        }
    }

    /// Makes `[from, from + len)` available in the chunk.
    fn fill(&mut self, from: u64, len: usize) -> Result<(), String> {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if from >= self.chunk_start && from + len as u64 <= chunk_end {
            return Ok(());
        }
        let want = len.max(READ_CHUNK_BYTES).min((self.end - from) as usize);
        self.chunk.resize(want, 0);
        self.file
            .read_exact_at(&mut self.chunk, from)
            .map_err(|e| format!("reading at {from}: {e}"))?;
        self.chunk_start = from;
        Ok(())
    }

    /// The next batch with its position, or None at the end.
    fn next(&mut self) -> Result<Option<(u64, Bytes)>, String> {
        let position = self.position;
        if position + BATCH_HEADER_LEN as u64 > self.end {
            return Ok(None);
        }
        self.fill(position, LOG_OVERHEAD)?;
        let at = (position - self.chunk_start) as usize;
        let length = i32::from_be_bytes(
            self.chunk[at + AT_BATCH_LENGTH..at + AT_BATCH_LENGTH + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let total = i64::from(length) + LOG_OVERHEAD as i64;
        if total < BATCH_HEADER_LEN as i64 || position + total as u64 > self.end {
            return Err(format!("invalid batch length {length} at {position}"));
        }
        let total = total as usize;
        self.fill(position, total)?;
        let at = (position - self.chunk_start) as usize;
        let batch = Bytes::copy_from_slice(&self.chunk[at..at + total]);
        self.position += total as u64;
        Ok(Some((position, batch)))
    }
}

/// A batch the cleaner cannot look into stays as it is: compaction is then
/// incomplete around it, but nothing that is the latest of its key is lost.
fn warn_kept_as_is(dir: &Path, header: &BatchHeader, error: &DecompressError) {
    tracing::warn!(
        dir = %dir.display(),
        base_offset = header.base_offset,
        %error,
        "log cleaner: batch not decompressed, kept as it is"
    );
}

enum Filtered {
    /// Every record stays: the batch is kept byte for byte.
    Unchanged,
    /// No record stays and no empty batch is needed.
    Dropped { removed: u64 },
    /// Some records (or none, as an empty batch) stay, in this new batch.
    Rewritten { batch: Vec<u8>, removed: u64 },
}

/// Applies `keep(offset, key, is_tombstone)` to the records of a batch. A
/// batch that does not decompress within `decompressed_bytes_max` is Unchanged.
fn filter_batch(
    header: &BatchHeader,
    batch: &Bytes,
    decompressed_bytes_max: usize,
    retain_empty: bool,
    mut keep: impl FnMut(i64, Option<&[u8]>, bool) -> bool,
) -> Result<Filtered, String> {
    let area = match records_area(header, batch, decompressed_bytes_max) {
        Ok(area) => area,
        Err(error) => {
            tracing::warn!(base_offset = header.base_offset, %error, "log cleaner: batch not decompressed, kept as it is");
            return Ok(Filtered::Unchanged);
        }
    };
    let mut kept: Vec<RecordView> = Vec::new();
    let mut total = 0u64;
    for record in RecordIter::new(&area, header.record_count) {
        let record = record?;
        total += 1;
        let offset = header.base_offset + i64::from(record.offset_delta);
        if keep(offset, record.key, record.value_is_null) {
            kept.push(record);
        }
    }
    let removed = total - kept.len() as u64;
    if removed == 0 && (total > 0 || retain_empty) {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() && !retain_empty {
        return Ok(Filtered::Dropped { removed });
    }
    let mut out = BytesMut::with_capacity(batch.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    let mut attributes = header.attributes;
    if kept.is_empty() {
        // Kafka's empty batches are uncompressed.
        attributes &= !COMPRESSION_MASK;
    } else {
        let mut records = Vec::with_capacity(area.len());
        for record in &kept {
            records.extend_from_slice(record.raw);
        }
        compress(header.compression(), &records, &mut out)?;
    }
    out[AT_ATTRIBUTES..AT_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[AT_BATCH_LENGTH..AT_BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    out[AT_RECORD_COUNT..AT_RECORD_COUNT + 4].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    if !header.is_log_append_time() && !kept.is_empty() {
        let max_timestamp = kept
            .iter()
            .map(|r| header.base_timestamp.wrapping_add(r.timestamp_delta))
            .max()
            .unwrap_or(header.max_timestamp);
        out[AT_MAX_TIMESTAMP..AT_MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    let crc = compute_crc(&out);
    out[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rewritten {
        batch: out.to_vec(),
        removed,
    })
}

#[cfg(test)]
mod tests;
