//! Sluice as a cluster (issue 15), as far as it is built: the metadata
//! quorum, and partitions replicated between brokers (leader failover, the
//! ISR, acks=all with min.insync.replicas, logs that agree after a replica
//! returns). A broker started with no flags is a quorum of one that leads it;
//! three brokers started with KRaft's flags elect one leader, replicate the
//! metadata (a topic created at the leader is listed by all three; creation
//! and deletion at a follower are forwarded), elect another leader when
//! the leader is killed (-9), and take the killed node back. DescribeQuorum
//! reports it all as `kafka-metadata-quorum` reads it. Raw protocol: no
//! client library implements DescribeQuorum but Kafka's Java admin client.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::wire::{create_topics_request, metadata, topic_name, Conn};
use common::TestBroker;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeQuorumResponse,
};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

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

fn create(addr: &str, name: &str) -> i16 {
    let mut conn = Conn::open(addr);
    let response: CreateTopicsResponse = conn.call(
        ApiKey::CreateTopics,
        7,
        &create_topics_request(name, 1, 1, &[]),
    );
    response.topics[0].error_code
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
    // DeleteTopics too (tests/cluster_admin.rs has the other admin
    // requests): gone from the follower's own Metadata once it answers.
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![topic_name(&auto)]);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 5, &request);
    assert_eq!(response.responses[0].error_code, NONE, "{response:?}");
    assert!(!lists(&addr_of(&brokers, follower), &auto));

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

