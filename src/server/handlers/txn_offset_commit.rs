//! TxnOffsetCommit (KIP-98, KIP-447): consumer offsets committed as part of a
//! producer's transaction, visible only if it commits. The group's offsets
//! partition must have been added to the transaction (AddOffsetsToTxn); the
//! member and generation are checked as Kafka checks them for transactional
//! commits (KIP-447: fenced by generation, not by producer). From version 5
//! (KIP-890 part 2) the client sends no AddOffsetsToTxn: the partition is
//! added to the transaction here.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::group::offsets::{offsets_partition, CommittedOffset, OFFSETS_TOPIC};
use crate::group::state::GroupError;
use crate::node::txn_rpc::{ask_coordinator, Ask};
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::offset_commit::{decide, PartitionCommit};
use crate::server::handlers::{check_group_id, on_coordinator, topic_name};

pub async fn handle(
    ctx: &RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let version = ctx.api_version;
    let transactional_id = request.transactional_id.0.to_string();
    let group_id = request.group_id.0.to_string();
    let request_error = if transactional_id.is_empty() {
        Some(ErrorCode::InvalidRequest)
    } else {
        check_group_id(&group_id).err()
    };
    let decided = decide(
        &ctx.conn.shard.node.image(),
        request_error,
        request.topics.iter().flat_map(|topic| {
            topic.partitions.iter().map(|p| PartitionCommit {
                topic: topic.name.0.as_str(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_deref(),
            })
        }),
    );
    let to_store: Vec<((String, i32), CommittedOffset)> = decided
        .iter()
        .filter_map(|(t, p, o)| o.as_ref().ok().map(|o| ((t.clone(), *p), o.clone())))
        .collect();
    let store_error = if to_store.is_empty() {
        None
    } else {
        store(
            ctx,
            &request,
            &transactional_id,
            &group_id,
            version,
            to_store,
        )
        .await
        .err()
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (name, partition, outcome) in decided {
        let code = match outcome {
            Err(code) => code.code(),
            Ok(_) => store_error.map_or(0, |c| c.code()),
        };
        let entry = TxnOffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == name => t.partitions.push(entry),
            _ => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic_name(&name))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The guard on the group's shard, the coordinator's verification, then the
/// group check and the write on the group's shard.
async fn store(
    ctx: &RequestContext,
    request: &TxnOffsetCommitRequest,
    transactional_id: &str,
    group_id: &str,
    version: i16,
    offsets: Vec<((String, i32), CommittedOffset)>,
) -> Result<(), ErrorCode> {
    let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
    let gid = group_id.to_string();
    let guard = on_coordinator(ctx, group_id, move |c| async move {
        c.offsets
            .begin_txn_commit(&gid, producer_id, epoch, version >= 5)
    })
    .await?;
    let shard = &ctx.conn.shard;
    if guard.is_some() && version >= 5 {
        let partition = (OFFSETS_TOPIC.to_string(), offsets_partition(group_id));
        let added = ask_coordinator(
            shard,
            transactional_id,
            producer_id,
            epoch,
            vec![partition],
            Ask::Add,
        )
        .await;
        match added {
            Ok(_) => {}
            Err(ErrorCode::ProducerFenced) => return Err(ErrorCode::InvalidProducerEpoch),
            Err(ErrorCode::NotCoordinator | ErrorCode::CoordinatorLoadInProgress) => {
                return Err(ErrorCode::CoordinatorNotAvailable)
            }
            Err(code) => return Err(code),
        }
    } else if guard.is_some() {
        let partition = (OFFSETS_TOPIC.to_string(), offsets_partition(group_id));
        let verdict = ask_coordinator(
            shard,
            transactional_id,
            producer_id,
            epoch,
            vec![partition],
            Ask::Verify,
        )
        .await
        .map(|mut each| each.pop().flatten());
        match verdict {
            Ok(None) => {}
            // KIP-890: versions before 4 do not know TRANSACTION_ABORTABLE.
            Ok(Some(_)) if version >= 4 => return Err(ErrorCode::TransactionAbortable),
            Ok(Some(_)) => return Err(ErrorCode::InvalidTxnState),
            Err(ErrorCode::ProducerFenced) => return Err(ErrorCode::InvalidProducerEpoch),
            Err(ErrorCode::NotCoordinator | ErrorCode::CoordinatorLoadInProgress) => {
                return Err(ErrorCode::CoordinatorNotAvailable)
            }
            Err(code) => return Err(code),
        }
    }
    let gid = group_id.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = request.generation_id;
    on_coordinator(ctx, group_id, move |c| async move {
        // No live group: a commit without generation is a "simple" group's.
        let check = c
            .with_group(&gid, |group| {
                group.validate_txn_offset_commit(&member_id, instance_id.as_deref(), generation)
            })
            .unwrap_or(if generation < 0 {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            });
        if let Err(error) = check {
            return Err(
                ErrorCode::try_from_code(error.code()).unwrap_or(ErrorCode::UnknownServerError)
            );
        }
        c.commit_transactional(&gid, producer_id, epoch, guard, offsets)
            .await
    })
    .await?
}
