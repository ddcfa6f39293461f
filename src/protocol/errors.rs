//! Kafka error codes. `ErrorCode` is the `kafka-protocol` crate's table of Kafka's
//! codes; `NONE` is the absence of an error on the wire.

pub use kafka_protocol::error::ResponseError as ErrorCode;

/// The wire value meaning "no error".
pub const NONE: i16 = 0;

/// Wire code of an optional error.
pub fn code(error: Option<ErrorCode>) -> i16 {
    error.map_or(NONE, |e| e.code())
}
