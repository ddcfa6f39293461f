//! One segment: a `.log` file of record batches exactly as clients sent them
//! (offsets assigned), named by its base offset, with its sparse indexes.
//!
//! Lives on the partition's owning shard; `Rc`, not `Send`.

use std::fs;
use std::io;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::io::disk::Disk;
use crate::io::fs::into_compio;
use crate::protocol::batch::{
    compute_crc, BatchError, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD,
};
use crate::protocol::control::{parse_marker, EndTxnMarker};
use crate::storage::clean_shutdown::{self, SegmentSummary};
use crate::storage::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::storage::txn_index::TxnIndex;

/// Segment file names carry the base offset zero-padded to 20 digits, as Kafka's do,
/// so that a directory listing sorts them in offset order.
pub fn segment_file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses `00000000000000001234.log` into 1234.
pub fn parse_segment_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The size of the read buffer used by the start-up scan. Large enough to amortise
/// syscalls, small enough not to matter for memory.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// A batch seen by the start-up scan.
#[derive(Debug, Clone, Copy)]
pub struct ScannedBatch {
    pub header: BatchHeader,
    pub position: u64,
    /// What a transaction marker says (None for data batches, and for a
    /// control batch that is not a marker we understand: Kafka ignores those).
    pub marker: Option<EndTxnMarker>,
}

/// What a scan of a segment file found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Bytes from the scan start that form complete, valid batches.
    pub valid_end: u64,
    /// A complete batch that failed validation with more data after it: corruption,
    /// not a torn write. (position, error)
    pub corruption: Option<(u64, BatchError)>,
}

/// Reads batches of `file` from `start` to `file_len`, calling `on_batch` for each
/// valid one. Stops at a torn tail (partial batch) or at the first invalid batch.
pub fn scan_batches(
    file: &fs::File,
    start: u64,
    file_len: u64,
    mut on_batch: impl FnMut(ScannedBatch),
) -> io::Result<ScanOutcome> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start; // file position of buf[0]
    let mut pos = start;
    loop {
        if pos >= file_len {
            return Ok(ScanOutcome {
                valid_end: pos,
                corruption: None,
            });
        }
        // Make sure the header is buffered.
        let header_end = pos + BATCH_HEADER_LEN as u64;
        if header_end > file_len {
            return Ok(ScanOutcome {
                valid_end: pos,
                corruption: None,
            });
        }
        if header_end > buf_start + buf.len() as u64 {
            buf_start = pos;
            buf = read_chunk(file, pos, SCAN_CHUNK_BYTES.min((file_len - pos) as usize))?;
        }
        let offset_in_buf = (pos - buf_start) as usize;
        let header = match BatchHeader::parse(&buf[offset_in_buf..]) {
            Ok(h) => h,
            Err(_) => {
                return Ok(ScanOutcome {
                    valid_end: pos,
                    corruption: None,
                })
            }
        };
        let total = header.batch_length as i64 + LOG_OVERHEAD as i64;
        if header.batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 || header.magic != 2 {
            return Ok(corrupt_or_torn(pos, total, file_len, BatchError::Truncated));
        }
        let end = pos + total as u64;
        if end > file_len {
            // A batch announced longer than what is on disk: a torn write.
            return Ok(ScanOutcome {
                valid_end: pos,
                corruption: None,
            });
        }
        if end > buf_start + buf.len() as u64 {
            buf_start = pos;
            buf = read_chunk(
                file,
                pos,
                (total as usize).max(SCAN_CHUNK_BYTES.min((file_len - pos) as usize)),
            )?;
        }
        let offset_in_buf = (pos - buf_start) as usize;
        let batch = &buf[offset_in_buf..offset_in_buf + total as usize];
        let actual = compute_crc(batch);
        if actual != header.crc {
            let error = BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            };
            return Ok(corrupt_or_torn(pos, total, file_len, error));
        }
        let marker = if header.is_control() {
            parse_marker(&header, batch).ok()
        } else {
            None
        };
        on_batch(ScannedBatch {
            header,
            position: pos,
            marker,
        });
        pos = end;
    }
}

