//! A partition's roles: its high watermark across a restart (`storage::hw_checkpoint`), a leader epoch bump in place.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::metadata::Placement;
use crate::partition::local::{Partition, RoleChange};
use crate::partition::state::PartitionState;
use crate::protocol::batch::validate_records;
use crate::protocol::encode;
use crate::storage::commit::GroupCommit;
use crate::storage::config::LogConfig;
use crate::storage::log::{self, LogRef, PartitionLog};

fn ten_records() -> Bytes {
    let records: Vec<_> = (0..10)
        .map(|i| encode::record(i, 1_000 + i, None, Some(Bytes::from_static(b"v")), None))
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// Partition `t-0`'s state and log in `dir`.
fn open_log(dir: &std::path::Path) -> (Arc<PartitionState>, LogRef) {
    let state = Arc::new(PartitionState::default());
    let log = PartitionLog::open(
        Arc::from("t"),
        0,
        dir.join("t-0"),
        LogConfig::default(),
        state.log_state(),
    )
    .unwrap();
    (state, Rc::new(RefCell::new(log)))
}

/// Appends three batches of ten records (offsets 0-29).
async fn append_thirty(log: &LogRef) {
    let commit = Rc::new(GroupCommit::default());
    for _ in 0..3 {
        let records = ten_records();
        let validated = validate_records(&records, usize::MAX).unwrap();
        log::append(log, &commit, records, &validated, true)
            .await
            .unwrap();
    }
}

/// Broker 1's replica of a partition on brokers 1 and 2, in a log of 30
/// records: taking its first role after a restart, its high watermark is
/// the checkpointed one, capped at the log end, or the log start without
/// one.
#[test]
fn a_restarted_replica_starts_from_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let (state, log) = open_log(dir.path());
        append_thirty(&log).await;
        let leading = Placement {
            isr: vec![1, 2],
            ..Placement::new(vec![1, 2])
        };
        let following = Placement {
            leader: 2,
            leader_epoch: 1,
            ..leading.clone()
        };
        for (checkpointed, expected) in [(None, 0), (Some(20), 20), (Some(500), 30)] {
            for placement in [&leading, &following] {
                let partition = Partition::new(Arc::from("t"), 0, state.clone(), log.clone(), 1);
                partition.set_recovered_high_watermark(checkpointed);
                partition.apply_placement(placement);
                // Broker 2 has not fetched: nothing moves the watermark,
                // and one checkpointed past the log end is capped there (it
                // must not follow the log end as it grows).
                assert_eq!(
                    (state.high_watermark(), state.stored_high_watermark()),
                    (expected, expected),
                    "checkpointed {checkpointed:?}, leader {}",
                    placement.leader
                );
            }
        }
    });
}

/// A leader epoch bump that keeps the leader (a follower left the replica
/// list) continues the leadership in place: what was led since the older
/// epoch still counts (appends waiting for replication, a loaded
/// coordinator), and the new epoch starts at the log end. A jump of more
/// than one epoch (a leadership elsewhere may have come between) starts a
/// new leadership.
#[test]
fn the_same_leader_in_the_next_epoch_leads_on_in_place() {
    let dir = tempfile::tempdir().unwrap();
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let (state, log) = open_log(dir.path());
        let partition = Partition::new(Arc::from("t"), 0, state.clone(), log.clone(), 1);
        let three = Placement {
            isr: vec![1, 2, 3],
            ..Placement::new(vec![1, 2, 3])
        };
        assert_eq!(partition.apply_placement(&three), RoleChange::Leads);
        append_thirty(&log).await;
        let two = Placement {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader_epoch: 1,
            partition_epoch: 1,
            ..three.clone()
        };
        assert_eq!(partition.apply_placement(&two), RoleChange::Unchanged);
        assert!(partition.leads_in(0) && partition.leads_in(1));
        assert!(!partition.leads_in(2));
        assert_eq!(state.leader_epoch(), 1);
        assert_eq!(log.borrow().end_offset_for_epoch(0), (0, 30));
        let later = Placement {
            leader_epoch: 3,
            partition_epoch: 3,
            ..two.clone()
        };
        assert_eq!(partition.apply_placement(&later), RoleChange::Leads);
        assert!(!partition.leads_in(1) && partition.leads_in(3));
    });
}
