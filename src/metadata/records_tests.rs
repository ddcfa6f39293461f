//! Tests of the metadata records: apply, elections, snapshots, moves.

use super::*;

#[test]
fn a_producer_id_block_that_overlaps_an_earlier_one_is_refused() {
    let config = Config::for_tests("127.0.0.1:0".parse().unwrap(), "/nonexistent".into(), 1);
    let mut image = MetadataImage::default();
    let block = |end| MetadataRecord::ProducerIdBlock { end };
    block(PRODUCER_ID_BLOCK).apply(&mut image, &config).unwrap();
    assert_eq!(image.next_producer_id, PRODUCER_ID_BLOCK);
    // Two controllers that both planned from 0: the second block is refused.
    let error = block(PRODUCER_ID_BLOCK)
        .apply(&mut image, &config)
        .unwrap_err();
    assert!(error.starts_with(BLOCK_OVERLAP), "{error}");
    // One that reaches back by a single id is refused too.
    let error = block(2 * PRODUCER_ID_BLOCK - 1)
        .apply(&mut image, &config)
        .unwrap_err();
    assert!(error.starts_with(BLOCK_OVERLAP), "{error}");
    assert_eq!(image.next_producer_id, PRODUCER_ID_BLOCK);
    // The next block, and one past a gap, are taken.
    block(2 * PRODUCER_ID_BLOCK)
        .apply(&mut image, &config)
        .unwrap();
    block(5 * PRODUCER_ID_BLOCK)
        .apply(&mut image, &config)
        .unwrap();
    assert_eq!(image.next_producer_id, 5 * PRODUCER_ID_BLOCK);
}

#[test]
fn snapshots_round_trip_with_and_without_producer_ids() {
    let config = Config::for_tests("127.0.0.1:0".parse().unwrap(), "/nonexistent".into(), 1);
    let mut image = MetadataImage::default();
    let fresh = decode_snapshot(&encode_snapshot(&image), &config).unwrap();
    assert_eq!(fresh.next_producer_id, 0);
    assert!(fresh.topics.is_empty());
    MetadataRecord::CreateTopic {
        name: "orders".into(),
        id: Uuid::new_v4(),
        partitions: 3,
        configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        replicas: Some(vec![vec![1], vec![2], vec![3]]),
    }
    .apply(&mut image, &config)
    .unwrap();
    MetadataRecord::ProducerIdBlock { end: 3000 }
        .apply(&mut image, &config)
        .unwrap();
    let again = decode_snapshot(&encode_snapshot(&image), &config).unwrap();
    assert_eq!(again.next_producer_id, 3000);
    let topic = again.topic("orders").unwrap();
    assert_eq!(topic.partition_count(), 3);
    assert_eq!(topic.overrides["retention.ms"], "1000");
    let leaders: Vec<i32> = topic.placements.iter().map(|p| p.leader).collect();
    assert_eq!(leaders, [1, 2, 3]);
}

#[test]
fn brokers_register_fence_and_unfence_per_incarnation() {
    let config = Config::for_tests("127.0.0.1:0".parse().unwrap(), "/nonexistent".into(), 1);
    let mut image = MetadataImage::default();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let register = |incarnation, port| MetadataRecord::RegisterBroker {
        id: 2,
        host: "127.0.0.1".into(),
        port,
        incarnation,
    };
    register(first, 9092).apply(&mut image, &config).unwrap();
    let live = |image: &MetadataImage| image.live_brokers().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(live(&image), [2]);
    MetadataRecord::FenceBroker {
        id: 2,
        incarnation: first,
    }
    .apply(&mut image, &config)
    .unwrap();
    assert!(live(&image).is_empty());
    // The snapshot keeps the fence.
    let restored = decode_snapshot(&encode_snapshot(&image), &config).unwrap();
    assert_eq!(restored.brokers, image.brokers);
    // A new run registers live; a fence meant for the old run is ignored.
    register(second, 9093).apply(&mut image, &config).unwrap();
    MetadataRecord::FenceBroker {
        id: 2,
        incarnation: first,
    }
    .apply(&mut image, &config)
    .unwrap();
    assert_eq!(live(&image), [2]);
    assert_eq!(image.brokers[&2].port, 9093);
    MetadataRecord::FenceBroker {
        id: 2,
        incarnation: second,
    }
    .apply(&mut image, &config)
    .unwrap();
    MetadataRecord::UnfenceBroker {
        id: 2,
        incarnation: second,
    }
    .apply(&mut image, &config)
    .unwrap();
    assert_eq!(live(&image), [2]);
}

