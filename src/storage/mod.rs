//! The storage engine: per partition a directory of segment files named by base
//! offset, each a `.log` of record batches exactly as clients sent them (offsets
//! assigned by the broker), with sparse offset and time indexes.
//!
//! - `segment.rs`: one segment, its start-up scan and recovery of a torn tail.
//! - `index.rs`: the sparse offset and time indexes.
//! - `log.rs`: a partition log: append (reserve, write with io_uring, wait for
//!   group commit), read by offset, look up by timestamp.
//! - `commit.rs`: group commit, one fdatasync round for every waiting append of a shard.
//! - `producer_state.rs`: idempotent-producer sequence tracking.
//! - `clean_shutdown.rs`: the marker a clean shutdown leaves so that the next
//!   start can trust the files instead of scanning them.
//! - `cleaner.rs`: log compaction, a background pass per shard over compacted logs.
//!
//! The on-disk format is described in `docs/FORMAT.md`.

pub mod aligned;
pub mod chain;
pub mod clean_shutdown;
pub mod cleaner;
pub mod commit;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod replay;
pub mod segment;

use std::cell::RefCell;
use std::rc::Rc;

use crate::runtime::Shard;
use crate::storage::log::PartitionLog;

/// Opens every partition log this shard owns, according to the metadata image.
/// A partition whose log cannot be opened (corruption) is reported and taken
/// offline; the others still open.
pub fn open_owned_logs(shard: &Rc<Shard>) -> Result<(), String> {
    let image = shard.broker.image();
    let data_dir = &shard.broker.config.data_dir;
    let mut opened = 0usize;
    for topic in image.topics.values() {
        for (partition, shared) in topic.partitions.iter().enumerate() {
            let partition = partition as i32;
            if shard.broker.shard_for(&topic.name, partition) != shard.id {
                continue;
            }
            let dir = PartitionLog::dir_for(data_dir, &topic.name, partition);
            match PartitionLog::open(
                topic.name.clone(),
                partition,
                dir,
                topic.config.clone(),
                shared.clone(),
            ) {
                Ok(log) => {
                    shard
                        .logs
                        .borrow_mut()
                        .insert((topic.id, partition), Rc::new(RefCell::new(log)));
                    opened += 1;
                }
                Err(error) => {
                    tracing::error!(topic = %topic.name, partition, %error, "cannot open partition log; partition is offline");
                    shared.set_offline();
                }
            }
        }
    }
    tracing::debug!(
        shard = shard.id,
        partitions = opened,
        "partition logs opened"
    );
    Ok(())
}

/// Runs retention over this shard's logs every `interval` until shutdown.
pub fn start_retention(shard: &Rc<Shard>, interval: std::time::Duration) {
    let shard = shard.clone();
    compio::runtime::spawn(async move {
        while !shard.broker.shutdown.is_triggered() {
            compio::time::sleep(interval).await;
            let now = log::now_ms();
            let logs: Vec<_> = shard.logs.borrow().values().cloned().collect();
            for log in logs {
                log.borrow_mut().apply_retention(now);
            }
        }
    })
    .detach();
}

/// How often the `flush.ms` policy is checked; the finest useful flush interval.
const PERIODIC_FLUSH_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Syncs logs whose `flush.ms` has passed since their last sync, until shutdown.
pub fn start_periodic_flush(shard: &Rc<Shard>) {
    let shard = shard.clone();
    compio::runtime::spawn(async move {
        while !shard.broker.shutdown.is_triggered() {
            compio::time::sleep(PERIODIC_FLUSH_CHECK).await;
            let now = log::now_ms();
            let due: Vec<_> = shard
                .logs
                .borrow()
                .values()
                .filter_map(|l| l.borrow_mut().take_periodic_flush(now))
                .collect();
            for file in due {
                if let Err(error) = shard.commit.sync(file).await {
                    tracing::error!(%error, "periodic flush failed");
                }
            }
        }
    })
    .detach();
}

/// Closes every log of this shard (clean shutdown): index files, syncs, and
/// the clean-shutdown marker that lets the next start skip the scan.
pub fn close_owned_logs(shard: &Rc<Shard>) {
    for log in shard.logs.borrow().values() {
        let mut log = log.borrow_mut();
        if let Err(error) = log.close() {
            tracing::warn!(topic = %log.topic, partition = log.partition, %error, "closing log");
        }
    }
}
