//! Transaction markers: the control batches that end a transaction on a
//! partition (KIP-98). One record, in a batch with the transactional and
//! control attributes set, no compression, base sequence -1 and the
//! producer's id and epoch:
//!
//! - key: `int16 version` (0), `int16 type` (0 abort, 1 commit);
//! - value: `int16 version` (0), `int32 coordinator epoch`.
//!
//! Kafka parses a value of a higher version as version 0 (its fields come
//! first), and refuses a key of another version; so does this.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::batch::{compute_crc, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD, MAGIC_V2};
use crate::protocol::records::RecordIter;

/// Attribute bits of a marker batch: transactional (4) and control (5).
const MARKER_ATTRIBUTES: i16 = 0x10 | 0x20;
const KEY_BYTES: usize = 4;
const VALUE_BYTES: usize = 6;

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// Commit (true) or abort (false).
    pub commit: bool,
    /// The coordinator epoch that wrote it: a partition refuses a marker
    /// from an older coordinator than the last one it heard from.
    pub coordinator_epoch: i32,
}

/// Why a control batch is not a transaction marker we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    #[error("the batch is not a control batch")]
    NotControl,
    #[error("a control batch must hold exactly one record, not {0}")]
    RecordCount(i32),
    #[error("a control record is malformed: {0}")]
    Malformed(String),
    #[error("control record key version {0} is not 0")]
    KeyVersion(i16),
    #[error("control record type {0} is not a transaction marker")]
    UnknownType(i16),
    #[error("transaction marker value version {0} is negative")]
    ValueVersion(i16),
}

