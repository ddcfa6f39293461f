//! Sluice as a cluster (issue 15), as far as it is built: the metadata
//! quorum. A broker started with no flags is a quorum of one that leads it;
//! three brokers started with KRaft's flags elect one leader, replicate the
//! metadata (a topic created at the leader is listed by all three; creation
//! at a follower is forwarded; other changes elsewhere are refused with
//! NOT_CONTROLLER), elect another leader when
//! the leader is killed (-9), and take the killed node back. DescribeQuorum
//! reports it all as `kafka-metadata-quorum` reads it. Raw protocol: no
//! client library implements DescribeQuorum but Kafka's Java admin client.

mod common;

use std::time::{Duration, Instant};

use common::wire::{create_topics_request, metadata, topic_name, Conn};
use common::TestBroker;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeQuorumRequest,
    DescribeQuorumResponse,
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
    let temp = tempfile::tempdir().unwrap();
    let mut brokers = start_three(temp.path());
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

    // Metadata changes: at the leader, listed by all.
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
    // At a follower: forwarded to the controller (KIP-590), and listed by
    // the follower once it returns; auto-creation by Metadata there too.
    let follower = brokers.iter().find(|(id, _)| *id != leader).unwrap().0;
    let forwarded = common::topic("at-a-follower");
    assert_eq!(create(&addr_of(&brokers, follower), &forwarded), NONE);
    assert!(lists(&addr_of(&brokers, follower), &forwarded));
    let auto = common::topic("auto-at-a-follower");
    let mut conn = Conn::open(&addr_of(&brokers, follower));
    let listed = metadata(&mut conn, Some(&[&auto]), true);
    assert_eq!(listed.topics[0].error_code, NONE, "{listed:?}");
    assert!(lists(&addr_of(&brokers, leader), &auto));
    // Other changes are not forwarded yet: refused off the controller.
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![topic_name(&auto)]);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 5, &request);
    assert_eq!(response.responses[0].error_code, NOT_CONTROLLER);

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

/// Starts three brokers under `dir` sharing a quorum, with short timeouts.
fn start_three(dir: &std::path::Path) -> Vec<(i32, TestBroker)> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = (1..=3)
        .map(|id| format!("{id}@127.0.0.1:{}", ports[id - 1]))
        .collect::<Vec<_>>()
        .join(",");
    (1..=3)
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
            (
                id,
                TestBroker::start_in(&dir.join(format!("node-{id}")), &args),
            )
        })
        .collect()
}

/// Each partition's (leader, replicas, isr, error) as `addr` describes `topic`.
fn placements(addr: &str, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>, i16)> {
    let mut conn = Conn::open(addr);
    let response = metadata(&mut conn, Some(&[topic]), false);
    let mut partitions = response.topics[0].partitions.clone();
    partitions.sort_by_key(|p| p.partition_index);
    partitions
        .iter()
        .map(|p| {
            (
                p.leader_id.0,
                p.replica_nodes.iter().map(|b| b.0).collect(),
                p.isr_nodes.iter().map(|b| b.0).collect(),
                p.error_code,
            )
        })
        .collect()
}

