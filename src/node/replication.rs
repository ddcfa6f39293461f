//! Partition replication on one shard: each partition this shard owns takes
//! the role the metadata image gives it (leader or follower); followers are
//! filled by replica fetchers, one per leader broker, each a Kafka client on
//! this shard sending Fetch (with this broker's id as `replica_id`, KIP-320's
//! `last_fetched_epoch`) to the leader's advertised listener; leaders ask the
//! active controller to shrink or expand their ISR (AlterPartition).
//!
//! Everything about one partition happens on the shard that owns it: the
//! fetcher appends through the partition's log and group commit there, and
//! the leader's ISR bookkeeping is the partition's own (`partition::replica`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::io::rpc::RpcClient;
use crate::metadata::MetadataImage;
use crate::node::controller_rpc::{ControllerAnswer, ControllerRequest};
use crate::node::coordinators::on_role_change;
use crate::node::fetchers::{Fetcher, Followed};
use crate::node::shard::{PartitionKey, Shard};
use crate::partition::local::{Partition, RoleChange};
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;

/// The Fetch version replica fetchers speak: the first with KIP-320's
/// diverging epoch, still naming topics by name.
const FETCH_VERSION: i16 = 12;
/// How long the leader may hold a replica fetch with nothing new
/// (replica.fetch.wait.max.ms's default).
const FETCH_WAIT_MAX_MS: i32 = 500;
/// Per partition and per response (replica.fetch.max.bytes,
/// replica.fetch.response.max.bytes).
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_RESPONSE_MAX_BYTES: i32 = 10 << 20;
/// After a failed fetch (the leader unreachable), the next waits this long
/// (replica.fetch.backoff.ms).
const FETCH_BACKOFF: Duration = Duration::from_millis(200);
/// How long a fetch may take in all before its connection is dropped.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// An ISR change with no answer is asked again after this.
const ISR_RETRY_MS: i64 = 5_000;

/// Gives every partition this shard owns the role `image` places it in, and
/// the fetchers their partitions. Runs on the shard, after each new image
/// and once the logs are open at start-up.
pub fn apply_roles(shard: &Rc<Shard>, image: &MetadataImage) {
    let mut follows: Vec<(PartitionKey, i32, Followed)> = Vec::new();
    let mut not_following: Vec<PartitionKey> = Vec::new();
    let partitions = shard.partition_list();
    for (key, partition) in partitions {
        let Some(topic) = image.topic_by_id(&key.0) else {
            continue;
        };
        let Some(placement) = topic.placement(key.1) else {
            continue;
        };
        let change = partition.apply_placement(placement);
        on_role_change(shard, &partition, change, topic.config.min_insync_replicas);
        match change {
            RoleChange::Leads => {
                tracing::info!(topic = %partition.topic, partition = partition.index, epoch = placement.leader_epoch, isr = ?placement.isr, "leading the partition");
                not_following.push(key);
            }
            RoleChange::Follows {
                leader,
                leader_epoch,
            } => {
                tracing::info!(topic = %partition.topic, partition = partition.index, leader, epoch = leader_epoch, "following the partition's leader");
                not_following.push(key);
                if leader >= 0 {
                    follows.push((
                        key,
                        leader,
                        Followed {
                            topic: partition.topic.clone(),
                            leader_epoch,
                        },
                    ));
                }
            }
            RoleChange::Unchanged => {}
        }
    }
    let replication = shard.replication.clone();
    let mut fetchers = replication.fetchers.borrow_mut();
    let hosted = shard.partitions.borrow();
    for fetcher in fetchers.values() {
        let mut list = fetcher.partitions.borrow_mut();
        let before = list.len();
        // Followed elsewhere now, or no longer here (deleted).
        list.retain(|k, _| !not_following.contains(k) && hosted.contains_key(k));
        if list.len() != before {
            fetcher.changed.notify(usize::MAX);
        }
    }
    for (key, leader, followed) in follows {
        let fetcher = fetchers.entry(leader).or_insert_with(|| {
            let fetcher = Rc::new(Fetcher {
                partitions: RefCell::new(BTreeMap::new()),
                changed: Event::new(),
            });
            compio::runtime::spawn(run_fetcher(shard.clone(), leader, fetcher.clone())).detach();
            fetcher
        });
        fetcher.partitions.borrow_mut().insert(key, followed);
        fetcher.changed.notify(usize::MAX);
    }
    drop(hosted);
}

