//! A partition's high watermark across a restart (`storage::hw_checkpoint`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::metadata::Placement;
use crate::partition::local::Partition;
use crate::partition::state::PartitionState;
use crate::protocol::batch::validate_records;
use crate::protocol::encode;
use crate::storage::commit::GroupCommit;
use crate::storage::config::LogConfig;
use crate::storage::log::{self, PartitionLog};

fn ten_records() -> Bytes {
    let records: Vec<_> = (0..10)
        .map(|i| encode::record(i, 1_000 + i, None, Some(Bytes::from_static(b"v")), None))
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// Broker 1's replica of a partition on brokers 1 and 2, in a log of 30
/// records: taking its first role after a restart, its high watermark is
/// the checkpointed one, capped at the log end, or the log start without
/// one.
#[test]
fn a_restarted_replica_starts_from_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let state = Arc::new(PartitionState::default());
        let log = PartitionLog::open(
            Arc::from("t"),
            0,
            dir.path().join("t-0"),
            LogConfig::default(),
            state.log_state(),
        )
        .unwrap();
        let log = Rc::new(RefCell::new(log));
        let commit = Rc::new(GroupCommit::default());
        for _ in 0..3 {
            let records = ten_records();
            let validated = validate_records(&records, usize::MAX).unwrap();
            log::append(&log, &commit, records, &validated, true)
                .await
                .unwrap();
        }
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
