//! The Fetch response writer, by hand: the one response on the hot path.
//!
//! It writes the frame (length, response header, body) for Fetch v4-v16 as a
//! [`Chain`]: every field in memory, each partition's records as the chain the
//! storage read produced, so record data still in segment files stays there
//! until the connection splices it to the socket. The generated `kafka-protocol`
//! encoder is the reference: the tests check that both produce the same bytes
//! at every version.
//!
//! Field layout (Kafka's FetchResponse schema): throttle_time_ms; v7+ error_code
//! and session_id; responses[]: topic name (v4-12) or topic id (v13+),
//! partitions[]: partition_index, error_code, high_watermark,
//! last_stable_offset, v5+ log_start_offset, aborted_transactions[]
//! (producer_id, first_offset), v11+ preferred_read_replica, records. From v12
//! the encoding is flexible: compact lengths and a tagged-field section after
//! every struct (left empty: no diverging epoch, leader or snapshot id to
//! report, no node endpoints).

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::io::chain::{Chain, Piece};

/// Record pieces in memory below this size are copied into the surrounding
/// buffer rather than sent as a piece of their own.
const INLINE_RECORDS_MAX: usize = 4096;

/// One partition of a Fetch response.
#[derive(Debug, Clone, Default)]
pub struct PartitionResponse {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// (producer id, first offset) of each aborted transaction that overlaps
    /// `records`, for a read_committed fetch; None (null on the wire) otherwise.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// Whole record batches, possibly still in segment files.
    pub records: Chain,
    /// v12+: a follower's log diverged from the leader's at (epoch, end
    /// offset) (KIP-320; a tagged field).
    pub diverging_epoch: Option<(i32, i64)>,
    /// v12+: the partition's current leader and epoch, for an error that
    /// says this broker does not lead it (KIP-951; a tagged field).
    pub current_leader: Option<(i32, i32)>,
}

/// One topic of a Fetch response: by name up to v12, by id from v13.
#[derive(Debug, Clone, Default)]
pub struct TopicResponse {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionResponse>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicResponse>,
    /// v16+: where the leaders named in `current_leader` are (node id,
    /// host, port) (KIP-951; a tagged field).
    pub node_endpoints: Vec<(i32, String, i32)>,
}

/// Builds a chain whose first piece starts with the frame length, patched at the end.
struct Writer {
    done: Vec<Piece>,
    head: Option<BytesMut>,
    buf: BytesMut,
    flexible: bool,
}

impl Writer {
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        if self.head.is_none() {
            self.head = Some(buf);
        } else {
            self.done.push(Piece::Memory(buf.freeze()));
        }
    }

    fn uvarint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.put_u8(value as u8);
    }

    /// An array, string or bytes length: compact (length + 1, unsigned varint)
    /// in flexible versions, else `i32`/`i16` as the caller's type needs.
    fn array_len(&mut self, len: usize) {
        if self.flexible {
            self.uvarint(len as u64 + 1);
        } else {
            self.buf.put_i32(len as i32);
        }
    }

    /// A nullable array's length (-1, or 0 when flexible, for null).
    fn nullable_array_len(&mut self, len: Option<usize>) {
        match len {
            Some(len) => self.array_len(len),
            None if self.flexible => self.uvarint(0),
            None => self.buf.put_i32(-1),
        }
    }

    fn string(&mut self, s: &str) {
        if self.flexible {
            self.uvarint(s.len() as u64 + 1);
        } else {
            self.buf.put_i16(s.len() as i16);
        }
        self.buf.put_slice(s.as_bytes());
    }

    fn no_tagged_fields(&mut self) {
        if self.flexible {
            self.buf.put_u8(0);
        }
    }

    fn records(&mut self, records: &Chain) {
        self.array_len(records.len());
        for piece in records.pieces() {
            match piece {
                Piece::Memory(bytes) if bytes.len() <= INLINE_RECORDS_MAX => {
                    self.buf.put_slice(bytes)
                }
                other => {
                    self.flush();
                    self.done.push(other.clone());
                }
            }
        }
    }

    fn finish(mut self) -> Result<Chain, ResponseTooLarge> {
        self.flush();
        let mut head = self.head.take().expect("the frame starts in memory");
        let total = head.len() + self.done.iter().map(Piece::len).sum::<usize>();
        let length = i32::try_from(total - 4).map_err(|_| ResponseTooLarge(total))?;
        head[..4].copy_from_slice(&length.to_be_bytes());
        let mut chain = Chain::default();
        chain.push(Piece::Memory(head.freeze()));
        for piece in self.done {
            chain.push(piece);
        }
        Ok(chain)
    }
}

