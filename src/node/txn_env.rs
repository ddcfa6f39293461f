//! What the transaction coordinator of a shard reaches through the node:
//! producer ids from the controller, and the partitions (on whichever shard
//! owns them) that markers go to.

use std::rc::{Rc, Weak};

use futures_util::future::LocalBoxFuture;

use crate::group::offsets::OFFSETS_TOPIC;
use crate::node::shard::Shard;
use crate::protocol::control::EndTxnMarker;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::txn::coordinator::TxnEnv;
use crate::txn::state::TopicPartition;

/// The coordinator epoch markers carry: the leader epoch of the
/// transaction-log partition, which never changes on one node.
pub const COORDINATOR_EPOCH: i32 = 0;

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
        partitions: Vec<TopicPartition>,
    ) -> LocalBoxFuture<'_, Vec<(TopicPartition, Result<(), ErrorCode>)>> {
        Box::pin(async move {
            let shard = match self.shard() {
                Ok(shard) => shard,
                Err(code) => return partitions.into_iter().map(|p| (p, Err(code))).collect(),
            };
            let marker = EndTxnMarker {
                commit,
                coordinator_epoch: COORDINATOR_EPOCH,
            };
            let writes = partitions.into_iter().map(|(topic, index)| {
                let shard = shard.clone();
                async move {
                    let result =
                        write_marker(&shard, &topic, index, producer_id, producer_epoch, marker)
                            .await;
                    ((topic, index), result)
                }
            });
            futures_util::future::join_all(writes).await
        })
    }
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
/// coordinator holds). UNKNOWN_TOPIC_OR_PARTITION if there is no such one.
fn locate(
    shard: &Shard,
    topic: &str,
    index: i32,
) -> Result<(usize, Option<(uuid::Uuid, i32)>), ErrorCode> {
    if topic == OFFSETS_TOPIC {
        if !(0..crate::group::offsets::OFFSETS_PARTITIONS).contains(&index) {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        return Ok((shard.node.shard_for(OFFSETS_TOPIC, index), None));
    }
    let meta = shard.node.image().topic(topic).cloned();
    let Some(meta) = meta.filter(|m| m.partition(index).is_some()) else {
        return Err(ErrorCode::UnknownTopicOrPartition);
    };
    Ok((shard.node.shard_for(topic, index), Some((meta.id, index))))
}

/// An administrator's abort of a hanging transaction (WriteTxnMarkers, as
/// `kafka-transactions.sh abort` sends it): an abort marker for `producer_id`
/// on partition `index` of `topic`, written only if that producer has a
/// transaction open there at exactly `producer_epoch` (INVALID_PRODUCER_EPOCH
/// if at another epoch, INVALID_TXN_STATE if none), so that a request cannot
/// fence a live producer or plant state the coordinator does not expect.
pub async fn abort_hanging(
    shard: &Rc<Shard>,
    topic: &str,
    index: i32,
    producer_id: i64,
    producer_epoch: i16,
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
        coordinator_epoch: COORDINATOR_EPOCH,
    };
    write_marker(shard, topic, index, producer_id, producer_epoch, marker).await
}
