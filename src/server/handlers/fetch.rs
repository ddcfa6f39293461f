//! Fetch: read each partition on its owning shard, long-poll until `min_bytes`
//! are there or `max_wait_ms` passes, and keep KIP-227 fetch sessions.
//!
//! Plan per request: resolve topics, group partitions by owning shard, send each
//! owner its list at once (one cross-shard hop per shard, not per partition),
//! gather, then trim to `max_bytes` in request order (the first non-empty
//! partition may exceed it, as KIP-74 requires, so a consumer always progresses).
//! The long-poll waits on the partitions' "high watermark moved" events, which
//! every shard can listen to without asking the owner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use uuid::Uuid;

use crate::metadata::TopicMeta;
use crate::protocol::batch::BatchIter;
use crate::protocol::errors::ErrorCode;
use crate::runtime::shard::PartitionKey;
use crate::server::dispatch::RequestContext;
use crate::server::handlers::topic_name;
use crate::storage::log::{self, ReadError};

/// Fetch sessions one connection may hold. Clients use one per broker connection.
pub const FETCH_SESSIONS_PER_CONNECTION_MAX: usize = 8;
/// Upper bound on a long-poll, whatever the client asks.
const MAX_WAIT_MS_CAP: i32 = 30_000;

/// One partition of a fetch, as requested (or remembered by a session).
#[derive(Debug, Clone)]
struct Wanted {
    topic_name: String,
    topic_id: Uuid,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: i32,
}

/// What a session remembers of a partition: where the client is, and what it
/// was last told, so that an incremental response can leave unchanged partitions out.
#[derive(Debug, Clone)]
struct SessionPartition {
    wanted: Wanted,
    last_high_watermark: i64,
    last_log_start_offset: i64,
}

#[derive(Debug, Default)]
struct FetchSession {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: IndexMap<(String, Uuid, i32), SessionPartition>,
}

/// The fetch sessions of one connection.
#[derive(Debug, Default)]
pub struct FetchSessions {
    sessions: HashMap<i32, FetchSession>,
    next_id: i32,
}

impl FetchSessions {
    fn new_id(&mut self) -> Option<i32> {
        if self.sessions.len() >= FETCH_SESSIONS_PER_CONNECTION_MAX {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1).max(1);
        Some(self.next_id)
    }
}

/// Which kind of fetch this is (KIP-227).
enum SessionMode {
    /// No session: the request lists every partition, the response has them all.
    Sessionless,
    /// A new session with this id: full request and response.
    New(i32),
    /// The next request of an existing session: only changes travel.
    Incremental(i32),
}

/// A read for an owner shard: (position in the request, partition, fetch offset,
/// partition max bytes).
type PlannedRead = (usize, PartitionKey, i64, usize);

/// The result of reading one partition.
#[derive(Debug, Clone)]
struct PartitionResult {
    error: Option<ErrorCode>,
    records: Bytes,
    high_watermark: i64,
    log_start_offset: i64,
}

pub async fn handle(ctx: &RequestContext, request: FetchRequest) -> FetchResponse {
    let by_id = ctx.api_version >= 13;
    let (mode, wanted) = match open_session(ctx, &request, by_id) {
        Ok(x) => x,
        Err(code) => return FetchResponse::default().with_error_code(code.code()),
    };
    let resolved: Vec<(Wanted, Result<Arc<TopicMeta>, ErrorCode>)> = wanted
        .into_iter()
        .map(|w| {
            let topic = resolve(ctx, &w, by_id);
            (w, topic)
        })
        .collect();

    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        i32::MAX as usize
    } else {
        request.max_bytes as usize
    };
    let results = loop {
        // Listen before reading, so that an append landing in between still wakes us.
        let listeners: Vec<_> = resolved
            .iter()
            .filter_map(|(w, t)| {
                t.as_ref()
                    .ok()
                    .and_then(|t| t.partition(w.partition))
                    .map(|p| p.listen())
            })
            .collect();
        let results = read_all(ctx, &resolved, max_bytes).await;
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let has_error = results.iter().any(|r| r.error.is_some());
        let now = Instant::now();
        if bytes >= min_bytes || has_error || now >= deadline || listeners.is_empty() {
            break results;
        }
        let wake = futures_util::future::select_all(listeners.into_iter().map(Box::pin));
        let timeout = std::pin::pin!(compio::time::sleep(deadline - now));
        // A shutdown ends the wait too, so that stopping never waits out a long-poll.
        let stop = std::pin::pin!(ctx.conn.shard.broker.shutdown.wait());
        let timeout_or_stop = futures_util::future::select(timeout, stop);
        futures_util::future::select(wake, timeout_or_stop).await;
    };
    build_response(ctx, mode, resolved, results)
}

fn resolve(
    ctx: &RequestContext,
    wanted: &Wanted,
    by_id: bool,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let image = ctx.conn.shard.broker.image();
    let topic = if by_id {
        image.topic_by_id(&wanted.topic_id)
    } else {
        image.topic(&wanted.topic_name)
    };
    let Some(topic) = topic else {
        return Err(if by_id {
            ErrorCode::UnknownTopicId
        } else {
            ErrorCode::UnknownTopicOrPartition
        });
    };
    if topic.partition(wanted.partition).is_none() {
        return Err(ErrorCode::UnknownTopicOrPartition);
    }
    Ok(topic.clone())
}

