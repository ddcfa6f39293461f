//! InitProducerId: hands out producer ids for idempotent producers. Transactions
//! are not supported yet: a transactional id is refused.
//!
//! Without a transactional id Kafka ignores the producer id and epoch in the
//! request and always hands out a fresh id with epoch 0
//! (`TransactionCoordinator.handleInitProducerId`): the epoch-bump path of
//! KIP-360 exists only for transactional ids, whose owner the coordinator
//! knows. An idempotent producer's id proves nothing about who sent it, so
//! taking it as "bump my epoch" would let two clients share one id, and the
//! second one's batches would be acknowledged as duplicates of the first one's
//! without being stored.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::connection::RequestContext;

fn error_response(code: ErrorCode) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code.code())
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub async fn handle(
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    // Kafka (KafkaApis.handleInitProducerIdRequest): an id without an epoch, or
    // an epoch without an id, is a malformed request.
    let no_id = request.producer_id.0 == -1;
    let no_epoch = request.producer_epoch == -1;
    if no_id != no_epoch {
        return error_response(ErrorCode::InvalidRequest);
    }
    match request.transactional_id.as_deref().map(|id| id.is_empty()) {
        Some(true) => return error_response(ErrorCode::InvalidRequest),
        Some(false) => return error_response(ErrorCode::TransactionalIdAuthorizationFailed),
        None => {}
    }
    let result = ctx
        .conn
        .shard
        .run_on(CONTROLLER_SHARD, |shard| async move {
            shard
                .controller()
                .allocate_producer_id()
                .await
                .map_err(|e| e.code)
        })
        .await;
    match result {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(code) => error_response(code),
    }
}
