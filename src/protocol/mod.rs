//! The Kafka wire protocol, without I/O: framing, request headers, the registry
//! of supported API versions, record-batch validation, and encoding helpers.
//!
//! Message bodies are decoded and encoded with the `kafka-protocol` crate, which
//! is generated from Kafka's own JSON schemas (flexible versions and tagged
//! fields included). Only what the hot path needs is written by hand here.

pub mod batch;
pub mod encode;
pub mod errors;
pub mod fetch_response;
pub mod frame;
pub mod versions;
