//! WriteTxnMarkers: writes transaction markers to partitions this broker
//! leads. Two senders:
//! - a transaction coordinator on another broker (its client id names it,
//!   and it must be a live registered broker at its address), whose commit
//!   and abort markers are written as they come, with its coordinator epoch
//!   (an older epoch than the partition's last marker's is refused:
//!   TRANSACTION_COORDINATOR_FENCED);
//! - an administrator aborting a hanging transaction (KIP-664's
//!   `kafka-transactions.sh abort`: the producer id, epoch and coordinator
//!   epoch come from DescribeProducers). That only aborts: a commit gets
//!   INVALID_REQUEST, as does a coordinator epoch no coordinator has had (above
//!   every transaction-log partition's leader epoch: it would fence the real
//!   coordinator's markers), and only a transaction open on the partition at
//!   exactly the given epoch is aborted (`node::txn_env::abort_hanging`).

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::node::txn_env::{abort_hanging, write_marker};
use crate::protocol::control::EndTxnMarker;
use crate::protocol::errors::{code, ErrorCode};
use crate::server::connection::RequestContext;
use crate::server::handlers::from_peer_coordinator;
use crate::txn::coordinator::TXN_TOPIC;

pub async fn handle(
    ctx: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let shard = &ctx.conn.shard;
    let coordinator = from_peer_coordinator(ctx);
    // The highest coordinator epoch there is: coordinator epochs are the
    // transaction log's leader epochs.
    let epoch_max = shard.node.image().topic(TXN_TOPIC).map_or(0, |t| {
        t.placements
            .iter()
            .map(|p| p.leader_epoch)
            .max()
            .unwrap_or(0)
    });
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let (producer_id, epoch) = (marker.producer_id.0, marker.producer_epoch);
        let coordinator_epoch = marker.coordinator_epoch;
        // A coordinator epoch no coordinator has had (above every
        // transaction-log partition's leader epoch) would fence the real
        // coordinator's markers: an administrator's is refused, a peer's
        // is retried (this broker's image may be behind).
        let ahead = coordinator_epoch > epoch_max;
        let refused = (!coordinator && (marker.transaction_result || ahead))
            || producer_id < 0
            || epoch < 0
            || coordinator_epoch < -1;
        let commit = marker.transaction_result;
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let name = topic.name.0.to_string();
            let writes = topic.partition_indexes.iter().map(|&index| {
                let name = name.as_str();
                async move {
                    let result = if refused || name == TXN_TOPIC {
                        // The transaction log holds no transactions.
                        Err(ErrorCode::InvalidRequest)
                    } else if coordinator && ahead {
                        Err(ErrorCode::NotLeaderOrFollower)
                    } else if coordinator {
                        let marker = EndTxnMarker {
                            commit,
                            coordinator_epoch: coordinator_epoch.max(0),
                        };
                        write_marker(shard, name, index, producer_id, epoch, marker).await
                    } else {
                        abort_hanging(shard, name, index, producer_id, epoch, coordinator_epoch)
                            .await
                    };
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code(result.err()))
                }
            });
            let partitions = futures_util::future::join_all(writes).await;
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}