/// An invalid batch that ends the file is a torn write; one followed by more
/// bytes is corruption in the middle of the log.
fn corrupt_or_torn(pos: u64, total: i64, file_len: u64, error: BatchError) -> ScanOutcome {
    let end = pos.saturating_add(total.max(0) as u64);
    if end >= file_len {
        ScanOutcome {
            valid_end: pos,
            corruption: None,
        }
    } else {
        ScanOutcome {
            valid_end: pos,
            corruption: Some((pos, error)),
        }
    }
}

fn read_chunk(file: &fs::File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Descriptors a segment may hold: its `.log` file, and the second descriptor
/// Fetch responses share (`shared_file`), opened on the first zero-copy read.
pub const DESCRIPTORS_PER_SEGMENT: u64 = 2;

/// Segments alive in this process (every partition log, internal ones too).
static SEGMENTS_OPEN: AtomicU64 = AtomicU64::new(0);

/// How many segments are open in this process, for the descriptor budget.
pub fn segments_open() -> u64 {
    SEGMENTS_OPEN.load(Ordering::Relaxed)
}

/// Counts one segment in [`SEGMENTS_OPEN`] for as long as it lives.
struct SegmentCount;

impl SegmentCount {
    fn new() -> SegmentCount {
        SEGMENTS_OPEN.fetch_add(1, Ordering::Relaxed);
        SegmentCount
    }
}

impl Drop for SegmentCount {
    fn drop(&mut self) {
        SEGMENTS_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A segment of a partition log.
pub struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    /// The open `.log` file, shared with in-flight reads and writes.
    pub file: Rc<compio::fs::File>,
    /// A second descriptor of the same file that Fetch responses hold (on any
    /// shard) while they splice from it; opened once, on the first such read,
    /// so a segment costs at most two descriptors however many responses refer
    /// to it. Keeps the data readable after retention deletes the file.
    shared_file: std::cell::OnceCell<Arc<fs::File>>,
    /// Bytes reserved by appends, written or still in flight. The next append goes here.
    pub reserved_bytes: u64,
    /// Bytes whose writes have completed, in order; readers never look past this.
    pub readable_bytes: u64,
    /// The offset after the last batch in this segment.
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// The transactions whose ABORT marker is in this segment.
    pub txn_index: TxnIndex,
    /// Log bytes appended since the last offset index entry.
    bytes_since_index_entry: u64,
    pub max_timestamp_ms: i64,
    /// Last offset of the batch holding `max_timestamp_ms`.
    pub offset_of_max_timestamp: i64,
    /// Wall-clock time of the first append, for `segment.ms` rolling.
    pub created_ms: i64,
    /// Keeps this segment counted in [`segments_open`].
    _count: SegmentCount,
}

impl Segment {
    /// Creates an empty segment file (truncating any leftover of the same name).
    /// Its directory entry is not synced here: the caller decides when.
    pub fn create(disk: &Disk, dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let log_path = dir.join(segment_file_name(base_offset, "log"));
        let file = disk.create(&log_path)?;
        for extension in INDEX_EXTENSIONS {
            disk.remove(&dir.join(segment_file_name(base_offset, extension)))?;
        }
        Ok(Segment::from_parts(
            log_path,
            into_compio(file),
            base_offset,
            0,
            now_ms,
        ))
    }

    fn from_parts(
        log_path: PathBuf,
        file: compio::fs::File,
        base_offset: i64,
        size: u64,
        now_ms: i64,
    ) -> Segment {
        Segment {
            base_offset,
            log_path,
            file: Rc::new(file),
            shared_file: std::cell::OnceCell::new(),
            reserved_bytes: size,
            readable_bytes: size,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            txn_index: TxnIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp_ms: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            _count: SegmentCount::new(),
        }
    }

    /// Opens an existing segment at start-up: scans every batch (lengths, magic,
    /// CRC32C), rebuilding the in-memory indexes as it goes, truncates a torn
    /// tail (returning how many bytes it cut), refuses corruption (an invalid
    /// batch with more bytes after it), and reports every batch to `on_batch`
    /// (used to rebuild producer state).
    ///
    /// The scan reads the whole segment. After a clean shutdown `open_clean`
    /// is used instead, when the clean-shutdown marker agrees with the files.
    pub fn open(
        disk: &Disk,
        log_path: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
        mut on_batch: impl FnMut(&ScannedBatch),
    ) -> Result<(Segment, u64), OpenError> {
        let file = disk.open_rw(log_path)?;
        let file_len = file.metadata()?.len();
        // The compio file gets its own descriptor; the scan below uses the std one.
        let async_file = into_compio(file.try_clone()?);
        let mut segment =
            Segment::from_parts(log_path.to_path_buf(), async_file, base_offset, 0, now_ms);
        let outcome = scan_batches(&file, 0, file_len, |batch| {
            segment.note_batch(&batch.header, batch.position, index_interval_bytes);
            on_batch(&batch);
        })?;
        if let Some((position, error)) = outcome.corruption {
            return Err(OpenError::Corrupt {
                path: log_path.to_path_buf(),
                position,
                error,
            });
        }
        if outcome.valid_end < file_len {
            disk.truncate(&file, outcome.valid_end)?;
            disk.sync_file(&file)?;
            tracing::warn!(
                path = %log_path.display(),
                from = file_len,
                to = outcome.valid_end,
                "truncated a torn write at the tail of a segment"
            );
        }
        segment.reserved_bytes = outcome.valid_end;
        segment.readable_bytes = outcome.valid_end;
        segment.set_created_ms_after_restart(now_ms);
        Ok((segment, file_len - outcome.valid_end))
    }

    /// `created_ms` of a segment found on disk at start-up.
    fn set_created_ms_after_restart(&mut self, now_ms: i64) {
        if self.next_offset == self.base_offset && self.reserved_bytes == 0 {
            self.created_ms = now_ms;
        } else if let Ok(meta) = fs::metadata(&self.log_path) {
            // The file's mtime approximates when the segment was last written; Kafka uses
            // the largest timestamp in the segment for segment.ms, we use the first
            // append time which is not persisted, so fall back to mtime on restart.
            if let Ok(modified) = meta.modified() {
                if let Ok(d) = modified.duration_since(std::time::UNIX_EPOCH) {
                    self.created_ms = d.as_millis() as i64;
                }
            }
        }
    }

    /// Clean shutdown, before the marker is written: syncs the `.log` file,
    /// makes the index files on disk equal the in-memory indexes (rewriting
    /// and syncing them if not), and returns what the marker records about the
    /// segment. All writes to the segment must be complete.
    pub fn prepare_clean_shutdown(&self, disk: &Disk) -> io::Result<SegmentSummary> {
        // A sync through a second descriptor flushes the same inode.
        disk.sync_path(&self.log_path)?;
        let metadata = fs::metadata(&self.log_path)?;
        if metadata.len() != self.reserved_bytes {
            return Err(io::Error::other(format!(
                "{} is {} bytes, the log expects {}",
                self.log_path.display(),
                metadata.len(),
                self.reserved_bytes
            )));
        }
        let index = self.index.encode();
        let time_index = self.time_index.encode();
        let txn_index = self.txn_index.encode();
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for (extension, bytes) in [
            ("index", &index),
            ("timeindex", &time_index),
            ("txnindex", &txn_index),
        ] {
            let path = dir.join(segment_file_name(self.base_offset, extension));
            if extension == "txnindex" && bytes.is_empty() {
                // No entry, no file; one left over would not be read.
                disk.remove(&path)?;
                continue;
            }
            // Usually written at roll and unchanged since; read back rather than trusted.
            if fs::read(&path).ok().as_ref() != Some(bytes) {
                disk.write(&path, bytes)?;
                disk.sync_path(&path)?;
            }
        }
        let length = |bytes: &Vec<u8>| {
            u32::try_from(bytes.len()).map_err(|_| io::Error::other("index file too large"))
        };
        Ok(SegmentSummary {
            base_offset: self.base_offset,
            log_bytes: self.reserved_bytes,
            log_mtime_ns: clean_shutdown::mtime_ns(&metadata)?,
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            index_bytes: length(&index)?,
            index_crc: crc32c::crc32c(&index),
            time_index_bytes: length(&time_index)?,
            time_index_crc: crc32c::crc32c(&time_index),
            txn_index_bytes: length(&txn_index)?,
            txn_index_crc: crc32c::crc32c(&txn_index),
        })
    }

    /// Opens a segment after a clean shutdown without scanning it: loads its
    /// index files and checks them, the file and the tail of the log against
    /// `summary` (see `clean_shutdown.rs`). Returns the segment and the bytes
    /// of log read (the tail), or why the files cannot be trusted.
    pub fn open_clean(
        log_path: &Path,
        summary: &SegmentSummary,
        is_active: bool,
        now_ms: i64,
    ) -> Result<(Segment, u64), String> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(log_path)
            .map_err(|e| format!("opening the log: {e}"))?;
        let metadata = file.metadata().map_err(|e| e.to_string())?;
        let log_bytes = metadata.len();
        if log_bytes != summary.log_bytes {
            return Err(format!(
                "log is {log_bytes} bytes, the marker says {}",
                summary.log_bytes
            ));
        }
        if clean_shutdown::mtime_ns(&metadata).ok() != Some(summary.log_mtime_ns) {
            return Err("log was modified after the clean shutdown".to_string());
        }
        let dir = log_path.parent().unwrap_or(Path::new("."));
        let index_bytes = read_index_file(
            &dir.join(segment_file_name(summary.base_offset, "index")),
            summary.index_bytes,
            summary.index_crc,
        )?;
        let time_index_bytes = read_index_file(
            &dir.join(segment_file_name(summary.base_offset, "timeindex")),
            summary.time_index_bytes,
            summary.time_index_crc,
        )?;
        let index = OffsetIndex::decode(&index_bytes, log_bytes).ok_or("malformed offset index")?;
        let time_index = TimeIndex::decode(&time_index_bytes).ok_or("malformed time index")?;
        let txn_index = if summary.txn_index_bytes == 0 {
            TxnIndex::default()
        } else {
            let bytes = read_index_file(
                &dir.join(segment_file_name(summary.base_offset, "txnindex")),
                summary.txn_index_bytes,
                summary.txn_index_crc,
            )?;
            TxnIndex::decode(&bytes, summary.base_offset, summary.next_offset)
                .ok_or("malformed transaction index")?
        };
        let span = u64::try_from(summary.next_offset - summary.base_offset).unwrap_or(0);
        // Sane for this segment: every entry inside it; the first batch indexed
        // (note_batch always indexes it); the last time entry is the max timestamp.
        if index
            .last()
            .is_some_and(|e| u64::from(e.relative_offset) >= span)
            || time_index
                .last()
                .is_some_and(|e| u64::from(e.relative_offset) >= span)
        {
            return Err("index entry past the segment's offsets".to_string());
        }
        if index.first().is_some_and(|e| e.position != 0) || (index.is_empty() != (log_bytes == 0))
        {
            return Err("offset index does not start at the first batch".to_string());
        }
        if time_index.last().map_or(-1, |e| e.timestamp_ms) != summary.max_timestamp_ms {
            return Err("time index disagrees with the max timestamp".to_string());
        }
        // The tail, from the last indexed batch to the end, batch by batch:
        // complete, valid, starting at the indexed offset and ending at the
        // marker's next offset (a closed segment's last batch may have been
        // emptied away by the cleaner: then it ends before).
        let tail_start = index.last().map_or(0, |e| u64::from(e.position));
        let expected_first = index
            .last()
            .map(|e| summary.base_offset + i64::from(e.relative_offset));
        let mut first: Option<i64> = None;
        let mut last_end = summary.base_offset;
        let mut tail_max_timestamp = -1i64;
        let outcome = scan_batches(&file, tail_start, log_bytes, |batch| {
            first.get_or_insert(batch.header.base_offset);
            last_end = batch.header.last_offset().saturating_add(1);
            tail_max_timestamp = tail_max_timestamp.max(batch.header.max_timestamp);
        })
        .map_err(|e| format!("reading the tail: {e}"))?;
        if outcome.valid_end != log_bytes || outcome.corruption.is_some() {
            return Err(format!(
                "invalid batch in the tail at byte {}",
                outcome.valid_end
            ));
        }
        let ends_right = if is_active {
            last_end == summary.next_offset
        } else {
            last_end <= summary.next_offset
        };
        if first != expected_first || !ends_right || tail_max_timestamp > summary.max_timestamp_ms {
            return Err("the tail of the log disagrees with the marker and the index".to_string());
        }
        let async_file = into_compio(file);
        let mut segment = Segment::from_parts(
            log_path.to_path_buf(),
            async_file,
            summary.base_offset,
            log_bytes,
            now_ms,
        );
        segment.next_offset = summary.next_offset;
        // As the scan leaves it: the bytes from the last indexed batch on.
        segment.bytes_since_index_entry = log_bytes - tail_start;
        segment.index = index;
        segment.time_index = time_index;
        segment.txn_index = txn_index;
        segment.max_timestamp_ms = summary.max_timestamp_ms;
        segment.offset_of_max_timestamp = summary.offset_of_max_timestamp;
        segment.set_created_ms_after_restart(now_ms);
        Ok((segment, log_bytes - tail_start))
    }

    /// Accounts for a batch placed at `position`: offsets, timestamps, indexes.
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        let mut state = SegmentState {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            index: std::mem::take(&mut self.index),
            time_index: std::mem::take(&mut self.time_index),
            bytes_since_index_entry: self.bytes_since_index_entry,
            max_timestamp_ms: self.max_timestamp_ms,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
        };
        state.note_batch(header, position, index_interval_bytes);
        self.index = state.index;
        self.time_index = state.time_index;
        self.bytes_since_index_entry = state.bytes_since_index_entry;
        self.max_timestamp_ms = state.max_timestamp_ms;
        self.offset_of_max_timestamp = state.offset_of_max_timestamp;
        self.next_offset = state.next_offset;
    }

    /// A closed segment from a file written off the shard (the log cleaner's
    /// output), with the indexes built while it was written. `size` is the file's length.
    pub fn from_state(
        log_path: PathBuf,
        file: fs::File,
        state: SegmentState,
        size: u64,
        created_ms: i64,
    ) -> Segment {
        let mut segment = Segment::from_parts(
            log_path,
            into_compio(file),
            state.base_offset,
            size,
            created_ms,
        );
        segment.next_offset = state.next_offset;
        segment.index = state.index;
        segment.time_index = state.time_index;
        segment.bytes_since_index_entry = state.bytes_since_index_entry;
        segment.max_timestamp_ms = state.max_timestamp_ms;
        segment.offset_of_max_timestamp = state.offset_of_max_timestamp;
        segment
    }

    pub fn is_empty(&self) -> bool {
        self.reserved_bytes == 0
    }

    /// The descriptor Fetch responses share (see `shared_file`).
    pub fn shared_file(&self) -> io::Result<Arc<fs::File>> {
        if let Some(file) = self.shared_file.get() {
            return Ok(file.clone());
        }
        use std::os::fd::AsFd;
        let file = Arc::new(fs::File::from(self.file.as_fd().try_clone_to_owned()?));
        Ok(self.shared_file.get_or_init(|| file).clone())
    }

    /// Removes the segment's files (retention, DeleteRecords, topic
    /// deletion). Best effort: a file left behind is found at the next start
    /// below the log start and removed then.
    pub fn remove_files(&self, disk: &Disk) {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for extension in std::iter::once("log").chain(INDEX_EXTENSIONS) {
            let _ = disk.remove(&dir.join(segment_file_name(self.base_offset, extension)));
        }
    }

    /// Writes the index files next to the log (called when the segment is
    /// closed). Not synced: a lost or torn index is rebuilt from the log.
    pub fn write_index_files(&self, disk: &Disk) -> io::Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        disk.write(
            &dir.join(segment_file_name(self.base_offset, "index")),
            &self.index.encode(),
        )?;
        disk.write(
            &dir.join(segment_file_name(self.base_offset, "timeindex")),
            &self.time_index.encode(),
        )?;
        self.write_txn_index_file(disk)
    }

    /// The `.txnindex` file, present only when the segment has an entry
    /// (as in Kafka).
    fn write_txn_index_file(&self, disk: &Disk) -> io::Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        let path = dir.join(segment_file_name(self.base_offset, "txnindex"));
        if self.txn_index.is_empty() {
            disk.remove(&path)
        } else {
            disk.write(&path, &self.txn_index.encode())
        }
    }
}

