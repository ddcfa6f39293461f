//! Topic changes, run on the controller shard: the controller plans and
//! records each change (`metadata::controller`), one at a time (its lock).
//! Applying a committed change, on every node, creates, removes or
//! reconfigures the logs of the partitions that node hosts, each on the
//! shard that owns it (`local_changes` and the functions after it).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::metadata::controller::ApiError;
use crate::metadata::topic_config::{incremental_overrides, ConfigOp};
use crate::metadata::{MetadataImage, TopicMeta, RESERVED_TOPIC_PREFIX};
use crate::node::shard::Shard;
use crate::partition::local::Partition;
use crate::protocol::errors::ErrorCode;
use crate::storage::log::PartitionLog;

/// CreateTopics (and auto-creation): `validate_only` checks and builds the
/// topic without creating it. `manual`: a checked replica assignment.
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    manual: Option<Vec<Vec<i32>>>,
    replication_factor: i16,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    let factor = controller.replication_factor(replication_factor)?;
    let topic = controller.plan_topic(name, partitions, configs, manual, factor)?;
    if validate_only {
        return Ok(topic);
    }
    controller.record_topic(&topic).await?;
    Ok(topic)
}

/// DeleteTopics: once recorded, every node removes its replicas' files.
pub async fn delete_topic(shard: &Rc<Shard>, topic: Arc<TopicMeta>) -> Result<(), ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    controller.record_deletion(&topic).await
}

/// CreatePartitions: grows `name` to `count` partitions. `manual`: a checked
/// replica assignment of the new partitions.
pub async fn create_partitions(
    shard: &Rc<Shard>,
    name: &str,
    count: i32,
    manual: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    let (topic, first_new) = controller.plan_partitions(name, count, manual)?;
    if validate_only {
        return Ok(());
    }
    controller.record_partitions(&topic, first_new).await
}

/// AlterConfigs / IncrementalAlterConfigs: `configs` become the topic's
/// overrides; each partition's log gets the new storage config.
pub async fn set_topic_configs(
    shard: &Rc<Shard>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    controller.plan_configs(name, &configs)?;
    if validate_only {
        return Ok(());
    }
    // Applying the record gives the logs on every node their new config.
    controller.record_configs(name, configs).await
}

/// IncrementalAlterConfigs: `ops` applied to the overrides of `name` as
/// the controller has them, under its lock; returns the new overrides.
pub async fn alter_topic_configs(
    shard: &Rc<Shard>,
    name: &str,
    ops: &[ConfigOp],
    validate_only: bool,
) -> Result<BTreeMap<String, String>, ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    let topic = controller.existing_topic(name)?;
    let configs = incremental_overrides(&topic.overrides, &topic.config, ops)
        .map_err(|message| ApiError::new(ErrorCode::InvalidConfig, message))?;
    controller.plan_configs(name, &configs)?;
    if !validate_only {
        controller.record_configs(name, configs.clone()).await?;
    }
    Ok(configs)
}

/// One partition hosted on this node, as the image that places it here has it.
pub struct Hosted {
    pub topic: Arc<TopicMeta>,
    pub partition: i32,
}

/// What publishing a new image changes among the partitions hosted here.
#[derive(Default)]
pub struct LocalChanges {
    /// Newly placed here: their logs are created (empty).
    pub opened: Vec<Hosted>,
    /// No longer here (deleted): closed and their files removed.
    pub removed: Vec<Hosted>,
    /// Still here with a new topic config.
    pub reconfigured: Vec<Hosted>,
}

/// The partitions hosted here by `node` that differ between `old` and `new`.
pub fn local_changes(old: &MetadataImage, new: &MetadataImage, node: i32) -> LocalChanges {
    let mut changes = LocalChanges::default();
    let hosted = |topic: &Arc<TopicMeta>| -> Vec<i32> {
        (0..topic.partition_count())
            .filter(|&p| topic.placement(p).is_some_and(|pl| pl.hosts(node)))
            .collect()
    };
    for topic in new.topics.values() {
        let before = old.topic_by_id(&topic.id);
        for partition in hosted(topic) {
            let hosted_before =
                before.is_some_and(|b| b.placement(partition).is_some_and(|pl| pl.hosts(node)));
            let entry = Hosted {
                topic: topic.clone(),
                partition,
            };
            if !hosted_before {
                changes.opened.push(entry);
            } else if before.is_some_and(|b| b.overrides != topic.overrides) {
                changes.reconfigured.push(entry);
            }
        }
    }
    for topic in old.topics.values() {
        let after = new.topic_by_id(&topic.id);
        for partition in hosted(topic) {
            let hosted_after =
                after.is_some_and(|a| a.placement(partition).is_some_and(|pl| pl.hosts(node)));
            if !hosted_after {
                changes.removed.push(Hosted {
                    topic: topic.clone(),
                    partition,
                });
            }
        }
    }
    changes
}

