//! The replica fetchers a shard runs, by leader broker (the bookkeeping;
//! `replication.rs` runs them).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use event_listener::Event;

use crate::partition::state::PartitionKey;

/// One partition a fetcher fills.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    pub(crate) topic: Arc<str>,
    pub(crate) leader_epoch: i32,
}

/// The fetcher for one leader broker, on this shard.
pub(crate) struct Fetcher {
    pub(crate) partitions: RefCell<BTreeMap<PartitionKey, Followed>>,
    /// Rung when the partition list changes (a fetch in progress ends early
    /// only by its own deadline; the next one takes the new list).
    pub(crate) changed: Event,
}

/// A shard's replication: its fetchers by leader broker.
#[derive(Default)]
pub struct Replication {
    pub(crate) fetchers: RefCell<HashMap<i32, Rc<Fetcher>>>,
}
