//! Moving partitions between brokers (KIP-455's AlterPartitionReassignments
//! and ListPartitionReassignments) and admin requests sent to a broker that
//! is not the active controller (KIP-590: forwarded to it), on three
//! brokers. Partitions move under a librdkafka producer's acks=all load,
//! asked for by kafkajs's admin client; what the producer was told is
//! checked against what kafka-python reads afterwards.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::wire::{create_topics_request, metadata, str_bytes, topic_name, Conn};
use common::TestBroker;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

const NONE: i16 = 0;

/// One test at a time: each starts brokers on ports picked free a moment
/// before (a test running beside it could take one meanwhile).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// kafkajs's ListPartitionReassignments of `topic`, as its JSON line.
fn kafkajs_moves(addr: &str, topic: &str) -> String {
    common::run_node_client("kafkajs_reassign.js", &[addr, topic, "list"])
        .trim()
        .to_string()
}

/// Waits until every broker's Metadata shows each partition `p` of `topic`
/// on `targets[p]` (in that order), all of them in sync.
fn wait_for_replicas(brokers: &[(i32, TestBroker)], topic: &str, targets: &[Vec<i32>]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = |addr: &str| {
        let seen = placements(addr, topic);
        seen.len() == targets.len()
            && seen
                .iter()
                .zip(targets)
                .all(|((leader, replicas, isr, error), target)| {
                    let mut isr = isr.clone();
                    let mut sorted = target.clone();
                    isr.sort();
                    sorted.sort();
                    *error == NONE && replicas == target && isr == sorted && target.contains(leader)
                })
    };
    while !brokers.iter().all(|(_, b)| settled(&b.addr)) {
        assert!(
            Instant::now() < deadline,
            "{topic} never settled on {targets:?}: {:?}",
            brokers
                .iter()
                .map(|(id, b)| (id, placements(&b.addr, topic)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three brokers, a topic of two partitions with two replicas each.
/// kafkajs moves partition 0 off the broker leading it (onto the broker
/// that had no replica) and partition 1 onto all three brokers, while
/// librdkafka (idempotent, acks=all) produces to both. The new replicas
/// catch up, join the ISR, the moves complete (the leaving leader hands
/// over), and: nothing acknowledged is lost or duplicated (kafka-python
/// reads everything back), the replicas' logs are byte for byte the same,
/// and the broker that left partition 0 removed its files.
#[test]
fn partitions_move_between_brokers_under_load_and_lose_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (brokers, controller) = ready_three(
        dir.path(),
        &["--replica-high-watermark-checkpoint-interval-ms", "100"],
    );
    let topic = "moving";
    create_replicated(&brokers, topic, 2, 2, &[]);
    let before = placements(&brokers[0].1.addr, topic);
    let outsider = |replicas: &[i32]| (1..=3).find(|b| !replicas.contains(b)).unwrap();
    let (leader0, replicas0) = (before[0].0, before[0].1.clone());
    let follower0 = *replicas0.iter().find(|&&r| r != leader0).unwrap();
    let left0 = leader0;
    let target0 = vec![outsider(&replicas0), follower0];
    let mut target1 = before[1].1.clone();
    target1.push(outsider(&target1));

    let producer = common::clients::producer(&brokers[0].1, &[("enable.idempotence", "true")]);
    let sending = std::thread::spawn(move || {
        send_all(
            &producer,
            "moving",
            (0..4000).map(|i| {
                if i % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                format!("v{i:05}")
            }),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    // Asked of a broker that is not the controller (kafkajs goes to the
    // controller Metadata names in any case).
    let asked = brokers.iter().find(|(id, _)| *id != controller).unwrap();
    let arg = |p: usize, t: &[i32]| {
        format!(
            "{p}={}",
            t.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
        )
    };
    let moved = common::run_node_client(
        "kafkajs_reassign.js",
        &[
            &asked.1.addr,
            topic,
            "move",
            &arg(0, &target0),
            &arg(1, &target1),
        ],
    );
    assert_eq!(moved.trim(), "moved");
    wait_for_replicas(&brokers, topic, &[target0.clone(), target1.clone()]);
    let (acked, failed) = sending.join().unwrap();
    assert!(
        failed.is_empty(),
        "sends failed during the move: {failed:?}"
    );
    assert_eq!(acked.len(), 4000);
    assert_eq!(moves(&brokers[0].1.addr, topic), vec![]);
    assert_eq!(kafkajs_moves(&asked.1.addr, topic), "[]");

    let read = read_with_kafka_python(&addr_of(&brokers, target0[0]), topic, 2);
    let anomalies = check_history(&acked, &failed, &read);
    assert!(anomalies.is_empty(), "{anomalies:?}");
    // Every replica holds the same bytes once the producer stopped and the
    // followers fetched the last of it.
    for (partition, target) in [(0, &target0), (1, &target1)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs: Vec<Vec<u8>> = target
                .iter()
                .map(|&id| {
                    let broker = &brokers.iter().find(|(i, _)| *i == id).unwrap().1;
                    log_bytes(&broker.data_dir().join(format!("{topic}-{partition}")))
                })
                .collect();
            if logs.iter().all(|l| *l == logs[0]) && !logs[0].is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partition {partition}'s replicas {target:?} differ"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Each replica checkpoints its partitions' high watermarks (every 100
    // ms here): the counts acknowledged, under the topic's id; the broker
    // that left partition 0 no longer names it.
    let topic_id = metadata(&mut Conn::open(&brokers[0].1.addr), Some(&[topic]), false).topics[0]
        .topic_id
        .to_string();
    let acked_in = |p: i32| acked.iter().filter(|(q, ..)| *q == p).count() as i64;
    for (id, broker) in &brokers {
        let expected: Vec<String> = [(0, &target0), (1, &target1)]
            .iter()
            .filter(|(_, target)| target.contains(id))
            .map(|(p, _)| format!("{topic_id} {p} {}", acked_in(*p)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text =
                std::fs::read_to_string(broker.data_dir().join("replication-offset-checkpoint"))
                    .unwrap_or_default();
            let mine: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with(&topic_id))
                .map(str::to_string)
                .collect();
            if mine == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {id} checkpointed {mine:?}, not {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let gone = brokers.iter().find(|(id, _)| *id == left0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gone.1.data_dir().join(format!("{topic}-0")).exists() {
        assert!(
            Instant::now() < deadline,
            "broker {left0} kept partition 0's files after leaving it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A move to a broker that is down waits: kafkajs and the raw request list
/// it (replicas, adding) at every broker, Metadata reports the extra
/// replica outside the ISR; cancelling it (a null replica list, sent to a
/// broker that is not the controller) restores the replicas; a second
/// cancellation is NO_REASSIGNMENT_IN_PROGRESS. Unknown brokers, unknown
/// partitions and a forbidden change of replication factor are refused
/// with Kafka's codes. Then CreatePartitions (manual assignment of two
/// replicas), IncrementalAlterConfigs and DeleteTopics, all sent to a
/// broker that is not the controller, are made and visible at that broker
/// as soon as it answers.
#[test]
fn a_waiting_move_is_listed_and_cancelled_and_admin_requests_reach_the_controller() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mut brokers, controller) = ready_three(dir.path(), &[]);
    let topic = "parked";
    // Its replicas: the controller and one other broker; the third, with
    // no replica, is the one the move waits for.
    let others: Vec<i32> = (1..=3).filter(|&b| b != controller).collect();
    let (asked, down) = (others[0], others[1]);
    let replicas = vec![controller, asked];
    let mut create = create_topics_request(topic, -1, -1, &[]);
    create.topics[0].assignments = vec![CreatableReplicaAssignment::default()
        .with_partition_index(0)
        .with_broker_ids(replicas.iter().map(|&b| BrokerId(b)).collect())];
    let created: CreateTopicsResponse =
        Conn::open(&brokers[0].1.addr).call(ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, NONE, "{created:?}");
    for (_, broker) in &brokers {
        wait_for_isr(&broker.addr, topic, 2, Duration::from_secs(10));
    }
    // The broker with no replica stops (SIGTERM): registered, fenced.
    let asked_addr = addr_of(&brokers, asked);
    brokers
        .iter_mut()
        .find(|(id, _)| *id == down)
        .unwrap()
        .1
        .stop();
    let mut target = replicas.clone();
    target.push(down);
    assert_eq!(reassign(&asked_addr, topic, 0, Some(&target), true), NONE);
    let waiting: Move = (0, target.clone(), vec![down], vec![]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while replicas
        .iter()
        .any(|&b| moves(&addr_of(&brokers, b), topic) != vec![waiting.clone()])
    {
        assert!(
            Instant::now() < deadline,
            "the move is not listed everywhere"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed = kafkajs_moves(&asked_addr, topic);
    let expected = format!(
        "[{{\"partition\":0,\"replicas\":{target:?},\"adding\":[{down}],\"removing\":[]}}]"
    )
    .replace(' ', "");
    assert_eq!(listed, expected);
    let (_, shown, isr, _) = placements(&asked_addr, topic)[0].clone();
    assert_eq!(shown, target);
    assert!(
        !isr.contains(&down),
        "a fenced new replica is in the ISR: {isr:?}"
    );
    // Still waiting a while later: the broker is down.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(moves(&asked_addr, topic), vec![waiting]);

    // Refusals, each with Kafka's code; none changes the move under way.
    assert_eq!(
        reassign(&asked_addr, topic, 0, Some(&[replicas[0], 9]), true),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        reassign(
            &asked_addr,
            topic,
            0,
            Some(&[replicas[0], replicas[0]]),
            true
        ),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        reassign(&asked_addr, topic, 0, Some(&[1, 2, 3]), false),
        INVALID_REPLICATION_FACTOR
    );
    assert_eq!(
        reassign(&asked_addr, topic, 7, Some(&replicas), true),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        reassign(&asked_addr, "no-such-topic", 0, Some(&replicas), true),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(moves(&asked_addr, topic).len(), 1);

    // Cancelled: the original replicas, nothing listed, at every live broker.
    assert_eq!(reassign(&asked_addr, topic, 0, None, true), NONE);
    assert_eq!(moves(&asked_addr, topic), vec![]);
    let (leader, shown, _, _) = placements(&asked_addr, topic)[0].clone();
    assert_eq!(shown, replicas);
    assert!(replicas.contains(&leader));
    assert_eq!(
        reassign(&asked_addr, topic, 0, None, true),
        NO_REASSIGNMENT_IN_PROGRESS
    );

    // Admin requests at a broker that does not lead the quorum.
    let mut conn = Conn::open(&asked_addr);
    let grow = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(topic))
            .with_count(2)
            .with_assignments(Some(vec![CreatePartitionsAssignment::default()
                .with_broker_ids(vec![BrokerId(asked), BrokerId(controller)])]))]);
    let grown: CreatePartitionsResponse = conn.call(ApiKey::CreatePartitions, 3, &grow);
    assert_eq!(grown.results[0].error_code, NONE, "{grown:?}");
    let seen = placements(&asked_addr, topic);
    assert_eq!(
        seen.len(),
        2,
        "the new partition is not at the asked broker yet"
    );
    assert_eq!(seen[1].1, vec![asked, controller]);
    // A manual assignment of another replication factor is refused.
    let wrong = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(topic))
            .with_count(3)
            .with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(asked)])
            ]))]);
    let refused: CreatePartitionsResponse = conn.call(ApiKey::CreatePartitions, 3, &wrong);
    assert_eq!(refused.results[0].error_code, INVALID_REPLICA_ASSIGNMENT);

    let set = common::wire::incremental_alter(
        &mut conn,
        1,
        topic,
        &[("retention.ms", 0, Some("3600000"))],
    );
    assert_eq!(set, NONE);
    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(common::wire::RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configuration_keys(Some(vec![str_bytes("retention.ms")]))]);
    let described: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &describe);
    let value = described.results[0].configs[0]
        .value
        .as_ref()
        .map(|v| v.to_string());
    assert_eq!(value.as_deref(), Some("3600000"), "{described:?}");

    let delete = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name(topic)))
        ]);
    let deleted: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 6, &delete);
    assert_eq!(deleted.responses[0].error_code, NONE, "{deleted:?}");
    let listed = metadata(&mut conn, None, false);
    assert!(
        listed
            .topics
            .iter()
            .all(|t| t.name.as_ref().map(|n| n.as_str()) != Some(topic)),
        "the deleted topic is still listed at the asked broker"
    );
}

/// Issue 15's ListPartitionReassignments for a listed partition that does
/// not move: left out (Kafka's answer), here with the topics field given.
#[test]
fn a_partition_that_does_not_move_is_not_listed() {
    let _serial = serial();
    let broker = TestBroker::start();
    common::wire::create_topic(&mut Conn::open(&broker.addr), "still", 2, &[]);
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
            .with_name(topic_name("still"))
            .with_partition_indexes(vec![0, 1, 5])]));
    let response: ListPartitionReassignmentsResponse =
        Conn::open(&broker.addr).call(ApiKey::ListPartitionReassignments, 0, &request);
    assert_eq!(response.error_code, NONE);
    assert!(response.topics.is_empty(), "{response:?}");
    // A one-node cluster moves a partition onto the same broker in a new
    // order: nothing to do, and nothing listed.
    assert_eq!(reassign(&broker.addr, "still", 0, Some(&[1]), true), NONE);
    assert_eq!(moves(&broker.addr, "still"), vec![]);
    assert_eq!(
        reassign(&broker.addr, "still", 0, Some(&[1, 2]), true),
        INVALID_REPLICA_ASSIGNMENT
    );
}
