//! Fetch: read each partition on its owning shard, long-poll until `min_bytes`
//! are there or `max_wait_ms` passes, and keep KIP-227 fetch sessions.
//!
//! Plan per request: resolve topics, group partitions by owning shard, send each
//! owner its list at once (one cross-shard hop per shard, not per partition),
//! gather, then trim to `max_bytes` in request order (the first non-empty
//! partition may exceed it, as KIP-74 requires, so a consumer always progresses).
//! The long-poll waits on the partitions' "high watermark moved" events, which
//! every shard can listen to without asking the owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::FetchRequest;
use uuid::Uuid;

use crate::io::chain::{Chain, Piece};
use crate::metadata::TopicMeta;
use crate::metrics::{FetchPath, FetchReader};
use crate::node::shard::PartitionKey;
use crate::node::shard::Shard;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::fetch_response::{FetchResponse, PartitionResponse, TopicResponse};
use crate::server::fetch_sessions::{FetchSession, SessionPartition, Wanted};
use crate::server::handlers::is_peer_broker;
use crate::storage::log::{Isolation, ReadError};
use crate::storage::txn_index::AbortedTxn;

/// Upper bound on a long-poll, whatever the client asks.
const MAX_WAIT_MS_CAP: i32 = 30_000;

/// Which kind of fetch this is (KIP-227).
enum SessionMode {
    /// No session: the request lists every partition, the response has them all.
    Sessionless,
    /// A new session with this id: full request and response.
    New(i32),
    /// The next request of an existing session: only changes travel.
    Incremental(i32),
}

/// A read for an owner shard: (position in the request, partition, what
/// was asked of it, partition max bytes).
type PlannedRead = (usize, PartitionKey, Asked, usize);

/// A read again with a tighter limit: (position in the request, partition,
/// what was asked of it, limit, whether the first batch may exceed it).
type Reread = (usize, PartitionKey, Asked, usize, bool);

/// What a fetch asks of one partition.
#[derive(Debug, Clone, Copy)]
struct Asked {
    offset: i64,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    /// The follower fetching (a replica's fetch), or None (a consumer).
    replica: Option<i32>,
}

/// The result of reading one partition.
#[derive(Debug, Clone)]
struct PartitionResult {
    error: Option<ErrorCode>,
    records: Chain,
    /// Length of the first batch in `records` (0 when empty).
    first_batch_len: usize,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// read_committed: the aborted transactions overlapping `records`.
    aborted: Option<Vec<AbortedTxn>>,
    /// A follower's log diverged: (epoch, end offset) to cut at (KIP-320).
    diverging_epoch: Option<(i32, i64)>,
}

pub async fn handle(ctx: &RequestContext, request: FetchRequest) -> FetchResponse {
    let by_id = ctx.api_version >= 13;
    // A follower's fetch names its broker (KIP-903 moved the id into
    // ReplicaState from v15).
    let replica = if ctx.api_version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let replica = (replica >= 0).then_some(replica);
    if let Some(id) = replica {
        if !is_peer_broker(ctx, id) {
            return FetchResponse {
                error_code: ErrorCode::ClusterAuthorizationFailed.code(),
                ..FetchResponse::default()
            };
        }
    }
    let (mode, wanted) = match open_session(ctx, &request, by_id) {
        Ok(x) => x,
        Err(code) => {
            return FetchResponse {
                error_code: code.code(),
                ..FetchResponse::default()
            }
        }
    };
    let resolved: Vec<(Wanted, Result<Arc<TopicMeta>, ErrorCode>)> = wanted
        .into_iter()
        .map(|w| {
            let topic = resolve(ctx, &w, by_id, replica.is_some());
            (w, topic)
        })
        .collect();

    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    // KIP-98: 1 is read_committed; anything else reads uncommitted (Kafka
    // treats every value but 1 so).
    let isolation = if request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    // Kafka's broker-side fetch.max.bytes: whatever the client asks, a
    // response carries at most this much record data (plus, per KIP-74, one
    // first batch).
    let broker_max = ctx.conn.shard.node.config.fetch_max_bytes;
    let max_bytes = if request.max_bytes <= 0 {
        broker_max
    } else {
        (request.max_bytes as usize).min(broker_max)
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
        let results = read_all(ctx, &resolved, max_bytes, isolation, replica).await;
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let has_error = results.iter().any(|r| r.error.is_some());
        let now = Instant::now();
        if bytes >= min_bytes || has_error || now >= deadline || listeners.is_empty() {
            break results;
        }
        let wake = futures_util::future::select_all(listeners.into_iter().map(Box::pin));
        let timeout = std::pin::pin!(compio::time::sleep(deadline - now));
        // A shutdown ends the wait too, so that stopping never waits out a long-poll.
        let stop = std::pin::pin!(ctx.conn.shard.node.shutdown.wait());
        let timeout_or_stop = futures_util::future::select(timeout, stop);
        futures_util::future::select(wake, timeout_or_stop).await;
    };
    build_response(ctx, mode, resolved, results, replica.is_some())
}

