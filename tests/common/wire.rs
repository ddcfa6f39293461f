//! A raw Kafka-protocol client for tests: request frames encoded with the
//! kafka-protocol codec over a plain blocking TcpStream, strict response
//! decoding (correlation id checked, no trailing bytes), close detection for
//! input the broker must refuse, and builders for the requests most tests need.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use uuid::Uuid;

/// Read and write timeout of a connection: long enough for the longest
/// long-poll the tests make (5 s).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to close a connection it must close.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(3);
/// How often close detection looks at the socket.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The client id of every request this module encodes.
const CLIENT_ID: &str = "sluice-wire-test";

// ---------------------------------------------------------------- error codes

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_CONFIG: i16 = 40;
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const INVALID_RECORD: i16 = 87;
pub const UNKNOWN_TOPIC_ID: i16 = 100;

// ---------------------------------------------------------------- strings

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

// ---------------------------------------------------------------- connection

/// One client connection speaking raw frames.
pub struct Conn {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

/// How the broker reacted to a request it may refuse.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Answered,
    Closed,
}

/// What [`Conn::watch`] saw: the bytes received, and how it ended.
enum Watched<T> {
    /// `decide` returned a verdict.
    Decided(T),
    /// The broker closed (or reset) the connection.
    Closed(Vec<u8>),
    /// Neither within the time allowed.
    StillOpen(Vec<u8>),
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            next_correlation_id: 1,
        }
    }

    /// A complete request frame (length prefix included) with the given correlation id.
    pub fn frame_with<M: Encodable>(
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &M,
    ) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let length = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&length.to_be_bytes());
        buf.to_vec()
    }

    /// A complete request frame with the next correlation id; returns both.
    pub fn frame<M: Encodable>(&mut self, key: ApiKey, version: i16, body: &M) -> (i32, Vec<u8>) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        (
            correlation_id,
            Self::frame_with(key, version, correlation_id, body),
        )
    }

    /// Sends a request; returns its correlation id.
    pub fn send<M: Encodable>(&mut self, key: ApiKey, version: i16, body: &M) -> i32 {
        let (correlation_id, frame) = self.frame(key, version, body);
        self.stream.write_all(&frame).expect("send request");
        correlation_id
    }

    /// Sends bytes that the broker may refuse (and reset the connection over).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// One response frame, without its length prefix.
    pub fn recv_frame(&mut self) -> Bytes {
        self.read_frame("response")
    }

    /// One frame; `what` names it in panics.
    fn read_frame(&mut self, what: &str) -> Bytes {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .unwrap_or_else(|e| panic!("{what}: read response length: {e}"));
        let len = i32::from_be_bytes(len);
        assert!(
            (4..64 << 20).contains(&len),
            "{what}: implausible response length {len}"
        );
        let mut frame = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut frame)
            .unwrap_or_else(|e| panic!("{what}: read response body: {e}"));
        Bytes::from(frame)
    }

    /// Reads one response, checks its correlation id and that the body decodes exactly.
    pub fn recv<R: Decodable>(&mut self, key: ApiKey, version: i16, correlation_id: i32) -> R {
        let mut frame = self.read_frame(&format!("{key:?} v{version}"));
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .unwrap_or_else(|e| panic!("{key:?} v{version} response header: {e}"));
        assert_eq!(
            header.correlation_id, correlation_id,
            "{key:?} v{version}: correlation id"
        );
        let body = R::decode(&mut frame, version)
            .unwrap_or_else(|e| panic!("{key:?} v{version} response body: {e}"));
        assert_eq!(
            frame.remaining(),
            0,
            "{key:?} v{version} response has trailing bytes"
        );
        body
    }

    /// Sends a request and reads its response.
    pub fn call<Q: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, body: &Q) -> R {
        let correlation_id = self.send(key, version, body);
        self.recv(key, version, correlation_id)
    }

    /// Reads what the broker sends until `decide` (asked about all bytes
    /// received so far, before every read) gives a verdict, the broker closes
    /// the connection, or `within` passes. The I/O timeout is restored after.
    fn watch<T>(
        &mut self,
        within: Duration,
        mut decide: impl FnMut(&[u8]) -> Option<T>,
    ) -> Watched<T> {
        self.stream.set_read_timeout(Some(POLL_INTERVAL)).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let watched = loop {
            if let Some(verdict) = decide(&got) {
                break Watched::Decided(verdict);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => break Watched::Closed(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if start.elapsed() > within {
                        break Watched::StillOpen(got);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Watched::Closed(got), // reset: closed too
            }
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        watched
    }

    /// Waits for the broker to close the connection. Ok(bytes it sent first) or
    /// Err if it is still open after `within`.
    pub fn wait_closed(&mut self, within: Duration) -> Result<usize, String> {
        match self.watch(within, |_| None::<()>) {
            Watched::Closed(got) => Ok(got.len()),
            Watched::StillOpen(got) => Err(format!(
                "connection still open after {within:?} ({} bytes received)",
                got.len()
            )),
            Watched::Decided(()) => unreachable!("wait_closed decides nothing"),
        }
    }

    /// Asserts the broker closes the connection promptly without answering.
    pub fn assert_closed_silently(&mut self, what: &str) {
        match self.wait_closed(CLOSE_WITHIN) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: broker sent {n} bytes before closing, expected none"),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// For a complete request the broker may or may not understand: it must
    /// either answer it (a frame with `correlation_id`) or close, promptly.
    pub fn answered_or_closed(&mut self, correlation_id: i32) -> Result<Outcome, String> {
        let answered = |got: &[u8]| {
            if got.len() < 8 {
                return None;
            }
            let len = i32::from_be_bytes(got[..4].try_into().unwrap());
            let corr = i32::from_be_bytes(got[4..8].try_into().unwrap());
            if corr != correlation_id {
                return Some(Err(format!(
                    "answer with correlation id {corr}, sent {correlation_id}"
                )));
            }
            (len >= 4 && got.len() >= 4 + len as usize).then_some(Ok(Outcome::Answered))
        };
        match self.watch(CLOSE_WITHIN, answered) {
            Watched::Decided(verdict) => verdict,
            Watched::Closed(_) => Ok(Outcome::Closed),
            Watched::StillOpen(got) => Err(format!(
                "neither answered nor closed within {CLOSE_WITHIN:?} ({} bytes received)",
                got.len()
            )),
        }
    }
}

// ---------------------------------------------------------------- requests

/// CreateTopics v7 request for one topic.
pub fn create_topics_request(
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> CreateTopicsRequest {
    let mut topic = CreatableTopic::default();
    topic.name = topic_name(name);
    topic.num_partitions = partitions;
    topic.replication_factor = replication_factor;
    topic.configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v)))
        })
        .collect();
    CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(10_000)
}

