//! A partition of an internal topic (the offsets log, the transaction log)
//! as the coordinator that leads it writes to it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::partition::local::{Acks, Partition};
use crate::runtime::signal::ShutdownSignal;

/// How long a coordinator's write waits for the in-sync replicas (Kafka's
/// offsets.commit.timeout.ms, also its transaction log's).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// An internal partition this broker leads, as its coordinator loaded it.
pub struct LoadedPartition {
    pub partition: Rc<Partition>,
    /// The leader epoch it is led in: the coordinator epoch.
    pub leader_epoch: i32,
    /// The topic's min.insync.replicas, for the acks=all writes.
    pub min_isr: i32,
    pub stop: Arc<ShutdownSignal>,
}

impl LoadedPartition {
    /// A coordinator's write: acks=all.
    pub fn acks(&self) -> Acks {
        Acks::All {
            min_isr: self.min_isr,
            timeout: WRITE_TIMEOUT,
        }
    }

    /// Whether the partition is still led in the epoch it was loaded in.
    pub fn still_leads(&self) -> bool {
        self.partition.leads_in(self.leader_epoch)
    }
}

/// What an internal partition a coordinator gave up had been there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unloaded {
    Loaded,
    /// Its load had begun, not ended.
    Loading,
    Neither,
}
