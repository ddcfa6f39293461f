//! Reads: a byte range of whole batches decided from batch headers (index,
//! then a short walk), served as file slices or read into aligned buffers;
//! and the lookup of an offset by timestamp.

use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use compio::io::AsyncReadAtExt;

use crate::io::aligned;
use crate::io::chain::{Chain, FileSlice, Piece};
use crate::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::compression::decompressed_bytes_max;
use crate::protocol::records::{records_area, RecordIter};
use crate::storage::segment::Segment;
use crate::storage::txn_index::AbortedTxn;

use super::state::*;

impl PartitionLog {
    /// Finds where to start reading `offset`: (segment index, file position, readable end).
    pub(super) fn locate(&self, offset: i64) -> Option<(usize, u64, u64)> {
        let count = self.segments.partition_point(|s| s.base_offset <= offset);
        if count == 0 {
            return None;
        }
        let i = count - 1;
        let segment = &self.segments[i];
        let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let position = u64::from(segment.index.lookup(relative).position);
        Some((i, position, segment.readable_bytes))
    }

    /// The start of the last batch indexed at or before `position` in the
    /// segment a read is walking (a batch boundary), if that segment is still
    /// in the log and its index has one.
    fn batch_start_at_or_below(&self, view: &SegmentView, position: u64) -> Option<u64> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset < view.base_offset);
        // The same file, not only the same base offset: the cleaner may have
        // swapped in a compacted segment whose positions mean something else.
        let segment = self
            .segments
            .get(i)
            .filter(|s| s.base_offset == view.base_offset && Rc::ptr_eq(&s.file, &view.file))?;
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        segment
            .index
            .last_at_or_below_position(position)
            .map(|e| u64::from(e.position))
    }

    /// Offset of the first batch whose max timestamp is >= `timestamp_ms`, with
    /// that batch's position, or None if every batch is older.
    pub(super) fn locate_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Option<(Rc<compio::fs::File>, u64, u64, i64)> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.max_timestamp_ms >= timestamp_ms)?;
        let relative = segment.time_index.lookup(timestamp_ms);
        let position = u64::from(segment.index.lookup(relative).position);
        Some((
            segment.file.clone(),
            position,
            segment.readable_bytes,
            segment.base_offset,
        ))
    }

    /// (max timestamp, offset) over the whole log, for ListOffsets MAX_TIMESTAMP.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.segments
            .iter()
            .filter(|s| s.max_timestamp_ms >= 0)
            .max_by_key(|s| s.max_timestamp_ms)
            .map(|s| (s.max_timestamp_ms, s.offset_of_max_timestamp))
            .unwrap_or((-1, -1))
    }
}

/// Reads whole batches from `offset` on, at most `max_bytes` of them, except that
/// the first batch is returned whole even if larger (KIP-74) when
/// `first_may_exceed` is set, so that a consumer always makes progress. The
/// batches may span segments.
///
/// Only batch headers are read to decide what to return: the batch holding
/// `offset` (found from the offset index), and at the end the last batch that
/// fits (found from the offset index by position, then a short walk). The
/// record data itself stays in the segment files when a range is at least
/// `zero_copy_min_bytes` long (the connection splices it to the socket);
/// shorter ranges, or every range when it is None, are read into page-aligned
/// memory.
pub async fn read(
    log: &LogRef,
    offset: i64,
    max_bytes: usize,
    first_may_exceed: bool,
    zero_copy_min_bytes: Option<usize>,
) -> Result<ReadOutcome, ReadError> {
    read_isolated(
        log,
        offset,
        max_bytes,
        first_may_exceed,
        zero_copy_min_bytes,
        Isolation::ReadUncommitted,
        i64::MAX,
    )
    .await
}