/// Creates a topic (replication factor 1) with CreateTopics v7; panics unless it succeeds.
pub fn create_topic(conn: &mut Conn, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let request = create_topics_request(name, partitions, 1, configs);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics.len(), 1);
    assert_eq!(
        response.topics[0].error_code, NONE,
        "create {name}: {:?}",
        response.topics[0].error_message
    );
}

/// Metadata request for some topics (None: all topics).
pub fn metadata_request(topics: Option<&[&str]>, auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                .collect()
        }))
        .with_allow_auto_topic_creation(auto_create)
}

/// Metadata v12 for some topics (None: all topics).
pub fn metadata(conn: &mut Conn, topics: Option<&[&str]>, auto_create: bool) -> MetadataResponse {
    conn.call(ApiKey::Metadata, 12, &metadata_request(topics, auto_create))
}

/// Produce request (acks=all) of `records` to one partition.
pub fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// Produce v9 of `records` to one partition; returns that partition's answer.
pub fn produce(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> PartitionProduceResponse {
    let request = produce_request(topic, partition, records);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses.len(), 1);
    assert_eq!(response.responses[0].name.0.as_str(), topic);
    let partitions = &response.responses[0].partition_responses;
    assert_eq!(partitions.len(), 1);
    assert_eq!(partitions[0].index, partition);
    partitions[0].clone()
}

