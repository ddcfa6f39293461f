//! The Kafka wire protocol, without I/O: framing, request headers, record batches (validation, the records inside
//! them, compression, transaction markers), Produce's record checks, and encoding helpers.
//!
//! Message bodies are decoded and encoded with the `kafka-protocol` crate, which
//! is generated from Kafka's own JSON schemas (flexible versions and tagged
//! fields included). Only what the hot path needs is written by hand here.

pub mod batch;
pub mod compression;
pub mod control;
pub mod encode;
pub mod errors;
pub mod frame;
pub mod record_rules;
pub mod records;