/// The topic a fetch names: any, for a follower; for a client, not one of
/// the internal topics.
fn resolve(
    ctx: &RequestContext,
    wanted: &Wanted,
    by_id: bool,
    replica: bool,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let image = ctx.conn.shard.node.image();
    let topic = match (by_id, replica) {
        (true, true) => image.topic_by_id(&wanted.topic_id),
        (true, false) => image.user_topic_by_id(&wanted.topic_id),
        (false, true) => image.topic(&wanted.topic_name),
        (false, false) => image.user_topic(&wanted.topic_name),
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
    if !ctx.conn.shard.node.leads(topic, wanted.partition) {
        return Err(ErrorCode::NotLeaderOrFollower);
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
    // A partition listed twice is read once: at its first place in the
    // request, with the last values given for it (Kafka keeps the request's
    // partitions in an insertion-ordered map the same way).
    let mut unique: IndexMap<(String, Uuid, i32), Wanted> = IndexMap::new();
    for t in &request.topics {
        for p in &t.partitions {
            let wanted = Wanted {
                topic_name: if by_id {
                    String::new()
                } else {
                    t.topic.0.to_string()
                },
                topic_id: if by_id { t.topic_id } else { Uuid::nil() },
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
            };
            let key = (wanted.topic_name.clone(), wanted.topic_id, wanted.partition);
            unique.insert(key, wanted);
        }
    }
    let listed: Vec<Wanted> = unique.into_values().collect();
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
                        last_stable_offset: -1,
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
                                last_stable_offset: -1,
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

/// Reads every partition, one batch of work per owning shard, then applies
/// `max_bytes` in request order.
async fn read_all(
    ctx: &RequestContext,
    resolved: &[(Wanted, Result<Arc<TopicMeta>, ErrorCode>)],
    max_bytes: usize,
    isolation: Isolation,
    replica: Option<i32>,
) -> Vec<PartitionResult> {
    let shard = &ctx.conn.shard;
    let asked = |w: &Wanted| Asked {
        offset: w.fetch_offset,
        current_leader_epoch: w.current_leader_epoch,
        last_fetched_epoch: w.last_fetched_epoch,
        replica,
    };
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
                let owner = shard.node.shard_for(&topic.name, wanted.partition);
                let partition_max = wanted.partition_max_bytes.max(0) as usize;
                plan.entry(owner).or_default().push((
                    i,
                    (topic.id, wanted.partition),
                    asked(wanted),
                    partition_max,
                ));
            }
        }
    }
    // Each owner reads its partitions in request order, each up to its partition
    // limit and what is left of `max_bytes` on that shard, so that with one owner
    // the limits come out exact. Only the owner's first read may return a first
    // batch larger than that (KIP-74), in case it is the first in the response.
    let reads = plan.into_iter().map(|(owner, items)| {
        shard.run_on(owner, move |owner| async move {
            let mut out = Vec::with_capacity(items.len());
            let mut shard_total = 0usize;
            for (i, key, asked, partition_max) in items {
                let limit = partition_max.min(max_bytes.saturating_sub(shard_total));
                let first_may_exceed = shard_total == 0 && limit > 0;
                let result = read_one(&owner, key, asked, limit, first_may_exceed, isolation).await;
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
    let mut results: Vec<PartitionResult> = results
        .into_iter()
        .map(|r| r.expect("every partition has a result"))
        .collect();
    // Apply the limits in request order, as Kafka does (KIP-74): whole batches
    // only; each partition gets at most its limit and what is left of
    // `max_bytes`; only the first batch of the first non-empty partition may
    // exceed them. Reads of several owners can together exceed `max_bytes`:
    // those partitions are read again with the limit they are left with (rare,
    // and a read decides from batch headers only, so it is cheap).
    let mut remaining = max_bytes;
    let mut any_data = false;
    let mut again: BTreeMap<usize, Vec<Reread>> = BTreeMap::new();
    for (i, ((wanted, topic), r)) in resolved.iter().zip(&results).enumerate() {
        if r.records.is_empty() {
            continue;
        }
        let limit = (wanted.partition_max_bytes.max(0) as usize).min(remaining);
        let len = r.records.len();
        if len <= limit || (!any_data && len == r.first_batch_len) {
            remaining = remaining.saturating_sub(len);
            any_data = true;
            continue;
        }
        let topic = topic.as_ref().expect("a partition with data was resolved");
        let owner = shard.node.shard_for(&topic.name, wanted.partition);
        again.entry(owner).or_default().push((
            i,
            (topic.id, wanted.partition),
            asked(wanted),
            limit,
            !any_data,
        ));
        // What the read again will hold: at most `limit`, and something only
        // if its first batch fits or may exceed.
        if r.first_batch_len <= limit || !any_data {
            remaining = remaining.saturating_sub(limit.max(r.first_batch_len));
            any_data = true;
        }
    }
    let rereads = again.into_iter().map(|(owner, items)| {
        shard.run_on(owner, move |owner| async move {
            let mut out = Vec::with_capacity(items.len());
            for (i, key, asked, limit, first_may_exceed) in items {
                out.push((
                    i,
                    read_one(&owner, key, asked, limit, first_may_exceed, isolation).await,
                ));
            }
            out
        })
    });
    for batch in futures_util::future::join_all(rereads).await {
        for (i, result) in batch {
            results[i] = result;
        }
    }
    results
}

/// Reads one partition on its owner shard: for a consumer up to the high
/// watermark, for a follower (checking first that its log agrees with this
/// one) up to the log end.
async fn read_one(
    owner: &Shard,
    key: PartitionKey,
    asked: Asked,
    limit: usize,
    first_may_exceed: bool,
    isolation: Isolation,
) -> PartitionResult {
    let Some(partition) = owner.partition(&key) else {
        return error_result(ErrorCode::UnknownTopicOrPartition);
    };
    if let Err(code) = partition.check_leader_epoch(asked.current_leader_epoch) {
        return error_result(code);
    }
    if let Some(replica) = asked.replica {
        let read = partition
            .read_for_replica(
                replica,
                asked.offset,
                asked.last_fetched_epoch,
                limit,
                first_may_exceed,
                owner.zero_copy_min_bytes,
            )
            .await;
        let state = partition.state();
        return match read {
            Ok(read) => PartitionResult {
                error: None,
                first_batch_len: 0,
                records: read.records,
                high_watermark: read.high_watermark,
                last_stable_offset: state.last_stable_offset(),
                log_start_offset: read.log_start_offset,
                aborted: None,
                diverging_epoch: read.diverging_epoch,
            },
            // The follower learns where the leader's log starts and ends.
            Err(ErrorCode::OffsetOutOfRange) => PartitionResult {
                error: Some(ErrorCode::OffsetOutOfRange),
                high_watermark: state.high_watermark(),
                log_start_offset: state.log_start_offset(),
                ..error_result(ErrorCode::OffsetOutOfRange)
            },
            Err(code) => error_result(code),
        };
    }
    match partition
        .read(
            asked.offset,
            limit,
            first_may_exceed,
            owner.zero_copy_min_bytes,
            isolation,
        )
        .await
    {
        Ok(read) => PartitionResult {
            error: None,
            first_batch_len: read.first_batch_len,
            records: read.records,
            high_watermark: read.high_watermark,
            last_stable_offset: read.last_stable_offset,
            log_start_offset: read.log_start_offset,
            aborted: read.aborted,
            diverging_epoch: None,
        },
        Err(ReadError::OffsetOutOfRange {
            log_start_offset,
            high_watermark,
            ..
        }) => PartitionResult {
            error: Some(ErrorCode::OffsetOutOfRange),
            records: Chain::default(),
            first_batch_len: 0,
            high_watermark,
            last_stable_offset: -1,
            log_start_offset,
            aborted: None,
            diverging_epoch: None,
        },
        Err(ReadError::Storage(message)) => {
            tracing::warn!(%message, "fetch read failed");
            error_result(ErrorCode::KafkaStorageError)
        }
    }
}

fn error_result(code: ErrorCode) -> PartitionResult {
    PartitionResult {
        error: Some(code),
        records: Chain::default(),
        first_batch_len: 0,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted: None,
        diverging_epoch: None,
    }
}

fn build_response(
    ctx: &RequestContext,
    mode: SessionMode,
    resolved: Vec<(Wanted, Result<Arc<TopicMeta>, ErrorCode>)>,
    results: Vec<PartitionResult>,
    from_follower: bool,
) -> FetchResponse {
    let metrics = &ctx.conn.shard.node.metrics.shards[ctx.conn.shard.id];
    let reader = if from_follower {
        FetchReader::Follower
    } else {
        FetchReader::Consumer
    };
    let mut sessions = ctx.conn.fetch_sessions.borrow_mut();
    let (session_id, mut session) = match mode {
        SessionMode::Sessionless => (0, None),
        SessionMode::New(id) => (id, sessions.sessions.get_mut(&id)),
        SessionMode::Incremental(id) => (id, sessions.sessions.get_mut(&id)),
    };
    let incremental = matches!(mode, SessionMode::Incremental(_));
    let node = &ctx.conn.shard.node;
    let image = node.image();
    let mut leaders = std::collections::BTreeSet::new();
    let mut topics: Vec<TopicResponse> = Vec::new();
    for ((wanted, _), result) in resolved.into_iter().zip(results) {
        // KIP-951: told it is not the leader (or of another epoch), the
        // client also learns who leads now.
        let current_leader = matches!(
            result.error,
            Some(ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch)
        )
        .then(|| {
            let topic = if wanted.topic_id.is_nil() {
                image.topic(&wanted.topic_name)
            } else {
                image.topic_by_id(&wanted.topic_id)
            };
            topic
                .and_then(|t| t.placement(wanted.partition))
                .filter(|p| p.leader >= 0 && node.is_live(&image, p.leader))
                .map(|p| (p.leader, p.leader_epoch))
        })
        .flatten();
        if let Some((leader, _)) = current_leader {
            leaders.insert(leader);
        }
        if let Some(session) = session.as_deref_mut() {
            let key = (wanted.topic_name.clone(), wanted.topic_id, wanted.partition);
            if let Some(state) = session.partitions.get_mut(&key) {
                let changed = result.error.is_some()
                    || result.diverging_epoch.is_some()
                    || !result.records.is_empty()
                    || state.last_high_watermark != result.high_watermark
                    || state.last_stable_offset != result.last_stable_offset
                    || state.last_log_start_offset != result.log_start_offset;
                state.last_high_watermark = result.high_watermark;
                state.last_stable_offset = result.last_stable_offset;
                state.last_log_start_offset = result.log_start_offset;
                if incremental && !changed {
                    continue;
                }
            }
        }
        for piece in result.records.pieces() {
            match piece {
                Piece::File(slice) => metrics.fetched(reader, FetchPath::Spliced, slice.len),
                Piece::Memory(bytes) => metrics.fetched(reader, FetchPath::Copied, bytes.len()),
            }
        }
        let data = PartitionResponse {
            partition_index: wanted.partition,
            error_code: result.error.map_or(0, |e| e.code()),
            high_watermark: result.high_watermark,
            last_stable_offset: result.last_stable_offset,
            log_start_offset: result.log_start_offset,
            aborted_transactions: result.aborted.map(|list| {
                list.iter()
                    .map(|t| (t.producer_id, t.first_offset))
                    .collect()
            }),
            records: result.records,
            diverging_epoch: result.diverging_epoch,
            current_leader,
        };
        let same_topic = topics
            .last()
            .is_some_and(|t| t.name == wanted.topic_name && t.topic_id == wanted.topic_id);
        if same_topic {
            topics.last_mut().expect("checked").partitions.push(data);
        } else {
            topics.push(TopicResponse {
                name: wanted.topic_name,
                topic_id: wanted.topic_id,
                partitions: vec![data],
            });
        }
    }
    let node_endpoints = if leaders.is_empty() {
        Vec::new()
    } else {
        node.brokers()
            .into_iter()
            .filter(|(id, ..)| leaders.contains(id))
            .collect()
    };
    FetchResponse {
        session_id,
        topics,
        node_endpoints,
        ..FetchResponse::default()
    }
}
