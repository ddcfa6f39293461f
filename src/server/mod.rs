//! The Kafka-facing server: listeners, connections, request dispatch, and one
//! handler file per Kafka API under `handlers/`.
//!
//! How a request travels:
//! 1. `listener`: every shard accepts on its own SO_REUSEPORT socket, so the
//!    kernel spreads connections over shards; a connection stays on its shard.
//! 2. `connection`: the read loop cuts frames (length checked against
//!    `socket.request.max.bytes` before anything is allocated) and starts one task
//!    per request, up to a per-connection limit of requests and bytes in flight;
//!    the write loop sends the responses strictly in request order.
//! 3. `dispatch`: peeks api key, version and correlation id, checks them against
//!    the registry (`registry`, one entry per API: its versions and handler),
//!    decodes the header; the API's entry decodes the body with the
//!    `kafka-protocol` crate, calls the handler, encodes the response.
//! 4. `handlers/<api>.rs`: decode → validate → route each partition's work to its
//!    owning shard (`Shard::run_on`) → execute there → gather → encode. Produce
//!    validates batches on the connection's shard (spreading CRC work) and sends
//!    only the append to the owner; Fetch sends each owner its partitions at once.

pub mod connection;
pub mod dispatch;
pub mod fetch_response;
pub mod fetch_sessions;
pub mod handlers;
pub mod listener;
pub mod registry;
