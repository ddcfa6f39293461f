//! Kafka record batch (magic v2) parsing and validation for the produce hot path.
//!
//! Every byte handed to this module is treated as hostile: nothing here panics,
//! overflows, or allocates in proportion to a length field read from the wire.
//!
//! # Batch layout (all integers big-endian)
//!
//! | offset | size | field                  | notes                                         |
//! |-------:|-----:|------------------------|-----------------------------------------------|
//! |      0 |    8 | `baseOffset`           | assigned by the broker; not covered by CRC    |
//! |      8 |    4 | `batchLength`          | bytes after this field: total = this + 12     |
//! |     12 |    4 | `partitionLeaderEpoch` | set by the broker; not covered by CRC         |
//! |     16 |    1 | `magic`                | must be 2                                     |
//! |     17 |    4 | `crc`                  | CRC-32C of bytes `[21, end)`                  |
//! |     21 |    2 | `attributes`           | see below                                     |
//! |     23 |    4 | `lastOffsetDelta`      | `recordCount - 1` for client batches          |
//! |     27 |    8 | `baseTimestamp`        |                                               |
//! |     35 |    8 | `maxTimestamp`         |                                               |
//! |     43 |    8 | `producerId`           | -1 when not idempotent                        |
//! |     51 |    2 | `producerEpoch`        |                                               |
//! |     53 |    4 | `baseSequence`         | -1 when not idempotent                        |
//! |     57 |    4 | `recordCount`          |                                               |
//! |     61 |    … | records                | possibly compressed as one blob               |
//!
//! Attribute bits: 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd),
//! 3 timestamp type (1 = LogAppendTime), 4 transactional, 5 control.
//!
//! # Record layout (uncompressed; varints are zigzag-encoded)
//!
//! | field            | type              | notes                                  |
//! |------------------|-------------------|----------------------------------------|
//! | `length`         | varint            | covers exactly the bytes after it      |
//! | `attributes`     | i8                | unused in v2                           |
//! | `timestampDelta` | varlong           | relative to `baseTimestamp`            |
//! | `offsetDelta`    | varint            | must equal the record's index          |
//! | `keyLength`      | varint            | -1 = null key                          |
//! | `key`            | bytes             |                                        |
//! | `valueLength`    | varint            | -1 = null value                        |
//! | `value`          | bytes             |                                        |
//! | `headersCount`   | varint            | >= 0                                   |
//! | headers          | repeated          | `keyLength` (>= 0), key, `valueLength` (-1 = null), value |
//!
//! Varints are at most 5 bytes (varlongs 10) and must be minimally encoded:
//! Kafka's own reader tolerates padding, but no real client emits it and
//! rejecting it keeps the parser's accepted language small.

use std::ops::Range;

/// Size of the fixed v2 batch header; records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format this broker accepts.
pub const MAGIC_V2: i8 = 2;

const OFF_BASE_OFFSET: usize = 0;
const OFF_BATCH_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

/// Smallest `batchLength` that still leaves room for the fixed header.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const MAX_COMPRESSION_CODEC: u8 = 4; // zstd

/// Kafka error codes this module maps to.
mod code {
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const INVALID_RECORD: i16 = 87;
}

/// Why a batch (or a produce payload) was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum BatchError {
    /// The produce payload holds no bytes at all.
    #[error("record set is empty")]
    Empty,
    /// Fewer bytes than the header or `batchLength` promise.
    #[error("record batch is truncated")]
    Truncated,
    /// `batchLength` too small to hold the fixed header.
    #[error("record batch length {0} is out of range")]
    LengthOutOfRange(i32),
    /// Magic other than 2 (0 and 1 are the legacy message-set formats).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// Stored CRC does not match the bytes.
    #[error("record batch CRC mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    /// Compression codec outside 0..=4.
    #[error("invalid compression codec {0}")]
    InvalidCompression(u8),
    /// `recordCount` < 1.
    #[error("invalid record count {0}")]
    InvalidRecordCount(i32),
    /// `lastOffsetDelta` disagrees with `recordCount`.
    #[error("last offset delta {last_offset_delta} inconsistent with record count {record_count}")]
    InvalidLastOffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    /// Idempotent batch (producerId >= 0) without a valid base sequence.
    #[error("invalid base sequence {0} for a batch with a producer id")]
    InvalidSequence(i32),
    /// Clients may not write control batches; only the transaction coordinator does.
    #[error("clients may not send control batches")]
    ControlBatch,
    /// The batch exceeds the configured maximum size.
    #[error("record batch of {size} bytes exceeds the maximum of {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// A record inside an uncompressed batch is malformed.
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
}

impl BatchError {
    /// The Kafka protocol error code to put in the Produce response.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BatchError::UnsupportedMagic(0 | 1) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::RecordTooLarge { .. } => code::MESSAGE_TOO_LARGE,
            // Kafka's LogValidator throws InvalidRecordException for these.
            BatchError::Empty
            | BatchError::InvalidRecordCount(_)
            | BatchError::InvalidLastOffsetDelta { .. }
            | BatchError::InvalidSequence(_)
            | BatchError::ControlBatch
            | BatchError::InvalidRecord(_) => code::INVALID_RECORD,
            BatchError::Truncated
            | BatchError::LengthOutOfRange(_)
            | BatchError::UnsupportedMagic(_)
            | BatchError::CrcMismatch { .. }
            | BatchError::InvalidCompression(_) => code::CORRUPT_MESSAGE,
        }
    }
}

/// Whose clock a batch's timestamps are (attribute bit 3; a topic's
/// `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's.
    CreateTime,
    /// The broker's, stamped as the batch is appended.
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Copies `N` bytes at `off`; `Truncated` instead of panicking when out of range.
fn field<const N: usize>(buf: &[u8], off: usize) -> Result<[u8; N], BatchError> {
    let end = off.checked_add(N).ok_or(BatchError::Truncated)?;
    buf.get(off..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(BatchError::Truncated)
}

/// Writes `bytes` at `off` if they fit; callers guarantee the fit, so a
/// miss is silently ignored rather than panicking on hostile input.
fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    let Some(end) = off.checked_add(bytes.len()) else {
        return;
    };
    if let Some(dst) = buf.get_mut(off..end) {
        dst.copy_from_slice(bytes);
    }
}

fn read_i32(buf: &[u8], off: usize) -> Result<i32, BatchError> {
    field(buf, off).map(i32::from_be_bytes)
}