/// Partitions of one replica are spread over the brokers; every broker describes the same placement; a broker that
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
    // More replicas than brokers are refused.
    let response: CreateTopicsResponse = conn.call(
        ApiKey::CreateTopics,
        7,
        &create_topics_request(&common::topic("rf4"), 1, 4, &[]),
    );
    assert_eq!(
        response.topics[0].error_code, 38,
        "INVALID_REPLICATION_FACTOR: {response:?}"
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
    // KIP-951 (Produce v10+, Fetch v16): the refusal names the current
    // leader and epoch, and where that leader listens.
    let lead_port = port_of(&brokers.iter().find(|(id, _)| id == lead).unwrap().1);
    let request = common::wire::produce_request(&name, p as i32, common::wire::value_batch("x"));
    let response: kafka_protocol::messages::ProduceResponse =
        conn.call(ApiKey::Produce, 11, &request);
    let refused = &response.responses[0].partition_responses[0];
    assert_eq!(refused.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        (
            refused.current_leader.leader_id.0,
            refused.current_leader.leader_epoch
        ),
        (*lead, 0)
    );
    let endpoints: Vec<(i32, i32)> = response
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    assert_eq!(endpoints, [(*lead, lead_port)]);
    let topic_id = metadata(&mut conn, Some(&[&name]), false).topics[0].topic_id;
    // A client cannot pose as a follower: a replica id that names no live
    // broker (or the broker itself) is refused for the whole request.
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    for posing in [99, elsewhere.0] {
        let request =
            common::wire::sessionless(12, &name, topic_id, &[(p as i32, 0, 1024)], 0, 0, 1024)
                .with_replica_id(kafka_protocol::messages::BrokerId(posing));
        let response = common::wire::fetch(&mut conn, 12, &request);
        assert_eq!(
            response.error_code, CLUSTER_AUTHORIZATION_FAILED,
            "replica id {posing}"
        );
    }
    let request =
        common::wire::sessionless(16, &name, topic_id, &[(p as i32, 0, 1024)], 0, 0, 1024);
    let response = common::wire::fetch(&mut conn, 16, &request);
    let refused = &response.responses[0].partitions[0];
    assert_eq!(refused.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(refused.current_leader.leader_id.0, *lead);
    let endpoints: Vec<(i32, i32)> = response
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    assert_eq!(endpoints, [(*lead, lead_port)]);

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

/// Produce v9 of one record `value` to partition 0 of `topic` at `addr`
/// with `acks` (5 s timeout): the partition's (error code, base offset).
fn produce_one(addr: &str, topic: &str, acks: i16, value: &str) -> (i16, i64) {
    let request = common::wire::produce_request(topic, 0, common::wire::value_batch(value))
        .with_acks(acks)
        .with_timeout_ms(5000);
    let response: kafka_protocol::messages::ProduceResponse =
        Conn::open(addr).call(ApiKey::Produce, 9, &request);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Three replicas of each partition, min.insync.replicas=2: librdkafka
/// (idempotent, acks=all) writes, the broker leading partition 0 is killed
/// (-9), the controller fences it and elects a new leader from the ISR,
/// the producer goes on; kafka-python then reads everything back through
/// a survivor and the history is checked (nothing acknowledged lost,
/// duplicated or moved). The killed broker comes back, catches up and
/// rejoins every ISR; its logs are then byte for byte the same as the
/// others' (the leader's batches, its epochs stamped, copied as they are).
#[test]
fn replicated_partitions_survive_the_loss_of_their_leader() {
    let temp = tempfile::tempdir().unwrap();
    let (mut brokers, _) = ready_three(temp.path(), &[]);
    // One cluster: every broker reports the id the first controller recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<Option<String>> = brokers
            .iter()
            .map(|(_, b)| {
                metadata(&mut Conn::open(&b.addr), Some(&[]), false)
                    .cluster_id
                    .map(|id| id.to_string())
            })
            .collect();
        if ids[0].is_some() && ids.iter().all(|id| *id == ids[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "cluster ids differ: {ids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let name = common::topic("replicated");
    create_replicated(&brokers, &name, 3, 3, &[("min.insync.replicas", "2")]);
    let placed = wait_for_isr(&brokers[0].1.addr, &name, 3, Duration::from_secs(10));
    let led: Vec<i32> = placed.iter().map(|(l, _)| *l).collect();
    let mut sorted = led.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [1, 2, 3],
        "each broker leads one partition: {led:?}"
    );

    let victim = placed[0].0;
    let survivor = brokers.iter().find(|(id, _)| *id != victim).unwrap().0;
    let survivor_addr = brokers
        .iter()
        .find(|(id, _)| *id == survivor)
        .unwrap()
        .1
        .addr
        .clone();
    let producer = common::clients::producer(
        &brokers.iter().find(|(id, _)| *id == survivor).unwrap().1,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "60000"),
        ],
    );
    let (mut acked, mut failed) = send_all(&producer, &name, (0..150).map(|i| format!("v{i:04}")));
    assert!(failed.is_empty(), "before any fault: {failed:?}");

    let killed_at = Instant::now();
    brokers
        .iter_mut()
        .find(|(id, _)| *id == victim)
        .unwrap()
        .1
        .kill();
    let (more, lost_sends) = send_all(&producer, &name, (150..300).map(|i| format!("v{i:04}")));
    let unavailable = killed_at.elapsed();
    acked.extend(more);
    failed.extend(lost_sends);
    assert!(
        failed.is_empty(),
        "librdkafka retried through the failover: {failed:?}"
    );
    let after = wait_for_isr(&survivor_addr, &name, 2, Duration::from_secs(20));
    assert_ne!(
        after[0].0, victim,
        "partition 0 has a new leader: {after:?}"
    );
    for (leader, isr) in &after {
        assert!(
            !isr.contains(&victim),
            "the fenced broker left the ISR: {after:?}"
        );
        assert!(isr.contains(leader));
    }
    println!("failover: 150 acks=all sends through the loss of a leader took {unavailable:?}");

    let read = read_with_kafka_python(&survivor_addr, &name, 3);
    let anomalies = check_history(&acked, &failed, &read);
    assert!(anomalies.is_empty(), "{anomalies:#?}");
    assert_eq!(acked.len(), 300);

    // The killed broker returns: it catches up and is back in every ISR,
    // and all three logs of each partition are the same bytes.
    brokers
        .iter_mut()
        .find(|(id, _)| *id == victim)
        .unwrap()
        .1
        .restart_after_kill();
    wait_for_isr(&survivor_addr, &name, 3, Duration::from_secs(30));
    // ElectLeaders (sent to a broker that does not lead the quorum, which
    // forwards it): partition 0 goes back to its preferred replica.
    let elect = |addr: &str, partition: i32| -> i16 {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let request = kafka_protocol::messages::ElectLeadersRequest::default()
            .with_election_type(0)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(topic_name(&name))
                .with_partitions(vec![partition])]));
        let response: kafka_protocol::messages::ElectLeadersResponse =
            Conn::open(addr).call(ApiKey::ElectLeaders, 2, &request);
        assert_eq!(response.error_code, NONE, "{response:?}");
        response.replica_election_results[0].partition_result[0].error_code
    };
    let (_, controller_now) = listed_brokers(&survivor_addr);
    let elsewhere = brokers
        .iter()
        .find(|(id, _)| *id != controller_now)
        .unwrap()
        .1
        .addr
        .clone();
    assert_eq!(elect(&elsewhere, 0), NONE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while placements(&survivor_addr, &name)[0].0 != victim {
        assert!(
            Instant::now() < deadline,
            "partition 0 did not go back to {victim}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    const ELECTION_NOT_NEEDED: i16 = 84;
    assert_eq!(elect(&elsewhere, 0), ELECTION_NOT_NEEDED);
    assert_eq!(elect(&elsewhere, 7), UNKNOWN_TOPIC_OR_PARTITION);
    for p in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs: Vec<Vec<u8>> = brokers
                .iter()
                .map(|(_, b)| log_bytes(&b.data_dir().join(format!("{name}-{p}"))))
                .collect();
            if logs.iter().all(|l| *l == logs[0]) {
                assert!(!logs[0].is_empty());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partition {p}: the replicas' logs differ ({:?} bytes)",
                logs.iter().map(Vec::len).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(producer);
    for (_, broker) in brokers.iter_mut() {
        assert_eq!(broker.stop(), Some(0), "clean shutdown");
    }
}

/// acks=all is answered only while the ISR has min.insync.replicas members:
/// with one of three brokers gone (fenced, out of every ISR), a topic that
/// asks for three in sync refuses acks=all with NOT_ENOUGH_REPLICAS and
/// writes nothing, while acks=1 is still taken; once the broker is back
/// in sync, acks=all is taken again. SIGTERM moves a broker's leaderships
/// away before it stops (controlled shutdown): its partitions never go
/// leaderless.
#[test]
fn acks_all_needs_min_insync_replicas_and_sigterm_moves_leadership_first() {
    let temp = tempfile::tempdir().unwrap();
    let (mut brokers, _) = ready_three(temp.path(), &[]);
    let name = common::topic("min-isr");
    create_replicated(&brokers, &name, 1, 3, &[("min.insync.replicas", "3")]);
    let placed = wait_for_isr(&brokers[0].1.addr, &name, 3, Duration::from_secs(10));
    let leader = placed[0].0;
    assert_eq!(
        produce_one(&addr_of(&brokers, leader), &name, -1, "a").0,
        NONE
    );

    // A follower is killed: fenced, it leaves the ISR.
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
    let leader_addr = addr_of(&brokers, leader);
    wait_for_isr(&leader_addr, &name, 2, Duration::from_secs(20));
    const NOT_ENOUGH_REPLICAS: i16 = 19;
    assert_eq!(
        produce_one(&leader_addr, &name, -1, "refused").0,
        NOT_ENOUGH_REPLICAS
    );
    assert_eq!(
        produce_one(&leader_addr, &name, 1, "b").0,
        NONE,
        "acks=1 is still taken"
    );

    // Back in sync: acks=all is answered again.
    brokers
        .iter_mut()
        .find(|(id, _)| *id == gone)
        .unwrap()
        .1
        .restart_after_kill();
    wait_for_isr(&leader_addr, &name, 3, Duration::from_secs(30));
    assert_eq!(produce_one(&leader_addr, &name, -1, "c").0, NONE);
    let values: Vec<String> = common::wire::read_partition(&mut Conn::open(&leader_addr), &name, 0)
        .1
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["a", "b", "c"], "the refused batch was not written");

    // Controlled shutdown of the leader: another in-sync replica leads at
    // once, and the partition is never seen leaderless meanwhile.
    let watcher_id = brokers
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader)
        .unwrap();
    let watcher = addr_of(&brokers, watcher_id);
    let stopping = std::thread::spawn({
        let watcher = watcher.clone();
        let name = name.clone();
        move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                let now = placements(&watcher, &name);
                seen.push(now[0].0);
                if now[0].0 >= 0 && now[0].0 != leader {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        }
    });
    assert_eq!(
        brokers
            .iter_mut()
            .find(|(id, _)| *id == leader)
            .unwrap()
            .1
            .stop(),
        Some(0)
    );
    let seen = stopping.join().unwrap();
    assert!(!seen.contains(&-1), "never leaderless: {seen:?}");
    let new_leader = *seen.last().unwrap();
    assert_ne!(new_leader, leader, "{seen:?}");
    assert_eq!(
        produce_one(&addr_of(&brokers, new_leader), &name, -1, "d").0,
        NOT_ENOUGH_REPLICAS
    );
    assert_eq!(
        produce_one(&addr_of(&brokers, new_leader), &name, 1, "d").0,
        NONE
    );
    for (id, broker) in brokers.iter_mut() {
        if *id != leader {
            assert_eq!(broker.stop(), Some(0), "clean shutdown");
        }
    }
}

/// KIP-101/KIP-320: a leader that took acks=1 writes its followers never
/// fetched (both paused with SIGSTOP) and then died leaves a log that has
/// diverged from the new leader's. When it returns as a follower, the
/// leader's diverging epoch makes it cut that tail; afterwards all three
/// logs are the same bytes and hold every acks=all record once, and no
/// acks=1 record the survivors never had.
#[test]
fn a_returning_replica_cuts_the_tail_only_it_had() {
    let temp = tempfile::tempdir().unwrap();
    let (mut brokers, _) = ready_three(temp.path(), &[]);
    let name = common::topic("diverge");
    create_replicated(&brokers, &name, 1, 3, &[("min.insync.replicas", "2")]);
    let leader = wait_for_isr(&brokers[0].1.addr, &name, 3, Duration::from_secs(10))[0].0;
    let leader_addr = addr_of(&brokers, leader);
    for i in 0..5 {
        assert_eq!(
            produce_one(&leader_addr, &name, -1, &format!("committed-{i}")).0,
            NONE
        );
    }
    // Both followers paused; their fetches in flight run out (500 ms) first.
    let followers: Vec<u32> = brokers
        .iter()
        .filter(|(id, _)| *id != leader)
        .map(|(_, b)| b.pid().unwrap())
        .collect();
    let signal = |pid: u32, signal: i32| {
        // SAFETY: signalling our own child process has no memory effects.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    };
    for &pid in &followers {
        signal(pid, libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_millis(1200));
    for i in 0..3 {
        assert_eq!(
            produce_one(
                &leader_addr,
                &name,
                1,
                &format!("only-on-the-old-leader-{i}")
            )
            .0,
            NONE
        );
    }
    brokers
        .iter_mut()
        .find(|(id, _)| *id == leader)
        .unwrap()
        .1
        .kill();
    let old_leader_dir = brokers
        .iter()
        .find(|(id, _)| *id == leader)
        .unwrap()
        .1
        .data_dir()
        .join(format!("{name}-0"));
    let holds_tail = |log: &[u8]| {
        log.windows(b"only-on-the-old-leader".len())
            .any(|w| w == b"only-on-the-old-leader")
    };
    assert!(
        holds_tail(&log_bytes(&old_leader_dir)),
        "the tail is on the old leader's disk"
    );
    for &pid in &followers {
        signal(pid, libc::SIGCONT);
    }
    let survivor = brokers.iter().find(|(id, _)| *id != leader).unwrap().0;
    let survivor_addr = addr_of(&brokers, survivor);
    let after = wait_for_isr(&survivor_addr, &name, 2, Duration::from_secs(30));
    let new_leader = after[0].0;
    assert_ne!(new_leader, leader);
    let new_leader_addr = addr_of(&brokers, new_leader);
    // OffsetForLeaderEpoch at the new leader: epoch 0 ended where its own
    // epoch began, after the five committed records (a consumer that read
    // an acks=1 record at offset 5+ in epoch 0 learns it was cut); an asker
    // still at epoch 0 is told it is fenced.
    let epoch_end = |current: i32, wanted: i32| {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        let request = kafka_protocol::messages::OffsetForLeaderEpochRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(&name))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(wanted)])]);
        let response: kafka_protocol::messages::OffsetForLeaderEpochResponse =
            Conn::open(&new_leader_addr).call(ApiKey::OffsetForLeaderEpoch, 4, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(epoch_end(-1, 0), (NONE, 0, 5));
    const FENCED_LEADER_EPOCH: i16 = 74;
    assert_eq!(epoch_end(0, 0).0, FENCED_LEADER_EPOCH);
    for i in 5..8 {
        assert_eq!(
            produce_one(&new_leader_addr, &name, -1, &format!("committed-{i}")).0,
            NONE
        );
    }
    brokers
        .iter_mut()
        .find(|(id, _)| *id == leader)
        .unwrap()
        .1
        .restart_after_kill();
    wait_for_isr(&new_leader_addr, &name, 3, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs: Vec<Vec<u8>> = brokers
            .iter()
            .map(|(_, b)| log_bytes(&b.data_dir().join(format!("{name}-0"))))
            .collect();
        if logs.iter().all(|l| *l == logs[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas' logs differ ({:?} bytes)",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let values: Vec<String> =
        common::wire::read_partition(&mut Conn::open(&new_leader_addr), &name, 0)
            .1
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    let expected: Vec<String> = (0..8).map(|i| format!("committed-{i}")).collect();
    assert_eq!(values, expected);
    // The old leader's log held the acks=1 records when it was killed; it
    // now equals the others': the tail was cut.
    assert!(!holds_tail(&log_bytes(&old_leader_dir)));
    for (_, broker) in brokers.iter_mut() {
        assert_eq!(broker.stop(), Some(0), "clean shutdown");
    }
}

/// auto.leader.rebalance: with the check every second, a broker that stops
/// (its leadership moved away by the controlled shutdown) and comes back
/// leads its preferred partitions again once it is back in sync, with no
/// request from anyone.
#[test]
fn leadership_returns_to_the_preferred_replica_on_its_own() {
    let temp = tempfile::tempdir().unwrap();
    let (mut brokers, controller) = ready_three(
        temp.path(),
        &["--leader-imbalance-check-interval-seconds", "1"],
    );
    let name = common::topic("rebalance");
    create_replicated(&brokers, &name, 3, 3, &[]);
    let preferred: Vec<i32> = placements(&brokers[0].1.addr, &name)
        .iter()
        .map(|(_, replicas, ..)| replicas[0])
        .collect();
    wait_for_isr(&brokers[0].1.addr, &name, 3, Duration::from_secs(10));
    // A broker that is not the quorum's leader stops and comes back.
    let (moving, mover) = brokers
        .iter_mut()
        .find(|(id, _)| *id != controller)
        .unwrap();
    let moving = *moving;
    assert_eq!(mover.stop(), Some(0));
    let watcher = brokers
        .iter()
        .find(|(id, _)| *id == controller)
        .unwrap()
        .1
        .addr
        .clone();
    let away = wait_for_isr(&watcher, &name, 2, Duration::from_secs(10));
    assert!(away.iter().all(|(leader, _)| *leader != moving), "{away:?}");
    brokers
        .iter_mut()
        .find(|(id, _)| *id == moving)
        .unwrap()
        .1
        .start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<i32> = placements(&watcher, &name).iter().map(|p| p.0).collect();
        if now == preferred {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders {now:?}, preferred {preferred:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, broker) in brokers.iter_mut() {
        assert_eq!(broker.stop(), Some(0), "clean shutdown");
    }
}