#[test]
fn a_change_planned_on_a_stale_image_is_refused_when_applied() {
    let config = Config::for_tests("127.0.0.1:0".parse().unwrap(), "/nonexistent".into(), 1);
    let mut image = MetadataImage::default();
    let create = |id| MetadataRecord::CreateTopic {
        name: "orders".into(),
        id,
        partitions: 1,
        configs: BTreeMap::new(),
        replicas: Some(vec![vec![1]]),
    };
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    create(first).apply(&mut image, &config).unwrap();
    // A second creation of the name (planned before the first was applied
    // where it was planned) does not replace the first topic.
    let error = create(second).apply(&mut image, &config).unwrap_err();
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(image.topic("orders").unwrap().id, first);
    // Growing names the topic it grows: not a topic recreated under its name.
    let grow = |id| MetadataRecord::SetPartitionCount {
        name: "orders".into(),
        id: Some(id),
        partitions: 2,
        replicas: Some(vec![vec![1]]),
    };
    assert!(grow(second).apply(&mut image, &config).is_err());
    assert_eq!(image.topic("orders").unwrap().partition_count(), 1);
    grow(first).apply(&mut image, &config).unwrap();
    assert_eq!(image.topic("orders").unwrap().partition_count(), 2);
}

/// A three-broker image with topic `t` (one partition on `replicas`)
/// and broker `u` holding one partition alone.
fn cluster(replicas: Vec<i32>, configs: &[(&str, &str)]) -> (MetadataImage, Config, Uuid) {
    let config = Config::for_tests("127.0.0.1:0".parse().unwrap(), "/nonexistent".into(), 1);
    let mut image = MetadataImage::default();
    for id in 1..=3 {
        MetadataRecord::RegisterBroker {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id,
            incarnation: Uuid::from_u128(id as u128),
        }
        .apply(&mut image, &config)
        .unwrap();
    }
    let id = Uuid::new_v4();
    MetadataRecord::CreateTopic {
        name: "t".into(),
        id,
        partitions: 1,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        replicas: Some(vec![replicas]),
    }
    .apply(&mut image, &config)
    .unwrap();
    MetadataRecord::CreateTopic {
        name: "u".into(),
        id: Uuid::new_v4(),
        partitions: 1,
        configs: BTreeMap::new(),
        replicas: Some(vec![vec![1]]),
    }
    .apply(&mut image, &config)
    .unwrap();
    (image, config, id)
}

fn fence(image: &mut MetadataImage, config: &Config, id: i32) {
    MetadataRecord::FenceBroker {
        id,
        incarnation: Uuid::from_u128(id as u128),
    }
    .apply(image, config)
    .unwrap();
}

fn state(image: &MetadataImage, topic: &str) -> (i32, Vec<i32>, i32, i32) {
    let p = &image.topic(topic).unwrap().placements[0];
    (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch)
}

#[test]
fn fencing_a_leader_elects_the_next_in_sync_replica() {
    let (mut image, config, _) = cluster(vec![1, 2, 3], &[]);
    fence(&mut image, &config, 1);
    assert_eq!(state(&image, "t"), (2, vec![2, 3], 1, 1));
    // A follower fenced: it leaves the ISR, the leader stays.
    fence(&mut image, &config, 3);
    assert_eq!(state(&image, "t"), (2, vec![2], 1, 2));
    // The last in-sync replica fenced: no leader, the ISR keeps it.
    fence(&mut image, &config, 2);
    assert_eq!(state(&image, "t"), (-1, vec![2], 2, 3));
    // Broker 1 returns: not in sync, it may not lead (clean election).
    MetadataRecord::UnfenceBroker {
        id: 1,
        incarnation: Uuid::from_u128(1),
    }
    .apply(&mut image, &config)
    .unwrap();
    assert_eq!(state(&image, "t"), (-1, vec![2], 2, 3));
    // Broker 2, the last in sync, returns: it leads again.
    MetadataRecord::UnfenceBroker {
        id: 2,
        incarnation: Uuid::from_u128(2),
    }
    .apply(&mut image, &config)
    .unwrap();
    assert_eq!(state(&image, "t"), (2, vec![2], 3, 4));
    // A partition whose one replica is the fenced broker is left as it is.
    assert_eq!(state(&image, "u"), (1, vec![1], 0, 0));
}

