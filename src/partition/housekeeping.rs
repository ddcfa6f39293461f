//! The per-shard life of partitions: opened at start-up, background work
//! (retention, periodic flush, log cleaning), closed at shutdown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::io::clock::now_ms;
use crate::metrics::PartitionSample;
use crate::node::shard::Shard;
use crate::node::Node;
use crate::partition::local::Partition;
use crate::storage::cleaner::{clean, CleanerLimits};
use crate::storage::hw_checkpoint;
use crate::storage::log::{self, LogRef, PartitionLog};

/// Opens every partition log this shard owns, according to the metadata image.
/// A partition whose log cannot be opened (corruption) is reported and taken
/// offline; the others still open.
pub fn open_owned_logs(shard: &Rc<Shard>) -> Result<(), String> {
    let image = shard.node.image();
    let data_dir = &shard.node.config.data_dir;
    let mut opened = 0usize;
    for topic in image.topics.values() {
        for (partition, shared) in topic.partitions.iter().enumerate() {
            let partition = partition as i32;
            if shard.node.shard_for(&topic.name, partition) != shard.id
                || !topic
                    .placement(partition)
                    .is_some_and(|p| p.hosts(shard.node.config.node_id))
            {
                continue;
            }
            let dir = PartitionLog::dir_for(data_dir, &topic.name, partition);
            match PartitionLog::open(
                topic.name.clone(),
                partition,
                dir,
                topic.config.log_config(),
                shared.log_state(),
            ) {
                Ok(log) => {
                    // Logs an older Sluice created do not name their topic yet.
                    let dir = PartitionLog::dir_for(data_dir, &topic.name, partition);
                    if let Err(error) = crate::node::topics::write_topic_id(&dir, topic.id) {
                        tracing::warn!(topic = %topic.name, partition, %error, "cannot record the partition's topic id");
                    }
                    let log = Rc::new(RefCell::new(log));
                    let local = Partition::new(
                        topic.name.clone(),
                        partition,
                        shared.clone(),
                        log,
                        shard.node.config.node_id,
                    );
                    let checkpointed = &shard.node.checkpointed_high_watermarks;
                    local.set_recovered_high_watermark(
                        checkpointed.get(&(topic.id, partition)).copied(),
                    );
                    shard
                        .partitions
                        .borrow_mut()
                        .insert((topic.id, partition), Rc::new(local));
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
        while !shard.node.shutdown.is_triggered() {
            compio::time::sleep(interval).await;
            let now = now_ms();
            let logs: Vec<LogRef> = shard
                .partitions
                .borrow()
                .values()
                .map(|p| p.log().clone())
                .collect();
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
        while !shard.node.shutdown.is_triggered() {
            compio::time::sleep(PERIODIC_FLUSH_CHECK).await;
            let now = now_ms();
            let due: Vec<_> = shard
                .partitions
                .borrow()
                .values()
                .filter_map(|p| {
                    let file = p.log().borrow_mut().take_periodic_flush(now)?;
                    Some((p.log().clone(), file))
                })
                .collect();
            for (log, file) in due {
                if let Err(error) = log::sync_log(log, shard.commit.clone(), file).await {
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
    for partition in shard.partitions.borrow().values() {
        let mut log = partition.log().borrow_mut();
        if let Err(error) = log.close() {
            tracing::warn!(topic = %log.topic, partition = log.partition, %error, "closing log");
        }
    }
}

/// Runs the cleaner over this shard's compacted logs (the internal topics'
/// among them) every `interval` until shutdown.
pub fn start_cleaner(shard: &Rc<Shard>, interval: Duration) {
    let shard = shard.clone();
    compio::runtime::spawn(async move {
        while !shard.node.shutdown.is_triggered() {
            compio::time::sleep(interval).await;
            let logs: Vec<LogRef> = shard
                .partitions
                .borrow()
                .values()
                .map(|p| p.log())
                .filter(|log| log.borrow().config().cleanup_policy.compact)
                .cloned()
                .collect();
            for log in logs {
                if shard.node.shutdown.is_triggered() {
                    break;
                }
                match clean(&log, now_ms(), CleanerLimits::default()).await {
                    Ok(Some(stats)) => {
                        let log = log.borrow();
                        tracing::debug!(topic = %log.topic, partition = log.partition, ?stats, "log cleaned");
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let log = log.borrow();
                        tracing::warn!(topic = %log.topic, partition = log.partition, %error, "log cleaning failed");
                    }
                }
            }
        }
    })
    .detach();
}

/// Writes the high watermarks of this node's replicated partitions to the
/// data dir (`storage::hw_checkpoint`) every
/// `--replica-high-watermark-checkpoint-interval-ms` when they changed, on
/// this shard (the controller's) for every shard: the watermarks are read
/// from the partitions' shared state. A last one is written when shutdown
/// begins.
pub fn start_hw_checkpoints(shard: &Rc<Shard>) {
    use futures_util::FutureExt;
    let node = shard.node.clone();
    compio::runtime::spawn(async move {
        let interval =
            Duration::from_millis(node.config.replica_high_watermark_checkpoint_interval_ms);
        let mut written = node.checkpointed_high_watermarks.clone();
        loop {
            futures_util::select! {
                _ = compio::time::sleep(interval).fuse() => {}
                _ = node.shutdown.wait().fuse() => {}
            }
            written = checkpoint_high_watermarks(&node, written).await;
            if node.shutdown.is_triggered() {
                break;
            }
        }
    })
    .detach();
}

/// One checkpoint: `written` (what the file holds) updated with the
/// watermark of every replicated partition hosted here that has taken a
/// role (one that has not keeps its checkpointed watermark); partitions no
/// longer here are left out. Written, durably, only if it changed; returns
/// what the file holds.
pub async fn checkpoint_high_watermarks(
    node: &Arc<Node>,
    written: HashMap<hw_checkpoint::Key, i64>,
) -> HashMap<hw_checkpoint::Key, i64> {
    let me = node.config.node_id;
    let mut next = HashMap::with_capacity(written.len());
    for topic in node.image().topics.values() {
        for (index, placement) in topic.placements.iter().enumerate() {
            if placement.replicas.len() < 2 || !placement.hosts(me) {
                continue;
            }
            let key = (topic.id, index as i32);
            let state = &topic.partitions[index];
            let hw = if state.is_replicated() {
                Some(state.high_watermark())
            } else {
                written.get(&key).copied()
            };
            if let Some(hw) = hw {
                next.insert(key, hw);
            }
        }
    }
    if next == written {
        return written;
    }
    let dir = node.config.data_dir.clone();
    let entries = next.clone();
    match compio::runtime::spawn_blocking(move || hw_checkpoint::write(&dir, &entries)).await {
        Ok(Ok(())) => next,
        Ok(Err(error)) => {
            tracing::warn!(%error, file = hw_checkpoint::FILE, "writing the high watermark checkpoint");
            written
        }
        Err(_) => {
            tracing::warn!(
                file = hw_checkpoint::FILE,
                "writing the high watermark checkpoint panicked"
            );
            written
        }
    }
}

/// This shard's partitions as `/metrics` shows them.
pub fn samples(shard: &Shard) -> Vec<PartitionSample> {
    let image = shard.node.image();
    let partitions = shard.partitions.borrow();
    let mut samples = Vec::with_capacity(partitions.len());
    for ((topic_id, partition), local) in partitions.iter() {
        let Some(topic) = image.topic_by_id(topic_id) else {
            continue;
        };
        let log = local.log().borrow();
        samples.push(PartitionSample {
            topic: topic.name.to_string(),
            partition: *partition,
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.high_watermark(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
        });
    }
    samples
}
