//! EndTxn: commits or aborts the producer's transaction. Answered once the
//! decision is durable in the transaction log; the markers follow. Versions
//! up to 4 are the classic protocol; 5 is KIP-890's (an epoch bump at every
//! end, answered with the producer id and epoch to use next).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::server::connection::RequestContext;
use crate::server::handlers::{fenced_for, on_txn_coordinator};
use crate::txn::state::{TV_CLASSIC, TV_EPOCH_BUMP};

pub async fn handle(ctx: &RequestContext, request: EndTxnRequest) -> EndTxnResponse {
    let version = ctx.api_version;
    let id = request.transactional_id.0.to_string();
    if id.is_empty() {
        return response(
            Err(crate::protocol::errors::ErrorCode::InvalidRequest),
            version,
        );
    }
    let client_tv = if version > 4 {
        TV_EPOCH_BUMP
    } else {
        TV_CLASSIC
    };
    let (producer_id, epoch, commit) = (
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
    );
    let result = on_txn_coordinator(ctx, &id.clone(), move |c| async move {
        c.end_txn(&id, producer_id, epoch, commit, client_tv).await
    })
    .await
    .and_then(|r| r);
    response(result, version)
}

fn response(
    result: Result<(i64, i16), crate::protocol::errors::ErrorCode>,
    version: i16,
) -> EndTxnResponse {
    match result {
        Ok((producer_id, epoch)) => EndTxnResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(code) => EndTxnResponse::default()
            .with_error_code(fenced_for(version, 2, code).code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
