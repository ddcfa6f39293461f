//! Sluice as a cluster (issue 15), as far as it is built: the metadata
//! quorum. A broker started with no flags is a quorum of one that leads it;
//! three brokers started with KRaft's flags elect one leader, replicate the
//! metadata (a topic created at the leader is listed by all three), refuse
//! metadata changes elsewhere with NOT_CONTROLLER, elect another leader when
//! the leader is killed (-9), and take the killed node back. DescribeQuorum
//! reports it all as `kafka-metadata-quorum` reads it. Raw protocol: no
//! client library implements DescribeQuorum but Kafka's Java admin client.

mod common;

use std::time::{Duration, Instant};

use common::wire::{create_topics_request, metadata, topic_name, Conn};
use common::TestBroker;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
};

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_CONTROLLER: i16 = 41;

fn describe_quorum_request(topic: &str, partition: i32) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(topic))
        .with_partitions(vec![
            PartitionData::default().with_partition_index(partition)
        ])])
}

fn describe_quorum(addr: &str, version: i16) -> DescribeQuorumResponse {
    let mut conn = Conn::open(addr);
    conn.call(
        ApiKey::DescribeQuorum,
        version,
        &describe_quorum_request("__cluster_metadata", 0),
    )
}

/// (error code, leader id, epoch, high watermark, voters' (id, log end offset)).
fn quorum_of(response: &DescribeQuorumResponse) -> (i16, i32, i32, i64, Vec<(i32, i64)>) {
    assert_eq!(response.error_code, NONE, "{response:?}");
    assert_eq!(response.topics.len(), 1);
    assert_eq!(
        response.topics[0].topic_name.0.as_str(),
        "__cluster_metadata"
    );
    let partition = &response.topics[0].partitions[0];
    (
        partition.error_code,
        partition.leader_id.0,
        partition.leader_epoch,
        partition.high_watermark,
        partition
            .current_voters
            .iter()
            .map(|v| (v.replica_id.0, v.log_end_offset))
            .collect(),
    )
}

