//! Produce: validate each partition's batch on this (the connection's) shard,
//! append it on the owning shard, gather the outcomes in request order.
//!
//! Validation (lengths, magic, CRC32C, record framing, `max.message.bytes`)
//! happens here so that CRC work spreads over the shards that accept
//! connections; the owner only assigns offsets, checks producer sequences and
//! writes. Batches are written from the request buffer they arrived in: only
//! the 61-byte header is copied to patch the base offset.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};

use std::rc::Rc;
use std::sync::Arc;

use crate::io::clock::now_ms;
use crate::metadata::{is_internal_topic, TopicMeta};
use crate::node::shard::Shard;
use crate::node::txn_rpc::{ask_coordinator, Ask};
use crate::partition::local::{Acks, TxnAppendCheck};
use crate::protocol::batch::{self, peek_magic};
use crate::protocol::compression::decompressed_bytes_max;
use crate::protocol::errors::ErrorCode;
use crate::protocol::record_rules::{self, RecordCheckError, RecordError, RecordRules};
use crate::server::connection::RequestContext;
use crate::server::handlers::{resolve_topic, str_bytes};
use crate::storage::log;

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let wants_ack = acks != 0;
    let timeout = std::time::Duration::from_millis(request.timeout_ms.clamp(0, 300_000) as u64);
    // Kafka refuses the whole request when it carries transactional batches
    // without a transactional id, or from more than one producer id.
    let transactional_ids: std::collections::BTreeSet<i64> = request
        .topic_data
        .iter()
        .flat_map(|topic| &topic.partition_data)
        .filter_map(|p| p.records.as_deref())
        .filter(|records| batch::peek_transactional(records))
        .filter_map(|records| batch::BatchHeader::parse(records).ok())
        .map(|header| header.producer_id)
        .collect();
    let transactional_id: Option<Arc<str>> = request
        .transactional_id
        .as_ref()
        .map(|id| Arc::from(id.as_str()));
    let request_error = if !matches!(acks, -1..=1) {
        Some(ErrorCode::InvalidRequiredAcks)
    } else if !transactional_ids.is_empty() && transactional_id.is_none() {
        Some(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if transactional_ids.len() > 1 {
        Some(ErrorCode::InvalidProducerIdMapping)
    } else if transactional_id.as_deref() == Some("") {
        Some(ErrorCode::InvalidRequest)
    } else {
        None
    };
    let shard = &ctx.conn.shard;

    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.as_str();
        let topic = match request_error {
            Some(code) => Err(Refusal::from(code)),
            // v13+ names topics by id only (KIP-516).
            None if ctx.api_version >= 13 && topic_data.topic_id.is_nil() => {
                Err(Refusal::from(ErrorCode::UnknownTopicId))
            }
            None if is_internal_topic(name) => Err(refuse_internal(name)),
            None => resolve_topic(ctx, name, &topic_data.topic_id)
                .map_err(Refusal::from)
                .and_then(|topic| {
                    if is_internal_topic(&topic.name) {
                        return Err(refuse_internal(&topic.name));
                    }
                    Ok(topic)
                }),
        };
        let mut appends = Vec::with_capacity(topic_data.partition_data.len());
        for partition_data in topic_data.partition_data {
            let index = partition_data.index;
            let records = partition_data.records.unwrap_or_default();
            let append = match &topic {
                Ok(topic) => Ok(append_partition(
                    shard,
                    topic.clone(),
                    index,
                    records,
                    match acks {
                        0 => Acks::None,
                        1 => Acks::Leader,
                        _ => Acks::All {
                            min_isr: topic.config.min_insync_replicas,
                            timeout,
                        },
                    },
                    transactional_id.clone(),
                    ctx.api_version,
                )),
                Err(refusal) => Err(refusal.clone()),
            };
            appends.push(async move {
                let result = match append {
                    Ok(append) => append.await,
                    Err(refusal) => Err(refusal),
                };
                partition_response(index, ctx.api_version, result)
            });
        }
        let partitions = futures_util::future::join_all(appends).await;
        topics.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_topic_id(topic_data.topic_id)
                .with_partition_responses(partitions),
        );
    }
    if !wants_ack {
        return None;
    }
    let mut response = ProduceResponse::default().with_responses(topics);
    if ctx.api_version >= 10 {
        point_to_leaders(ctx, &mut response);
    }
    Some(response)
}