/// A response whose frame length does not fit the protocol's `i32`. The Fetch
/// handler caps record data far below this; hitting it means a bug or an
/// absurd request, answered by closing the connection.
#[derive(Debug, thiserror::Error)]
#[error("a Fetch response of {0} bytes does not fit a frame")]
pub struct ResponseTooLarge(pub usize);

/// The complete response frame for Fetch `version` (4-16).
pub fn write_frame(
    version: i16,
    correlation_id: i32,
    response: &FetchResponse,
) -> Result<Chain, ResponseTooLarge> {
    assert!(
        (4..=16).contains(&version),
        "Fetch v{version} is not served"
    );
    let mut w = Writer {
        done: Vec::new(),
        head: None,
        buf: BytesMut::with_capacity(256),
        flexible: version >= 12,
    };
    w.buf.put_i32(0); // frame length, patched in `finish`
    w.buf.put_i32(correlation_id);
    w.no_tagged_fields(); // response header v1 from v12
    w.buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        w.buf.put_i16(response.error_code);
        w.buf.put_i32(response.session_id);
    }
    w.array_len(response.topics.len());
    for topic in &response.topics {
        if version >= 13 {
            w.buf.put_slice(topic.topic_id.as_bytes());
        } else {
            w.string(&topic.name);
        }
        w.array_len(topic.partitions.len());
        for p in &topic.partitions {
            w.buf.put_i32(p.partition_index);
            w.buf.put_i16(p.error_code);
            w.buf.put_i64(p.high_watermark);
            w.buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                w.buf.put_i64(p.log_start_offset);
            }
            w.nullable_array_len(p.aborted_transactions.as_ref().map(Vec::len));
            for &(producer_id, first_offset) in p.aborted_transactions.iter().flatten() {
                w.buf.put_i64(producer_id);
                w.buf.put_i64(first_offset);
                w.no_tagged_fields();
            }
            if version >= 11 {
                w.buf.put_i32(-1); // preferred read replica: none
            }
            w.records(&p.records);
            if w.flexible {
                // Tag 0: EpochEndOffset (epoch, end offset, its own empty
                // tagged fields), 13 bytes; tag 1: LeaderIdAndEpoch (leader
                // id, epoch, empty tagged fields), 9 bytes.
                let count = usize::from(p.diverging_epoch.is_some())
                    + usize::from(p.current_leader.is_some());
                w.uvarint(count as u64);
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    w.uvarint(0);
                    w.uvarint(13);
                    w.buf.put_i32(epoch);
                    w.buf.put_i64(end_offset);
                    w.buf.put_u8(0);
                }
                if let Some((leader, epoch)) = p.current_leader {
                    w.uvarint(1);
                    w.uvarint(9);
                    w.buf.put_i32(leader);
                    w.buf.put_i32(epoch);
                    w.buf.put_u8(0);
                }
            }
        }
        w.no_tagged_fields();
    }
    if version >= 16 && !response.node_endpoints.is_empty() {
        // Tag 0: NodeEndpoints, each node id, host, port, rack (null) and
        // empty tagged fields.
        let mut field = Writer {
            done: Vec::new(),
            head: None,
            buf: BytesMut::new(),
            flexible: true,
        };
        field.array_len(response.node_endpoints.len());
        for (id, host, port) in &response.node_endpoints {
            field.buf.put_i32(*id);
            field.string(host);
            field.buf.put_i32(*port);
            field.uvarint(0);
            field.buf.put_u8(0);
        }
        w.uvarint(1);
        w.uvarint(0);
        w.uvarint(field.buf.len() as u64);
        w.buf.put_slice(&field.buf);
    } else {
        w.no_tagged_fields();
    }
    w.finish()
}

