//! AddOffsetsToTxn: adds a group's offsets to the transaction (KIP-98), so
//! that TxnOffsetCommit may write them and the markers reach them. The
//! partition added is the group's partition of the offsets log.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use crate::group::offsets::{offsets_partition, OFFSETS_TOPIC};
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, fenced_for, on_txn_coordinator};
use crate::txn::state::TV_CLASSIC;

pub async fn handle(
    ctx: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let version = ctx.api_version;
    let id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let result = if id.is_empty() {
        Err(ErrorCode::InvalidRequest)
    } else if let Err(code) = check_group_id(&group) {
        Err(code)
    } else {
        let partition = (OFFSETS_TOPIC.to_string(), offsets_partition(&group));
        let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
        on_txn_coordinator(ctx, &id.clone(), move |c| async move {
            c.add_partitions(&id, producer_id, epoch, &[partition], TV_CLASSIC)
                .await
        })
        .await
        .and_then(|r| r)
    };
    let code = result
        .err()
        .map_or(0, |code| fenced_for(version, 2, code).code());
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
