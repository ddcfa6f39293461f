//! DescribeCluster: this one broker.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

pub async fn handle(
    ctx: &RequestContext,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let broker = &ctx.conn.shard.node;
    let node_id = BrokerId(broker.config.node_id);
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(node_id)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node_id)
            .with_host(str_bytes(broker.config.advertised_host.clone()))
            .with_port(broker.advertised_port())])
}