fn read_i64(buf: &[u8], off: usize) -> Result<i64, BatchError> {
    field(buf, off).map(i64::from_be_bytes)
}

fn read_i16(buf: &[u8], off: usize) -> Result<i16, BatchError> {
    field(buf, off).map(i16::from_be_bytes)
}

impl BatchHeader {
    /// Parses the fixed header; checks only that 61 bytes are there
    /// (magic is NOT checked here, see [`peek_magic`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated);
        }
        Ok(BatchHeader {
            base_offset: read_i64(buf, OFF_BASE_OFFSET)?,
            batch_length: read_i32(buf, OFF_BATCH_LENGTH)?,
            partition_leader_epoch: read_i32(buf, OFF_LEADER_EPOCH)?,
            magic: i8::from_be_bytes(field(buf, OFF_MAGIC)?),
            crc: u32::from_be_bytes(field(buf, OFF_CRC)?),
            attributes: read_i16(buf, OFF_ATTRIBUTES)?,
            last_offset_delta: read_i32(buf, OFF_LAST_OFFSET_DELTA)?,
            base_timestamp: read_i64(buf, OFF_BASE_TIMESTAMP)?,
            max_timestamp: read_i64(buf, OFF_MAX_TIMESTAMP)?,
            producer_id: read_i64(buf, OFF_PRODUCER_ID)?,
            producer_epoch: read_i16(buf, OFF_PRODUCER_EPOCH)?,
            base_sequence: read_i32(buf, OFF_BASE_SEQUENCE)?,
            record_count: read_i32(buf, OFF_RECORD_COUNT)?,
        })
    }

    /// Total bytes of the batch on the wire (`batch_length + 12`); 0 for a
    /// corrupt negative length so callers never see a wrapped huge value.
    pub fn total_len(&self) -> usize {
        usize::try_from(i64::from(self.batch_length) + LOG_OVERHEAD as i64).unwrap_or(0)
    }

    /// Offset of the last record. Wraps like Java would on a corrupt header
    /// rather than panicking.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Compression codec id (attribute bits 0-2).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_compressed(&self) -> bool {
        self.compression() != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// Whether the batch came from an idempotent/transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence of the last record. Sequences wrap from `i32::MAX` to 0
    /// (Kafka's `DefaultRecordBatch.incrementSequence`); -1 stays -1.
    pub fn last_sequence(&self) -> i32 {
        const NO_SEQUENCE: i32 = -1;
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let sum = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        let wrapped = if sum > i64::from(i32::MAX) {
            sum - (i64::from(i32::MAX) + 1)
        } else {
            sum
        };
        // Only a corrupt header (negative delta) can leave the i32 range; truncate, don't panic.
        wrapped as i32
    }
}

/// Reads the magic byte without needing a full header, so legacy (v0/v1)
/// message sets, whose headers are shorter, are reported as such.
pub fn peek_magic(buf: &[u8]) -> Result<i8, BatchError> {
    field(buf, OFF_MAGIC).map(i8::from_be_bytes)
}

/// Whether `buf` starts with a v2 batch whose transactional bit is set, from
/// its header alone (nothing else is checked).
pub fn peek_transactional(buf: &[u8]) -> bool {
    peek_magic(buf) == Ok(2)
        && read_i16(buf, OFF_ATTRIBUTES).is_ok_and(|attributes| attributes & TRANSACTIONAL_BIT != 0)
}

/// CRC-32C over `batch[21..]`; pass exactly one batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(OFF_ATTRIBUTES..).unwrap_or(&[]))
}

/// Rewrites the base offset in place (the CRC does not cover it).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    put(batch, OFF_BASE_OFFSET, &base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch in place (the CRC does not cover it).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    put(batch, OFF_LEADER_EPOCH, &epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `timestamp_ms` as its max timestamp
/// and recomputes the CRC. `baseTimestamp` is left alone, as Kafka does:
/// readers take every record's timestamp from `maxTimestamp` in this mode.
/// Does nothing unless `batch` starts with a complete batch.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let Ok(header) = BatchHeader::parse(batch) else {
        return;
    };
    let end = header.total_len();
    if end < BATCH_HEADER_LEN || end > batch.len() {
        return;
    }
    // Same shortcut as Kafka: an unchanged batch keeps its (validated) CRC.
    if header.is_log_append_time() && header.max_timestamp == timestamp_ms {
        return;
    }
    put(
        batch,
        OFF_ATTRIBUTES,
        &(header.attributes | TIMESTAMP_TYPE_BIT).to_be_bytes(),
    );
    put(batch, OFF_MAX_TIMESTAMP, &timestamp_ms.to_be_bytes());
    let crc = compute_crc(&batch[..end]);
    put(batch, OFF_CRC, &crc.to_be_bytes());
}

/// Summary of a validated produce payload (the `records` bytes of one
/// partition in a Produce request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRecords {
    pub batch_count: usize,
    pub record_count: u64,
    pub first: BatchHeader,
    pub last: BatchHeader,
    pub max_timestamp: i64,
    /// Offset delta, relative to the first batch's first record, of the last
    /// record of the batch with the largest `maxTimestamp` (earliest batch on ties).
    pub offset_of_max_timestamp_delta: i64,
}

impl ValidatedRecords {
    fn start(first: BatchHeader) -> Self {
        ValidatedRecords {
            batch_count: 1,
            record_count: record_count_u64(&first),
            first,
            last: first,
            max_timestamp: first.max_timestamp,
            offset_of_max_timestamp_delta: i64::from(first.last_offset_delta),
        }
    }

    fn push(&mut self, header: BatchHeader) {
        // Records before this batch; bounded by the buffer size so it cannot
        // overflow, saturating just keeps that obvious.
        let preceding = i64::try_from(self.record_count).unwrap_or(i64::MAX);
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp_delta =
                preceding.saturating_add(i64::from(header.last_offset_delta));
        }
        self.batch_count += 1;
        self.record_count = self.record_count.saturating_add(record_count_u64(&header));
        self.last = header;
    }
}

fn record_count_u64(header: &BatchHeader) -> u64 {
    u64::try_from(header.record_count).unwrap_or(0)
}

