//! Group and transaction coordinators in a cluster (issue 15): they live on
//! the leader of their internal partition (the offsets log, the transaction
//! log, replicated like any topic) and move with it. What a client was told
//! survives its coordinator's loss (kill -9): committed offsets, a group's
//! progress, transactions committed or aborted. A transaction's markers
//! reach partitions led by other brokers (WriteTxnMarkers between brokers),
//! and a group coordinator on one broker checks a transaction with its
//! coordinator on another (AddPartitionsToTxn between brokers).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::wire::{str_bytes, Conn};
use common::TestBroker;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const TIMEOUT: Duration = Duration::from_secs(30);
/// FindCoordinator key types.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// FindCoordinator v3 at `addr`: (error code, coordinator id).
fn find_coordinator(addr: &str, key_type: i8, key: &str) -> (i16, i32) {
    let response: FindCoordinatorResponse = Conn::open(addr).call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default()
            .with_key(str_bytes(key))
            .with_key_type(key_type),
    );
    (response.error_code, response.node_id.0)
}

/// The coordinator every live broker of `brokers` names for `key`, once
/// they agree on a live one (other than `not`).
fn agreed_coordinator(
    brokers: &[(i32, TestBroker)],
    live: &[i32],
    key_type: i8,
    key: &str,
    not: Option<i32>,
) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answers: Vec<(i16, i32)> = live
            .iter()
            .map(|id| find_coordinator(&addr_of(brokers, *id), key_type, key))
            .collect();
        let first = answers[0];
        if first.0 == NONE
            && live.contains(&first.1)
            && Some(first.1) != not
            && answers.iter().all(|a| *a == first)
        {
            return first.1;
        }
        assert!(
            Instant::now() < deadline,
            "the brokers never agreed on a live coordinator for {key}: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OffsetFetch v5 of `group`'s offsets for partitions `0..partitions` of
/// `topic` at `addr`: the group's error, and each partition's offset.
fn offset_fetch(addr: &str, group: &str, topic: &str, partitions: i32) -> (i16, Vec<i64>) {
    let response: OffsetFetchResponse = Conn::open(addr).call(
        ApiKey::OffsetFetch,
        5,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(common::wire::topic_name(topic))
                .with_partition_indexes((0..partitions).collect())])),
    );
    let offsets = response
        .topics
        .first()
        .map(|t| t.partitions.iter().map(|p| p.committed_offset).collect())
        .unwrap_or_default();
    (response.error_code, offsets)
}

/// Waits until `group`'s offsets on `topic` are `expected` at `addr` (a
/// transaction's offsets count once its marker reaches the offsets log).
fn wait_for_offsets(addr: &str, group: &str, topic: &str, expected: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fetched = offset_fetch(addr, group, topic, expected.len() as i32);
        if fetched == (NONE, expected.to_vec()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group}'s offsets stayed {fetched:?}, not {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bootstrap(brokers: &[(i32, TestBroker)], live: &[i32]) -> String {
    live.iter()
        .map(|id| addr_of(brokers, *id))
        .collect::<Vec<_>>()
        .join(",")
}

fn plain_producer(servers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Values of `topic`'s `partitions` from the start at `isolation`, read until
/// `count` arrived and nothing more came for a second.
fn read_all(
    servers: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    count: usize,
) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "cluster-coordinators-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                values.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
                last_new = Instant::now();
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None if values.len() >= count && last_new.elapsed() >= Duration::from_secs(1) => break,
            None => {}
        }
    }
    values
}