/// ListOffsets v8 of one partition at `timestamp` (-2 earliest, -1 latest):
/// (error, offset).
pub fn list_offset(conn: &mut Conn, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(partition)
            .with_timestamp(timestamp)])];
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 8, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// ListOffsets v8 "latest" (the high watermark) of one partition.
pub fn latest_offset(conn: &mut Conn, topic: &str, partition: i32) -> i64 {
    let (error, offset) = list_offset(conn, topic, partition, -1);
    assert_eq!(error, NONE, "ListOffsets {topic}/{partition}");
    offset
}

pub fn fetch_partition(partition: i32, offset: i64, max_bytes: i32) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(max_bytes)
}

/// A topic entry of a Fetch request: by name below v13, by id from v13.
pub fn fetch_topic(
    version: i16,
    name: &str,
    id: Uuid,
    partitions: Vec<FetchPartition>,
) -> FetchTopic {
    let topic = FetchTopic::default().with_partitions(partitions);
    if version >= 13 {
        topic.with_topic_id(id)
    } else {
        topic.with_topic(topic_name(name))
    }
}

/// A sessionless Fetch of (partition, offset, partition max bytes) of one topic.
pub fn sessionless(
    version: i16,
    name: &str,
    id: Uuid,
    parts: &[(i32, i64, i32)],
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_topic(
            version,
            name,
            id,
            parts
                .iter()
                .map(|&(p, o, m)| fetch_partition(p, o, m))
                .collect(),
        )])
}

pub fn fetch(conn: &mut Conn, version: i16, request: &FetchRequest) -> FetchResponse {
    conn.call(ApiKey::Fetch, version, request)
}

/// ConfigResource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;

/// IncrementalAlterConfigs of one topic: returns the resource's error code.
pub fn incremental_alter(
    conn: &mut Conn,
    version: i16,
    topic: &str,
    changes: &[(&str, i8, Option<&str>)],
) -> i16 {
    incremental_alter_opts(conn, version, topic, changes, false)
}

pub fn incremental_alter_opts(
    conn: &mut Conn,
    version: i16,
    topic: &str,
    changes: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> i16 {
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(
                changes
                    .iter()
                    .map(|(name, op, value)| {
                        AlterableConfig::default()
                            .with_name(str_bytes(name))
                            .with_config_operation(*op)
                            .with_value(value.map(str_bytes))
                    })
                    .collect(),
            )]);
    let response: IncrementalAlterConfigsResponse =
        conn.call(ApiKey::IncrementalAlterConfigs, version, &request);
    assert_eq!(response.responses.len(), 1);
    let r = &response.responses[0];
    assert_eq!(r.resource_name.as_str(), topic, "v{version}: resource name");
    assert_eq!(r.resource_type, RESOURCE_TOPIC, "v{version}: resource type");
    r.error_code
}

/// A one-record batch holding `value` (no key), as a simple producer sends it.
pub fn value_batch(value: &str) -> Bytes {
    let record = sluice::protocol::encode::record(
        0,
        1_700_000_000_000,
        None,
        Some(Bytes::from(value.to_string())),
        None,
    );
    sluice::protocol::encode::encode_batch(&[record], kafka_protocol::records::Compression::None)
}

/// Every (offset, value) of a partition from offset 0, read with Fetch v12
/// until a fetch returns nothing; stops at the first error code, returned
/// with what was read before it.
pub fn read_partition(conn: &mut Conn, topic: &str, partition: i32) -> (i16, Vec<(i64, String)>) {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let mut request = sessionless(
            12,
            topic,
            Uuid::nil(),
            &[(partition, 0, 1 << 20)],
            0,
            0,
            1 << 20,
        );
        request.topics[0].partitions[0].fetch_offset = offset;
        let response = fetch(conn, 12, &request);
        let p = &response.responses[0].partitions[0];
        if p.error_code != NONE {
            return (p.error_code, out);
        }
        let mut records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return (NONE, out);
        }
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap() {
            for r in set.records {
                let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                out.push((r.offset, value.unwrap_or_default()));
                offset = r.offset + 1;
            }
        }
    }
}