/// A replica whose log failed on a live broker (reported in its
/// heartbeat): the controller plans the partition without it, as for a
/// fenced broker, and the change applies on the epoch it was planned from.
#[test]
fn an_offline_replica_on_a_live_broker_leaves_the_isr_and_the_lead() {
    let (mut image, config, id) = cluster(vec![1, 2, 3], &[]);
    let offline = |image: &MetadataImage, broker: i32| {
        let topic = image.topic_by_id(&id).unwrap();
        without_replica(image, topic, &topic.placements[0], broker, |_| true)
    };
    let apply = |image: &mut MetadataImage, next: Placement| {
        MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: next.leader,
            isr: next.isr,
            leader_epoch: next.leader_epoch,
            partition_epoch: next.partition_epoch,
            reassigning: None,
        }
        .apply(image, &config)
        .unwrap();
    };
    // The leader's log failed: the next live in-sync replica leads.
    let next = offline(&image, 1).expect("a change");
    apply(&mut image, next);
    assert_eq!(state(&image, "t"), (2, vec![2, 3], 1, 1));
    // Reported again (the next heartbeat): nothing left to change.
    assert!(offline(&image, 1).is_none());
    // A follower's: it leaves the ISR; the leader and its epoch stay.
    let next = offline(&image, 3).expect("a change");
    apply(&mut image, next);
    assert_eq!(state(&image, "t"), (2, vec![2], 1, 2));
    // The last in-sync replica's: no leader, the ISR keeps it (the
    // partition waits for it, as for a fenced broker).
    let next = offline(&image, 2).expect("a change");
    apply(&mut image, next);
    assert_eq!(state(&image, "t"), (-1, vec![2], 2, 3));
    // Reported at every heartbeat from then on: nothing more to change
    // (no partition epoch spent each time).
    assert!(offline(&image, 2).is_none());
    // A leader whose log failed is not succeeded by a replica that is
    // offline too.
    let (fresh, _, fresh_id) = cluster(vec![1, 2, 3], &[]);
    let topic = fresh.topic_by_id(&fresh_id).unwrap();
    let next = without_replica(&fresh, topic, &topic.placements[0], 1, |r| r != 2).unwrap();
    assert_eq!((next.leader, next.isr.clone()), (3, vec![2, 3]));
    // The brokers stay live all along.
    assert!((1..=3).all(|b| !image.brokers[&b].fenced));
}

#[test]
fn an_unclean_election_takes_a_live_replica_out_of_sync() {
    let (mut image, config, id) =
        cluster(vec![1, 2, 3], &[("unclean.leader.election.enable", "true")]);
    MetadataRecord::PartitionChange {
        topic_id: id,
        partition: 0,
        leader: 1,
        isr: vec![1],
        leader_epoch: 0,
        partition_epoch: 1,
        reassigning: None,
    }
    .apply(&mut image, &config)
    .unwrap();
    fence(&mut image, &config, 1);
    assert_eq!(state(&image, "t"), (2, vec![2], 1, 2));
}

#[test]
fn a_new_run_of_a_live_broker_leaves_the_isrs_first() {
    let (mut image, config, _) = cluster(vec![1, 2, 3], &[]);
    MetadataRecord::RegisterBroker {
        id: 1,
        host: "127.0.0.1".into(),
        port: 9001,
        incarnation: Uuid::from_u128(99),
    }
    .apply(&mut image, &config)
    .unwrap();
    assert_eq!(state(&image, "t"), (2, vec![2, 3], 1, 1));
    assert!(!image.brokers[&1].fenced);
}