/// A group's committed offsets survive the kill -9 of its coordinator: the
/// brokers agree on the coordinator (the offsets partition's leader); the
/// others answer NOT_COORDINATOR; once it is gone they agree on another,
/// which answers the same offsets, and a consumer of the group resumes
/// exactly there (librdkafka); kafka-python, an independent client, finds
/// the same offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_loss_of_their_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (mut brokers, _) = ready_three(dir.path(), &[]);
    let name = common::topic("offsets-move");
    create_replicated(&brokers, &name, 2, 3, &[]);
    let all = [1, 2, 3];
    let servers = bootstrap(&brokers, &all);
    let producer = plain_producer(&servers);
    for i in 0..40 {
        producer
            .send(
                FutureRecord::to(&name)
                    .partition(i % 2)
                    .key("k")
                    .payload(&format!("v{i}")),
                TIMEOUT,
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("send v{i}: {e}"));
    }
    let group = "moving-group";
    let coordinator = agreed_coordinator(&brokers, &all, GROUP, group, None);
    // Commits through the group: p0 at 7, p1 at 11.
    {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&name, 0, Offset::Offset(7))
            .unwrap();
        offsets
            .add_partition_offset(&name, 1, Offset::Offset(11))
            .unwrap();
        consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    }
    assert_eq!(
        offset_fetch(&addr_of(&brokers, coordinator), group, &name, 2),
        (NONE, vec![7, 11])
    );
    for other in all.iter().filter(|id| **id != coordinator) {
        assert_eq!(
            offset_fetch(&addr_of(&brokers, *other), group, &name, 2).0,
            NOT_COORDINATOR,
            "broker {other} does not coordinate the group"
        );
    }

    // kill -9 of the coordinator: another takes over, with the offsets.
    brokers
        .iter_mut()
        .find(|(id, _)| *id == coordinator)
        .unwrap()
        .1
        .kill();
    let live: Vec<i32> = all
        .iter()
        .copied()
        .filter(|id| *id != coordinator)
        .collect();
    let next = agreed_coordinator(&brokers, &live, GROUP, group, Some(coordinator));
    // ListGroups at the new coordinator is never partial: while the
    // group's partition loads it answers COORDINATOR_LOAD_IN_PROGRESS (and
    // lists nothing), then the whole list.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut loading_seen = 0;
    loop {
        let listed: ListGroupsResponse = Conn::open(&addr_of(&brokers, next)).call(
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default(),
        );
        let names: Vec<String> = listed
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .collect();
        match listed.error_code {
            NONE => {
                assert!(
                    names.contains(&group.to_string()),
                    "a partial list: {names:?}"
                );
                break;
            }
            COORDINATOR_LOAD_IN_PROGRESS => {
                assert!(names.is_empty(), "listed while loading: {names:?}");
                loading_seen += 1;
            }
            code => panic!("ListGroups answered {code}"),
        }
        assert!(Instant::now() < deadline, "ListGroups never answered whole");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("ListGroups answered COORDINATOR_LOAD_IN_PROGRESS {loading_seen} time(s) first");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fetched = offset_fetch(&addr_of(&brokers, next), group, &name, 2);
        if fetched.0 == NONE {
            assert_eq!(fetched.1, vec![7, 11], "the new coordinator's offsets");
            break;
        }
        assert!(Instant::now() < deadline, "never loaded: {fetched:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A member of the group resumes at the committed offsets.
    let survivors = bootstrap(&brokers, &live);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &survivors)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[&name]).unwrap();
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < 40 - 7 - 11 {
        assert!(Instant::now() < deadline, "resumed only {seen}: {first:?}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                first.entry(m.partition()).or_insert(m.offset());
                seen += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    assert_eq!(
        first,
        BTreeMap::from([(0, 7), (1, 11)]),
        "the group resumed at its committed offsets"
    );
    let mut progress = TopicPartitionList::new();
    progress
        .add_partition_offset(&name, 0, Offset::Offset(20))
        .unwrap();
    progress
        .add_partition_offset(&name, 1, Offset::Offset(20))
        .unwrap();
    consumer
        .commit(&progress, CommitMode::Sync)
        .expect("commit at the new coordinator");
    drop(consumer);

    // An independent client reads the group's offsets where they are now.
    let script = "import sys\n\
         from kafka import KafkaAdminClient\n\
         admin = KafkaAdminClient(bootstrap_servers=sys.argv[1].split(','), request_timeout_ms=20000)\n\
         offsets = admin.list_consumer_group_offsets(sys.argv[2])\n\
         print(sorted((tp.partition, meta.offset) for tp, meta in offsets.items() if tp.topic == sys.argv[3]))\n";
    assert_eq!(
        common::python(script, &[&survivors, group, &name]),
        "[(0, 20), (1, 20)]"
    );
}

/// One transaction: a record to each of `topic`'s three partitions and the
/// group's offset `round + 1` on `input`, committed or aborted; its values.
async fn txn_round(
    producer: &FutureProducer,
    topic: &str,
    input: &str,
    consumer: &BaseConsumer,
    round: i64,
    commit: bool,
) -> Vec<String> {
    producer.begin_transaction().unwrap();
    let mut values = Vec::new();
    for p in 0..3 {
        let value = format!("r{round}-p{p}");
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(p)
                    .key("k")
                    .payload(&value),
                TIMEOUT,
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
        values.push(value);
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(input, 0, Offset::Offset(round + 1))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), TIMEOUT)
        .expect("send offsets");
    if commit {
        producer.commit_transaction(TIMEOUT).expect("commit");
    } else {
        producer.abort_transaction(TIMEOUT).expect("abort");
    }
    values
}