/// Applies the request to the connection's sessions; returns the mode and the
/// partitions to read.
fn open_session(
    ctx: &RequestContext,
    request: &FetchRequest,
    by_id: bool,
) -> Result<(SessionMode, Vec<Wanted>), ErrorCode> {
    let listed: Vec<Wanted> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| Wanted {
                topic_name: if by_id {
                    String::new()
                } else {
                    t.topic.0.to_string()
                },
                topic_id: if by_id { t.topic_id } else { Uuid::nil() },
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
            })
        })
        .collect();
    if ctx.api_version < 7 {
        return Ok((SessionMode::Sessionless, listed));
    }
    let mut sessions = ctx.conn.fetch_sessions.borrow_mut();
    let (id, epoch) = (request.session_id, request.session_epoch);
    match (id, epoch) {
        (0, -1) => Ok((SessionMode::Sessionless, listed)),
        (_, -1) => {
            sessions.sessions.remove(&id);
            Ok((SessionMode::Sessionless, listed))
        }
        (_, 0) => {
            if id != 0 {
                sessions.sessions.remove(&id);
            }
            let Some(new_id) = sessions.new_id() else {
                // No room for a session: serve this one sessionless (Kafka does the same).
                return Ok((SessionMode::Sessionless, listed));
            };
            let mut session = FetchSession {
                next_epoch: 1,
                partitions: IndexMap::new(),
            };
            for w in &listed {
                session.partitions.insert(
                    (w.topic_name.clone(), w.topic_id, w.partition),
                    SessionPartition {
                        wanted: w.clone(),
                        last_high_watermark: -1,
                        last_log_start_offset: -1,
                    },
                );
            }
            sessions.sessions.insert(new_id, session);
            Ok((SessionMode::New(new_id), listed))
        }
        (0, _) => Err(ErrorCode::FetchSessionIdNotFound),
        _ => {
            let Some(session) = sessions.sessions.get_mut(&id) else {
                return Err(ErrorCode::FetchSessionIdNotFound);
            };
            if session.next_epoch != epoch {
                return Err(ErrorCode::InvalidFetchSessionEpoch);
            }
            session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
            for forgotten in &request.forgotten_topics_data {
                for &partition in &forgotten.partitions {
                    let name = if by_id {
                        String::new()
                    } else {
                        forgotten.topic.0.to_string()
                    };
                    let topic_id = if by_id {
                        forgotten.topic_id
                    } else {
                        Uuid::nil()
                    };
                    session
                        .partitions
                        .shift_remove(&(name, topic_id, partition));
                }
            }
            for w in listed {
                let key = (w.topic_name.clone(), w.topic_id, w.partition);
                match session.partitions.get_mut(&key) {
                    Some(existing) => existing.wanted = w,
                    None => {
                        session.partitions.insert(
                            key,
                            SessionPartition {
                                wanted: w,
                                last_high_watermark: -1,
                                last_log_start_offset: -1,
                            },
                        );
                    }
                }
            }
            let all = session
                .partitions
                .values()
                .map(|p| p.wanted.clone())
                .collect();
            Ok((SessionMode::Incremental(id), all))
        }
    }
}

