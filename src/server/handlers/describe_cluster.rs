//! DescribeCluster: the live brokers of the cluster and the active
//! controller, as this broker's metadata image knows them.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

pub async fn handle(
    ctx: &RequestContext,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node = &ctx.conn.shard.node;
    let brokers = node
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(str_bytes(host))
                .with_port(port)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(node.cluster_id()))
        .with_controller_id(BrokerId(node.controller_id()))
        .with_brokers(brokers)
}