/// [`read`] at an isolation level: `ReadCommitted` returns nothing at or past
/// the last stable offset, and lists the aborted transactions that overlap
/// what it returns, from the segments' transaction indexes (the records are
/// not looked at, so the data may still be spliced). Nothing at or past
/// `limit` is returned either (a replicated partition's high watermark,
/// which consumers never read past; a batch boundary).
pub async fn read_isolated(
    log: &LogRef,
    offset: i64,
    max_bytes: usize,
    first_may_exceed: bool,
    zero_copy_min_bytes: Option<usize>,
    isolation: Isolation,
    limit: i64,
) -> Result<ReadOutcome, ReadError> {
    let committed = isolation == Isolation::ReadCommitted;
    let (mut segment, mut position, high_watermark, last_stable_offset, log_start_offset, upper) = {
        let log = log.borrow();
        log.check_online().map_err(ReadError::Storage)?;
        let high_watermark = log.high_watermark();
        let last_stable_offset = log.last_stable_offset();
        if offset < log.log_start_offset || offset > high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: log.log_start_offset,
                high_watermark,
            });
        }
        let upper = if committed {
            last_stable_offset
        } else {
            high_watermark
        }
        .min(limit);
        let empty = ReadOutcome {
            records: Chain::default(),
            first_batch_len: 0,
            high_watermark,
            last_stable_offset,
            log_start_offset: log.log_start_offset,
            aborted: committed.then(Vec::new),
        };
        if offset >= upper || (max_bytes == 0 && !first_may_exceed) {
            return Ok(empty);
        }
        let Some((i, position, _)) = log.locate(offset) else {
            return Ok(empty);
        };
        (
            SegmentView::of(&log.segments[i], zero_copy_min_bytes.is_some()),
            position,
            high_watermark,
            last_stable_offset,
            log.log_start_offset,
            upper,
        )
    };
    // Where the read must stop: the batch at the last stable offset
    // (read_committed) or the limit, if that is below the log's end.
    let stop = if upper < high_watermark {
        stop_at(log, upper).await?
    } else {
        None
    };
    segment.cap(stop);
    let mut ranges: Vec<(SegmentView, u64, u64, Option<Bytes>)> = Vec::new();
    let mut budget = max_bytes as u64;
    let mut first_batch_len = 0;
    // The offset after the last batch returned, when known from a header.
    let mut end_offset: Option<i64> = None;
    loop {
        let mut walker = HeaderWalker::new(&segment);
        // The batch holding `offset`, or the first after it (offsets may have gaps).
        let mut found = None;
        while position < segment.readable {
            let header = walker.header_at(position).await?;
            if header.last_offset >= offset {
                found = Some((position, header));
                break;
            }
            position += header.len;
        }
        if let Some((start, first)) = found {
            if ranges.is_empty() {
                first_batch_len = first.len as usize;
            }
            if first.len > budget {
                if ranges.is_empty() && first_may_exceed {
                    let end = start + first.len;
                    let inline = walker.cached(start, end);
                    ranges.push((segment, start, end, inline));
                    end_offset = Some(first.last_offset + 1);
                } else {
                    end_offset = Some(first.base_offset);
                }
                break;
            }
            let limit = start + budget;
            let mut end = start + first.len;
            let mut next_base = None;
            if segment.readable <= limit {
                end = segment.readable;
            } else {
                // Jump close to the limit with the index, then walk the last few headers.
                if let Some(hint) = log.borrow().batch_start_at_or_below(&segment, limit) {
                    end = end.max(hint);
                }
                while end < segment.readable {
                    let header = walker.header_at(end).await?;
                    if end + header.len > limit {
                        next_base = Some(header.base_offset);
                        break;
                    }
                    end += header.len;
                }
            }
            budget -= end - start;
            let inline = walker.cached(start, end);
            let segment_done = end == segment.readable;
            ranges.push((segment.clone(), start, end, inline));
            end_offset = next_base;
            if !segment_done || budget == 0 {
                break;
            }
        }
        if segment.is_last {
            break;
        }
        // Go on in the next segment. Found by base offset: retention or the cleaner
        // may have replaced the list while this read was waiting.
        let log_ref = log.borrow();
        let next = log_ref
            .segments
            .partition_point(|s| s.base_offset <= segment.base_offset);
        let Some(next) = log_ref.segments.get(next) else {
            break;
        };
        position = if offset > next.base_offset {
            let relative = u32::try_from(offset - next.base_offset).unwrap_or(u32::MAX);
            u64::from(next.index.lookup(relative).position)
        } else {
            0
        };
        segment = SegmentView::of(next, zero_copy_min_bytes.is_some());
        segment.cap(stop);
    }
    let aborted = committed.then(|| {
        // Not known from a header: the read ran to the end of a segment, so
        // the next one (or the stable offset) bounds it.
        let until = end_offset.unwrap_or(upper);
        if ranges.is_empty() {
            Vec::new()
        } else {
            log.borrow().aborted_transactions(offset, until)
        }
    });
    let mut records = Chain::default();
    for (segment, start, end, inline) in ranges {
        let len = (end - start) as usize;
        let splice_from = segment
            .shared
            .clone()
            .filter(|_| zero_copy_min_bytes.is_some_and(|min| len >= min));
        let piece = match (inline, splice_from) {
            (_, Some(file)) => Piece::File(FileSlice {
                file,
                position: start,
                len,
            }),
            (Some(bytes), None) => Piece::Memory(bytes),
            (None, None) => Piece::Memory(
                aligned::read_at(&segment.file, start, len)
                    .await
                    .map_err(|e| ReadError::Storage(format!("read at {start}: {e}")))?,
            ),
        };
        records.push(piece);
    }
    if records.is_empty() {
        first_batch_len = 0;
    }
    Ok(ReadOutcome {
        records,
        first_batch_len,
        high_watermark,
        last_stable_offset,
        log_start_offset,
        aborted,
    })
}

