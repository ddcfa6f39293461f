//! What the benchmarks feed to the code under test: batches, a Produce
//! request frame, a partition log in a directory.
//!
//! Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use sluice::io::chain::Chain;
use sluice::protocol::encode;
use sluice::server::fetch_response::{self, FetchResponse, PartitionResponse, TopicResponse};
use sluice::storage::config::LogConfig;
use sluice::storage::log::{LogRef, PartitionLog, ReadOutcome};

/// One uncompressed batch of `records` keyed records with `value_bytes`-byte
/// values, as a producer would send it.
pub fn keyed_batch(records: i64, value_bytes: usize) -> Bytes {
    let records: Vec<_> = (0..records)
        .map(|i| {
            let key = Some(Bytes::from(format!("key-{i}")));
            let value = Some(Bytes::from(vec![b'x'; value_bytes]));
            encode::record(i, 1_700_000_000_000 + i, key, value, None)
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// A Produce v9 request frame (acks=all, header included, no length prefix)
/// carrying `records` for partition 0 of "orders".
pub fn produce_frame(records: Bytes) -> Bytes {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")))
        .encode(&mut buf, ApiKey::Produce.request_header_version(9))
        .unwrap();
    request.encode(&mut buf, 9).unwrap();
    buf.freeze()
}

/// A partition log in `dir` that syncs every `flush_messages` messages
/// (`i64::MAX`: never) and rolls segments at `segment_bytes`.
pub fn open_log(dir: &Path, flush_messages: i64, segment_bytes: u64) -> LogRef {
    let config = LogConfig {
        flush_messages,
        segment_bytes,
        ..LogConfig::default()
    };
    PartitionLog::open_private("bench", 0, dir.to_path_buf(), config).unwrap()
}

/// The Fetch v12 response frame for one partition's read.
pub fn fetch_frame(read: ReadOutcome, correlation_id: i32) -> Chain {
    let response = FetchResponse {
        topics: vec![TopicResponse {
            name: "orders".into(),
            partitions: vec![PartitionResponse {
                high_watermark: read.high_watermark,
                last_stable_offset: read.last_stable_offset,
                records: read.records,
                ..PartitionResponse::default()
            }],
            ..TopicResponse::default()
        }],
        ..FetchResponse::default()
    };
    fetch_response::write_frame(12, correlation_id, &response).unwrap()
}