/// A frame entirely in memory (for tests and the copying path's checks).
pub fn write_frame_bytes(version: i16, correlation_id: i32, response: &FetchResponse) -> Bytes {
    Bytes::from(
        write_frame(version, correlation_id, response)
            .expect("a test response fits a frame")
            .to_vec()
            .expect("memory pieces always read"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::chain::FileSlice;
    use crate::protocol::frame;
    use kafka_protocol::messages::fetch_response as generated;
    use kafka_protocol::messages::{ApiKey, BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;
    use std::io::Write;
    use std::sync::Arc;

    /// The same response through the generated encoder.
    fn reference(version: i16, correlation_id: i32, response: &FetchResponse) -> Bytes {
        let topics = response
            .topics
            .iter()
            .map(|t| {
                generated::FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let mut data = generated::PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(p.error_code)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.last_stable_offset)
                                    .with_aborted_transactions(p.aborted_transactions.as_ref().map(
                                        |list| {
                                            list.iter()
                                                .map(|&(producer_id, first_offset)| {
                                                    generated::AbortedTransaction::default()
                                                        .with_producer_id(ProducerId(producer_id))
                                                        .with_first_offset(first_offset)
                                                })
                                                .collect()
                                        },
                                    ))
                                    .with_preferred_read_replica(BrokerId(-1))
                                    .with_records(Some(Bytes::from(p.records.to_vec().unwrap())));
                                if version >= 5 {
                                    data.log_start_offset = p.log_start_offset;
                                }
                                if let Some((epoch, end_offset)) =
                                    p.diverging_epoch.filter(|_| version >= 12)
                                {
                                    data.diverging_epoch = generated::EpochEndOffset::default()
                                        .with_epoch(epoch)
                                        .with_end_offset(end_offset);
                                }
                                if let Some((leader, epoch)) =
                                    p.current_leader.filter(|_| version >= 12)
                                {
                                    data.current_leader = generated::LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(leader))
                                        .with_leader_epoch(epoch);
                                }
                                data
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut body = generated::FetchResponse::default()
            .with_throttle_time_ms(response.throttle_time_ms)
            .with_responses(topics);
        if version >= 7 {
            body.error_code = response.error_code;
            body.session_id = response.session_id;
        }
        if version >= 16 {
            body.node_endpoints = response
                .node_endpoints
                .iter()
                .map(|(id, host, port)| {
                    generated::NodeEndpoint::default()
                        .with_node_id(BrokerId(*id))
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_port(*port)
                })
                .collect();
        }
        frame::encode_response(ApiKey::Fetch, version, correlation_id, &body).unwrap()
    }

    fn partition(index: i32, records: Chain) -> PartitionResponse {
        PartitionResponse {
            partition_index: index,
            error_code: if index == 2 { 1 } else { 0 },
            high_watermark: 1000 + i64::from(index),
            last_stable_offset: 1000 + i64::from(index),
            log_start_offset: 7,
            // read_committed with two aborted transactions, read_uncommitted
            // (null), read_committed with none.
            aborted_transactions: match index {
                0 => Some(vec![(5, 10), (6, i64::MAX)]),
                1 => None,
                _ => Some(vec![]),
            },
            records,
            // A follower told where its log diverged (v12+ only).
            diverging_epoch: (index == 1).then_some((4, 1234)),
            current_leader: (index >= 1).then_some((3, 9)),
        }
    }

    fn sample(records: impl Fn(i32) -> Chain) -> FetchResponse {
        FetchResponse {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 42,
            node_endpoints: vec![(3, "broker-3.example".into(), 9092)],
            topics: vec![
                TopicResponse {
                    name: "orders".into(),
                    topic_id: Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
                    partitions: (0..3).map(|i| partition(i, records(i))).collect(),
                },
                TopicResponse {
                    name: "a-topic-with-a-long-name".repeat(3),
                    topic_id: Uuid::from_u128(99),
                    partitions: vec![],
                },
            ],
        }
    }

    #[test]
    fn matches_the_generated_encoder_at_every_version() {
        let response = sample(|i| match i {
            0 => Chain::from(Bytes::from(vec![7u8; 10_000])),
            1 => Chain::from(Bytes::from_static(b"small")),
            _ => Chain::default(),
        });
        for version in 4..=16 {
            let ours = write_frame_bytes(version, 77, &response);
            assert_eq!(ours, reference(version, 77, &response), "Fetch v{version}");
        }
    }

    #[test]
    fn file_pieces_stay_in_the_file_and_read_back_identically() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        tmp.write_all(&data).unwrap();
        let file = Arc::new(std::fs::File::open(tmp.path()).unwrap());
        let slice = |position: u64, len: usize| {
            Piece::File(FileSlice {
                file: file.clone(),
                position,
                len,
            })
        };
        let response = sample(|i| {
            let mut chain = Chain::default();
            if i == 0 {
                chain.push(slice(100, 50_000));
                chain.push(Piece::Memory(Bytes::from_static(b"tail of a segment")));
                chain.push(slice(0, 4000));
            }
            chain
        });
        for version in [4, 11, 12, 13, 16] {
            let chain = write_frame(version, 5, &response).unwrap();
            let file_pieces = chain
                .pieces()
                .iter()
                .filter(|p| matches!(p, Piece::File(_)))
                .count();
            assert_eq!(file_pieces, 2, "file data is not copied into memory");
            assert_eq!(
                Bytes::from(chain.to_vec().unwrap()),
                reference(version, 5, &response),
                "Fetch v{version}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_responses_match_the_generated_encoder(
            version in 4i16..=16,
            correlation_id in any::<i32>(),
            session_id in any::<i32>(),
            topics in proptest::collection::vec(
                ("[a-z._-]{0,300}", any::<u128>(), proptest::collection::vec(
                    (any::<i32>(), any::<i16>(), any::<i64>(), any::<i64>(),
                     proptest::collection::vec(any::<u8>(), 0..300), 0usize..3,
                     proptest::option::of(proptest::collection::vec((any::<i64>(), any::<i64>()), 0..4))),
                    0..5)),
                0..4),
        ) {
            let response = FetchResponse {
                throttle_time_ms: 0,
                error_code: 0,
                session_id,
                node_endpoints: if session_id % 2 == 0 { vec![(7, "h".into(), 1)] } else { vec![] },
                topics: topics.into_iter().map(|(name, id, partitions)| TopicResponse {
                    name,
                    topic_id: Uuid::from_u128(id),
                    partitions: partitions.into_iter().map(|(index, error, hw, lso, data, pieces, aborted)| {
                        let mut records = Chain::default();
                        let data = Bytes::from(data);
                        let cut = data.len() / 2;
                        match pieces {
                            0 => {}
                            1 => records.push(Piece::Memory(data)),
                            _ => {
                                records.push(Piece::Memory(data.slice(..cut)));
                                records.push(Piece::Memory(data.slice(cut..)));
                            }
                        }
                        PartitionResponse {
                            partition_index: index,
                            error_code: error,
                            high_watermark: hw,
                            last_stable_offset: hw,
                            log_start_offset: lso,
                            aborted_transactions: aborted,
                            records,
                            diverging_epoch: (index % 3 == 1).then_some((index, hw)),
                            current_leader: (index % 2 == 1).then_some((index, error.into())),
                        }
                    }).collect(),
                }).collect(),
            };
            prop_assert_eq!(
                write_frame_bytes(version, correlation_id, &response),
                reference(version, correlation_id, &response)
            );
        }
    }
}