/// KIP-951: a partition refused with NOT_LEADER_OR_FOLLOWER names its
/// current leader and epoch, and the response lists where those leaders
/// are, so that a client can go there without asking Metadata first.
fn point_to_leaders(ctx: &RequestContext, response: &mut ProduceResponse) {
    let node = &ctx.conn.shard.node;
    let image = node.image();
    let mut leaders = std::collections::BTreeSet::new();
    for topic in &mut response.responses {
        let meta = if topic.topic_id.is_nil() {
            image.topic(topic.name.0.as_str())
        } else {
            image.topic_by_id(&topic.topic_id)
        };
        let Some(meta) = meta else {
            continue;
        };
        for p in &mut topic.partition_responses {
            if p.error_code != ErrorCode::NotLeaderOrFollower.code() {
                continue;
            }
            let Some(placement) = meta.placement(p.index) else {
                continue;
            };
            if placement.leader >= 0 && node.is_live(&image, placement.leader) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(placement.leader))
                    .with_leader_epoch(placement.leader_epoch);
                leaders.insert(placement.leader);
            }
        }
    }
    response.node_endpoints = node
        .brokers()
        .into_iter()
        .filter(|(id, ..)| leaders.contains(id))
        .map(|(id, host, port)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(host))
                .with_port(port)
        })
        .collect();
}

/// Why a partition's batch was not appended: Kafka's error code, a message,
/// and (KIP-467) the records at fault, so that a client can fail those and
/// resend the others.
#[derive(Debug, Clone)]
struct Refusal {
    code: ErrorCode,
    message: Option<String>,
    record_errors: Vec<RecordError>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: Some(message.into()),
            record_errors: Vec::new(),
        }
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Refusal {
        Refusal {
            code,
            message: None,
            record_errors: Vec::new(),
        }
    }
}

/// Validates one partition's records here, then appends them on the owning shard.
async fn append_partition(
    shard: &Rc<Shard>,
    topic: Arc<TopicMeta>,
    index: i32,
    records: Bytes,
    acks: Acks,
    transactional_id: Option<Arc<str>>,
    version: i16,
) -> Result<log::AppendOutcome, Refusal> {
    match topic.partition(index) {
        None => return Err(ErrorCode::UnknownTopicOrPartition.into()),
        Some(shared) if shared.is_offline() => {
            return Err(Refusal::new(
                ErrorCode::KafkaStorageError,
                "partition is offline",
            ))
        }
        Some(_) => {}
    }
    if !shard.node.leads(&topic, index) {
        return Err(Refusal::new(
            ErrorCode::NotLeaderOrFollower,
            "this broker does not lead the partition",
        ));
    }
    let config = &topic.config;
    let max_batch_bytes = config.max_message_bytes.max(0) as usize;
    let validated = batch::validate_records(&records, max_batch_bytes).map_err(|e| {
        let code = match peek_magic(&records) {
            Ok(0 | 1) => ErrorCode::UnsupportedForMessageFormat,
            _ => {
                ErrorCode::try_from_code(e.kafka_error_code()).unwrap_or(ErrorCode::CorruptMessage)
            }
        };
        Refusal::new(code, e.to_string())
    })?;
    check_producer_issued(shard, &validated.first)?;
    // The batch header gives the timestamp range cheaply (base_timestamp is
    // the first record's, which producers make the smallest); the records
    // are looked at one by one only on a compacted topic, or when that range
    // is out of bounds, to name the records at fault.
    let now = now_ms();
    let header_check =
        config.check_timestamps(validated.first.base_timestamp, validated.max_timestamp, now);
    // The header's range is not the records' range (a record may be older
    // than the first): with bounds set, every record is checked, as Kafka does.
    let bounded = config.has_timestamp_bounds();
    let claims_log_append_time = validated.first.is_log_append_time();
    if config.cleanup_policy.compact || bounded || header_check.is_err() || claims_log_append_time {
        let rules = RecordRules {
            keys_required: config.cleanup_policy.compact,
            create_time_range: config.create_time_range(now),
        };
        let limit = decompressed_bytes_max(config.max_message_bytes);
        let topic_partition = format!("{}-{index}", topic.name);
        record_rules::check_records(&records, rules, limit, &topic_partition).map_err(|error| {
            match error {
                RecordCheckError::Records {
                    code,
                    message,
                    errors,
                } => Refusal {
                    code,
                    message: Some(message),
                    record_errors: errors,
                },
                other => Refusal::new(
                    other.error_code(),
                    format!("{other} in topic partition {topic_partition}"),
                ),
            }
        })?;
    }
    // No record is at fault, yet the header's range is out of bounds: the
    // header lies about its records; refused as a whole.
    header_check.map_err(|message| Refusal::new(ErrorCode::InvalidTimestamp, message))?;
    let key = (topic.id, index);
    let owner = shard.node.shard_for(&topic.name, index);
    if let (true, Some(transactional_id)) = (validated.first.is_transactional(), transactional_id) {
        return append_transactional(
            shard,
            &topic,
            index,
            records,
            validated,
            acks,
            transactional_id,
            version,
        )
        .await;
    }
    shard
        .run_on(owner, move |owner| async move {
            let Some(partition) = owner.partition(&key) else {
                return Err(Refusal::from(ErrorCode::UnknownTopicOrPartition));
            };
            partition
                .append(
                    &owner.commit,
                    records,
                    &validated,
                    acks,
                    &owner.node.shutdown,
                )
                .await
                .map_err(|e| Refusal::new(e.error_code(), e.to_string()))
        })
        .await
}

