//! Clusters of three test brokers on loopback, started with KRaft's flags,
//! and what the cluster tests ask them (the quorum's leader, placements,
//! ISRs).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    CreateTopicsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::wire::{create_topics_request, metadata, topic_name, Conn};
use super::TestBroker;

pub const NONE: i16 = 0;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;

pub fn describe_quorum_request(topic: &str, partition: i32) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(topic))
        .with_partitions(vec![
            PartitionData::default().with_partition_index(partition)
        ])])
}

pub fn describe_quorum(addr: &str, version: i16) -> DescribeQuorumResponse {
    let mut conn = Conn::open(addr);
    conn.call(
        ApiKey::DescribeQuorum,
        version,
        &describe_quorum_request("__cluster_metadata", 0),
    )
}

/// (error code, leader id, epoch, high watermark, voters' (id, log end offset)).
pub fn quorum_of(response: &DescribeQuorumResponse) -> (i16, i32, i32, i64, Vec<(i32, i64)>) {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asks every live node; returns the leader they agree on once they do.
pub fn agreed_leader(nodes: &[(i32, &TestBroker)], within: Duration) -> i32 {
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

pub fn view(brokers: &[(i32, TestBroker)]) -> Vec<(i32, &TestBroker)> {
    brokers.iter().map(|(id, b)| (*id, b)).collect()
}

/// The brokers `addr`'s Metadata lists (id, port) and the controller it names.
pub fn listed_brokers(addr: &str) -> (Vec<(i32, i32)>, i32) {
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
pub fn port_of(broker: &TestBroker) -> i32 {
    broker.addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Waits until every node of `nodes` lists exactly `expected` (id, port)
/// and names `controller` as the controller.
pub fn wait_for_brokers(nodes: &[&TestBroker], expected: &[(i32, i32)], controller: i32) {
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

/// Starts three brokers under `dir` sharing a quorum, with short timeouts.
pub fn start_three(dir: &std::path::Path) -> Vec<(i32, TestBroker)> {
    start_three_with(dir, &[])
}

/// [`start_three`] with `extra` flags for every broker.
pub fn start_three_with(dir: &std::path::Path, extra: &[&str]) -> Vec<(i32, TestBroker)> {
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
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend_from_slice(extra);
            (
                id,
                TestBroker::start_in(&dir.join(format!("node-{id}")), &args),
            )
        })
        .collect()
}

/// Each partition's (leader, replicas, isr, error) as `addr` describes `topic`.
pub fn placements(addr: &str, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>, i16)> {
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

/// [`start_three_with`], once the three agree on the quorum's leader and
/// each lists all three; returns them and the controller's id.
pub fn ready_three(dir: &std::path::Path, extra: &[&str]) -> (Vec<(i32, TestBroker)>, i32) {
    let brokers = start_three_with(dir, extra);
    let controller = agreed_leader(&view(&brokers), Duration::from_secs(20));
    let everyone: Vec<(i32, i32)> = brokers.iter().map(|(id, b)| (*id, port_of(b))).collect();
    wait_for_brokers(
        &brokers.iter().map(|(_, b)| b).collect::<Vec<_>>(),
        &everyone,
        controller,
    );
    (brokers, controller)
}

/// Creates `name` through the first of `brokers` with `replication_factor`
/// replicas of each of `partitions` partitions, and waits until every
/// broker's image has it with a leader for each partition.
pub fn create_replicated(
    brokers: &[(i32, TestBroker)],
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) {
    let response: CreateTopicsResponse = Conn::open(&brokers[0].1.addr).call(
        ApiKey::CreateTopics,
        7,
        &create_topics_request(name, partitions, replication_factor, configs),
    );
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
    assert_eq!(response.topics[0].replication_factor, replication_factor);
    let deadline = Instant::now() + Duration::from_secs(10);
    let everywhere = || {
        brokers
            .iter()
            .all(|(_, b)| leaders(&b.addr, name).is_some_and(|l| l.len() == partitions as usize))
    };
    while !everywhere() {
        assert!(
            Instant::now() < deadline,
            "{name} did not reach every broker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Kafka listener of broker `id`.
pub fn addr_of(brokers: &[(i32, TestBroker)], id: i32) -> String {
    brokers
        .iter()
        .find(|(i, _)| *i == id)
        .unwrap()
        .1
        .addr
        .clone()
}

/// Each partition's (leader, isr) as `addr` describes `topic`, once every
/// partition has a leader (None until then).
pub fn leaders(addr: &str, topic: &str) -> Option<Vec<(i32, Vec<i32>)>> {
    let seen = placements(addr, topic);
    seen.iter()
        .all(|(l, .., error)| *l >= 0 && *error == NONE)
        .then(|| seen.into_iter().map(|(l, _, isr, _)| (l, isr)).collect())
}

/// Waits until `addr` shows every partition of `topic` led, with `isr_len`
/// in-sync replicas (sorted ids compared), and returns the placement.
pub fn wait_for_isr(
    addr: &str,
    topic: &str,
    isr_len: usize,
    within: Duration,
) -> Vec<(i32, Vec<i32>)> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(seen) = leaders(addr, topic) {
            if seen.iter().all(|(_, isr)| isr.len() == isr_len) {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never had {isr_len} in-sync replicas everywhere: {:?}",
            placements(addr, topic)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a producer was told: (partition, offset, value) of each acknowledged
/// record.
pub type Acked = Vec<(i32, i64, String)>;

/// Every record of `topic` as kafka-python reads it through `addr`:
/// (partition, offset, value).
pub fn read_with_kafka_python(addr: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let output = std::process::Command::new("python3")
        .current_dir(&dir)
        .arg("kafka_python_dump.py")
        .arg(addr)
        .arg(topic)
        .arg(partitions.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "kafka_python_dump.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, ' ');
            let p = fields.next().unwrap().parse().unwrap();
            let o = fields.next().unwrap().parse().unwrap();
            (p, o, fields.next().unwrap().to_string())
        })
        .collect()
}

/// The checks of Jepsen's Kafka workload on one history: what producers
/// were told (`acked`) against what a consumer read back (`read`). Names
/// each anomaly found: `lost` (acknowledged, never read), `duplicated` (read
/// more than once), `divergent` (read at another offset than acknowledged),
/// `gap` (a partition's offsets not contiguous from 0), `unacknowledged
/// surplus` is allowed (a send that failed may still have been written).
pub fn check_history(acked: &Acked, failed: &[String], read: &[(i32, i64, String)]) -> Vec<String> {
    use std::collections::HashMap;
    let mut anomalies = Vec::new();
    let mut seen: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (p, o, v) in read {
        seen.entry(v.as_str()).or_default().push((*p, *o));
    }
    for (p, o, v) in acked {
        match seen.get(v.as_str()).map(Vec::as_slice) {
            None => anomalies.push(format!("lost: {v} (acknowledged at {p}/{o})")),
            Some([at]) if *at != (*p, *o) => anomalies.push(format!(
                "divergent: {v} acknowledged at {p}/{o}, read at {at:?}"
            )),
            _ => {}
        }
    }
    for (v, at) in &seen {
        if at.len() > 1 {
            anomalies.push(format!("duplicated: {v} at {at:?}"));
        }
        let known = acked.iter().any(|(.., a)| a == v) || failed.iter().any(|f| f == v);
        if !known {
            anomalies.push(format!("never sent: {v}"));
        }
    }
    let mut partitions: HashMap<i32, Vec<i64>> = HashMap::new();
    for (p, o, _) in read {
        partitions.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in partitions {
        if !offsets.iter().copied().eq(0..offsets.len() as i64) {
            anomalies.push(format!("gap: partition {p} offsets {offsets:?}"));
        }
    }
    anomalies
}

/// The bytes of every segment of `dir`'s partition log, in order.
pub fn log_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Sends `values` with `producer` (acks=all), one at a time; returns what
/// was acknowledged and the values whose send failed.
pub fn send_all(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    values: impl Iterator<Item = String>,
) -> (Acked, Vec<String>) {
    use rdkafka::producer::FutureRecord;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    runtime.block_on(async {
        for value in values {
            let key = format!(
                "k{}",
                value.len() + value.bytes().map(usize::from).sum::<usize>()
            );
            let sent = producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await;
            match sent {
                Ok(delivery) => acked.push((delivery.partition, delivery.offset, value)),
                Err(_) => failed.push(value),
            }
        }
    });
    (acked, failed)
}

/// AlterPartitionReassignments v1 of one partition at `addr`: its error code.
pub fn reassign(
    addr: &str,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    allow: bool,
) -> i16 {
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_allow_replication_factor_change(allow)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    target.map(|t| t.iter().map(|&b| BrokerId(b)).collect()),
                )])]);
    let response: AlterPartitionReassignmentsResponse =
        Conn::open(addr).call(ApiKey::AlterPartitionReassignments, 1, &request);
    assert_eq!(response.error_code, 0, "{response:?}");
    assert_eq!(response.allow_replication_factor_change, allow);
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.partition_index, partition);
    p.error_code
}

/// The moves under way of `topic` as `addr` lists them (all topics asked):
/// (partition, replicas, adding, removing).
pub type Move = (i32, Vec<i32>, Vec<i32>, Vec<i32>);
pub fn moves(addr: &str, topic: &str) -> Vec<Move> {
    let ids = |list: &[BrokerId]| list.iter().map(|b| b.0).collect::<Vec<_>>();
    let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000);
    let response: ListPartitionReassignmentsResponse =
        Conn::open(addr).call(ApiKey::ListPartitionReassignments, 0, &request);
    assert_eq!(response.error_code, 0);
    response
        .topics
        .iter()
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            )
        })
        .collect()
}
