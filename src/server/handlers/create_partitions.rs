//! CreatePartitions: grow a topic's partition count (never shrink, as Kafka).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::runtime::CONTROLLER_SHARD;
use crate::server::dispatch::RequestContext;
use crate::server::handlers::str_bytes;

pub async fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let (count, validate_only) = (topic.count, request.validate_only);
        let outcome = ctx
            .conn
            .shard
            .run_on(CONTROLLER_SHARD, move |shard| async move {
                shard
                    .controller()
                    .create_partitions(&name, count, validate_only)
                    .await
            })
            .await;
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => result
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