/// A transactional batch (KIP-890 part 1): appended at once if its
/// producer's transaction is open on the partition; otherwise only once the
/// coordinator confirms the partition is in the transaction, and no marker
/// came in between (the partition's verification guard).
#[allow(clippy::too_many_arguments)]
async fn append_transactional(
    shard: &Rc<Shard>,
    topic: &TopicMeta,
    index: i32,
    records: Bytes,
    validated: batch::ValidatedRecords,
    acks: Acks,
    transactional_id: Arc<str>,
    version: i16,
) -> Result<log::AppendOutcome, Refusal> {
    let key = (topic.id, index);
    let owner = shard.node.shard_for(&topic.name, index);
    let (producer_id, epoch) = (validated.first.producer_id, validated.first.producer_epoch);
    let check = shard
        .run_on(owner, move |owner| async move {
            owner
                .partition(&key)
                .map(|p| p.begin_txn_append(producer_id, epoch, version >= 12))
        })
        .await
        .ok_or(Refusal::from(ErrorCode::UnknownTopicOrPartition))?;
    let guard = match check {
        TxnAppendCheck::Open => None,
        // KIP-890 part 2: from Produce v12 the client does not add the
        // partition; the partition asks the coordinator to add it.
        TxnAppendCheck::Verify(guard) if version >= 12 => {
            let partition = (topic.name.to_string(), index);
            let added = ask_coordinator(
                shard,
                &transactional_id,
                producer_id,
                epoch,
                vec![partition],
                Ask::Add,
            )
            .await;
            match added {
                Ok(_) => Some(guard),
                Err(ErrorCode::InvalidTxnState) => {
                    return Err(Refusal::new(
                        ErrorCode::InvalidTxnState,
                        "Partition was not added to the transaction",
                    ))
                }
                // Kept for TV2 clients: the previous transaction is still completing.
                Err(ErrorCode::ConcurrentTransactions) => {
                    return Err(ErrorCode::ConcurrentTransactions.into())
                }
                Err(code) => return Err(verification_error(code).into()),
            }
        }
        TxnAppendCheck::Verify(guard) => {
            let partition = (topic.name.to_string(), index);
            let verdict = ask_coordinator(
                shard,
                &transactional_id,
                producer_id,
                epoch,
                vec![partition],
                Ask::Verify,
            )
            .await
            .map(|mut each| each.pop().flatten());
            match verdict {
                Ok(None) => Some(guard),
                Ok(Some(_abortable)) if version >= 11 => {
                    return Err(ErrorCode::TransactionAbortable.into())
                }
                Ok(Some(_)) => {
                    return Err(Refusal::new(
                        ErrorCode::InvalidTxnState,
                        "Partition was not added to the transaction",
                    ))
                }
                Err(code) => return Err(verification_error(code).into()),
            }
        }
    };
    shard
        .run_on(owner, move |owner| async move {
            let Some(partition) = owner.partition(&key) else {
                return Err(Refusal::from(ErrorCode::UnknownTopicOrPartition));
            };
            partition
                .append_transactional(
                    &owner.commit,
                    records,
                    &validated,
                    acks,
                    guard,
                    &owner.node.shutdown,
                )
                .await
                .map_err(|e| Refusal::new(e.error_code(), e.to_string()))
        })
        .await
}

/// What a Produce answers for the coordinator's verification errors (Kafka's
/// `ReplicaManager`): retriable coordinator trouble becomes
/// NOT_ENOUGH_REPLICAS, a fenced producer INVALID_PRODUCER_EPOCH.
fn verification_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        ErrorCode::ConcurrentTransactions
        | ErrorCode::NotCoordinator
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::CoordinatorLoadInProgress => ErrorCode::NotEnoughReplicas,
        other => other,
    }
}

/// Kafka: "Cannot append to internal topic" (INVALID_TOPIC_EXCEPTION), also
/// for a topic of such a name that an older Sluice let a client create.
fn refuse_internal(name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::InvalidTopicException,
        format!("Cannot append to internal topic {name}"),
    )
}

