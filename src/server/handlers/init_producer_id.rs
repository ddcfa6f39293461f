//! InitProducerId: hands out producer ids. With a transactional id, the
//! transaction coordinator of that id answers (an epoch bump per instance,
//! fencing the one before, KIP-98 and KIP-360).
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
use crate::server::handlers::{fenced_for, on_txn_coordinator};

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
    if let Some(id) = request.transactional_id.as_deref() {
        if id.is_empty() {
            return error_response(ErrorCode::InvalidRequest);
        }
        let id = id.to_string();
        let timeout_ms = request.transaction_timeout_ms;
        let expected = (!no_id).then_some((request.producer_id.0, request.producer_epoch));
        let result = on_txn_coordinator(ctx, &id.clone(), move |c| async move {
            c.init_producer_id(&id, timeout_ms, expected).await
        })
        .await
        .and_then(|r| r);
        return match result {
            Ok((producer_id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(code) => error_response(fenced_for(ctx.api_version, 4, code)),
        };
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