/// The fetch loop for `leader`: until shutdown, or until it has no
/// partition left (then it removes itself).
async fn run_fetcher(shard: Rc<Shard>, leader: i32, fetcher: Rc<Fetcher>) {
    let me = shard.node.config.node_id;
    let mut client: Option<RpcClient> = None;
    let mut correlation = 0i32;
    loop {
        if shard.node.shutdown.is_triggered() {
            break;
        }
        let listener = fetcher.changed.listen();
        // A replica whose log failed here fetches nothing (it could not
        // append): it stays out of the ISR until the broker restarts.
        let wanted: Vec<(PartitionKey, Followed)> = fetcher
            .partitions
            .borrow()
            .iter()
            .filter(|(k, _)| shard.partition(k).is_some_and(|p| !p.state().is_offline()))
            .map(|(k, f)| (*k, f.clone()))
            .collect();
        if wanted.is_empty() {
            // Idle; gone once nothing was added back meanwhile.
            let mut fetchers = shard.replication.fetchers.borrow_mut();
            fetcher
                .partitions
                .borrow_mut()
                .retain(|k, _| shard.partition(k).is_some());
            if fetcher.partitions.borrow().is_empty() {
                if fetchers
                    .get(&leader)
                    .is_some_and(|f| Rc::ptr_eq(f, &fetcher))
                {
                    fetchers.remove(&leader);
                }
                return;
            }
            drop(fetchers);
            wait_or_change(listener, FETCH_BACKOFF).await;
            continue;
        }
        let address = {
            let image = shard.node.image();
            image
                .brokers
                .get(&leader)
                .map(|b| format!("{}:{}", b.host, b.port))
        };
        let Some(address) = address else {
            wait_or_change(listener, FETCH_BACKOFF).await;
            continue;
        };
        if client.as_ref().is_none_or(|c| c.addr() != address) {
            client = Some(RpcClient::new(address));
        }
        let client = client.as_mut().expect("set above");
        correlation = correlation.wrapping_add(1);
        let request = fetch_request(&shard, me, &wanted, correlation);
        let answer = client.call(request, FETCH_TIMEOUT).await;
        let response = match answer.and_then(|bytes| decode_response(bytes, correlation)) {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(leader, %error, "a replica fetch failed");
                wait_or_change(listener, FETCH_BACKOFF).await;
                continue;
            }
        };
        if response.error_code != 0 {
            tracing::debug!(
                leader,
                code = response.error_code,
                "the leader refused the replica fetch"
            );
            wait_or_change(listener, FETCH_BACKOFF).await;
            continue;
        }
        let mut delay = false;
        for topic in response.responses {
            let name = topic.topic.0.as_str();
            for p in topic.partitions {
                let key = wanted
                    .iter()
                    .find(|(k, f)| &*f.topic == name && k.1 == p.partition_index)
                    .map(|(k, f)| (*k, f.leader_epoch));
                let Some((key, epoch)) = key else {
                    continue;
                };
                let Some(partition) = shard.partition(&key) else {
                    continue;
                };
                if let Err(why) = take_response(&shard, &partition, epoch, p).await {
                    delay = true;
                    tracing::debug!(topic = %partition.topic, partition = partition.index, leader, %why, "replica fetch for the partition");
                }
            }
        }
        if delay {
            wait_or_change(listener, FETCH_BACKOFF).await;
        }
    }
}

/// Waits `pause`, or less if the fetcher's partitions change.
async fn wait_or_change(listener: event_listener::EventListener, pause: Duration) {
    let timer = std::pin::pin!(compio::time::sleep(pause));
    futures_util::future::select(listener, timer).await;
}

/// The Fetch request for `wanted`, framed (header and body).
fn fetch_request(
    shard: &Shard,
    me: i32,
    wanted: &[(PartitionKey, Followed)],
    correlation: i32,
) -> Vec<u8> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (key, followed) in wanted {
        let Some(partition) = shard.partition(key) else {
            continue;
        };
        let (offset, last_epoch) = partition.fetch_position();
        let entry = FetchPartition::default()
            .with_partition(key.1)
            .with_current_leader_epoch(followed.leader_epoch)
            .with_fetch_offset(offset)
            .with_last_fetched_epoch(last_epoch)
            .with_log_start_offset(partition.state().log_start_offset())
            .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == &*followed.topic => t.partitions.push(entry),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(followed.topic.to_string())))
                    .with_topic_id(key.0)
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let body = FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(FETCH_WAIT_MAX_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(format!("sluice-replica-{me}"))));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, FetchRequest::header_version(FETCH_VERSION))
        .expect("a fetch request header encodes");
    body.encode(&mut buf, FETCH_VERSION)
        .expect("a fetch request encodes");
    buf.to_vec()
}

fn decode_response(bytes: Vec<u8>, correlation: i32) -> std::io::Result<FetchResponse> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut buf = Bytes::from(bytes);
    let header = ResponseHeader::decode(&mut buf, FetchResponse::header_version(FETCH_VERSION))
        .map_err(|e| invalid(format!("fetch response header: {e}")))?;
    if header.correlation_id != correlation {
        return Err(invalid(format!(
            "correlation id {} answers {correlation}",
            header.correlation_id
        )));
    }
    FetchResponse::decode(&mut buf, FETCH_VERSION)
        .map_err(|e| invalid(format!("fetch response: {e}")))
}

