//! Topic changes across the shards, run on the controller shard: the
//! controller plans and records each change (`metadata::controller`), and
//! between the two the partitions' logs are created, removed or updated on the
//! shards that own them. One change at a time (the controller's lock).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::metadata::controller::ApiError;
use crate::metadata::TopicMeta;
use crate::node::shard::Shard;
use crate::partition::local::Partition;
use crate::protocol::errors::ErrorCode;
use crate::storage::log::PartitionLog;

/// CreateTopics (and auto-creation): `validate_only` checks and builds the
/// topic without creating it.
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    let topic = controller.plan_topic(name, partitions, configs)?;
    if validate_only {
        return Ok(topic);
    }
    open_partitions(shard, &topic, 0).await?;
    if let Err(error) = controller.record_topic(&topic).await {
        // Not in the image: its logs must not stay open (nor its files).
        remove_partitions(shard, &topic, 0).await;
        return Err(error);
    }
    Ok(topic)
}

/// DeleteTopics: recorded first, then each partition's files are removed.
pub async fn delete_topic(shard: &Rc<Shard>, topic: Arc<TopicMeta>) -> Result<(), ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    controller.record_deletion(&topic).await?;
    remove_partitions(shard, &topic, 0).await;
    Ok(())
}

/// Closes and removes the logs of `topic`'s partitions from `first` on, each
/// on its shard.
async fn remove_partitions(shard: &Rc<Shard>, topic: &TopicMeta, first: i32) {
    let removals = (first..topic.partition_count()).map(|partition| {
        let owner = shard.node.shard_for(&topic.name, partition);
        let id = topic.id;
        shard.run_on(owner, move |shard| async move {
            let removed = shard.partitions.borrow_mut().remove(&(id, partition));
            if let Some(removed) = removed {
                if let Err(error) = removed.log().borrow_mut().delete_files() {
                    tracing::warn!(%error, partition, "removing the files of a partition");
                }
            }
        })
    });
    futures_util::future::join_all(removals).await;
}

/// CreatePartitions: grows `name` to `count` partitions. `assignments` is how
/// many manual replica assignments the request gave, if any.
pub async fn create_partitions(
    shard: &Rc<Shard>,
    name: &str,
    count: i32,
    assignments: Option<usize>,
    validate_only: bool,
) -> Result<(), ApiError> {
    let controller = shard.controller();
    let _change = controller.lock().await;
    controller.check_leader()?;
    let (topic, first_new) = controller.plan_partitions(name, count, assignments)?;
    if validate_only {
        return Ok(());
    }
    open_partitions(shard, &topic, first_new).await?;
    if let Err(error) = controller.record_partitions(&topic).await {
        remove_partitions(shard, &topic, first_new).await;
        return Err(error);
    }
    Ok(())
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
    let (topic, config) = controller.plan_configs(name, &configs)?;
    if validate_only {
        return Ok(());
    }
    controller.record_configs(name, configs).await?;
    let updates = (0..topic.partition_count()).map(|partition| {
        let owner = shard.node.shard_for(name, partition);
        let id = topic.id;
        let config = config.log_config();
        shard.run_on(owner, move |shard| async move {
            if let Some(local) = shard.partition(&(id, partition)) {
                local.log().borrow_mut().set_config(config);
            }
        })
    });
    futures_util::future::join_all(updates).await;
    Ok(())
}

/// Creates (empty) the logs of `topic`'s partitions from `first` on, each on its shard.
async fn open_partitions(
    shard: &Rc<Shard>,
    topic: &Arc<TopicMeta>,
    first: i32,
) -> Result<(), ApiError> {
    let data_dir = shard.node.config.data_dir.clone();
    let opens = (first..topic.partition_count()).map(|partition| {
        let owner = shard.node.shard_for(&topic.name, partition);
        let name = topic.name.clone();
        let id = topic.id;
        let config = topic.config.log_config();
        let state = topic.partitions[partition as usize].clone();
        let dir = PartitionLog::dir_for(&data_dir, &name, partition);
        shard.run_on(owner, move |shard| async move {
            // A leftover directory (a topic of this name deleted before a crash) is not this topic's data.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
            }
            let log = PartitionLog::open(name.clone(), partition, dir, config, state.log_state())
                .map_err(|e| e.to_string())?;
            let local = Partition::new(name, partition, state, Rc::new(RefCell::new(log)));
            shard
                .partitions
                .borrow_mut()
                .insert((id, partition), Rc::new(local));
            Ok::<(), String>(())
        })
    });
    for result in futures_util::future::join_all(opens).await {
        result.map_err(|e| {
            ApiError::new(
                ErrorCode::KafkaStorageError,
                format!("creating partition log: {e}"),
            )
        })?;
    }
    Ok(())
}