/// A batch from a producer id no broker handed out is refused with
/// UNKNOWN_PRODUCER_ID (the code Kafka gives for producer state it does not
/// know; clients answer it by asking for a new id). Without this check a
/// client that made up an id would share another producer's sequence state,
/// and its batches could be taken for that producer's retries. Refused: ids
/// in no block the controller granted, and ids of this broker's own block
/// that it has not handed out yet (another broker's block it cannot check).
fn check_producer_issued(shard: &Shard, header: &batch::BatchHeader) -> Result<(), Refusal> {
    use std::sync::atomic::Ordering::Acquire;
    let node = &shard.node;
    let next = node.next_producer_id.load(Acquire);
    let (start, end) = (
        node.producer_id_block.0.load(Acquire),
        node.producer_id_block.1.load(Acquire),
    );
    let id = header.producer_id;
    let granted = id < next.max(node.image().next_producer_id);
    let pending_here = (start..end).contains(&id) && id >= next;
    if header.has_producer_id() && (!granted || pending_here) {
        return Err(Refusal::new(
            ErrorCode::UnknownProducerId,
            format!(
                "producer id {} was never issued (InitProducerId hands out ids)",
                header.producer_id
            ),
        ));
    }
    Ok(())
}

/// A partition's response entry; fields newer than `version` stay at their defaults.
fn partition_response(
    index: i32,
    version: i16,
    result: Result<log::AppendOutcome, Refusal>,
) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(outcome) => {
            response.base_offset = outcome.base_offset;
            response.log_append_time_ms = outcome.log_append_time_ms;
            if version >= 5 {
                response.log_start_offset = outcome.log_start_offset;
            }
        }
        Err(refusal) => {
            response.error_code = refusal.code.code();
            response.base_offset = -1;
            response.log_append_time_ms = -1;
            if version >= 8 {
                response.error_message = refusal.message.map(str_bytes);
                response.record_errors = refusal
                    .record_errors
                    .into_iter()
                    .map(|e| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(e.batch_index)
                            .with_batch_index_error_message(Some(str_bytes(e.message)))
                    })
                    .collect();
            }
        }
    }
    response
}

/// The lowest Produce version served; 0-2 (message formats v0/v1) are
/// advertised, because librdkafka insists on a range starting at 0, and
/// answered with UNSUPPORTED_VERSION per partition ([`legacy_unsupported`]).
pub const PRODUCE_MIN_SERVED: i16 = 3;

/// A legacy Produce request that does not parse.
#[derive(Debug)]
pub struct Malformed;

/// Produce v0-2 (message formats v0 and v1) is advertised, because librdkafka
/// insists on a range starting at 0, but not served: every partition gets
/// UNSUPPORTED_VERSION. Ok(None) for acks=0 (no response is due); Err for a
/// request that does not parse (the connection is closed).
pub fn legacy_unsupported(frame: &Bytes, version: i16) -> Result<Option<Bytes>, Malformed> {
    let mut buf = frame.clone();
    // Header v1: api key, version, correlation id, client id.
    if buf.remaining() < 10 {
        return Err(Malformed);
    }
    buf.advance(4);
    let correlation_id = buf.get_i32();
    skip_string(&mut buf).ok_or(Malformed)?;
    if buf.remaining() < 6 {
        return Err(Malformed);
    }
    let acks = buf.get_i16();
    let _timeout = buf.get_i32();
    let topic_count = read_count(&mut buf).ok_or(Malformed)?;
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i32(topic_count as i32);
    for _ in 0..topic_count {
        let name = read_string(&mut buf).ok_or(Malformed)?;
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        let partition_count = read_count(&mut buf).ok_or(Malformed)?;
        out.put_i32(partition_count as i32);
        for _ in 0..partition_count {
            if buf.remaining() < 8 {
                return Err(Malformed);
            }
            let partition = buf.get_i32();
            let records_len = buf.get_i32();
            if records_len > 0 {
                if buf.remaining() < records_len as usize {
                    return Err(Malformed);
                }
                buf.advance(records_len as usize);
            }
            out.put_i32(partition);
            out.put_i16(ErrorCode::UnsupportedVersion.code());
            out.put_i64(-1); // base offset
            if version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if buf.has_remaining() {
        return Err(Malformed);
    }
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    if acks == 0 {
        return Ok(None);
    }
    let length = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(Some(out.freeze()))
}

fn read_count(buf: &mut Bytes) -> Option<usize> {
    if buf.remaining() < 4 {
        return None;
    }
    let n = buf.get_i32();
    // Each element takes at least 4 bytes: a count beyond that is a lie.
    (n >= 0 && (n as usize) <= buf.remaining() / 4).then_some(n as usize)
}

fn read_string(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    Some(buf.split_to(len as usize))
}

fn skip_string(buf: &mut Bytes) -> Option<()> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len > 0 {
        if buf.remaining() < len as usize {
            return None;
        }
        buf.advance(len as usize);
    }
    Some(())
}