/// Validates every batch in a produce payload and summarises it.
///
/// The payload must be a non-empty, exact sequence of whole v2 batches. Each
/// batch must have a sane length no larger than `max_batch_bytes`, a correct
/// CRC, a known codec, `recordCount >= 1` matching `lastOffsetDelta`, must
/// not be a control batch, and (if idempotent) a base sequence >= 0.
/// Uncompressed batches additionally have every record walked; compressed
/// ones are not decompressed.
pub fn validate_records(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<ValidatedRecords, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut summary: Option<ValidatedRecords> = None;
    let mut pos = 0;
    while let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) {
        let header = validate_batch(rest, max_batch_bytes)?;
        pos += header.total_len();
        match summary.as_mut() {
            None => summary = Some(ValidatedRecords::start(header)),
            Some(s) => s.push(header),
        }
    }
    summary.ok_or(BatchError::Empty)
}

/// The whole batches at the start of `records` as a leader sends them to a
/// follower (control batches included, offsets already assigned): each one
/// v2, of a sane length, with a correct CRC, and with offsets that increase
/// from batch to batch. A partial batch at the end (a fetch response may cut
/// one) is left out; the headers and the length of what they cover are
/// returned.
pub fn split_replicated(records: &[u8]) -> Result<(Vec<BatchHeader>, usize), BatchError> {
    let mut headers: Vec<BatchHeader> = Vec::new();
    let mut pos = 0;
    while let Some(rest) = records.get(pos..).filter(|r| r.len() >= BATCH_HEADER_LEN) {
        let magic = peek_magic(rest)?;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let total = match batch_extent(rest) {
            Ok(total) => total,
            Err(BatchError::Truncated) => break,
            Err(other) => return Err(other),
        };
        let batch = &rest[..total];
        let header = BatchHeader::parse(batch)?;
        check_crc(&header, batch)?;
        if header.last_offset_delta < 0
            || header.base_offset < 0
            || header
                .base_offset
                .checked_add(i64::from(header.last_offset_delta) + 1)
                .is_none()
            || headers
                .last()
                .is_some_and(|previous| header.base_offset <= previous.last_offset())
        {
            return Err(BatchError::InvalidRecordCount(header.record_count));
        }
        headers.push(header);
        pos += total;
    }
    Ok((headers, pos))
}

/// Validates the batch at the start of `rest`. On success the header's
/// `total_len()` is within `rest` and at least 61.
fn validate_batch(rest: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    // Magic first: legacy message sets have shorter headers and deserve
    // UNSUPPORTED_FOR_MESSAGE_FORMAT, not a length complaint.
    let magic = peek_magic(rest)?;
    if magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let total = batch_extent(rest)?;
    // Size before CRC, like Kafka: no point checksumming what we will refuse.
    if total > max_batch_bytes {
        return Err(BatchError::RecordTooLarge {
            size: total,
            max: max_batch_bytes,
        });
    }
    let batch = rest.get(..total).ok_or(BatchError::Truncated)?;
    let header = BatchHeader::parse(batch)?;
    check_crc(&header, batch)?;
    check_header_fields(&header)?;
    if !header.is_compressed() {
        let area = batch.get(BATCH_HEADER_LEN..).ok_or(BatchError::Truncated)?;
        walk_records(area, header.record_count)?;
    }
    Ok(header)
}

/// Total length of the batch starting at `rest`, checked to be at least a
/// header and to fit in `rest`.
fn batch_extent(rest: &[u8]) -> Result<usize, BatchError> {
    let batch_length = read_i32(rest, OFF_BATCH_LENGTH)?;
    if batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::LengthOutOfRange(batch_length));
    }
    let total = usize::try_from(i64::from(batch_length) + LOG_OVERHEAD as i64)
        .map_err(|_| BatchError::LengthOutOfRange(batch_length))?;
    if total > rest.len() {
        return Err(BatchError::Truncated);
    }
    Ok(total)
}

fn check_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Header rules Kafka's LogValidator applies to client batches.
fn check_header_fields(h: &BatchHeader) -> Result<(), BatchError> {
    if h.compression() > MAX_COMPRESSION_CODEC {
        return Err(BatchError::InvalidCompression(h.compression()));
    }
    if h.record_count < 1 {
        return Err(BatchError::InvalidRecordCount(h.record_count));
    }
    // Offsets are assigned densely, so the batch must span exactly its records.
    if i64::from(h.last_offset_delta) != i64::from(h.record_count) - 1 {
        return Err(BatchError::InvalidLastOffsetDelta {
            last_offset_delta: h.last_offset_delta,
            record_count: h.record_count,
        });
    }
    if h.is_control() {
        return Err(BatchError::ControlBatch);
    }
    if h.has_producer_id() && h.base_sequence < 0 {
        return Err(BatchError::InvalidSequence(h.base_sequence));
    }
    Ok(())
}

/// Checks that the records of an uncompressed batch exactly tile `area` and
/// that there are exactly `record_count` of them, numbered 0, 1, 2, ...
fn walk_records(area: &[u8], record_count: i32) -> Result<(), BatchError> {
    let mut reader = Reader::new(area);
    let mut index: i32 = 0;
    while !reader.is_empty() {
        // Stop before parsing a surplus record: the count bounds the work.
        if index >= record_count {
            return Err(BatchError::InvalidRecord("more records than recordCount"));
        }
        let length = reader.read_varint()?;
        let body = reader.take_len(length, "negative record length")?;
        check_record(body, index)?;
        index += 1;
    }
    if index != record_count {
        return Err(BatchError::InvalidRecord("fewer records than recordCount"));
    }
    Ok(())
}

/// Parses one record body (the bytes after its length prefix); every byte
/// must be consumed.
fn check_record(body: &[u8], index: i32) -> Result<(), BatchError> {
    let mut r = Reader::new(body);
    r.read_u8()?; // attributes: unused in v2, Kafka ignores them too
    r.read_varlong()?; // timestampDelta: any value is representable
    if r.read_varint()? != index {
        return Err(BatchError::InvalidRecord("offset delta out of sequence"));
    }
    r.skip_nullable("invalid key length")?;
    r.skip_nullable("invalid value length")?;
    let headers = r.read_varint()?;
    if headers < 0 {
        return Err(BatchError::InvalidRecord("negative header count"));
    }
    // Each header consumes at least two bytes, so a huge count fails fast
    // on running out of body rather than looping long.
    for _ in 0..headers {
        let key_len = r.read_varint()?;
        r.take_len(key_len, "negative header key length")?;
        r.skip_nullable("invalid header value length")?;
    }
    if !r.is_empty() {
        return Err(BatchError::InvalidRecord(
            "record length exceeds its fields",
        ));
    }
    Ok(())
}

