//! The one registry of the APIs Sluice serves: for each, the version range and
//! the handler. ApiVersions answers from it and the dispatcher serves from it,
//! so an API cannot be advertised without a handler, nor handled without being
//! advertised. `tests/version_matrix.rs` sends every (API, version) listed here
//! and checks that each is answered.

use std::future::Future;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::protocol::errors::ErrorCode;
use crate::protocol::frame;
use crate::server::connection::{Reply, RequestContext};
use crate::server::fetch_response;
use crate::server::handlers::*;

/// An API we serve: its key and the version range we advertise.
pub struct Api {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// Builds, from one list, both the table ApiVersions answers from ([`APIS`])
/// and the dispatch to each API's handler ([`serve`]): a `match`, so that no
/// request pays for a boxed future.
macro_rules! registry {
    ($( $key:ident, $min:expr, $max:expr, $serve:expr; )*) => {
        pub static APIS: &[Api] = &[$(Api { key: ApiKey::$key, min: $min, max: $max },)*];

        /// Serves a request body (its header already read) of an API in
        /// [`APIS`], at a version in its range (the dispatcher checked both).
        pub async fn serve(ctx: &RequestContext, body: Bytes) -> Reply {
            match ctx.api_key {
                $(ApiKey::$key => ($serve)(ctx, body).await,)*
                _ => malformed(ctx),
            }
        }
    };
}

registry! {
    // Produce advertises minimum 0, as Kafka 4 does: librdkafka refuses a
    // broker whose Produce range starts higher. Versions 0-2 (message format
    // v0/v1) are answered with UNSUPPORTED_VERSION per partition by the
    // dispatcher, before the header is decoded.
    // Version 12 (KIP-890 part 2): a transactional batch's partition is
    // added to the transaction by the broker. Version 13 (KIP-516): topics
    // by id (UNKNOWN_TOPIC_ID for one the broker does not know).
    Produce, 0, 13, serve_produce;
    Fetch, 4, 16, serve_fetch;
    ListOffsets, 1, 8, |ctx, body| decode_and_serve(ctx, body, list_offsets::handle);
    Metadata, 0, 12, |ctx, body| decode_and_serve(ctx, body, metadata::handle);
    FindCoordinator, 0, 4, |ctx, body| decode_and_serve(ctx, body, find_coordinator::handle);
    ApiVersions, 0, 4, |ctx, body| decode_and_serve(ctx, body, api_versions);
    CreateTopics, 2, 7, |ctx, body| decode_and_serve(ctx, body, create_topics::handle);
    DeleteTopics, 1, 6, |ctx, body| decode_and_serve(ctx, body, delete_topics::handle);
    DeleteRecords, 0, 2, |ctx, body| decode_and_serve(ctx, body, delete_records::handle);
    // v0-v1 are gone from Kafka 4; v2 adds the current leader epoch (KIP-320).
    OffsetForLeaderEpoch, 2, 4, |ctx, body| decode_and_serve(ctx, body, offset_for_leader_epoch::handle);
    InitProducerId, 0, 5, |ctx, body| decode_and_serve(ctx, body, init_producer_id::handle);
    DescribeConfigs, 1, 4, |ctx, body| decode_and_serve(ctx, body, describe_configs::handle);
    AlterConfigs, 0, 2, |ctx, body| decode_and_serve(ctx, body, alter_configs::handle);
    CreatePartitions, 0, 3, |ctx, body| decode_and_serve(ctx, body, create_partitions::handle);
    IncrementalAlterConfigs, 0, 1, |ctx, body| decode_and_serve(ctx, body, incremental_alter_configs::handle);
    DescribeCluster, 0, 1, |ctx, body| decode_and_serve(ctx, body, describe_cluster::handle);
    DescribeQuorum, 0, 2, |ctx, body| decode_and_serve(ctx, body, describe_quorum::handle);
    // Made by the active controller; forwarded there from any broker.
    ElectLeaders, 0, 2, |ctx, body| decode_and_serve(ctx, body, elect_leaders::handle);
    AlterPartitionReassignments, 0, 1, |ctx, body| decode_and_serve(ctx, body, alter_partition_reassignments::handle);
    ListPartitionReassignments, 0, 0, |ctx, body| decode_and_serve(ctx, body, list_partition_reassignments::handle);
    JoinGroup, 0, 9, |ctx, body| decode_and_serve(ctx, body, join_group::handle);
    SyncGroup, 0, 5, |ctx, body| decode_and_serve(ctx, body, sync_group::handle);
    Heartbeat, 0, 4, |ctx, body| decode_and_serve(ctx, body, heartbeat::handle);
    LeaveGroup, 0, 5, |ctx, body| decode_and_serve(ctx, body, leave_group::handle);
    // OffsetCommit 0-1 and OffsetFetch 0 (ZooKeeper-era) are gone from Kafka 4 and the codec.
    OffsetCommit, 2, 9, |ctx, body| decode_and_serve(ctx, body, offset_commit::handle);
    OffsetFetch, 1, 9, |ctx, body| decode_and_serve(ctx, body, offset_fetch::handle);
    ListGroups, 0, 5, |ctx, body| decode_and_serve(ctx, body, list_groups::handle);
    DescribeGroups, 0, 5, |ctx, body| decode_and_serve(ctx, body, describe_groups::handle);
    DeleteGroups, 0, 2, |ctx, body| decode_and_serve(ctx, body, delete_groups::handle);
    OffsetDelete, 0, 0, |ctx, body| decode_and_serve(ctx, body, offset_delete::handle);
    // Versions 4-5 are batched (Kafka's brokers send them to coordinators,
    // verify-only or not; some clients send them too).
    AddPartitionsToTxn, 0, 5, |ctx, body| decode_and_serve(ctx, body, add_partitions_to_txn::handle);
    AddOffsetsToTxn, 0, 4, |ctx, body| decode_and_serve(ctx, body, add_offsets_to_txn::handle);
    // Version 5: KIP-890's epoch bump at every end (transaction.version 2).
    EndTxn, 0, 5, |ctx, body| decode_and_serve(ctx, body, end_txn::handle);
    // Version 5 adds the offsets partition implicitly (transaction.version 2).
    TxnOffsetCommit, 0, 5, |ctx, body| decode_and_serve(ctx, body, txn_offset_commit::handle);
    // An administrator's abort of a hanging transaction (the coordinator
    // writes its own markers directly); v0 is gone from Kafka 4 and the codec.
    WriteTxnMarkers, 1, 1, |ctx, body| decode_and_serve(ctx, body, write_txn_markers::handle);
    DescribeProducers, 0, 0, |ctx, body| decode_and_serve(ctx, body, describe_producers::handle);
    DescribeTransactions, 0, 0, |ctx, body| decode_and_serve(ctx, body, describe_transactions::handle);
    ListTransactions, 0, 2, |ctx, body| decode_and_serve(ctx, body, list_transactions::handle);
}

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

/// ApiVersions: the registry itself, and the features (v3+, KIP-584) as
/// Kafka 4 reports them: `transaction.version` supported 0-2 (in v4+
/// responses only: Kafka leaves features whose minimum is 0 out of older
/// ones, KAFKA-17492) and finalized at the configured level unless that is 0
/// (a level of 0 is expressed by absence). Clients that speak KIP-890 part 2
/// use it when the finalized level is 2; the API version ranges do not
/// depend on it, as in Kafka.
async fn api_versions(ctx: &RequestContext, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default().with_api_keys(advertised());
    if ctx.api_version < 3 {
        return response;
    }
    let level = ctx.conn.shard.node.config.transaction_version;
    let mut supported = Vec::new();
    if ctx.api_version >= 4 {
        supported.push(
            SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
                .with_min_version(0)
                .with_max_version(2),
        );
    }
    let mut finalized = Vec::new();
    if level > 0 {
        finalized.push(
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
                .with_min_version_level(level)
                .with_max_version_level(level),
        );
    }
    response
        .with_supported_features(supported)
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(finalized)
}

/// KIP-890's feature.
const TRANSACTION_VERSION: &str = "transaction.version";
/// The finalized features never change while a node runs; clients compare
/// epochs across brokers and keep the highest.
const FINALIZED_FEATURES_EPOCH: i64 = 1;

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