/// Where a read must stop so as to return nothing at or past `upper`: the
/// segment and file position of the first batch whose last offset is at or
/// past it (`upper` is a batch boundary, except a log start moved into a
/// batch by DeleteRecords: then that whole batch waits).
async fn stop_at(log: &LogRef, upper: i64) -> Result<Option<(i64, u64)>, ReadError> {
    let (segment, mut position) = {
        let log = log.borrow();
        let Some((i, position, _)) = log.locate(upper) else {
            return Ok(None);
        };
        (SegmentView::of(&log.segments[i], false), position)
    };
    let mut walker = HeaderWalker::new(&segment);
    while position < segment.readable {
        let header = walker.header_at(position).await?;
        if header.last_offset >= upper {
            break;
        }
        position += header.len;
    }
    Ok(Some((segment.base_offset, position)))
}

impl PartitionLog {
    /// The aborted transactions that overlap `[fetch_offset, upper)`, from
    /// the transaction indexes of the segments from the one holding
    /// `fetch_offset` on (a marker before it cannot end a transaction that
    /// reaches it).
    pub(in crate::storage) fn aborted_transactions(
        &self,
        fetch_offset: i64,
        upper: i64,
    ) -> Vec<AbortedTxn> {
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= fetch_offset)
            .saturating_sub(1);
        let mut out = Vec::new();
        for segment in &self.segments[first..] {
            if segment.txn_index.collect(fetch_offset, upper, &mut out) {
                break;
            }
        }
        out
    }
}

/// What a read needs of a segment, taken while the log is borrowed.
#[derive(Clone)]
struct SegmentView {
    base_offset: i64,
    file: Rc<compio::fs::File>,
    /// The descriptor responses may hold, when the read may splice (None when
    /// it may not, or when the descriptor could not be opened: then it copies).
    shared: Option<Arc<std::fs::File>>,
    readable: u64,
    /// The read stops in this segment (see `stop_at`).
    is_last: bool,
}

impl SegmentView {
    fn of(segment: &Segment, may_splice: bool) -> SegmentView {
        let shared = if may_splice {
            segment
                .shared_file()
                .inspect_err(
                    |error| tracing::warn!(%error, "no shared descriptor for a segment; copying"),
                )
                .ok()
        } else {
            None
        };
        SegmentView {
            base_offset: segment.base_offset,
            file: segment.file.clone(),
            shared,
            readable: segment.readable_bytes,
            is_last: false,
        }
    }

    /// Applies a read's stop (segment base offset, position) to this view.
    fn cap(&mut self, stop: Option<(i64, u64)>) {
        if let Some((base_offset, position)) = stop {
            if self.base_offset >= base_offset {
                self.readable = if self.base_offset == base_offset {
                    self.readable.min(position)
                } else {
                    0
                };
                self.is_last = true;
            }
        }
    }
}

/// What a read needs of a batch header.
#[derive(Debug, Clone, Copy)]
struct HeaderSummary {
    base_offset: i64,
    last_offset: i64,
    /// The whole batch's length.
    len: u64,
}

/// Bytes read per header lookup that misses the cached chunk. Large enough that
/// the walk from an index entry to the wanted batch (at most an index interval,
/// 4 KiB by default) and a small fetch's whole data usually come in one read.
const HEADER_CHUNK_BYTES: u64 = 32 * 1024;

/// Reads batch headers of one segment, a chunk at a time.
struct HeaderWalker<'a> {
    segment: &'a SegmentView,
    chunk: Bytes,
    chunk_position: u64,
}