/// Creates (empty) the logs of `partitions`, each on its shard; one that
/// cannot be created is offline (KAFKA_STORAGE_ERROR to its clients).
pub async fn open_partitions(shard: &Rc<Shard>, partitions: &[Hosted]) {
    let data_dir = shard.node.config.data_dir.clone();
    let opens = partitions.iter().map(|hosted| {
        let topic = hosted.topic.clone();
        let partition = hosted.partition;
        let owner = shard.node.shard_for(&topic.name, partition);
        let dir = PartitionLog::dir_for(&data_dir, &topic.name, partition);
        shard.try_run_on(owner, move |shard| async move {
            let state = topic.partitions[partition as usize].clone();
            let opened = (|| {
                // Only a node alone had the internal logs a client used: in
                // a cluster every broker kept private ones, of which only
                // one was in use, and none may become a replica.
                let adopt = topic.name.starts_with(RESERVED_TOPIC_PREFIX)
                    && shard.node.config.quorum_voters.len() == 1;
                prepare_dir(&dir, topic.id, adopt)?;
                let log = PartitionLog::open(
                    topic.name.clone(),
                    partition,
                    dir.clone(),
                    topic.config.log_config(),
                    state.log_state(),
                )
                .map_err(|e| e.to_string())?;
                write_topic_id(&dir, topic.id).map_err(|e| e.to_string())?;
                Ok::<_, String>(log)
            })();
            match opened {
                Ok(log) => {
                    let local = Partition::new(
                        topic.name.clone(),
                        partition,
                        state,
                        Rc::new(RefCell::new(log)),
                        shard.node.config.node_id,
                    );
                    shard
                        .partitions
                        .borrow_mut()
                        .insert((topic.id, partition), Rc::new(local));
                }
                Err(error) => {
                    tracing::error!(topic = %topic.name, partition, %error, "cannot create the partition's log; it is offline");
                    state.set_offline();
                }
            }
        })
    });
    futures_util::future::join_all(opens).await;
}

/// The file in a partition's directory naming the topic (by id) whose
/// partition it holds.
pub const TOPIC_ID_FILE: &str = "topic-id";

/// Makes `dir` ready for a partition of topic `id`: a directory that holds
/// this very topic's partition (the change is applied again after a restart)
/// is kept as it is; one of another topic of the same name (deleted before a
/// crash) is removed; one that names no topic (an older Sluice's, or one
/// whose name file a crash lost) is moved aside, never deleted, unless
/// `adopt`: an internal log an older Sluice kept outside the metadata (the
/// offsets and transaction logs of one node), which becomes this topic's.
fn prepare_dir(dir: &std::path::Path, id: uuid::Uuid, adopt: bool) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    match std::fs::read_to_string(dir.join(TOPIC_ID_FILE)) {
        Ok(text) if text.trim() == id.to_string() => Ok(()),
        Ok(other) => {
            tracing::info!(dir = %dir.display(), topic_id = %other.trim(), "removing a deleted topic's partition directory");
            std::fs::remove_dir_all(dir).map_err(|e| e.to_string())
        }
        Err(_) if adopt => {
            tracing::info!(dir = %dir.display(), "an internal log from before it was a topic: kept as the topic's partition");
            Ok(())
        }
        Err(_) => {
            let aside = dir.with_file_name(format!(
                "{}.orphaned-{}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                crate::io::clock::now_ms()
            ));
            tracing::warn!(dir = %dir.display(), aside = %aside.display(), "a partition directory naming no topic is in the way: moved aside");
            std::fs::rename(dir, &aside).map_err(|e| e.to_string())
        }
    }
}

/// Records, durably, which topic `dir`'s partition belongs to.
pub fn write_topic_id(dir: &std::path::Path, id: uuid::Uuid) -> std::io::Result<()> {
    let path = dir.join(TOPIC_ID_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == id.to_string()) {
        return Ok(());
    }
    crate::io::fs::write_durably(&path, format!("{id}\n").as_bytes())
}

/// Closes the logs of `partitions` and removes their files, each on its shard.
pub async fn remove_partitions(shard: &Rc<Shard>, partitions: &[Hosted]) {
    let removals = partitions.iter().map(|hosted| {
        let owner = shard.node.shard_for(&hosted.topic.name, hosted.partition);
        let (id, partition) = (hosted.topic.id, hosted.partition);
        let name = hosted.topic.name.clone();
        shard.try_run_on(owner, move |shard| async move {
            let removed = shard.partitions.borrow_mut().remove(&(id, partition));
            if let Some(removed) = removed {
                removed.resign();
                if let Err(error) = removed.log().borrow_mut().delete_files() {
                    tracing::warn!(topic = %name, partition, %error, "removing the files of a partition");
                }
            }
        })
    });
    futures_util::future::join_all(removals).await;
}

/// Gives the logs of `partitions` their topic's current config.
pub async fn reconfigure_partitions(shard: &Rc<Shard>, partitions: &[Hosted]) {
    let updates = partitions.iter().map(|hosted| {
        let owner = shard.node.shard_for(&hosted.topic.name, hosted.partition);
        let (id, partition) = (hosted.topic.id, hosted.partition);
        let config = hosted.topic.config.log_config();
        shard.try_run_on(owner, move |shard| async move {
            if let Some(local) = shard.partition(&(id, partition)) {
                local.log().borrow_mut().set_config(config);
            }
        })
    });
    futures_util::future::join_all(updates).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_directory_is_kept_removed_or_moved_aside_by_its_topic_id() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("orders-0");
        let (this, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        // None yet: nothing to do.
        prepare_dir(&dir, this, false).unwrap();
        // This topic's own (applied again after a restart): kept with its data.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"data").unwrap();
        write_topic_id(&dir, this).unwrap();
        prepare_dir(&dir, this, false).unwrap();
        assert!(dir.join("00000000000000000000.log").exists());
        // A deleted topic's of the same name: removed.
        prepare_dir(&dir, other, false).unwrap();
        assert!(!dir.exists());
        // One naming no topic: moved aside, not deleted.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"old").unwrap();
        prepare_dir(&dir, this, false).unwrap();
        assert!(!dir.exists());
        let aside: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with("orders-0.orphaned-"), "{aside:?}");
        // An internal log from before it was a topic: adopted with its data.
        let internal = data.path().join("__sluice_offsets-3");
        std::fs::create_dir_all(&internal).unwrap();
        std::fs::write(internal.join("00000000000000000000.log"), b"offsets").unwrap();
        prepare_dir(&internal, this, true).unwrap();
        assert!(internal.join("00000000000000000000.log").exists());
    }
}
