//! InitProducerId: hands out producer ids for idempotent producers. Transactions
//! are not supported yet: a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::dispatch::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // An idempotent producer re-initialising with its id keeps it and bumps the epoch (KIP-360).
    if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        if request.producer_id.0 >= ctx.conn.shard.broker.image().next_producer_id {
            // Never handed out by this cluster.
            return InitProducerIdResponse::default()
                .with_error_code(ErrorCode::InvalidProducerIdMapping.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        if request.producer_epoch == i16::MAX {
            // Epoch exhausted: fall through to a new id.
        } else {
            return InitProducerIdResponse::default()
                .with_producer_id(request.producer_id)
                .with_producer_epoch(request.producer_epoch + 1);
        }
    }
    let result = ctx
        .conn
        .shard
        .run_on(CONTROLLER_SHARD, |shard| async move {
            shard
                .controller()
                .allocate_producer_id()
                .await
                .map_err(|e| e.code.code())
        })
        .await;
    match result {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(code) => InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