/// The marker batch for `producer_id`/`producer_epoch` (base offset 0; the
/// log patches it), stamped `timestamp_ms`.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp_ms: i64,
) -> Bytes {
    let mut record = BytesMut::with_capacity(24);
    record.put_i8(0); // attributes
    record.put_u8(0); // timestamp delta 0 (varlong)
    record.put_u8(0); // offset delta 0 (varint)
    record.put_u8(zigzag(KEY_BYTES)); // key length
    record.put_i16(0); // key version
    record.put_i16(i16::from(marker.commit));
    record.put_u8(zigzag(VALUE_BYTES)); // value length
    record.put_i16(0); // value version
    record.put_i32(marker.coordinator_epoch);
    record.put_u8(0); // no headers
    let record_len = record.len();

    let total = BATCH_HEADER_LEN + 1 + record_len;
    let mut batch = BytesMut::with_capacity(total);
    batch.put_i64(0); // base offset
    batch.put_i32((total - LOG_OVERHEAD) as i32); // batch length
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(MAGIC_V2);
    batch.put_u32(0); // crc, below
    batch.put_i16(MARKER_ATTRIBUTES);
    batch.put_i32(0); // last offset delta
    batch.put_i64(timestamp_ms); // base timestamp
    batch.put_i64(timestamp_ms); // max timestamp
    batch.put_i64(producer_id);
    batch.put_i16(producer_epoch);
    batch.put_i32(-1); // base sequence
    batch.put_i32(1); // record count
    batch.put_u8(zigzag(record_len));
    batch.extend_from_slice(&record);
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// A small non-negative length as a one-byte zigzag varint.
fn zigzag(len: usize) -> u8 {
    debug_assert!(len < 64);
    (len as u8) << 1
}

/// Reads the marker of a control batch (`batch` whole, CRC already checked).
pub fn parse_marker(header: &BatchHeader, batch: &[u8]) -> Result<EndTxnMarker, MarkerError> {
    if !header.is_control() {
        return Err(MarkerError::NotControl);
    }
    if header.record_count != 1 {
        return Err(MarkerError::RecordCount(header.record_count));
    }
    if header.is_compressed() {
        return Err(MarkerError::Malformed("compressed".into()));
    }
    let area = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
    let record = RecordIter::new(area, 1)
        .next()
        .ok_or_else(|| MarkerError::Malformed("no record".into()))?
        .map_err(MarkerError::Malformed)?;
    let key = record
        .key
        .filter(|k| k.len() >= KEY_BYTES)
        .ok_or_else(|| MarkerError::Malformed("key shorter than 4 bytes".into()))?;
    let key_version = i16::from_be_bytes([key[0], key[1]]);
    if key_version != 0 {
        return Err(MarkerError::KeyVersion(key_version));
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        0 => false,
        1 => true,
        other => return Err(MarkerError::UnknownType(other)),
    };
    let value = record
        .value
        .filter(|v| v.len() >= VALUE_BYTES)
        .ok_or_else(|| MarkerError::Malformed("value shorter than 6 bytes".into()))?;
    let value_version = i16::from_be_bytes([value[0], value[1]]);
    if value_version < 0 {
        return Err(MarkerError::ValueVersion(value_version));
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Ok(EndTxnMarker {
        commit,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchIter;
    use kafka_protocol::records::{RecordBatchDecoder, RecordSet};

    fn marker(commit: bool) -> EndTxnMarker {
        EndTxnMarker {
            commit,
            coordinator_epoch: 7,
        }
    }

    #[test]
    fn a_marker_batch_round_trips_and_is_what_kafka_writes() {
        for commit in [false, true] {
            let batch = marker_batch(42, 3, marker(commit), 1_700_000_000_000);
            let header = BatchHeader::parse(&batch).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (42, 3, -1)
            );
            assert_eq!((header.record_count, header.last_offset_delta), (1, 0));
            assert_eq!(header.total_len(), batch.len());
            // The CRC checks out.
            let checked: Vec<_> = BatchIter::new(&batch, true).collect();
            assert_eq!(checked.len(), 1);
            assert!(checked[0].is_ok());
            assert_eq!(parse_marker(&header, &batch), Ok(marker(commit)));
            // An independent decoder sees one control record, key (0, type)
            // and value (0, coordinator epoch).
            let mut bytes = batch.clone();
            let RecordSet { records, .. } = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(records.len(), 1);
            let record = &records[0];
            assert!(record.control && record.transactional);
            assert_eq!(
                record.key.as_deref(),
                Some(&[0, 0, 0, u8::from(commit)][..])
            );
            assert_eq!(record.value.as_deref(), Some(&[0, 0, 0, 0, 0, 7][..]));
        }
    }

    #[test]
    fn malformed_markers_are_refused() {
        let batch = marker_batch(1, 0, marker(true), 0);
        let header = BatchHeader::parse(&batch).unwrap();
        let mut data = header;
        data.attributes = 0x10;
        assert_eq!(parse_marker(&data, &batch), Err(MarkerError::NotControl));
        let mut two = header;
        two.record_count = 2;
        assert_eq!(parse_marker(&two, &batch), Err(MarkerError::RecordCount(2)));
        // Key version 1, an unknown type, a negative value version.
        let record_at = BATCH_HEADER_LEN + 1;
        let key_at = record_at + 4;
        let value_at = key_at + KEY_BYTES + 1;
        for (at, bytes, expected) in [
            (key_at, [0u8, 1], MarkerError::KeyVersion(1)),
            (key_at + 2, [0, 5], MarkerError::UnknownType(5)),
            (value_at, [0xff, 0xff], MarkerError::ValueVersion(-1)),
        ] {
            let mut changed = batch.to_vec();
            changed[at..at + 2].copy_from_slice(&bytes);
            assert_eq!(parse_marker(&header, &changed), Err(expected));
        }
        // A value of a higher version is read as version 0.
        let mut newer = batch.to_vec();
        newer[value_at..value_at + 2].copy_from_slice(&[0, 1]);
        assert_eq!(parse_marker(&header, &newer), Ok(marker(true)));
        // Truncated: never a panic.
        for len in 0..batch.len() {
            assert!(parse_marker(&header, &batch[..len]).is_err());
        }
    }
}
