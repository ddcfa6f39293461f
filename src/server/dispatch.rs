//! Request dispatch: version checks against the registry, header and body
//! decoding, the call to the API's handler, response encoding.
//!
//! A request we cannot serve is answered with the protocol's error where the
//! protocol has one (ApiVersions newer than ours gets UNSUPPORTED_VERSION with
//! our ranges; Produce v0-2 gets UNSUPPORTED_VERSION per partition). Where it has
//! none (an unknown API key, a version outside every range, a body that does not
//! decode) the connection is closed, as Kafka does.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::protocol::frame::{self, HeaderPrefix};
use crate::protocol::versions::{self, PRODUCE_MIN_SERVED};
use crate::server::connection::{Connection, Reply, RequestContext};
use crate::server::fetch_response;
use crate::server::handlers;

/// Handles one request and records its API's handling time (the
/// connection's `Handler`).
pub fn handle(conn: Rc<Connection>, request: Bytes) -> Pin<Box<dyn Future<Output = Reply>>> {
    Box::pin(handle_request(conn, request))
}

async fn handle_request(conn: Rc<Connection>, request: Bytes) -> Reply {
    let started = Instant::now();
    let api_key = frame::peek_header(&request).map(|h| h.api_key);
    let reply = serve(conn.clone(), request).await;
    if let Some(api_key) = api_key {
        conn.shard
            .metrics()
            .request_done(api_key, started.elapsed());
    }
    reply
}

async fn serve(conn: Rc<Connection>, mut request: Bytes) -> Reply {
    let Some(prefix) = frame::peek_header(&request) else {
        return close(&conn, None, "request shorter than its header");
    };
    let (Ok(api_key), Some(support)) = (
        ApiKey::try_from(prefix.api_key),
        versions::supported(prefix.api_key),
    ) else {
        return close(&conn, Some(prefix), "unsupported API key");
    };
    let version = prefix.api_version;
    if api_key == ApiKey::ApiVersions && version > support.max {
        // KIP-511: answer a too-new ApiVersions with v0 and our ranges, so the
        // client can retry with a version we speak.
        return encode(
            &conn,
            api_key,
            0,
            prefix.correlation_id,
            &handlers::api_versions::unsupported_version(),
        );
    }
    if version < support.min || version > support.max {
        return close(&conn, Some(prefix), "unsupported API version");
    }
    if api_key == ApiKey::Produce && version < PRODUCE_MIN_SERVED {
        return match handlers::produce::legacy_unsupported(&request, version) {
            Ok(Some(frame)) => Reply::Frame(frame),
            Ok(None) => Reply::Nothing,
            Err(handlers::produce::Malformed) => {
                close(&conn, Some(prefix), "malformed request body")
            }
        };
    }
    let header = match frame::decode_header(api_key, version, &mut request) {
        Ok(header) => header,
        Err(_) => return close(&conn, Some(prefix), "malformed request header"),
    };
    let ctx = RequestContext {
        conn: conn.clone(),
        api_version: version,
        correlation_id: prefix.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
    };

    /// Decodes the body as `$req`, runs `$handler`, encodes its response.
    macro_rules! serve {
        ($handler:path) => {{
            match Decodable::decode(&mut request, version) {
                Ok(body) => {
                    let response = $handler(&ctx, body).await;
                    encode(&conn, api_key, version, prefix.correlation_id, &response)
                }
                Err(_) => close(&conn, Some(prefix), "malformed request body"),
            }
        }};
    }

    match api_key {
        ApiKey::Produce => match Decodable::decode(&mut request, version) {
            Ok(body) => match handlers::produce::handle(&ctx, body).await {
                Some(response) => encode(&conn, api_key, version, prefix.correlation_id, &response),
                None => Reply::Nothing,
            },
            Err(_) => close(&conn, Some(prefix), "malformed request body"),
        },
        ApiKey::Fetch => match Decodable::decode(&mut request, version) {
            Ok(body) => {
                let response = handlers::fetch::handle(&ctx, body).await;
                match fetch_response::write_frame(version, prefix.correlation_id, &response) {
                    Ok(chain) => Reply::Chain(chain),
                    Err(error) => {
                        tracing::error!(peer = %conn.peer, %error, "closing connection");
                        Reply::Close
                    }
                }
            }
            Err(_) => close(&conn, Some(prefix), "malformed request body"),
        },
        ApiKey::ListOffsets => serve!(handlers::list_offsets::handle),
        ApiKey::Metadata => serve!(handlers::metadata::handle),
        ApiKey::FindCoordinator => serve!(handlers::find_coordinator::handle),
        ApiKey::ApiVersions => serve!(handlers::api_versions::handle),
        ApiKey::CreateTopics => serve!(handlers::create_topics::handle),
        ApiKey::DeleteTopics => serve!(handlers::delete_topics::handle),
        ApiKey::DeleteRecords => serve!(handlers::delete_records::handle),
        ApiKey::InitProducerId => serve!(handlers::init_producer_id::handle),
        ApiKey::DescribeConfigs => serve!(handlers::describe_configs::handle),
        ApiKey::AlterConfigs => serve!(handlers::alter_configs::handle),
        ApiKey::IncrementalAlterConfigs => serve!(handlers::incremental_alter_configs::handle),
        ApiKey::CreatePartitions => serve!(handlers::create_partitions::handle),
        ApiKey::DescribeCluster => serve!(handlers::describe_cluster::handle),
        ApiKey::JoinGroup => serve!(handlers::join_group::handle),
        ApiKey::SyncGroup => serve!(handlers::sync_group::handle),
        ApiKey::Heartbeat => serve!(handlers::heartbeat::handle),
        ApiKey::LeaveGroup => serve!(handlers::leave_group::handle),
        ApiKey::OffsetCommit => serve!(handlers::offset_commit::handle),
        ApiKey::OffsetFetch => serve!(handlers::offset_fetch::handle),
        ApiKey::ListGroups => serve!(handlers::list_groups::handle),
        ApiKey::DescribeGroups => serve!(handlers::describe_groups::handle),
        ApiKey::DeleteGroups => serve!(handlers::delete_groups::handle),
        ApiKey::OffsetDelete => serve!(handlers::offset_delete::handle),
        _ => close(
            &conn,
            Some(prefix),
            "API listed as supported has no handler",
        ),
    }
}

fn encode<M: Encodable>(
    conn: &Connection,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Reply {
    match frame::encode_response(api_key, version, correlation_id, body) {
        Ok(bytes) => Reply::Frame(bytes),
        Err(error) => {
            tracing::error!(peer = %conn.peer, ?api_key, version, %error, "cannot encode response; closing connection");
            Reply::Close
        }
    }
}

fn close(conn: &Connection, prefix: Option<HeaderPrefix>, reason: &str) -> Reply {
    tracing::warn!(peer = %conn.peer, ?prefix, reason, "closing connection");
    Reply::Close
}
