//! DescribeQuorum (KIP-595, KIP-836, KIP-853): the metadata quorum as its
//! leader sees it, for `kafka-metadata-quorum describe --status/--replication`.
//! Only `__cluster_metadata` partition 0 exists; a node that does not lead
//! answers NOT_LEADER_OR_FOLLOWER with the leader it knows (Kafka's brokers
//! forward the request to the active controller; a client can ask the leader).

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use crate::metadata::controller::VoterView;
use crate::protocol::errors::{ErrorCode, NONE};
use crate::runtime::CONTROLLER_SHARD;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

/// The quorum's topic and partition (KRaft's names).
const TOPIC: &str = "__cluster_metadata";

fn replica(voter: &VoterView, version: i16) -> ReplicaState {
    let state = ReplicaState::default()
        .with_replica_id(BrokerId(voter.id))
        .with_log_end_offset(voter.log_end_offset);
    if version < 1 {
        return state;
    }
    state
        .with_last_fetch_timestamp(voter.last_fetch_timestamp)
        .with_last_caught_up_timestamp(voter.last_caught_up_timestamp)
}

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let asks_for_the_quorum = request.topics.len() == 1
        && request.topics[0].topic_name.0.as_str() == TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    let version = ctx.api_version;
    if !asks_for_the_quorum {
        // Kafka's answer for anything but the one quorum partition.
        let refused = DescribeQuorumResponse::default()
            .with_error_code(ErrorCode::UnknownTopicOrPartition.code());
        if version < 2 {
            return refused;
        }
        return refused.with_error_message(Some(str_bytes(format!(
            "the metadata quorum is {TOPIC} partition 0, and only it"
        ))));
    }
    let view = ctx
        .conn
        .shard
        .run_on(CONTROLLER_SHARD, |shard| async move {
            shard.controller().quorum()
        })
        .await;
    let mut partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(view.leader_id.unwrap_or(-1)))
        .with_leader_epoch(view.leader_epoch)
        .with_high_watermark(view.high_watermark);
    if view.is_leader {
        partition = partition
            .with_error_code(NONE)
            .with_current_voters(view.voters.iter().map(|v| replica(v, version)).collect());
    } else {
        let leader = view
            .leader_id
            .map_or("none is elected yet".to_string(), |id| {
                format!("node {id} is")
            });
        partition = partition.with_error_code(ErrorCode::NotLeaderOrFollower.code());
        if version >= 2 {
            partition = partition.with_error_message(Some(str_bytes(format!(
                "this node does not lead the metadata quorum; {leader}"
            ))));
        }
    }
    let nodes = view
        .voters
        .iter()
        .filter_map(|voter| {
            let (host, port) = voter.addr.rsplit_once(':')?;
            Some(
                Node::default()
                    .with_node_id(BrokerId(voter.id))
                    .with_listeners(vec![Listener::default()
                        .with_name(str_bytes("CONTROLLER".to_string()))
                        .with_host(str_bytes(host.to_string()))
                        .with_port(port.parse().ok()?)]),
            )
        })
        .collect();
    let response = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(str_bytes(TOPIC.to_string())))
        .with_partitions(vec![partition])]);
    if version >= 2 {
        response.with_nodes(nodes)
    } else {
        response
    }
}