/// Bounds-checked cursor over record bytes. All failures are
/// `InvalidRecord`: the batch CRC already vouched for the bytes, so any
/// inconsistency here is a malformed record from the client.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn read_u8(&mut self) -> Result<u8, BatchError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(BatchError::InvalidRecord("record truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    /// Takes `len` bytes; a negative length is rejected with `what`.
    fn take_len(&mut self, len: i32, what: &'static str) -> Result<&'a [u8], BatchError> {
        let len = usize::try_from(len).map_err(|_| BatchError::InvalidRecord(what))?;
        if len > self.buf.len() {
            return Err(BatchError::InvalidRecord("length exceeds record bounds"));
        }
        let (taken, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(taken)
    }

    /// Skips a length-prefixed byte string where -1 means null.
    fn skip_nullable(&mut self, what: &'static str) -> Result<(), BatchError> {
        match self.read_varint()? {
            -1 => Ok(()),
            len => self.take_len(len, what).map(|_| ()),
        }
    }

    fn read_varint(&mut self) -> Result<i32, BatchError> {
        let raw = self.read_unsigned_varint(5, 32)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    fn read_varlong(&mut self) -> Result<i64, BatchError> {
        let raw = self.read_unsigned_varint(10, 64)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// LEB128 decode of at most `max_bytes` bytes into a `bits`-wide value,
    /// rejecting padded (non-minimal) encodings and bits beyond `bits`.
    fn read_unsigned_varint(&mut self, max_bytes: u32, bits: u32) -> Result<u64, BatchError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.read_u8()?;
            let shift = 7 * i;
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(BatchError::InvalidRecord("overlong varint"));
                }
                if shift + 7 > bits && u32::from(byte) >> (bits - shift) != 0 {
                    return Err(BatchError::InvalidRecord("varint overflows its width"));
                }
                return Ok(value | (u64::from(byte) << shift));
            }
            value |= u64::from(byte & 0x7f) << shift;
        }
        Err(BatchError::InvalidRecord("varint too long"))
    }
}