/// The files beside a segment's `.log`.
pub const INDEX_EXTENSIONS: [&str; 3] = ["index", "timeindex", "txnindex"];

/// The in-memory bookkeeping of a segment (offsets, timestamps, sparse
/// indexes), without its open file: `Send`, so that it can be built on another
/// thread for a file written there (see `Segment::from_state`).
#[derive(Debug, Clone)]
pub struct SegmentState {
    pub base_offset: i64,
    /// The offset after the last batch noted.
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index_entry: u64,
    pub max_timestamp_ms: i64,
    pub offset_of_max_timestamp: i64,
}

impl SegmentState {
    pub fn new(base_offset: i64) -> SegmentState {
        SegmentState {
            base_offset,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp_ms: -1,
            offset_of_max_timestamp: -1,
        }
    }

    /// Accounts for a batch placed at `position`: offsets, timestamps, indexes.
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        let relative = (header.base_offset - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index_entry >= u64::from(index_interval_bytes)
        {
            if self
                .index
                .last()
                .is_none_or(|e| u64::from(e.position) < position)
            {
                self.index.push(OffsetEntry {
                    relative_offset: relative,
                    position: position as u32,
                });
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_len() as u64;
        if header.max_timestamp > self.max_timestamp_ms {
            self.max_timestamp_ms = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
            self.time_index.push(TimeEntry {
                timestamp_ms: header.max_timestamp,
                relative_offset: relative,
            });
        }
        self.next_offset = header.last_offset() + 1;
    }
}

/// Reads an index file of exactly `expected_bytes` (checked before reading)
/// whose CRC32C is `expected_crc`.
fn read_index_file(path: &Path, expected_bytes: u32, expected_crc: u32) -> Result<Vec<u8>, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let on_disk = fs::metadata(path)
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    if on_disk != u64::from(expected_bytes) {
        return Err(format!(
            "{name} is {on_disk} bytes, the marker says {expected_bytes}"
        ));
    }
    let bytes = fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() != expected_bytes as usize || crc32c::crc32c(&bytes) != expected_crc {
        return Err(format!("{name} does not match the marker's CRC32C"));
    }
    Ok(bytes)
}

/// Why a segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt batch in {} at byte {position}: {error}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        error: BatchError,
    },
}
