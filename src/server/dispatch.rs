//! Request dispatch: version checks against the registry (`registry.rs`),
//! header decoding, then the API's entry in the registry decodes the body,
//! calls the handler and encodes the response.
//!
//! A request we cannot serve is answered with the protocol's error where the
//! protocol has one (ApiVersions newer than ours gets UNSUPPORTED_VERSION with
//! our ranges; Produce v0-2 gets UNSUPPORTED_VERSION per partition). Where it has
//! none (an unknown API key, a version outside every range, a body that does not
//! decode) the connection is closed, as Kafka does.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use crate::protocol::frame::{self, HeaderPrefix};
use crate::server::connection::{Connection, Reply, RequestContext};
use crate::server::handlers;
use crate::server::handlers::produce::PRODUCE_MIN_SERVED;
use crate::server::registry;

/// Handles one request and records its API's handling time (what the
/// connection runs for each request).
pub async fn handle(conn: Rc<Connection>, request: Bytes) -> Reply {
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
    let (Ok(api_key), Some(api)) = (
        ApiKey::try_from(prefix.api_key),
        registry::find(prefix.api_key),
    ) else {
        return close(&conn, Some(prefix), "unsupported API key");
    };
    let version = prefix.api_version;
    if version < api.min || version > api.max {
        if api_key == ApiKey::ApiVersions && version > api.max {
            // KIP-511: answer a too-new ApiVersions with v0 and our ranges, so the
            // client can retry with a version we speak.
            return match frame::encode_response(
                api_key,
                0,
                prefix.correlation_id,
                &registry::api_versions_unsupported(),
            ) {
                Ok(bytes) => Reply::Frame(bytes),
                Err(_) => Reply::Close,
            };
        }
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
        api_key,
        api_version: version,
        correlation_id: prefix.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
    };
    registry::serve(&ctx, request).await
}

fn close(conn: &Connection, prefix: Option<HeaderPrefix>, reason: &str) -> Reply {
    tracing::warn!(peer = %conn.peer, ?prefix, reason, "closing connection");
    Reply::Close
}
