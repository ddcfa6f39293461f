//! What the transaction coordinator of a shard reaches through the node:
//! producer ids from the controller, and the partitions that markers go to:
//! on whichever shard owns them here, or with WriteTxnMarkers to the broker
//! that leads them.

use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, RequestHeader, ResponseHeader, TopicName, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::group::offsets::OFFSETS_TOPIC;
use crate::io::rpc::RpcClient;
use crate::node::shard::Shard;
use crate::protocol::control::EndTxnMarker;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::txn::coordinator::TxnEnv;
use crate::txn::state::TopicPartition;

/// The WriteTxnMarkers version coordinators send (the first flexible one).
const MARKERS_VERSION: i16 = 1;
/// How long a broker has to answer a coordinator's WriteTxnMarkers.
const MARKERS_TIMEOUT: Duration = Duration::from_secs(10);
/// The client id a coordinator's WriteTxnMarkers carries, with its broker
/// id after it: the receiving broker writes commit markers only for a live
/// registered broker (at its address).
pub const COORDINATOR_CLIENT_PREFIX: &str = "sluice-coordinator-";

/// A shard's view of the node for its transaction coordinator. Weak: the
/// shard holds the coordinator, which holds this.
pub struct ShardTxnEnv {
    pub shard: Weak<Shard>,
}

impl ShardTxnEnv {
    fn shard(&self) -> Result<Rc<Shard>, ErrorCode> {
        self.shard
            .upgrade()
            .ok_or(ErrorCode::CoordinatorNotAvailable)
    }
}

impl TxnEnv for ShardTxnEnv {
    fn allocate_producer_id(&self) -> LocalBoxFuture<'_, Result<i64, ErrorCode>> {
        Box::pin(async move {
            let shard = self.shard()?;
            shard
                .run_on(CONTROLLER_SHARD, |shard| async move {
                    shard
                        .controller()
                        .allocate_producer_id()
                        .await
                        .map_err(|e| e.code)
                })
                .await
        })
    }

    fn write_markers(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        partitions: Vec<TopicPartition>,
    ) -> LocalBoxFuture<'_, Vec<(TopicPartition, Result<(), ErrorCode>)>> {
        Box::pin(async move {
            let shard = match self.shard() {
                Ok(shard) => shard,
                Err(code) => return partitions.into_iter().map(|p| (p, Err(code))).collect(),
            };
            let marker = EndTxnMarker {
                commit,
                coordinator_epoch,
            };
            // Where each partition's leader is: here, or another broker.
            let me = shard.node.config.node_id;
            let mut local = Vec::new();
            let mut remote: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
            let mut results = Vec::new();
            {
                let image = shard.node.image();
                for (topic, index) in partitions {
                    let leader = image
                        .topic(&topic)
                        .map(|t| t.placement(index).map_or(-2, |p| p.leader));
                    match leader {
                        // A deleted topic (or partition): nothing to mark.
                        None | Some(-2) => {
                            results.push(((topic, index), Err(ErrorCode::UnknownTopicOrPartition)))
                        }
                        Some(leader) if leader == me => local.push((topic, index)),
                        Some(-1) => {
                            results.push(((topic, index), Err(ErrorCode::NotLeaderOrFollower)))
                        }
                        Some(leader) => remote.entry(leader).or_default().push((topic, index)),
                    }
                }
            }
            let local_writes = local.into_iter().map(|(topic, index)| {
                let shard = shard.clone();
                async move {
                    let result =
                        write_marker(&shard, &topic, index, producer_id, producer_epoch, marker)
                            .await;
                    vec![((topic, index), result)]
                }
            });
            let remote_writes = remote.into_iter().map(|(broker, partitions)| {
                let shard = shard.clone();
                async move {
                    send_markers(
                        &shard,
                        broker,
                        producer_id,
                        producer_epoch,
                        marker,
                        partitions,
                    )
                    .await
                }
            });
            let (local, remote) = futures_util::future::join(
                futures_util::future::join_all(local_writes),
                futures_util::future::join_all(remote_writes),
            )
            .await;
            results.extend(local.into_iter().flatten());
            results.extend(remote.into_iter().flatten());
            results
        })
    }
}