/// Reads every partition, one batch of work per owning shard, then trims the
/// results to `max_bytes` in request order.
async fn read_all(
    ctx: &RequestContext,
    resolved: &[(Wanted, Result<Arc<TopicMeta>, ErrorCode>)],
    max_bytes: usize,
) -> Vec<PartitionResult> {
    let shard = &ctx.conn.shard;
    let mut results: Vec<Option<PartitionResult>> = vec![None; resolved.len()];
    let mut plan: BTreeMap<usize, Vec<PlannedRead>> = BTreeMap::new();
    for (i, (wanted, topic)) in resolved.iter().enumerate() {
        match topic {
            Err(code) => results[i] = Some(error_result(*code)),
            Ok(topic) => {
                let shared = topic
                    .partition(wanted.partition)
                    .expect("resolved partitions exist");
                if shared.is_offline() {
                    results[i] = Some(error_result(ErrorCode::KafkaStorageError));
                    continue;
                }
                let owner = shard.broker.shard_for(&topic.name, wanted.partition);
                let partition_max = wanted.partition_max_bytes.max(0) as usize;
                plan.entry(owner).or_default().push((
                    i,
                    (topic.id, wanted.partition),
                    wanted.fetch_offset,
                    partition_max,
                ));
            }
        }
    }
    // Each owner reads its partitions in request order, each up to its partition
    // limit (the first batch whole, in case that partition ends up first), and
    // stops reading once it alone has `max_bytes`: later partitions could not get
    // anything in the response anyway.
    let reads = plan.into_iter().map(|(owner, items)| {
        shard.run_on(owner, move |owner| async move {
            let mut out = Vec::with_capacity(items.len());
            let mut shard_total = 0usize;
            for (i, key, offset, partition_max) in items {
                let Some(log) = owner.log(&key) else {
                    out.push((i, error_result(ErrorCode::UnknownTopicOrPartition)));
                    continue;
                };
                let limit = if shard_total >= max_bytes {
                    0
                } else {
                    partition_max
                };
                let result = match log::read(&log, offset, limit, limit > 0).await {
                    Ok(read) => PartitionResult {
                        error: None,
                        records: read.records,
                        high_watermark: read.high_watermark,
                        log_start_offset: read.log_start_offset,
                    },
                    Err(ReadError::OffsetOutOfRange {
                        log_start_offset,
                        high_watermark,
                        ..
                    }) => PartitionResult {
                        error: Some(ErrorCode::OffsetOutOfRange),
                        records: Bytes::new(),
                        high_watermark,
                        log_start_offset,
                    },
                    Err(ReadError::Storage(message)) => {
                        tracing::warn!(%message, "fetch read failed");
                        error_result(ErrorCode::KafkaStorageError)
                    }
                };
                shard_total += result.records.len();
                out.push((i, result));
            }
            out
        })
    });
    for batch in futures_util::future::join_all(reads).await {
        for (i, result) in batch {
            results[i] = Some(result);
        }
    }
    // Apply the limits in request order, as Kafka does (KIP-74): whole batches
    // only; each partition gets at most its limit and what is left of
    // `max_bytes`; only the first batch of the first non-empty partition may
    // exceed them.
    let mut remaining = max_bytes;
    let mut any_data = false;
    results
        .into_iter()
        .zip(resolved)
        .map(|(r, (wanted, _))| {
            let mut r = r.expect("every partition has a result");
            if !r.records.is_empty() {
                let limit = (wanted.partition_max_bytes.max(0) as usize).min(remaining);
                let mut keep = whole_batches_within(&r.records, limit);
                if keep == 0 && !any_data {
                    keep = first_batch_len(&r.records);
                }
                r.records = r.records.slice(..keep);
                remaining = remaining.saturating_sub(keep);
                any_data |= keep > 0;
            }
            r
        })
        .collect()
}

/// Length of the longest prefix of whole batches in `records` not over `limit`.
fn whole_batches_within(records: &[u8], limit: usize) -> usize {
    let mut end = 0;
    for item in BatchIter::new(records, false) {
        match item {
            Ok((_, range)) if range.end <= limit => end = range.end,
            _ => break,
        }
    }
    end
}

fn first_batch_len(records: &[u8]) -> usize {
    match BatchIter::new(records, false).next() {
        Some(Ok((_, range))) => range.end,
        _ => 0,
    }
}

fn error_result(code: ErrorCode) -> PartitionResult {
    PartitionResult {
        error: Some(code),
        records: Bytes::new(),
        high_watermark: -1,
        log_start_offset: -1,
    }
}

fn build_response(
    ctx: &RequestContext,
    mode: SessionMode,
    resolved: Vec<(Wanted, Result<Arc<TopicMeta>, ErrorCode>)>,
    results: Vec<PartitionResult>,
) -> FetchResponse {
    let mut sessions = ctx.conn.fetch_sessions.borrow_mut();
    let (session_id, mut session) = match mode {
        SessionMode::Sessionless => (0, None),
        SessionMode::New(id) => (id, sessions.sessions.get_mut(&id)),
        SessionMode::Incremental(id) => (id, sessions.sessions.get_mut(&id)),
    };
    let incremental = matches!(mode, SessionMode::Incremental(_));
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for ((wanted, _), result) in resolved.into_iter().zip(results) {
        if let Some(session) = session.as_deref_mut() {
            let key = (wanted.topic_name.clone(), wanted.topic_id, wanted.partition);
            if let Some(state) = session.partitions.get_mut(&key) {
                let changed = result.error.is_some()
                    || !result.records.is_empty()
                    || state.last_high_watermark != result.high_watermark
                    || state.last_log_start_offset != result.log_start_offset;
                state.last_high_watermark = result.high_watermark;
                state.last_log_start_offset = result.log_start_offset;
                if incremental && !changed {
                    continue;
                }
            }
        }
        let mut data = PartitionData::default()
            .with_partition_index(wanted.partition)
            .with_error_code(result.error.map_or(0, |e| e.code()))
            .with_high_watermark(result.high_watermark)
            .with_last_stable_offset(result.high_watermark)
            .with_aborted_transactions(Some(vec![]))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(result.records));
        if ctx.api_version >= 5 {
            data.log_start_offset = result.log_start_offset;
        }
        let same_topic = topics.last().is_some_and(|t| {
            t.topic.0.as_str() == wanted.topic_name && t.topic_id == wanted.topic_id
        });
        if same_topic {
            topics.last_mut().expect("checked").partitions.push(data);
        } else {
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(topic_name(&wanted.topic_name))
                    .with_topic_id(wanted.topic_id)
                    .with_partitions(vec![data]),
            );
        }
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
}