impl<'a> HeaderWalker<'a> {
    fn new(segment: &'a SegmentView) -> HeaderWalker<'a> {
        HeaderWalker {
            segment,
            chunk: Bytes::new(),
            chunk_position: 0,
        }
    }

    /// The batch at `position`, checked to lie within the segment's readable bytes.
    async fn header_at(&mut self, position: u64) -> Result<HeaderSummary, ReadError> {
        let header_end = position + BATCH_HEADER_LEN as u64;
        if header_end > self.segment.readable {
            return Err(ReadError::Storage(format!(
                "batch header at {position} runs past the readable end {}",
                self.segment.readable
            )));
        }
        if self.cached(position, header_end).is_none() {
            let len = HEADER_CHUNK_BYTES.min(self.segment.readable - position) as usize;
            self.chunk = aligned::read_at(&self.segment.file, position, len)
                .await
                .map_err(|e| ReadError::Storage(format!("read at {position}: {e}")))?;
            self.chunk_position = position;
        }
        let at = (position - self.chunk_position) as usize;
        let header = BatchHeader::parse(&self.chunk[at..])
            .map_err(|e| ReadError::Storage(format!("corrupt batch at {position}: {e}")))?;
        let len = header.total_len() as u64;
        if header.magic != 2 || len < BATCH_HEADER_LEN as u64 {
            // Never walk by a length that is not a batch's: a damaged header
            // could otherwise stop the walk (length 0) or land mid-batch.
            return Err(ReadError::Storage(format!(
                "corrupt batch at {position}: magic {}, length {len}",
                header.magic
            )));
        }
        if position + len > self.segment.readable {
            return Err(ReadError::Storage(format!(
                "batch at {position} runs past the readable end {}",
                self.segment.readable
            )));
        }
        Ok(HeaderSummary {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            len,
        })
    }

    /// `[start, end)` of the segment if the cached chunk holds all of it.
    fn cached(&self, start: u64, end: u64) -> Option<Bytes> {
        let chunk_end = self.chunk_position + self.chunk.len() as u64;
        (start >= self.chunk_position && end <= chunk_end).then(|| {
            self.chunk
                .slice((start - self.chunk_position) as usize..(end - self.chunk_position) as usize)
        })
    }
}

async fn read_exact(
    file: &compio::fs::File,
    position: u64,
    len: usize,
) -> Result<BytesMut, ReadError> {
    let buf = BytesMut::with_capacity(len);
    let compio::BufResult(result, buf) = file.read_exact_at(buf, position).await;
    result.map_err(|e| ReadError::Storage(format!("read at {position}: {e}")))?;
    Ok(buf)
}

/// Finds the first offset whose record timestamp is >= `timestamp_ms`, with that
/// timestamp. Scans batch headers from the time index's hint, then the records of
/// the first batch that qualifies (decompressing if needed).
pub async fn offset_for_timestamp(
    log: &LogRef,
    timestamp_ms: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    let (file, mut position, readable_end, decompressed_bytes_max) = {
        let log = log.borrow();
        log.check_online().map_err(ReadError::Storage)?;
        let limit = decompressed_bytes_max(log.config.max_message_bytes);
        match log.locate_timestamp(timestamp_ms) {
            Some((file, position, readable, _base)) => (file, position, readable, limit),
            None => return Ok(None),
        }
    };
    while position < readable_end {
        let header_bytes = read_exact(&file, position, BATCH_HEADER_LEN).await?;
        let header =
            BatchHeader::parse(&header_bytes).map_err(|e| ReadError::Storage(e.to_string()))?;
        let len = header.total_len() as u64;
        if len < BATCH_HEADER_LEN as u64 {
            return Err(ReadError::Storage(format!("corrupt batch at {position}")));
        }
        if header.max_timestamp >= timestamp_ms {
            // The batch-level answer: its first offset is at or before the
            // exact one, so a consumer that seeks there misses nothing.
            let batch_level = Some((header.base_offset, header.max_timestamp));
            // LogAppendTime batches carry the time in the header only.
            if header.is_log_append_time() {
                return Ok(batch_level);
            }
            let whole = read_exact(&file, position, len as usize).await?.freeze();
            let area = match records_area(&header, &whole, decompressed_bytes_max) {
                Ok(area) => area,
                Err(error) => {
                    tracing::warn!(position, base_offset = header.base_offset, %error, "ListOffsets by timestamp: batch not decompressed; answering with its first offset");
                    return Ok(batch_level);
                }
            };
            for record in RecordIter::new(&area, header.record_count) {
                let Ok(record) = record else { break };
                let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
                if timestamp >= timestamp_ms {
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    return Ok(Some((offset, timestamp)));
                }
            }
            return Ok(batch_level);
        }
        position += len;
    }
    Ok(None)
}
