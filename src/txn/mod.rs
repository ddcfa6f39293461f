//! Transactions (KIP-98, KIP-447, KIP-890): the transaction coordinator.
//!
//! - `state.rs`: one transactional id's state and its transitions (pure).
//! - `log.rs`: the records of the transaction log, in Kafka's layout.
//! - `coordinator.rs`: a shard's coordinator: the ids it owns, the
//!   transaction log, markers and completions, timeouts and expiry.
//! - `requests.rs`: what each request does to it, in Kafka's order of checks (pure).
//!
//! The partition side (markers, the last stable offset, the aborted
//! transaction index) is in the storage engine (`storage::producer_state`,
//! `storage::txn_index`).

pub mod coordinator;
pub mod log;
pub mod requests;
pub mod state;
