//! WriteTxnMarkers: writes transaction markers to partitions. In Kafka the
//! transaction coordinator sends it to partition leaders; on one node the
//! coordinator writes its markers directly (`node/txn_env.rs`), and this
//! request is how an administrator aborts a hanging transaction (KIP-664's
//! `kafka-transactions.sh abort`: the producer id, epoch and coordinator
//! epoch come from DescribeProducers). So it only aborts: a commit, or a
//! coordinator epoch other than this node's (or -1, none known), gets
//! INVALID_REQUEST; and only a transaction open on the partition at exactly
//! the given epoch (`node::txn_env::abort_hanging`).

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::node::txn_env::{abort_hanging, COORDINATOR_EPOCH};
use crate::protocol::errors::{code, ErrorCode};
use crate::server::connection::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let shard = &ctx.conn.shard;
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let (producer_id, epoch) = (marker.producer_id.0, marker.producer_epoch);
        let refused = marker.transaction_result
            || producer_id < 0
            || epoch < 0
            || !(-1..=COORDINATOR_EPOCH).contains(&marker.coordinator_epoch);
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let name = topic.name.0.to_string();
            let writes = topic.partition_indexes.iter().map(|&index| {
                let name = name.as_str();
                async move {
                    let result = if refused {
                        Err(ErrorCode::InvalidRequest)
                    } else {
                        abort_hanging(shard, name, index, producer_id, epoch).await
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