/// Iterates the batches of a log buffer (e.g. bytes read from a segment).
///
/// Yields `Ok((header, range))` for each complete batch whose length, magic
/// and (if `verify_crc`) CRC check out. Returns `None` at the end of the
/// buffer or at a trailing partial batch (a torn write). Yields one `Err` and
/// then stops at a batch that is corrupt: impossible length, wrong magic or
/// bad CRC. In every case, once iteration has stopped, [`valid_len`] is the
/// length of the prefix made of complete, valid batches: the point to
/// truncate to during crash recovery. Note that a zero-filled tail reads as
/// an impossible length, i.e. corruption, as in Kafka.
///
/// [`valid_len`]: BatchIter::valid_len
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    verify_crc: bool,
    done: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8], verify_crc: bool) -> Self {
        BatchIter {
            buf,
            pos: 0,
            verify_crc,
            done: false,
        }
    }

    /// Bytes from the start that form complete, valid batches seen so far.
    pub fn valid_len(&self) -> usize {
        self.pos
    }

    /// Examines the batch at `pos`; `None` means clean end or torn tail.
    fn step(&self) -> Option<Result<(BatchHeader, Range<usize>), BatchError>> {
        let rest = self.buf.get(self.pos..)?;
        if rest.len() < LOG_OVERHEAD {
            return None;
        }
        let batch_length = read_i32(rest, OFF_BATCH_LENGTH).ok()?;
        if batch_length < MIN_BATCH_LENGTH {
            return Some(Err(BatchError::LengthOutOfRange(batch_length)));
        }
        // A visible wrong magic means garbage, not a torn write of a good batch.
        if let Ok(magic) = peek_magic(rest) {
            if magic != MAGIC_V2 {
                return Some(Err(BatchError::UnsupportedMagic(magic)));
            }
        }
        let total = batch_extent(rest).ok()?;
        Some(self.check_complete(rest.get(..total)?))
    }

    fn check_complete(&self, batch: &[u8]) -> Result<(BatchHeader, Range<usize>), BatchError> {
        let header = BatchHeader::parse(batch)?;
        if self.verify_crc {
            check_crc(&header, batch)?;
        }
        Ok((header, self.pos..self.pos + batch.len()))
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        match &item {
            Some(Ok((_, range))) => self.pos = range.end,
            _ => self.done = true,
        }
        item
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    // ---------- builders ----------

    type Header<'a> = (&'a str, Option<&'a [u8]>);

    /// A record for kafka-protocol's encoder. `sequence` must advance with
    /// `offset`, or the encoder splits records into separate batches.
    fn rec(
        offset: i64,
        ts: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Record {
        let headers: IndexMap<StrBytes, Option<Bytes>> = headers
            .iter()
            .map(|(k, v)| {
                (
                    StrBytes::from_string(k.to_string()),
                    v.map(Bytes::copy_from_slice),
                )
            })
            .collect();
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32 - 1,
            timestamp: ts,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers,
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).expect("encode");
        buf.to_vec()
    }

    fn mixed_records(n: i64) -> Vec<Record> {
        (0..n)
            .map(|i| match i % 4 {
                0 => rec(i, 1_000 + i, Some(b"key"), Some(b"value"), &[]),
                1 => rec(
                    i,
                    1_000 + i,
                    None,
                    Some(b"no key"),
                    &[("h1", Some(b"v1")), ("h2", None)],
                ),
                2 => rec(i, 1_000 + i, Some(b""), None, &[("trace", Some(b"abc"))]),
                _ => rec(i, 1_000 + i, Some(&[0xff; 300]), Some(&[7; 1000]), &[]),
            })
            .collect()
    }

    fn small_batch() -> Vec<u8> {
        let recs = [
            rec(0, 10, Some(b"k"), Some(b"v"), &[("h", Some(b"x"))]),
            rec(1, 11, None, Some(b"vv"), &[]),
        ];
        encode(&recs, Compression::None)
    }

    fn zigzag_varint(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    fn nullable(b: Option<&[u8]>, out: &mut Vec<u8>) {
        match b {
            None => zigzag_varint(-1, out),
            Some(b) => {
                zigzag_varint(b.len() as i64, out);
                out.extend_from_slice(b);
            }
        }
    }

    /// Hand-encodes one record, for crafting malformed ones.
    fn raw_record(
        offset_delta: i64,
        key: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        zigzag_varint(0, &mut body);
        zigzag_varint(offset_delta, &mut body);
        nullable(key, &mut body);
        nullable(Some(b"val"), &mut body);
        zigzag_varint(headers.len() as i64, &mut body);
        for (k, v) in headers {
            nullable(Some(k), &mut body);
            nullable(*v, &mut body);
        }
        with_length(&body)
    }

    fn with_length(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        zigzag_varint(body.len() as i64, &mut out);
        out.extend_from_slice(body);
        out
    }

    /// Builds a batch around an arbitrary records area with a correct CRC.
    fn raw_batch(area: &[u8], record_count: i32, attributes: i16) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        put(
            &mut b,
            OFF_BATCH_LENGTH,
            &((BATCH_HEADER_LEN - LOG_OVERHEAD + area.len()) as i32).to_be_bytes(),
        );
        put(&mut b, OFF_LEADER_EPOCH, &(-1i32).to_be_bytes());
        b[OFF_MAGIC] = 2;
        put(&mut b, OFF_ATTRIBUTES, &attributes.to_be_bytes());
        put(
            &mut b,
            OFF_LAST_OFFSET_DELTA,
            &record_count.wrapping_sub(1).to_be_bytes(),
        );
        put(&mut b, OFF_PRODUCER_ID, &(-1i64).to_be_bytes());
        put(&mut b, OFF_PRODUCER_EPOCH, &(-1i16).to_be_bytes());
        put(&mut b, OFF_BASE_SEQUENCE, &(-1i32).to_be_bytes());
        put(&mut b, OFF_RECORD_COUNT, &record_count.to_be_bytes());
        b.extend_from_slice(area);
        fix_crc(&mut b);
        b
    }

    fn fix_crc(b: &mut [u8]) {
        let crc = compute_crc(b);
        put(b, OFF_CRC, &crc.to_be_bytes());
    }

    /// Overwrites a header field and re-signs the batch so only the field check can fail.
    fn patch(b: &[u8], off: usize, bytes: &[u8]) -> Vec<u8> {
        let mut b = b.to_vec();
        put(&mut b, off, bytes);
        fix_crc(&mut b);
        b
    }

    fn area_of(records: &[Vec<u8>]) -> Vec<u8> {
        records.concat()
    }

    // ---------- valid batches from kafka-protocol ----------

    #[test]
    fn encoder_batches_validate_for_every_codec() {
        let codecs = [
            (Compression::None, 0),
            (Compression::Gzip, 1),
            (Compression::Snappy, 2),
            (Compression::Lz4, 3),
            (Compression::Zstd, 4),
        ];
        let recs = mixed_records(9);
        for (compression, id) in codecs {
            let b = encode(&recs, compression);
            let v = validate_records(&b, MAX).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(v.batch_count, 1);
            assert_eq!(v.record_count, 9);
            assert_eq!(v.first, v.last);
            assert_eq!(v.first.compression(), id);
            assert_eq!(v.first.is_compressed(), id != 0);
            assert_eq!(v.first.total_len(), b.len());
            assert_eq!(v.first.last_offset_delta, 8);
            assert_eq!(v.first.base_timestamp, 1_000);
            assert_eq!(v.max_timestamp, 1_008);
            assert_eq!(v.offset_of_max_timestamp_delta, 8);
            assert!(!v.first.has_producer_id());
            assert_eq!(v.first.last_sequence(), -1);
        }
    }

    #[test]
    fn single_record_batch_validates() {
        let b = encode(&[rec(0, 5, None, None, &[])], Compression::None);
        let v = validate_records(&b, MAX).unwrap();
        assert_eq!((v.batch_count, v.record_count), (1, 1));
        assert_eq!(v.first.last_offset(), 0);
    }

    #[test]
    fn concatenated_batches_are_summarised() {
        let a = encode(&mixed_records(3), Compression::None);
        let late: Vec<Record> = (0..4)
            .map(|i| rec(i, 9_000 + i, Some(b"k"), Some(b"v"), &[]))
            .collect();
        let b = encode(&late, Compression::Gzip);
        let c = encode(&[rec(0, 50, None, Some(b"x"), &[])], Compression::Zstd);
        let all = [a.clone(), b, c].concat();
        let v = validate_records(&all, MAX).unwrap();
        assert_eq!(v.batch_count, 3);
        assert_eq!(v.record_count, 8);
        assert_eq!(v.first.compression(), 0);
        assert_eq!(v.last.compression(), 4);
        assert_eq!(v.max_timestamp, 9_003);
        // 3 records precede the gzip batch, whose last offset delta is 3.
        assert_eq!(v.offset_of_max_timestamp_delta, 6);
        // Ties keep the earliest batch.
        let twice = [a.clone(), a].concat();
        let v = validate_records(&twice, MAX).unwrap();
        assert_eq!(v.offset_of_max_timestamp_delta, 2);
    }

    #[test]
    fn idempotent_and_transactional_batches_validate() {
        let recs: Vec<Record> = (0..3)
            .map(|i| Record {
                producer_id: 42,
                producer_epoch: 7,
                sequence: 100 + i as i32,
                transactional: true,
                ..rec(i, 1, Some(b"k"), Some(b"v"), &[])
            })
            .collect();
        let b = encode(&recs, Compression::Snappy);
        let v = validate_records(&b, MAX).unwrap();
        let h = v.first;
        assert!(h.has_producer_id() && h.is_transactional() && !h.is_control());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 7, 100)
        );
        assert_eq!(h.last_sequence(), 102);
    }

    #[test]
    fn encoder_quirks_documented() {
        // kafka-protocol 0.18 starts a new batch whenever offset - sequence
        // changes, so a constant NO_SEQUENCE yields one batch per record...
        let recs: Vec<Record> = (0..3)
            .map(|i| Record {
                sequence: -1,
                ..rec(i, 1, None, None, &[])
            })
            .collect();
        let v = validate_records(&encode(&recs, Compression::None), MAX).unwrap();
        assert_eq!(v.batch_count, 3);
        // ...and it never sets the LogAppendTime attribute bit.
        let r = Record {
            timestamp_type: TimestampType::LogAppend,
            ..rec(0, 1, None, None, &[])
        };
        let h = BatchHeader::parse(&encode(&[r], Compression::None)).unwrap();
        assert!(!h.is_log_append_time());
    }

    // ---------- header accessors ----------

    #[test]
    fn header_accessors() {
        let mut h = BatchHeader::parse(&small_batch()).unwrap();
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 2);
        h.base_offset = 100;
        assert_eq!(h.last_offset(), 101);
        h.attributes = 0b11_1011;
        assert_eq!(h.compression(), 3);
        assert!(h.is_log_append_time() && h.is_transactional() && h.is_control());
        h.base_sequence = i32::MAX - 1;
        h.last_offset_delta = 3;
        assert_eq!(h.last_sequence(), 1);
        h.base_sequence = i32::MAX;
        h.last_offset_delta = 0;
        assert_eq!(h.last_sequence(), i32::MAX);
        h.batch_length = -100;
        assert_eq!(h.total_len(), 0);
        h.base_offset = i64::MAX;
        let _ = h.last_offset(); // must not panic
        assert!(BatchHeader::parse(&[0u8; 60]).is_err());
    }

    #[test]
    fn peek_magic_needs_17_bytes() {
        assert_eq!(peek_magic(&[0u8; 16]), Err(BatchError::Truncated));
        let mut b = [0u8; 17];
        b[16] = 2;
        assert_eq!(peek_magic(&b), Ok(2));
    }

    // ---------- rejections ----------

    #[test]
    fn empty_payload_rejected() {
        assert_eq!(validate_records(&[], MAX), Err(BatchError::Empty));
    }

    #[test]
    fn every_truncation_rejected() {
        let b = [small_batch(), encode(&mixed_records(2), Compression::Lz4)].concat();
        for n in 1..b.len() {
            if n == small_batch().len() {
                continue; // a whole first batch is valid on its own
            }
            assert_eq!(
                validate_records(&b[..n], MAX),
                Err(BatchError::Truncated),
                "len {n}"
            );
        }
    }

    #[test]
    fn legacy_magic_is_unsupported_for_message_format() {
        for magic in [0u8, 1] {
            let mut b = small_batch();
            b[OFF_MAGIC] = magic; // magic is outside the CRC
            let err = validate_records(&b, MAX).unwrap_err();
            assert_eq!(err, BatchError::UnsupportedMagic(magic as i8));
            assert_eq!(err.kafka_error_code(), 43);
            // Even a short legacy message set is reported as legacy.
            assert_eq!(
                validate_records(&b[..30], MAX),
                Err(BatchError::UnsupportedMagic(magic as i8))
            );
        }
        let mut b = small_batch();
        b[OFF_MAGIC] = 3;
        assert_eq!(validate_records(&b, MAX).unwrap_err().kafka_error_code(), 2);
    }

    #[test]
    fn crc_mismatch_rejected() {
        let mut b = small_batch();
        let last = b.len() - 1;
        b[last] ^= 1;
        let err = validate_records(&b, MAX).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }), "{err:?}");
        assert_eq!(err.kafka_error_code(), 2);
    }

    #[test]
    fn length_field_out_of_range() {
        for len in [-1i32, 0, 48, i32::MIN] {
            let mut b = small_batch();
            put(&mut b, OFF_BATCH_LENGTH, &len.to_be_bytes());
            assert_eq!(
                validate_records(&b, MAX),
                Err(BatchError::LengthOutOfRange(len))
            );
        }
        let mut b = small_batch();
        put(&mut b, OFF_BATCH_LENGTH, &i32::MAX.to_be_bytes());
        assert_eq!(validate_records(&b, MAX), Err(BatchError::Truncated));
    }

    #[test]
    fn header_field_rules() {
        let b = small_batch();
        let bad_codec = patch(&b, OFF_ATTRIBUTES, &5i16.to_be_bytes());
        assert_eq!(
            validate_records(&bad_codec, MAX),
            Err(BatchError::InvalidCompression(5))
        );
        let zero = patch(
            &patch(&b, OFF_RECORD_COUNT, &0i32.to_be_bytes()),
            OFF_LAST_OFFSET_DELTA,
            &(-1i32).to_be_bytes(),
        );
        assert_eq!(
            validate_records(&zero, MAX),
            Err(BatchError::InvalidRecordCount(0))
        );
        let delta = patch(&b, OFF_LAST_OFFSET_DELTA, &5i32.to_be_bytes());
        let want = BatchError::InvalidLastOffsetDelta {
            last_offset_delta: 5,
            record_count: 2,
        };
        assert_eq!(validate_records(&delta, MAX), Err(want));
        let control = patch(&b, OFF_ATTRIBUTES, &CONTROL_BIT.to_be_bytes());
        assert_eq!(
            validate_records(&control, MAX),
            Err(BatchError::ControlBatch)
        );
        let idem = patch(&b, OFF_PRODUCER_ID, &9i64.to_be_bytes());
        assert_eq!(
            validate_records(&idem, MAX),
            Err(BatchError::InvalidSequence(-1))
        );
        assert_eq!(BatchError::InvalidCompression(5).kafka_error_code(), 2);
        assert_eq!(BatchError::InvalidRecordCount(0).kafka_error_code(), 87);
        assert_eq!(BatchError::Empty.kafka_error_code(), 87);
    }

    #[test]
    fn control_batch_from_encoder_rejected() {
        let r = Record {
            control: true,
            ..rec(0, 1, None, None, &[])
        };
        let err = validate_records(&encode(&[r], Compression::None), MAX).unwrap_err();
        assert_eq!(
            (err.clone(), err.kafka_error_code()),
            (BatchError::ControlBatch, 87)
        );
    }

    #[test]
    fn max_batch_bytes_enforced() {
        let b = small_batch();
        assert!(validate_records(&b, b.len()).is_ok());
        let err = validate_records(&b, b.len() - 1).unwrap_err();
        assert_eq!(
            err,
            BatchError::RecordTooLarge {
                size: b.len(),
                max: b.len() - 1
            }
        );
        assert_eq!(err.kafka_error_code(), 10);
    }

    #[test]
    fn hand_built_batch_matches_encoder() {
        let recs = [
            rec(0, 0, Some(b"k"), Some(b"val"), &[]),
            rec(1, 0, None, Some(b"val"), &[("h", None)]),
        ];
        let encoded = encode(&recs, Compression::None);
        let area = area_of(&[
            raw_record(0, Some(b"k"), &[]),
            raw_record(1, None, &[(b"h", None)]),
        ]);
        let mut built = raw_batch(&area, 2, 0);
        put(
            &mut built,
            OFF_BASE_TIMESTAMP,
            &encoded[OFF_BASE_TIMESTAMP..OFF_MAX_TIMESTAMP + 8],
        );
        fix_crc(&mut built);
        assert_eq!(built, encoded);
    }

    fn record_error(records: &[Vec<u8>], count: i32) -> BatchError {
        validate_records(&raw_batch(&area_of(records), count, 0), MAX).unwrap_err()
    }

    #[test]
    fn malformed_records_rejected() {
        let ok0 = raw_record(0, Some(b"k"), &[]);
        let ok1 = raw_record(1, None, &[(b"h", Some(b"v"))]);
        assert!(
            validate_records(&raw_batch(&area_of(&[ok0.clone(), ok1.clone()]), 2, 0), MAX).is_ok()
        );
        let cases: Vec<(Vec<Vec<u8>>, i32)> = vec![
            (vec![ok0.clone(), raw_record(2, None, &[])], 2), // offset delta gap
            (vec![raw_record(1, None, &[])], 1),              // first delta not 0
            (vec![ok0.clone()], 2),                           // too few records
            (vec![ok0.clone(), ok1.clone()], 1),              // too many records
            (vec![ok0.clone(), ok1[..ok1.len() - 1].to_vec()], 2), // truncated last record
            (vec![with_length(&[0, 0, 0, 3, 0, 0, 0])], 1),   // key length -2
            (vec![with_length(&[0, 0, 0, 1, 0, 2, 1, 0])], 1), // header key length -1
            (vec![with_length(&[0, 0, 0, 1, 1, 1])], 1),      // negative header count
            (vec![with_length(&[0, 0, 0, 1, 1, 0, 9])], 1),   // trailing byte inside record
            (vec![with_length(&[0, 0, 0, 1, 1])], 1),         // missing header count
            (vec![with_length(&[0, 0x80, 0x00, 0, 1, 1, 0])], 1), // overlong timestamp varint
            (
                vec![with_length(&[
                    0, 0, 0, 0x81, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 0,
                ])],
                1,
            ), // 6-byte varint
            (
                vec![with_length(&[0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x1f, 1, 0])],
                1,
            ), // >32-bit varint
            (vec![vec![1]], 1),                               // negative record length
            (vec![vec![0x7e]], 1),                            // record length beyond area
            (vec![vec![0]], 1),                               // empty record
        ];
        for (i, (records, count)) in cases.iter().enumerate() {
            let err = record_error(records, *count);
            assert!(
                matches!(err, BatchError::InvalidRecord(_)),
                "case {i}: {err:?}"
            );
            assert_eq!(err.kafka_error_code(), 87);
        }
    }

    #[test]
    fn compressed_batches_are_not_walked() {
        // Garbage after a valid header is fine for compressed batches: we only
        // check the header, the log's readers decompress.
        let b = raw_batch(&[0xde, 0xad], 5, 1);
        assert_eq!(validate_records(&b, MAX).unwrap().record_count, 5);
    }

    #[test]
    fn varint_edges() {
        let decode = |bytes: &[u8]| Reader::new(bytes).read_varint();
        assert_eq!(decode(&[0x00]), Ok(0));
        assert_eq!(decode(&[0x01]), Ok(-1));
        assert_eq!(decode(&[0x02]), Ok(1));
        assert_eq!(decode(&[0xfe, 0xff, 0xff, 0xff, 0x0f]), Ok(i32::MAX));
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(i32::MIN));
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
        assert!(decode(&[0x80]).is_err());
        assert!(decode(&[]).is_err());
        let mut max = Vec::new();
        zigzag_varint(i64::MIN, &mut max);
        assert_eq!(max.len(), 10);
        assert_eq!(Reader::new(&max).read_varlong(), Ok(i64::MIN));
        max[9] = 0x03;
        assert!(Reader::new(&max).read_varlong().is_err());
    }

    // ---------- in-place rewrites ----------

    #[test]
    fn set_base_offset_keeps_crc_valid() {
        let mut b = small_batch();
        set_base_offset(&mut b, 123_456_789);
        let v = validate_records(&b, MAX).unwrap();
        assert_eq!(v.first.base_offset, 123_456_789);
        assert_eq!(v.first.last_offset(), 123_456_790);
        set_partition_leader_epoch(&mut b, 17);
        assert_eq!(
            validate_records(&b, MAX)
                .unwrap()
                .first
                .partition_leader_epoch,
            17
        );
    }

    #[test]
    fn set_log_append_time_resigns_batch() {
        for compression in [Compression::None, Compression::Zstd] {
            let mut b = encode(&mixed_records(3), compression);
            let before = BatchHeader::parse(&b).unwrap();
            set_log_append_time(&mut b, 77_777);
            let h = validate_records(&b, MAX).unwrap().first;
            assert!(h.is_log_append_time());
            assert_eq!(h.max_timestamp, 77_777);
            assert_eq!(h.base_timestamp, before.base_timestamp);
            assert_eq!(h.compression(), before.compression());
            assert_eq!(h.crc, compute_crc(&b));
        }
    }

    #[test]
    fn mutators_ignore_short_buffers() {
        let mut tiny = [0u8; 5];
        set_base_offset(&mut tiny, 1);
        set_partition_leader_epoch(&mut tiny, 1);
        set_log_append_time(&mut tiny, 1);
        assert_eq!(tiny, [0u8; 5]);
        // Only the batch's own bytes are checksummed, not what follows it.
        let mut two = [small_batch(), small_batch()].concat();
        set_log_append_time(&mut two, 5);
        assert_eq!(validate_records(&two, MAX).unwrap().batch_count, 2);
        assert_eq!(compute_crc(&[]), crc32c::crc32c(&[]));
    }

    // ---------- BatchIter ----------

    fn three_batches() -> (Vec<u8>, [usize; 3]) {
        let a = small_batch();
        let b = encode(&mixed_records(5), Compression::Gzip);
        let c = encode(&mixed_records(2), Compression::None);
        let lens = [a.len(), b.len(), c.len()];
        ([a, b, c].concat(), lens)
    }

    #[test]
    fn iter_walks_complete_log() {
        let (log, lens) = three_batches();
        let mut it = BatchIter::new(&log, true);
        let got: Vec<_> = it.by_ref().map(|r| r.unwrap().1).collect();
        assert_eq!(
            got,
            vec![
                0..lens[0],
                lens[0]..lens[0] + lens[1],
                lens[0] + lens[1]..log.len()
            ]
        );
        assert_eq!(it.valid_len(), log.len());
        assert!(BatchIter::new(&[], true).next().is_none());
    }

    #[test]
    fn iter_stops_at_partial_tail() {
        let (log, lens) = three_batches();
        let two = lens[0] + lens[1];
        for cut in [
            two + 1,
            two + 11,
            two + 12,
            two + 16,
            two + 17,
            two + 61,
            log.len() - 1,
        ] {
            let mut it = BatchIter::new(&log[..cut], true);
            assert_eq!(it.by_ref().filter(|r| r.is_ok()).count(), 2, "cut {cut}");
            assert_eq!(it.valid_len(), two);
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn iter_reports_corrupt_middle_batch_once() {
        let (mut log, lens) = three_batches();
        log[lens[0] + 70] ^= 0x40;
        let items: Vec<_> = BatchIter::new(&log, true).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(BatchError::CrcMismatch { .. })));
        let mut it = BatchIter::new(&log, true);
        it.by_ref().for_each(drop);
        assert_eq!(it.valid_len(), lens[0]);
        // Without CRC checks the structurally intact log reads through.
        assert_eq!(BatchIter::new(&log, false).filter(|r| r.is_ok()).count(), 3);
    }

    #[test]
    fn iter_reports_bad_length_and_magic() {
        let (log, lens) = three_batches();
        let mut zeroed = log.clone();
        zeroed[lens[0]..].iter_mut().for_each(|b| *b = 0);
        let items: Vec<_> = BatchIter::new(&zeroed, true).collect();
        assert_eq!(items[1], Err(BatchError::LengthOutOfRange(0)));
        let mut magic = log.clone();
        magic[lens[0] + OFF_MAGIC] = 1;
        let mut it = BatchIter::new(&magic[..lens[0] + 30], false);
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.next(), Some(Err(BatchError::UnsupportedMagic(1))));
        assert_eq!((it.next(), it.valid_len()), (None, lens[0]));
    }

    // ---------- property tests ----------

    /// Positions outside the CRC that the broker itself rewrites.
    fn mutation_is_harmless(pos: usize) -> bool {
        pos < OFF_BATCH_LENGTH || (OFF_LEADER_EPOCH..OFF_MAGIC).contains(&pos)
    }

    #[test]
    fn every_single_byte_mutation_exhaustively() {
        let b = small_batch();
        for pos in 0..b.len() {
            for delta in 1..=255u8 {
                let mut m = b.clone();
                m[pos] = m[pos].wrapping_add(delta);
                assert_eq!(
                    validate_records(&m, MAX).is_ok(),
                    mutation_is_harmless(pos),
                    "pos {pos} +{delta}"
                );
            }
        }
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max))
    }

    fn arb_compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
            Just(Compression::Lz4),
            Just(Compression::Zstd),
        ]
    }

    type ArbRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn arb_record() -> impl Strategy<Value = ArbRecord> {
        let headers = proptest::collection::vec(("[a-z]{0,6}", arb_bytes(8)), 0..3);
        (
            -1_000_000i64..1_000_000,
            arb_bytes(40),
            arb_bytes(200),
            headers,
        )
    }

    proptest! {
        #[test]
        fn prop_single_byte_mutation(pos in 0usize..1000, delta in 1u8..=255) {
            let b = small_batch();
            let pos = pos % b.len();
            let mut m = b.clone();
            m[pos] = m[pos].wrapping_add(delta);
            let res = validate_records(&m, MAX);
            prop_assert_eq!(res.is_ok(), mutation_is_harmless(pos), "pos {} -> {:?}", pos, res);
        }

        #[test]
        fn prop_encoder_output_validates(
            recs in proptest::collection::vec(arb_record(), 1..12),
            compression in arb_compression(),
        ) {
            let records: Vec<Record> = recs
                .iter()
                .enumerate()
                .map(|(i, (ts, k, v, hs))| {
                    let hs: Vec<Header> = hs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                    rec(i as i64, *ts, k.as_deref(), v.as_deref(), &hs)
                })
                .collect();
            let b = encode(&records, compression);
            let v = validate_records(&b, MAX).unwrap();
            prop_assert_eq!(v.record_count, recs.len() as u64);
            prop_assert_eq!(v.batch_count, 1);
            prop_assert_eq!(v.max_timestamp, recs.iter().map(|r| r.0).max().unwrap());
            let it: Vec<_> = BatchIter::new(&b, true).collect();
            prop_assert_eq!(it.len(), 1);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..400) {
            let _ = validate_records(&bytes, max);
            let _ = BatchHeader::parse(&bytes).map(|h| (h.total_len(), h.last_offset(), h.last_sequence()));
            let _ = peek_magic(&bytes);
            let _ = compute_crc(&bytes);
            for verify in [true, false] {
                check_iter_invariants(&bytes, verify)?;
            }
            let mut m = bytes.clone();
            set_log_append_time(&mut m, 1);
            set_base_offset(&mut m, 1);
            set_partition_leader_epoch(&mut m, 1);
        }

        #[test]
        fn prop_random_record_area_never_panics(
            area in proptest::collection::vec(any::<u8>(), 0..200),
            count in -2i32..6,
            attributes in any::<i16>(),
        ) {
            // A correct header and CRC so the record walker sees the garbage.
            let b = raw_batch(&area, count, attributes & !CONTROL_BIT);
            let _ = validate_records(&b, MAX);
            check_iter_invariants(&b, true)?;
        }

        #[test]
        fn prop_varints_roundtrip(v in any::<i64>(), w in any::<i32>()) {
            let mut buf = Vec::new();
            zigzag_varint(v, &mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.read_varlong(), Ok(v));
            prop_assert!(r.is_empty());
            buf.clear();
            zigzag_varint(i64::from(w), &mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.read_varint(), Ok(w));
            prop_assert!(r.is_empty());
        }
    }

    /// Ranges are contiguous from 0, at most one error comes last, and
    /// `valid_len` is where the last good batch ended.
    fn check_iter_invariants(bytes: &[u8], verify: bool) -> Result<(), TestCaseError> {
        let mut it = BatchIter::new(bytes, verify);
        let mut end = 0;
        let mut errored = false;
        for item in it.by_ref() {
            prop_assert!(!errored);
            match item {
                Ok((h, range)) => {
                    prop_assert_eq!(range.start, end);
                    prop_assert_eq!(range.len(), h.total_len());
                    prop_assert!(range.end <= bytes.len());
                    end = range.end;
                }
                Err(_) => errored = true,
            }
        }
        prop_assert_eq!(it.valid_len(), end);
        prop_assert!(it.next().is_none());
        Ok(())
    }
}
