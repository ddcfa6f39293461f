//! What Produce checks record by record (KIP-467), as Kafka's
//! `LogValidator.validateRecord` does: keys on a compacted topic, timestamps
//! on a CreateTime topic. Each bad record is named by its index in the batch,
//! so that clients fail those records and resend the others.

use bytes::Bytes;

use crate::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::compression::DecompressError;
use crate::protocol::errors::ErrorCode;
use crate::protocol::records::{records_area, RecordIter};

/// What Produce checks record by record (KIP-467): keys on a compacted topic,
/// timestamps on a CreateTime topic.
#[derive(Debug, Clone, Copy)]
pub struct RecordRules {
    /// Every record needs a key (`cleanup.policy` includes `compact`).
    pub keys_required: bool,
    /// CreateTime topics: the accepted timestamp range `[low, high]` (from
    /// `message.timestamp.before/after.max.ms` and the broker clock). None for
    /// LogAppendTime topics, whose timestamps the broker overwrites.
    pub create_time_range: Option<(i64, i64)>,
}

/// One refused record: its index in the batch and why (Kafka's
/// `ProduceResponse.RecordError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// Why Produce refused a batch after looking at its records.
#[derive(Debug, thiserror::Error)]
pub enum RecordCheckError {
    /// Particular records break the rules: the partition's error code, the
    /// error message, and each bad record.
    #[error("{message}")]
    Records {
        code: ErrorCode,
        message: String,
        errors: Vec<RecordError>,
    },
    /// The records could not be looked at: beyond the decompression limit.
    #[error("{0}")]
    TooLarge(DecompressError),
    #[error("{0}")]
    Invalid(String),
}

impl RecordCheckError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RecordCheckError::Records { code, .. } => *code,
            RecordCheckError::Invalid(_) => ErrorCode::InvalidRecord,
            RecordCheckError::TooLarge(_) => ErrorCode::MessageTooLarge,
        }
    }
}