/// Transactions whose partitions are led by all three brokers: markers reach
/// each leader, so read_committed sees every committed record once and no
/// aborted one; the transaction's offsets commit with it through a group
/// coordinator that may sit on a third broker. Then the transaction
/// coordinator is killed (-9): the producer finds the new one and goes on,
/// and nothing it was told committed is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_span_brokers_and_survive_their_coordinators_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (mut brokers, _) = ready_three(dir.path(), &[]);
    let name = common::topic("txn-spread");
    let input = common::topic("txn-input");
    create_replicated(&brokers, &name, 3, 3, &[]);
    create_replicated(&brokers, &input, 1, 3, &[]);
    let leaders_of: Vec<i32> = leaders(&brokers[0].1.addr, &name)
        .unwrap()
        .iter()
        .map(|(l, _)| *l)
        .collect();
    let all = [1, 2, 3];
    let servers = bootstrap(&brokers, &all);
    let distinct: std::collections::BTreeSet<i32> = leaders_of.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each broker leads one partition: {leaders_of:?}"
    );
    let group = "spread-group";
    let group_coordinator = agreed_coordinator(&brokers, &all, GROUP, group, None);
    // A transactional id coordinated elsewhere than the group: the offsets'
    // verification and markers cross brokers too.
    let (id, txn_coordinator) = (0..)
        .map(|n| format!("spread-txn-{n}"))
        .map(|id| {
            let at = agreed_coordinator(&brokers, &all, TRANSACTION, &id, None);
            (id, at)
        })
        .find(|(_, at)| *at != group_coordinator)
        .unwrap();
    let id = id.as_str();
    eprintln!(
        "partition leaders {leaders_of:?}, transaction coordinator {txn_coordinator}, \
         group coordinator {group_coordinator}"
    );
    let transactional = |servers: &str| -> FutureProducer {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("transactional.id", id)
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer");
        producer
            .init_transactions(TIMEOUT)
            .expect("init_transactions");
        producer
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let producer = transactional(&servers);
    let mut committed = Vec::new();
    let mut round = 0;
    for commit in [true, false, true] {
        let values = txn_round(&producer, &name, &input, &consumer, round, commit).await;
        if commit {
            committed.extend(values);
        }
        round += 1;
    }
    // The markers are written after EndTxn is answered.
    wait_for_offsets(&addr_of(&brokers, group_coordinator), group, &input, &[3]);

    // kill -9 of the transaction coordinator.
    brokers
        .iter_mut()
        .find(|(id, _)| *id == txn_coordinator)
        .unwrap()
        .1
        .kill();
    let live: Vec<i32> = all
        .iter()
        .copied()
        .filter(|b| *b != txn_coordinator)
        .collect();
    let survivors = bootstrap(&brokers, &live);
    let next = agreed_coordinator(&brokers, &live, TRANSACTION, id, Some(txn_coordinator));
    eprintln!("transaction coordinator {txn_coordinator} killed; {next} took over");
    // librdkafka's producer finds the new coordinator by itself, but its
    // bootstrap list may name only the dead broker first: a new instance
    // (same id) fences the old one, as an application restarting would.
    drop(producer);
    let producer = transactional(&survivors);
    for _ in 0..2 {
        committed.extend(txn_round(&producer, &name, &input, &consumer, round, true).await);
        round += 1;
    }
    let mut read = read_all(&survivors, &name, 3, "read_committed", committed.len());
    read.sort();
    committed.sort();
    assert_eq!(read, committed, "exactly the committed records, each once");
    let everything = read_all(&survivors, &name, 3, "read_uncommitted", 15);
    assert_eq!(everything.len(), 15, "five transactions of three records");
    let group_now = agreed_coordinator(&brokers, &live, GROUP, group, None);
    wait_for_offsets(&addr_of(&brokers, group_now), group, &input, &[5]);
}
