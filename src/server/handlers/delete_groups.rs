//! DeleteGroups: an empty group and its committed offsets go away.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id_len, on_coordinator};

pub async fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let id = group_id.0.to_string();
        let code = match check_group_id_len(&id) {
            Err(code) => code.code(),
            Ok(()) => {
                let gid = id.clone();
                on_coordinator(ctx, &id, move |coordinator| async move {
                    coordinator
                        .delete_group(&gid)
                        .await
                        .err()
                        .map_or(0, |e| e.code())
                })
                .await
                .unwrap_or_else(|code| code.code())
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
