//! ListPartitionReassignments (KIP-455): the partitions being moved, with
//! their replicas and the replicas being added and removed, from this
//! broker's metadata image (the listed ones, or all). A listed partition
//! that does not exist, or is not being moved, is left out, as Kafka does.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use crate::metadata::{Placement, TopicMeta};
use crate::server::connection::RequestContext;
use crate::server::handlers::topic_name;

fn ongoing(index: i32, p: &Placement) -> OngoingPartitionReassignment {
    let ids = |list: &[i32]| list.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    OngoingPartitionReassignment::default()
        .with_partition_index(index)
        .with_replicas(ids(&p.replicas))
        .with_adding_replicas(ids(&p.adding))
        .with_removing_replicas(ids(&p.removing))
}

/// The moves under way among `wanted` partitions of `topic` (None: all).
fn topic_moves(topic: &TopicMeta, wanted: Option<&[i32]>) -> Option<OngoingTopicReassignment> {
    let partitions: Vec<OngoingPartitionReassignment> = topic
        .placements
        .iter()
        .enumerate()
        .filter(|(i, p)| p.reassigning() && wanted.is_none_or(|w| w.contains(&(*i as i32))))
        .map(|(i, p)| ongoing(i as i32, p))
        .collect();
    (!partitions.is_empty()).then(|| {
        OngoingTopicReassignment::default()
            .with_name(topic_name(&topic.name))
            .with_partitions(partitions)
    })
}

pub async fn handle(
    ctx: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.conn.shard.node.image();
    let topics = match &request.topics {
        None => image
            .topics
            .values()
            .filter(|t| image.user_topic(&t.name).is_some())
            .filter_map(|t| topic_moves(t, None))
            .collect(),
        Some(listed) => listed
            .iter()
            .filter_map(|l| {
                let topic = image.user_topic(l.name.0.as_str())?;
                topic_moves(topic, Some(&l.partition_indexes))
            })
            .collect(),
    };
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