#[test]
fn a_broker_alone_leads_its_quorum_of_one() {
    let mut broker = TestBroker::start_with(&["--node-id", "7"]);
    for version in 0..=2 {
        let response = describe_quorum(&broker.addr, version);
        let (code, leader, epoch, high_watermark, voters) = quorum_of(&response);
        assert_eq!((code, leader), (NONE, 7), "v{version}: {response:?}");
        assert!(epoch >= 1, "v{version}: an election happened: {epoch}");
        assert!(high_watermark >= 1, "v{version}: {high_watermark}");
        assert_eq!(voters, [(7, high_watermark)], "v{version}: caught up");
        let me = &response.topics[0].partitions[0].current_voters[0];
        if version >= 1 {
            assert!(me.last_fetch_timestamp > 0 && me.last_caught_up_timestamp > 0);
        }
        if version >= 2 {
            assert_eq!(response.nodes.len(), 1);
            assert_eq!(response.nodes[0].node_id.0, 7);
        }
    }
    // Anything but the quorum's one partition is unknown.
    for (topic, partition) in [("__cluster_metadata", 1), ("other", 0)] {
        let mut conn = Conn::open(&broker.addr);
        let response: DescribeQuorumResponse = conn.call(
            ApiKey::DescribeQuorum,
            2,
            &describe_quorum_request(topic, partition),
        );
        assert_eq!(response.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    }
    // Metadata changes go through the quorum and survive restarts, clean and
    // after kill -9.
    let name = common::topic("quorum-one");
    let mut conn = Conn::open(&broker.addr);
    common::wire::create_topic(&mut conn, &name, 3, &[]);
    let (_, _, _, before, _) = quorum_of(&describe_quorum(&broker.addr, 2));
    broker.restart();
    broker.restart_after_kill();
    let mut conn = Conn::open(&broker.addr);
    let listed = metadata(&mut conn, Some(&[&name]), false);
    assert_eq!(listed.topics[0].error_code, NONE);
    assert_eq!(listed.topics[0].partitions.len(), 3);
    let (code, leader, _, after, _) = quorum_of(&describe_quorum(&broker.addr, 2));
    assert_eq!((code, leader), (NONE, 7));
    assert!(
        after >= before,
        "the quorum's log lost entries: {before} -> {after}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asks every live node; returns the leader they agree on once they do.
fn agreed_leader(nodes: &[(i32, &TestBroker)], within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        let answers: Vec<(i32, i16, i32)> = nodes
            .iter()
            .map(|(id, broker)| {
                let (code, leader, ..) = quorum_of(&describe_quorum(&broker.addr, 2));
                (*id, code, leader)
            })
            .collect();
        let leader = answers[0].2;
        let agreed = leader >= 0 && answers.iter().all(|a| a.2 == leader);
        let leads = answers
            .iter()
            .filter(|(id, code, _)| *id == leader && *code == NONE)
            .count()
            == 1;
        let others_refer = answers
            .iter()
            .filter(|(id, ..)| *id != leader)
            .all(|(_, code, _)| *code == NOT_LEADER_OR_FOLLOWER);
        if agreed && leads && others_refer {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within {within:?}: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn view(brokers: &[(i32, TestBroker)]) -> Vec<(i32, &TestBroker)> {
    brokers.iter().map(|(id, b)| (*id, b)).collect()
}

fn create(addr: &str, name: &str) -> i16 {
    let mut conn = Conn::open(addr);
    let response: CreateTopicsResponse = conn.call(
        ApiKey::CreateTopics,
        7,
        &create_topics_request(name, 1, 1, &[]),
    );
    response.topics[0].error_code
}

/// The brokers `addr`'s Metadata lists (id, port) and the controller it names.
fn listed_brokers(addr: &str) -> (Vec<(i32, i32)>, i32) {
    let mut conn = Conn::open(addr);
    let response = metadata(&mut conn, Some(&[]), false);
    let brokers = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.port))
        .collect();
    (brokers, response.controller_id.0)
}

/// The port of a test broker's Kafka listener.
fn port_of(broker: &TestBroker) -> i32 {
    broker.addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Waits until every node of `nodes` lists exactly `expected` (id, port)
/// and names `controller` as the controller.
fn wait_for_brokers(nodes: &[&TestBroker], expected: &[(i32, i32)], controller: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<_> = nodes.iter().map(|b| listed_brokers(&b.addr)).collect();
        if seen
            .iter()
            .all(|(brokers, c)| brokers == expected && *c == controller)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "brokers did not agree on {expected:?} with controller {controller}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lists(addr: &str, name: &str) -> bool {
    let mut conn = Conn::open(addr);
    metadata(&mut conn, Some(&[name]), false).topics[0].error_code == NONE
}

#[test]
fn three_brokers_share_one_metadata_quorum_and_fail_over() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = (1..=3)
        .map(|id| format!("{id}@127.0.0.1:{}", ports[id - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let temp = tempfile::tempdir().unwrap();
    let mut brokers: Vec<(i32, TestBroker)> = (1..=3)
        .map(|id: i32| {
            let listen = format!("127.0.0.1:{}", ports[id as usize - 1]);
            let args = [
                "--node-id",
                &id.to_string(),
                "--controller-listen",
                &listen,
                "--controller-quorum-voters",
                &voters,
                "--controller-quorum-election-timeout-ms",
                "300",
                "--broker-heartbeat-interval-ms",
                "200",
                "--broker-session-timeout-ms",
                "2000",
            ]
            .map(str::to_string);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let dir = temp.path().join(format!("node-{id}"));
            (id, TestBroker::start_in(&dir, &args))
        })
        .collect();
    let started = Instant::now();
    let leader = agreed_leader(&view(&brokers), Duration::from_secs(20));
    println!(
        "leader {leader} agreed {:?} after the starts",
        started.elapsed()
    );
    let addr_of = |brokers: &[(i32, TestBroker)], id: i32| {
        brokers
            .iter()
            .find(|(i, _)| *i == id)
            .unwrap()
            .1
            .addr
            .clone()
    };

    // Every broker registers: each lists all three, where clients reach
    // them, and names the quorum's leader as the controller.
    let everyone = |brokers: &[(i32, TestBroker)]| -> Vec<(i32, i32)> {
        brokers.iter().map(|(id, b)| (*id, port_of(b))).collect()
    };
    wait_for_brokers(
        &brokers.iter().map(|(_, b)| b).collect::<Vec<_>>(),
        &everyone(&brokers),
        leader,
    );

    // Metadata changes: at the leader, listed by all; elsewhere refused.
    let name = common::topic("quorum-three");
    assert_eq!(create(&addr_of(&brokers, leader), &name), NONE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !brokers.iter().all(|(_, b)| lists(&b.addr, &name)) {
        assert!(
            Instant::now() < deadline,
            "the topic did not reach every node"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let follower = brokers.iter().find(|(id, _)| *id != leader).unwrap().0;
    assert_eq!(
        create(
            &addr_of(&brokers, follower),
            &common::topic("at-a-follower")
        ),
        NOT_CONTROLLER
    );

    // kill -9 of the leader: the two left elect one of them.
    let killed_at = Instant::now();
    brokers
        .iter_mut()
        .find(|(id, _)| *id == leader)
        .unwrap()
        .1
        .kill();
    let left: Vec<(i32, &TestBroker)> = view(&brokers)
        .into_iter()
        .filter(|(id, _)| *id != leader)
        .collect();
    let second = agreed_leader(&left, Duration::from_secs(20));
    assert_ne!(second, leader);
    let name2 = common::topic("after-failover");
    assert_eq!(create(&addr_of(&brokers, second), &name2), NONE);
    println!(
        "leader {leader} killed: leader {second} elected and writing {:?} later",
        killed_at.elapsed()
    );
    // Its session expires at the new controller: the two left list only
    // themselves.
    let survivors: Vec<(i32, i32)> = everyone(&brokers)
        .into_iter()
        .filter(|(id, _)| *id != leader)
        .collect();
    wait_for_brokers(
        &brokers
            .iter()
            .filter(|(id, _)| *id != leader)
            .map(|(_, b)| b)
            .collect::<Vec<_>>(),
        &survivors,
        second,
    );
    println!(
        "the killed broker was fenced {:?} after the kill",
        killed_at.elapsed()
    );

    // The killed node comes back (its controller port may be held for a
    // moment), catches up, and follows.
    let back = &mut brokers.iter_mut().find(|(id, _)| *id == leader).unwrap().1;
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(error) = back.try_start_again() {
        assert!(
            Instant::now() < deadline,
            "the killed node did not restart: {error}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = agreed_leader(&view(&brokers), Duration::from_secs(20));
        let (_, _, _, high_watermark, voters) =
            quorum_of(&describe_quorum(&addr_of(&brokers, current), 2));
        let caught_up = voters.len() == 3 && voters.iter().all(|(_, end)| *end == high_watermark);
        if caught_up && lists(&addr_of(&brokers, leader), &name2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up: {voters:?} at {high_watermark}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The restarted broker registers again, at its new port.
    let current = agreed_leader(&view(&brokers), Duration::from_secs(20));
    wait_for_brokers(
        &brokers.iter().map(|(_, b)| b).collect::<Vec<_>>(),
        &everyone(&brokers),
        current,
    );
    for (_, broker) in brokers.iter_mut() {
        assert_eq!(broker.stop(), Some(0), "clean shutdown");
    }
}
