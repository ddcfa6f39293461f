//! The one registry of the APIs Sluice serves: for each, the version range and
//! the handler. ApiVersions answers from it and the dispatcher serves from it,
//! so an API cannot be advertised without a handler, nor handled without being
//! advertised. `tests/version_matrix.rs` sends every (API, version) listed here
//! and checks that each is answered.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::protocol::errors::ErrorCode;
use crate::protocol::frame;
use crate::server::connection::{Reply, RequestContext};
use crate::server::fetch_response;
use crate::server::handlers::*;

/// Serves one request body (its header already read) in `ctx`.
pub type Serve = for<'a> fn(&'a RequestContext, Bytes) -> Pin<Box<dyn Future<Output = Reply> + 'a>>;

/// An API we serve: its key, the version range we advertise, its handler.
pub struct Api {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub serve: Serve,
}

macro_rules! api {
    ($key:ident, $min:expr, $max:expr, $handler:path) => {
        Api {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            serve: |ctx, body| Box::pin(decode_and_serve(ctx, body, $handler)),
        }
    };
}

pub static APIS: &[Api] = &[
    // Produce advertises minimum 0, as Kafka 4 does: librdkafka refuses a
    // broker whose Produce range starts higher. Versions 0-2 (message format
    // v0/v1) are answered with UNSUPPORTED_VERSION per partition.
    Api {
        key: ApiKey::Produce,
        min: 0,
        max: 11,
        serve: |ctx, body| Box::pin(serve_produce(ctx, body)),
    },
    Api {
        key: ApiKey::Fetch,
        min: 4,
        max: 16,
        serve: |ctx, body| Box::pin(serve_fetch(ctx, body)),
    },
    api!(ListOffsets, 1, 8, list_offsets::handle),
    api!(Metadata, 0, 12, metadata::handle),
    api!(FindCoordinator, 0, 4, find_coordinator::handle),
    api!(ApiVersions, 0, 3, api_versions),
    api!(CreateTopics, 2, 7, create_topics::handle),
    api!(DeleteTopics, 1, 6, delete_topics::handle),
    api!(DeleteRecords, 0, 2, delete_records::handle),
    api!(InitProducerId, 0, 5, init_producer_id::handle),
    api!(DescribeConfigs, 1, 4, describe_configs::handle),
    api!(AlterConfigs, 0, 2, alter_configs::handle),
    api!(CreatePartitions, 0, 3, create_partitions::handle),
    api!(
        IncrementalAlterConfigs,
        0,
        1,
        incremental_alter_configs::handle
    ),
    api!(DescribeCluster, 0, 1, describe_cluster::handle),
    api!(JoinGroup, 0, 9, join_group::handle),
    api!(SyncGroup, 0, 5, sync_group::handle),
    api!(Heartbeat, 0, 4, heartbeat::handle),
    api!(LeaveGroup, 0, 5, leave_group::handle),
    // OffsetCommit 0-1 and OffsetFetch 0 (ZooKeeper-era) are gone from Kafka 4 and the codec.
    api!(OffsetCommit, 2, 9, offset_commit::handle),
    api!(OffsetFetch, 1, 9, offset_fetch::handle),
    api!(ListGroups, 0, 5, list_groups::handle),
    api!(DescribeGroups, 0, 5, describe_groups::handle),
    api!(DeleteGroups, 0, 2, delete_groups::handle),
    api!(OffsetDelete, 0, 0, offset_delete::handle),
];

/// The registry's entry for `api_key`, if we serve that API at all.
pub fn find(api_key: i16) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key as i16 == api_key)
}

/// Decodes the body at the request's version, runs `handler`, encodes its
/// response; a body that does not decode closes the connection, as Kafka does.
async fn decode_and_serve<'a, Req, Resp, F, Fut>(
    ctx: &'a RequestContext,
    mut body: Bytes,
    handler: F,
) -> Reply
where
    Req: Decodable,
    Resp: Encodable,
    F: FnOnce(&'a RequestContext, Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    match Req::decode(&mut body, ctx.api_version) {
        Ok(request) => {
            let response = handler(ctx, request).await;
            encode(ctx, ctx.api_key, ctx.api_version, &response)
        }
        Err(_) => malformed(ctx),
    }
}

/// Produce answers nothing with acks=0.
async fn serve_produce(ctx: &RequestContext, mut body: Bytes) -> Reply {
    match Decodable::decode(&mut body, ctx.api_version) {
        Ok(request) => match produce::handle(ctx, request).await {
            Some(response) => encode(ctx, ctx.api_key, ctx.api_version, &response),
            None => Reply::Nothing,
        },
        Err(_) => malformed(ctx),
    }
}

/// Fetch responses are written by hand, as a chain of memory and file slices.
async fn serve_fetch(ctx: &RequestContext, mut body: Bytes) -> Reply {
    match Decodable::decode(&mut body, ctx.api_version) {
        Ok(request) => {
            let response = fetch::handle(ctx, request).await;
            match fetch_response::write_frame(ctx.api_version, ctx.correlation_id, &response) {
                Ok(chain) => Reply::Chain(chain),
                Err(error) => {
                    tracing::error!(peer = %ctx.conn.peer, %error, "closing connection");
                    Reply::Close
                }
            }
        }
        Err(_) => malformed(ctx),
    }
}

/// ApiVersions: the registry itself.
async fn api_versions(_ctx: &RequestContext, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(advertised())
}

/// The answer to an ApiVersions request newer than we speak (KIP-511: sent as
/// v0, with our ranges, so that the client retries with one we serve).
pub fn api_versions_unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ErrorCode::UnsupportedVersion.code())
        .with_api_keys(advertised())
}

fn advertised() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min)
                .with_max_version(api.max)
        })
        .collect()
}

/// Encodes `body` as the response frame of the request in `ctx`.
pub fn encode<M: Encodable>(
    ctx: &RequestContext,
    api_key: ApiKey,
    version: i16,
    body: &M,
) -> Reply {
    match frame::encode_response(api_key, version, ctx.correlation_id, body) {
        Ok(bytes) => Reply::Frame(bytes),
        Err(error) => {
            tracing::error!(peer = %ctx.conn.peer, ?api_key, version, %error, "cannot encode response; closing connection");
            Reply::Close
        }
    }
}

fn malformed(ctx: &RequestContext) -> Reply {
    tracing::warn!(peer = %ctx.conn.peer, api_key = ?ctx.api_key, version = ctx.api_version, "malformed request body; closing connection");
    Reply::Close
}

#[cfg(test)]
mod tests {
    use super::*;

    /// We must never advertise a version the codec crate cannot decode, nor
    /// list an API twice.
    #[test]
    fn served_versions_are_within_the_codec() {
        for api in APIS {
            let codec = api.key.valid_versions();
            let min = if api.key == ApiKey::Produce {
                produce::PRODUCE_MIN_SERVED
            } else {
                api.min
            };
            assert!(
                codec.min <= min && api.max <= codec.max,
                "{:?}: {}..{} vs codec {}",
                api.key,
                api.min,
                api.max,
                codec
            );
            assert_eq!(
                APIS.iter().filter(|other| other.key == api.key).count(),
                1,
                "{:?} listed twice",
                api.key
            );
        }
    }
}
