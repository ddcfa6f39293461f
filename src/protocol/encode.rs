//! Building record batches with the `kafka-protocol` encoder: for the broker's
//! own logs (the metadata log), and for benchmarks and tests.
//!
//! The encoder starts a new batch whenever `offset - sequence` changes between
//! consecutive records, so the records made here keep that difference constant
//! (sequence -1, 0, 1, … for non-idempotent records, whose batch then carries
//! base sequence -1 as Kafka expects).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The producer fields of an idempotent batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Record `index` of a batch (its offset delta), with the given contents.
pub fn record(
    index: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    producer: Option<ProducerFields>,
) -> Record {
    let (producer_id, producer_epoch, sequence) = match producer {
        Some(p) => (
            p.producer_id,
            p.producer_epoch,
            p.base_sequence.wrapping_add(index as i32),
        ),
        None => (-1, -1, index as i32 - 1),
    };
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: index,
        sequence,
        timestamp: timestamp_ms,
        key,
        value,
        headers: Default::default(),
    }
}

/// Encodes `records` (made with [`record`]) as one v2 batch.
pub fn encode_batch(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options)
        .expect("encoding into memory cannot fail");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::validate_records;

    #[test]
    fn records_make_one_valid_batch() {
        for producer in [
            None,
            Some(ProducerFields {
                producer_id: 9,
                producer_epoch: 1,
                base_sequence: 40,
            }),
        ] {
            let records: Vec<Record> = (0..5)
                .map(|i| record(i, 1000 + i, None, Some(Bytes::from_static(b"v")), producer))
                .collect();
            let batch = encode_batch(&records, Compression::None);
            let validated = validate_records(&batch, usize::MAX).expect("valid");
            assert_eq!(validated.batch_count, 1);
            assert_eq!(validated.record_count, 5);
            assert_eq!(
                validated.first.base_sequence,
                producer.map_or(-1, |p| p.base_sequence)
            );
        }
    }
}