/// Partitions are spread over the brokers (one replica each, until data is
/// replicated); every broker describes the same placement; a broker that
/// does not lead a partition refuses its produce with NOT_LEADER_OR_FOLLOWER;
/// librdkafka (idempotent: its producer id comes from a block the active
/// controller granted) and kafka-python, bootstrapped at any broker, follow
/// the leaders and read back exactly what they wrote. A broker's loss leaves
/// its partitions without a leader (LEADER_NOT_AVAILABLE), the others served.
#[test]
fn partitions_spread_over_the_brokers_and_clients_follow_their_leaders() {
    use rdkafka::consumer::Consumer;
    use rdkafka::producer::FutureRecord;
    use rdkafka::{Message, Offset, TopicPartitionList};

    let temp = tempfile::tempdir().unwrap();
    let mut brokers = start_three(temp.path());
    let leader = agreed_leader(&view(&brokers), Duration::from_secs(20));
    let everyone: Vec<(i32, i32)> = brokers.iter().map(|(id, b)| (*id, port_of(b))).collect();
    wait_for_brokers(
        &brokers.iter().map(|(_, b)| b).collect::<Vec<_>>(),
        &everyone,
        leader,
    );
    let follower = brokers.iter().find(|(id, _)| *id != leader).unwrap();
    let leader_addr = brokers
        .iter()
        .find(|(id, _)| *id == leader)
        .unwrap()
        .1
        .addr
        .clone();

    let name = common::topic("spread");
    let mut conn = Conn::open(&leader_addr);
    let response: CreateTopicsResponse = conn.call(
        ApiKey::CreateTopics,
        7,
        &create_topics_request(&name, 6, 1, &[]),
    );
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
    // Replication factor 2 is refused until data is replicated.
    let response: CreateTopicsResponse = conn.call(
        ApiKey::CreateTopics,
        7,
        &create_topics_request(&common::topic("rf2"), 1, 2, &[]),
    );
    assert_eq!(
        response.topics[0].error_code, 38,
        "INVALID_REPLICATION_FACTOR"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let placed = loop {
        let seen: Vec<_> = brokers
            .iter()
            .map(|(_, b)| placements(&b.addr, &name))
            .collect();
        if seen[0].len() == 6 && seen.iter().all(|s| *s == seen[0]) {
            break seen[0].clone();
        }
        assert!(Instant::now() < deadline, "brokers disagree: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for (p, (lead, replicas, isr, error)) in placed.iter().enumerate() {
        assert_eq!(*error, NONE, "partition {p}");
        assert_eq!(replicas, &vec![*lead], "partition {p}");
        assert_eq!(isr, &vec![*lead], "partition {p}");
    }
    for id in 1..=3 {
        let led = placed.iter().filter(|(l, ..)| *l == id).count();
        assert_eq!(led, 2, "broker {id} leads two of six: {placed:?}");
    }
    // Produce at a broker that does not lead the partition.
    let (p, (lead, ..)) = placed.iter().enumerate().next().unwrap();
    let elsewhere = brokers.iter().find(|(id, _)| id != lead).unwrap();
    let mut conn = Conn::open(&elsewhere.1.addr);
    let answer = common::wire::produce(&mut conn, &name, p as i32, common::wire::value_batch("x"));
    assert_eq!(answer.error_code, NOT_LEADER_OR_FOLLOWER);

    // librdkafka, bootstrapped at a follower, idempotent.
    let producer = common::clients::producer(&follower.1, &[("enable.idempotence", "true")]);
    let sent = 300;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for i in 0..sent {
            let key = format!("key-{}", i % 17);
            let value = format!("value-{i}");
            producer
                .send(
                    FutureRecord::to(&name).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("message {i}: {e}"));
        }
    });
    let reader = brokers.iter().find(|(id, _)| *id != follower.0).unwrap();
    let consumer = common::clients::consumer(&reader.1, &[]);
    let mut assignment = TopicPartitionList::new();
    for p in 0..6 {
        assignment
            .add_partition_offset(&name, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut got: Vec<(i32, i64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < sent && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("a consumed message");
            let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
            got.push((message.partition(), message.offset(), value));
        }
    }
    let mut values: Vec<&str> = got.iter().map(|(_, _, v)| v.as_str()).collect();
    values.sort_unstable();
    let mut expected: Vec<String> = (0..sent).map(|i| format!("value-{i}")).collect();
    expected.sort_unstable();
    assert_eq!(values, expected, "every message exactly once");
    for p in 0..6 {
        let offsets: Vec<i64> = got.iter().filter(|g| g.0 == p).map(|g| g.1).collect();
        assert!(
            offsets.iter().copied().eq(0..offsets.len() as i64),
            "partition {p}: offsets {offsets:?}"
        );
    }
    drop(consumer);
    drop(producer);

    // Every broker names the same group coordinator (the live broker with
    // the lowest id), so a group's members meet whichever broker they ask:
    // a group consumer bootstrapped at one broker commits, and a consumer of
    // the same group bootstrapped at another sees those commits.
    let group = common::topic("spread-group");
    let grouped = |broker: &TestBroker| {
        common::clients::consumer(
            broker,
            &[
                ("group.id", group.as_str()),
                ("auto.offset.reset", "earliest"),
            ],
        )
    };
    let first = grouped(&brokers[2].1);
    first.subscribe(&[&name]).unwrap();
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed < sent && Instant::now() < deadline {
        if let Some(message) = first.poll(Duration::from_millis(200)) {
            message.expect("a consumed message");
            consumed += 1;
        }
    }
    assert_eq!(consumed, sent, "the group consumer read everything");
    first
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
    drop(first);
    let second = grouped(&brokers[1].1);
    let committed = second
        .committed_offsets(assignment.clone(), Duration::from_secs(10))
        .expect("committed offsets");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {}: {other:?}", e.partition()),
        })
        .sum();
    assert_eq!(
        total, sent as i64,
        "the commits, seen through another broker"
    );
    drop(second);

    // kafka-python (an independent client), bootstrapped at a follower: its
    // admin client creates through the controller Metadata names.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let output = std::process::Command::new("python3")
        .current_dir(&script)
        .arg("kafka_python_smoke.py")
        .arg(&follower.1.addr)
        .arg(common::topic("spread-python"))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "kafka_python_smoke.py: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // One broker killed: its partitions have no leader once it is fenced;
    // the others still take writes.
    let gone = brokers
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader)
        .unwrap();
    brokers
        .iter_mut()
        .find(|(id, _)| *id == gone)
        .unwrap()
        .1
        .kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = placements(&leader_addr, &name);
        let orphaned = now.iter().filter(|(l, ..)| *l == -1).count();
        if orphaned == 2 {
            for (p, (lead, replicas, isr, error)) in now.iter().enumerate() {
                if replicas == &vec![gone] {
                    assert_eq!(
                        (*lead, *error),
                        (-1, 5),
                        "partition {p}: LEADER_NOT_AVAILABLE"
                    );
                    assert!(isr.is_empty(), "partition {p}: {isr:?}");
                }
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed broker's partitions: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (p, _) = placed
        .iter()
        .enumerate()
        .find(|(_, (l, ..))| *l == leader)
        .unwrap();
    let mut conn = Conn::open(&leader_addr);
    let answer = common::wire::produce(&mut conn, &name, p as i32, common::wire::value_batch("y"));
    assert_eq!(answer.error_code, NONE);
    for (id, broker) in brokers.iter_mut() {
        if *id != gone {
            assert_eq!(broker.stop(), Some(0), "clean shutdown");
        }
    }
}