#[test]
fn partition_changes_apply_on_the_epoch_they_were_planned_from_and_survive_snapshots() {
    let (mut image, config, id) = cluster(vec![1, 2, 3], &[]);
    let change = |isr: Vec<i32>, partition_epoch| MetadataRecord::PartitionChange {
        topic_id: id,
        partition: 0,
        leader: 1,
        isr,
        leader_epoch: 0,
        partition_epoch,
        reassigning: None,
    };
    change(vec![1, 2], 1).apply(&mut image, &config).unwrap();
    let stale = change(vec![1, 3], 1)
        .apply(&mut image, &config)
        .unwrap_err();
    assert!(stale.starts_with(STALE_PARTITION_EPOCH), "{stale}");
    let bad = change(vec![2, 3], 2)
        .apply(&mut image, &config)
        .unwrap_err();
    assert!(
        bad.contains("do not fit"),
        "the leader must be in the ISR: {bad}"
    );
    assert_eq!(state(&image, "t"), (1, vec![1, 2], 0, 1));
    fence(&mut image, &config, 1);
    let restored = decode_snapshot(&encode_snapshot(&image), &config).unwrap();
    assert_eq!(state(&restored, "t"), state(&image, "t"));
    assert_eq!(state(&restored, "u"), state(&image, "u"));
    assert_eq!(restored.brokers, image.brokers);
}

#[test]
fn a_reassignment_completes_with_the_isr_change_that_brings_the_new_replica_in() {
    let (mut image, config, id) = cluster(vec![1, 2], &[]);
    let reassign = |target: Option<Vec<i32>>, partition_epoch| MetadataRecord::ReassignPartition {
        topic_id: id,
        partition: 0,
        target,
        partition_epoch,
    };
    reassign(Some(vec![2, 3]), 1)
        .apply(&mut image, &config)
        .unwrap();
    let p = image.topic("t").unwrap().placements[0].clone();
    assert_eq!(
        (p.replicas.clone(), p.adding.clone(), p.removing.clone()),
        (vec![2, 3, 1], vec![3], vec![1])
    );
    // Planned from an older epoch: refused.
    let stale = reassign(None, 1).apply(&mut image, &config).unwrap_err();
    assert!(stale.starts_with(STALE_PARTITION_EPOCH), "{stale}");
    // A snapshot taken meanwhile keeps the move.
    let restored = decode_snapshot(&encode_snapshot(&image), &config).unwrap();
    assert_eq!(restored.topic("t").unwrap().placements[0], p);
    // The leader adds 3 to the ISR: the move completes, 1 hands over.
    MetadataRecord::PartitionChange {
        topic_id: id,
        partition: 0,
        leader: 1,
        isr: vec![1, 2, 3],
        leader_epoch: 0,
        partition_epoch: 2,
        reassigning: None,
    }
    .apply(&mut image, &config)
    .unwrap();
    let p = &image.topic("t").unwrap().placements[0];
    assert_eq!(
        (p.replicas.clone(), p.isr.clone()),
        (vec![2, 3], vec![2, 3])
    );
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
    assert!(!p.reassigning());
    // Nothing left to cancel.
    let none = reassign(None, 3).apply(&mut image, &config).unwrap_err();
    assert!(none.contains("no reassignment"), "{none}");
}

#[test]
fn a_move_waiting_for_a_live_leader_completes_when_one_returns() {
    let (mut image, config, id) = cluster(vec![1, 2], &[]);
    fence(&mut image, &config, 2);
    fence(&mut image, &config, 1);
    assert_eq!(state(&image, "t"), (-1, vec![1], 1, 2));
    // Drop replica 2: 1 is the one in sync, but fenced: the move waits.
    MetadataRecord::ReassignPartition {
        topic_id: id,
        partition: 0,
        target: Some(vec![1]),
        partition_epoch: 3,
    }
    .apply(&mut image, &config)
    .unwrap();
    assert!(image.topic("t").unwrap().placements[0].reassigning());
    MetadataRecord::UnfenceBroker {
        id: 1,
        incarnation: Uuid::from_u128(1),
    }
    .apply(&mut image, &config)
    .unwrap();
    let p = &image.topic("t").unwrap().placements[0];
    assert!(!p.reassigning(), "{p:?}");
    assert_eq!(
        (p.replicas.clone(), p.isr.clone(), p.leader),
        (vec![1], vec![1], 1)
    );
}