/// Checks each record of `records` (validated batches) against `rules`, as
/// Kafka's `LogValidator.validateRecord` does: a missing key on a compacted
/// topic (INVALID_RECORD), else a CreateTime timestamp out of range or a batch
/// that claims LogAppendTime (INVALID_TIMESTAMP). Every bad record is named by
/// its index, so the client can fail those and resend the others. The records
/// are decompressed within `decompressed_bytes_max` (see `protocol::compression`);
/// a batch beyond it is refused with MESSAGE_TOO_LARGE (the Java producer
/// splits such a batch and retries). `topic_partition` is for the messages.
pub fn check_records(
    records: &Bytes,
    rules: RecordRules,
    decompressed_bytes_max: usize,
    topic_partition: &str,
) -> Result<(), RecordCheckError> {
    let invalid = |e: String| RecordCheckError::Invalid(e);
    let mut errors = Vec::new();
    let mut timestamp_errors = false;
    let mut position = 0;
    while position + BATCH_HEADER_LEN <= records.len() {
        let header =
            BatchHeader::parse(&records[position..]).map_err(|e| invalid(e.to_string()))?;
        let end = position + header.total_len();
        if header.total_len() < BATCH_HEADER_LEN || end > records.len() {
            return Err(invalid("truncated batch".to_string()));
        }
        let batch = records.slice(position..end);
        let area = records_area(&header, &batch, decompressed_bytes_max).map_err(|e| match e {
            DecompressError::TooLarge { .. } => RecordCheckError::TooLarge(e),
            other => invalid(other.to_string()),
        })?;
        for (index, record) in RecordIter::new(&area, header.record_count).enumerate() {
            let record = record.map_err(invalid)?;
            let batch_index = index as i32;
            if rules.keys_required && record.key.is_none() {
                errors.push(RecordError {
                    batch_index,
                    message: format!(
                        "Compacted topic cannot accept message without key in topic partition {topic_partition}"
                    ),
                });
                continue;
            }
            let offset = header
                .base_offset
                .wrapping_add(i64::from(record.offset_delta));
            let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
            const NO_TIMESTAMP: i64 = -1;
            // Kafka refuses a producer's LogAppendTime where it does not
            // range-check the timestamp (a LogAppendTime topic, or no
            // timestamp); Sluice refuses it on CreateTime topics too, where
            // Kafka would rewrite the batch's timestamp type.
            if header.is_log_append_time() {
                timestamp_errors = true;
                errors.push(RecordError {
                    batch_index,
                    message: format!(
                        "Invalid timestamp type in message with offset {offset}. Producer should not set timestamp type to LogAppendTime."
                    ),
                });
                continue;
            }
            let Some((low, high)) = rules.create_time_range else {
                continue;
            };
            if timestamp != NO_TIMESTAMP
                && (timestamp < NO_TIMESTAMP || timestamp < low || timestamp > high)
            {
                timestamp_errors = true;
                errors.push(RecordError {
                    batch_index,
                    message: format!(
                        "Timestamp {timestamp} of message with offset {offset} is out of range. The timestamp should be within [{low}, {high}]"
                    ),
                });
            }
        }
        position = end;
    }
    if errors.is_empty() {
        return Ok(());
    }
    // Kafka's `LogValidator.processRecordErrors`: any timestamp error makes it
    // INVALID_TIMESTAMP, otherwise INVALID_RECORD naming the first three.
    let (code, message) = if timestamp_errors {
        (
            ErrorCode::InvalidTimestamp,
            "One or more records have been rejected due to invalid timestamp".to_string(),
        )
    } else {
        let first: Vec<String> = errors
            .iter()
            .take(3)
            .map(|e| {
                format!(
                    "RecordError(batchIndex={}, message='{}')",
                    e.batch_index, e.message
                )
            })
            .collect();
        (
            ErrorCode::InvalidRecord,
            format!(
                "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
                errors.len(),
                first.join(", ")
            ),
        )
    };
    Err(RecordCheckError::Records {
        code,
        message,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::compression::DECOMPRESSED_BYTES_FLOOR;
    use crate::protocol::encode;
    use kafka_protocol::records::{Compression, Record};

    fn record(index: i64, timestamp: i64, key: Option<&str>, value: Option<&str>) -> Record {
        encode::record(
            index,
            timestamp,
            key.map(|k| Bytes::from(k.to_string())),
            value.map(|v| Bytes::from(v.to_string())),
            None,
        )
    }

    const KEYS: RecordRules = RecordRules {
        keys_required: true,
        create_time_range: None,
    };

    /// A producer must not claim LogAppendTime: refused on a LogAppendTime
    /// topic (as Kafka does) and on a CreateTime one (where Kafka would
    /// rewrite the type).
    #[test]
    fn a_producers_log_append_time_is_refused() {
        let batch =
            encode::encode_batch(&[record(0, 1_500, Some("k"), Some("v"))], Compression::None);
        // Attribute bit 3 (LogAppendTime), then the CRC again.
        let mut bytes = batch.to_vec();
        bytes[22] |= 0x08;
        let crc = crate::protocol::batch::compute_crc(&bytes);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = Bytes::from(bytes);
        assert!(BatchHeader::parse(&batch).unwrap().is_log_append_time());
        for create_time_range in [None, Some((1_000, 2_000))] {
            let rules = RecordRules {
                keys_required: false,
                create_time_range,
            };
            let error = check_records(&batch, rules, DECOMPRESSED_BYTES_FLOOR, "t-0").unwrap_err();
            assert_eq!(
                error.error_code(),
                ErrorCode::InvalidTimestamp,
                "{create_time_range:?}"
            );
        }
    }

    #[test]
    fn records_without_keys_are_refused_and_dropped() {
        let limit = DECOMPRESSED_BYTES_FLOOR;
        let keyed = encode::encode_batch(&[record(0, 1, Some("k"), Some("v"))], Compression::None);
        assert!(check_records(&keyed, KEYS, limit, "t-0").is_ok());
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let batch = encode::encode_batch(
                &[
                    record(0, 1, Some("k"), Some("v")),
                    record(1, 1, None, Some("v")),
                    record(2, 1, Some("k"), Some("v")),
                    record(3, 1, None, Some("v")),
                ],
                compression,
            );
            let error = check_records(&batch, KEYS, limit, "t-0").unwrap_err();
            assert_eq!(error.error_code(), ErrorCode::InvalidRecord);
            let RecordCheckError::Records {
                message, errors, ..
            } = error
            else {
                panic!("not a record error");
            };
            assert!(message.contains("2 record errors"), "{message}");
            assert_eq!(
                errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(),
                [1, 3]
            );
            assert!(errors[0]
                .message
                .contains("without key in topic partition t-0"));
        }
    }

    #[test]
    fn timestamps_are_checked_record_by_record() {
        let limit = DECOMPRESSED_BYTES_FLOOR;
        let rules = RecordRules {
            keys_required: false,
            create_time_range: Some((1_000, 2_000)),
        };
        let batch = encode::encode_batch(
            &[
                record(0, 1_500, None, Some("in")),
                record(1, 500, None, Some("old")),
                record(2, 2_500, None, Some("ahead")),
                record(3, 2_000, None, Some("edge")),
            ],
            Compression::Lz4,
        );
        let error = check_records(&batch, rules, limit, "t-0").unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::InvalidTimestamp);
        let RecordCheckError::Records { errors, .. } = error else {
            panic!("not a record error");
        };
        assert_eq!(
            errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(
            errors[0].message.contains("within [1000, 2000]"),
            "{:?}",
            errors[0]
        );
        // A keyless record on a compacted topic is reported once, for its key.
        let both = RecordRules {
            keys_required: true,
            ..rules
        };
        let RecordCheckError::Records { code, errors, .. } =
            check_records(&batch, both, limit, "t-0").unwrap_err()
        else {
            panic!("not a record error");
        };
        assert_eq!((code, errors.len()), (ErrorCode::InvalidRecord, 4));
    }
}