/// Sends the markers of `partitions` to `broker`, their leader, as one
/// WriteTxnMarkers; one result per partition (the request's failure is
/// each partition's, to be retried).
async fn send_markers(
    shard: &Rc<Shard>,
    broker: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    partitions: Vec<TopicPartition>,
) -> Vec<(TopicPartition, Result<(), ErrorCode>)> {
    let failed = |partitions: Vec<TopicPartition>, code: ErrorCode| {
        partitions.into_iter().map(|p| (p, Err(code))).collect()
    };
    let address = shard
        .node
        .image()
        .brokers
        .get(&broker)
        .filter(|b| !b.fenced)
        .map(|b| format!("{}:{}", b.host, b.port));
    let Some(address) = address else {
        return failed(partitions, ErrorCode::NotLeaderOrFollower);
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            )]);
    let me = shard.node.config.node_id;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::WriteTxnMarkers as i16)
        .with_request_api_version(MARKERS_VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_string(format!(
            "{COORDINATOR_CLIENT_PREFIX}{me}"
        ))));
    let mut buf = BytesMut::new();
    header
        .encode(
            &mut buf,
            WriteTxnMarkersRequest::header_version(MARKERS_VERSION),
        )
        .expect("a request header encodes");
    request
        .encode(&mut buf, MARKERS_VERSION)
        .expect("a WriteTxnMarkers request encodes");
    let mut client = RpcClient::new(address);
    let answer = client.call(buf.to_vec(), MARKERS_TIMEOUT).await;
    let response = answer.ok().and_then(|bytes| {
        let mut buf = Bytes::from(bytes);
        ResponseHeader::decode(
            &mut buf,
            WriteTxnMarkersResponse::header_version(MARKERS_VERSION),
        )
        .ok()
        .filter(|h| h.correlation_id == 1)?;
        WriteTxnMarkersResponse::decode(&mut buf, MARKERS_VERSION).ok()
    });
    let Some(response) = response else {
        tracing::debug!(broker, "a WriteTxnMarkers to the partitions' leader failed");
        return failed(partitions, ErrorCode::NotLeaderOrFollower);
    };
    let mut answered: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for result in response.markers {
        for topic in result.topics {
            for p in topic.partitions {
                answered.insert((topic.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    partitions
        .into_iter()
        .map(|p| {
            let result = match answered.get(&p) {
                Some(0) => Ok(()),
                Some(&code) => {
                    Err(ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError))
                }
                None => Err(ErrorCode::UnknownServerError),
            };
            (p, result)
        })
        .collect()
}

/// Writes a transaction marker to partition `index` of `topic` on the shard
/// that owns it, durably: the transaction coordinator's markers, and
/// WriteTxnMarkers from an administrator aborting a hanging transaction.
/// Markers for the offsets log go through its group coordinator, which
/// decides the offsets the transaction held.
pub async fn write_marker(
    shard: &Rc<Shard>,
    topic: &str,
    index: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
) -> Result<(), ErrorCode> {
    let (owner, key) = locate(shard, topic, index)?;
    let Some(key) = key else {
        return shard
            .run_on(owner, move |owner| async move {
                owner
                    .groups()
                    .complete_txn(index, producer_id, producer_epoch, marker)
                    .await
            })
            .await;
    };
    shard
        .run_on(owner, move |owner| async move {
            let Some(partition) = owner.partition(&key) else {
                return Err(ErrorCode::UnknownTopicOrPartition);
            };
            partition
                .write_marker(
                    &owner.commit,
                    producer_id,
                    producer_epoch,
                    marker,
                    &owner.node.shutdown,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.error_code())
        })
        .await
}

/// Where partition `index` of `topic` lives: its owning shard, and its key
/// there (None for a partition of the offsets log, which the group
/// coordinator holds). UNKNOWN_TOPIC_OR_PARTITION if there is no such one,
/// NOT_LEADER_OR_FOLLOWER if this broker does not lead it.
fn locate(
    shard: &Shard,
    topic: &str,
    index: i32,
) -> Result<(usize, Option<(uuid::Uuid, i32)>), ErrorCode> {
    let meta = shard.node.image().topic(topic).cloned();
    let Some(meta) = meta.filter(|m| m.partition(index).is_some()) else {
        return Err(ErrorCode::UnknownTopicOrPartition);
    };
    if !shard.node.leads(&meta, index) {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    let key = (topic != OFFSETS_TOPIC).then_some((meta.id, index));
    Ok((shard.node.shard_for(topic, index), key))
}

/// An administrator's abort of a hanging transaction (WriteTxnMarkers, as
/// `kafka-transactions.sh abort` sends it): an abort marker for `producer_id`
/// on partition `index` of `topic`, written only if that producer has a
/// transaction open there at exactly `producer_epoch` (INVALID_PRODUCER_EPOCH
/// if at another epoch, INVALID_TXN_STATE if none), so that a request cannot
/// fence a live producer or plant state the coordinator does not expect.
/// The marker carries `coordinator_epoch` (DescribeProducers'; -1 as 0): one
/// older than the partition's last marker is refused
/// (TRANSACTION_COORDINATOR_FENCED).
pub async fn abort_hanging(
    shard: &Rc<Shard>,
    topic: &str,
    index: i32,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
) -> Result<(), ErrorCode> {
    let check = |open: Vec<(i64, i16, i64)>| -> Result<(), ErrorCode> {
        match open.iter().find(|(id, _, _)| *id == producer_id) {
            Some((_, epoch, _)) if *epoch == producer_epoch => Ok(()),
            Some(_) => Err(ErrorCode::InvalidProducerEpoch),
            None => Err(ErrorCode::InvalidTxnState),
        }
    };
    let (owner, key) = locate(shard, topic, index)?;
    let open = match key {
        None => {
            shard
                .run_on(owner, move |owner| async move {
                    owner.groups().offsets.open_transactions(index)
                })
                .await
        }
        Some(key) => {
            shard
                .run_on(owner, move |owner| async move {
                    owner
                        .partition(&key)
                        .map(|p| p.log().borrow().open_transactions())
                })
                .await
        }
    };
    check(open.ok_or(ErrorCode::UnknownTopicOrPartition)?)?;
    let marker = EndTxnMarker {
        commit: false,
        coordinator_epoch: coordinator_epoch.max(0),
    };
    write_marker(shard, topic, index, producer_id, producer_epoch, marker).await
}