/// One partition of the leader's answer, taken on the follower: records
/// appended, a divergence cut, a log out of the leader's range reset.
async fn take_response(
    shard: &Rc<Shard>,
    partition: &Partition,
    epoch: i32,
    p: kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), String> {
    match ErrorCode::try_from_code(p.error_code) {
        None => {}
        Some(ErrorCode::OffsetOutOfRange) => {
            let (offset, _) = partition.fetch_position();
            let (target, restart) = if offset < p.log_start_offset {
                (p.log_start_offset, true)
            } else {
                // Past the leader's end: back to what it has committed.
                (p.high_watermark.max(0), false)
            };
            tracing::warn!(topic = %partition.topic, partition = partition.index, offset, leader_log_start = p.log_start_offset, leader_high_watermark = p.high_watermark, "the follower's fetch offset is out of the leader's range");
            partition
                .truncate_as_follower(epoch, target, restart)
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        Some(code) => return Err(format!("the leader answered {code:?}")),
    }
    let diverging = p.diverging_epoch;
    if diverging.epoch >= 0 || diverging.end_offset >= 0 {
        // KIP-320: cut where the two logs stop agreeing; when the leader's
        // epoch is not this log's, cut at this log's end of it and ask again.
        let (local_epoch, local_end) = partition.end_offset_for_epoch(diverging.epoch);
        let target = if local_epoch == diverging.epoch {
            diverging.end_offset.min(local_end)
        } else {
            local_end
        }
        .max(0);
        tracing::info!(topic = %partition.topic, partition = partition.index, leader_epoch = diverging.epoch, leader_end = diverging.end_offset, target, "the log diverged from the leader's: truncating");
        partition
            .truncate_as_follower(epoch, target, false)
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let records = p.records.unwrap_or_default();
    partition
        .append_from_leader(
            &shard.commit,
            epoch,
            records,
            p.high_watermark,
            p.log_start_offset,
        )
        .await
        .map_err(|e| e.to_string())
}

/// The leaders' ISR upkeep on this shard, every `tick` until shutdown: each
/// partition it leads whose ISR should change asks the active controller.
pub fn start_isr_upkeep(shard: &Rc<Shard>) {
    let shard = shard.clone();
    let lag_max_ms = shard.node.config.replica_lag_time_max_ms as i64;
    let tick = Duration::from_millis((lag_max_ms as u64 / 10).clamp(20, 500));
    compio::runtime::spawn(async move {
        while !shard.node.shutdown.is_triggered() {
            compio::time::sleep(tick).await;
            let partitions = shard.partition_list();
            for (key, partition) in partitions {
                // A fenced broker may still fetch; it is not added (the
                // controller would refuse the whole change, shrink included).
                let image = shard.node.image();
                let live = |r: i32| image.brokers.get(&r).is_some_and(|b| !b.fenced);
                let change = partition.isr_change(lag_max_ms, ISR_RETRY_MS, live);
                drop(image);
                let Some((isr, leader_epoch, partition_epoch)) = change else {
                    continue;
                };
                let request = ControllerRequest::AlterPartition {
                    broker: shard.node.config.node_id,
                    topic_id: key.0,
                    partition: key.1,
                    leader_epoch,
                    partition_epoch,
                    isr: isr.clone(),
                };
                let bytes = serde_json::to_vec(&request).expect("requests encode");
                let answer = call_controller(&shard, bytes).await;
                match answer {
                    Ok(ControllerAnswer::Live) => {
                        tracing::info!(topic = %partition.topic, partition = partition.index, ?isr, "the ISR changed");
                    }
                    Ok(other) => {
                        tracing::info!(topic = %partition.topic, partition = partition.index, ?isr, answer = ?other, "an ISR change was refused");
                        partition.forget_pending_isr();
                    }
                    Err(error) => {
                        tracing::debug!(topic = %partition.topic, partition = partition.index, %error, "asking for an ISR change");
                    }
                }
            }
        }
    })
    .detach();
}

/// Sends a controller request from any shard (through shard 0's link).
pub(crate) async fn call_controller(
    shard: &Rc<Shard>,
    bytes: Vec<u8>,
) -> Result<ControllerAnswer, String> {
    let answer = shard
        .try_run_on(CONTROLLER_SHARD, move |s| async move {
            let call = s.call_controller.borrow().clone();
            match call {
                Some(call) => call(bytes).await.map_err(|e| e.to_string()),
                None => Err("the controller link is not up".to_string()),
            }
        })
        .await
        .ok_or_else(|| "the controller shard has stopped".to_string())??;
    serde_json::from_slice::<ControllerAnswer>(&answer)
        .map_err(|e| format!("undecodable answer: {e}"))
}
