//! Consumer groups with real clients: librdkafka (through the rdkafka crate)
//! and kafka-python, plus the error paths and membership corner cases at the
//! raw protocol level (tests/common/wire.rs).
//!
//! Every broker runs with `--group-initial-rebalance-delay-ms 0` and
//! `--group-min-session-timeout-ms 1000`, so that clients may use short
//! session timeouts and groups form at once.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::Compression;
use rdkafka::admin::AdminOptions;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice::protocol::encode;

use common::clients::admin;
use common::wire::{self, str_bytes, topic_name, Conn, NONE};
use common::{topic, TestBroker};

// ---------------------------------------------------------------- constants

const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

/// Fast groups: no initial rebalance delay, short sessions allowed.
const GROUP_FLAGS: &[&str] = &[
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-min-session-timeout-ms",
    "1000",
];
/// How long a client may take to reach a state the test waits for.
const WAIT: Duration = Duration::from_secs(20);
/// One poll of a librdkafka consumer.
const POLL: Duration = Duration::from_millis(100);
/// Timeout of a blocking librdkafka call (committed offsets, group lists).
const CALL: Duration = Duration::from_secs(10);

fn start_broker() -> TestBroker {
    TestBroker::start_with(GROUP_FLAGS)
}

// ---------------------------------------------------------------- helpers: data

fn create_topic(broker: &TestBroker, name: &str, partitions: i32) {
    let mut conn = Conn::open(&broker.addr);
    wire::create_topic(&mut conn, name, partitions, &[]);
}

/// Produces `values` to one partition as one batch (acks=all); returns the base offset.
fn produce(broker: &TestBroker, topic: &str, partition: i32, values: &[String]) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| encode::record(i as i64, now, None, Some(Bytes::from(v.clone())), None))
        .collect();
    let mut conn = Conn::open(&broker.addr);
    let answer = wire::produce(
        &mut conn,
        topic,
        partition,
        encode::encode_batch(&records, Compression::None),
    );
    assert_eq!(
        answer.error_code, NONE,
        "produce to {topic}/{partition}: {:?}",
        answer.error_message
    );
    answer.base_offset
}

/// Produces `per_partition` values "{tag}-p{p}-{i}" to every partition; returns them.
fn produce_tagged(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    per_partition: usize,
    tag: &str,
) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for p in 0..partitions {
        let values: Vec<String> = (0..per_partition)
            .map(|i| format!("{tag}-p{p}-{i}"))
            .collect();
        produce(broker, topic, p, &values);
        all.extend(values);
    }
    all
}

// ---------------------------------------------------------------- helpers: librdkafka

fn consumer_config(
    broker: &TestBroker,
    group: &str,
    client_id: &str,
    extra: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

fn consumer(
    broker: &TestBroker,
    group: &str,
    client_id: &str,
    extra: &[(&str, &str)],
) -> BaseConsumer {
    consumer_config(broker, group, client_id, extra)
        .create()
        .expect("consumer")
}

fn recording_consumer(
    broker: &TestBroker,
    group: &str,
    client_id: &str,
    extra: &[(&str, &str)],
    recorder: Recorder,
) -> BaseConsumer<Recorder> {
    consumer_config(broker, group, client_id, extra)
        .create_with_context(recorder)
        .expect("consumer")
}

/// A rebalance callback as a consumer saw it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// A consumer context that records every rebalance callback.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl ClientContext for Recorder {}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| e.partition())
                .collect::<BTreeSet<i32>>()
        };
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        self.events.lock().unwrap().push(event);
    }
}

/// The partitions a consumer is assigned now.
fn assigned<C: ConsumerContext>(c: &BaseConsumer<C>) -> BTreeSet<i32> {
    c.assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// One message as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    partition: i32,
    offset: i64,
    value: String,
}

/// Polls once; returns the message, if one came.
fn poll_one<C: ConsumerContext>(c: &BaseConsumer<C>, who: &str) -> Option<Seen> {
    match c.poll(POLL) {
        Some(Ok(m)) => Some(Seen {
            partition: m.partition(),
            offset: m.offset(),
            value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
        }),
        Some(Err(e)) => panic!("{who}: consume error: {e}"),
        None => None,
    }
}

/// Polls once; a message is recorded in `out` and committed synchronously.
fn poll_commit<C: ConsumerContext>(c: &BaseConsumer<C>, out: &mut Vec<Seen>, who: &str) {
    match c.poll(POLL) {
        Some(Ok(m)) => {
            let seen = Seen {
                partition: m.partition(),
                offset: m.offset(),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            };
            c.commit_message(&m, CommitMode::Sync)
                .unwrap_or_else(|e| panic!("{who}: synchronous commit of {seen:?}: {e}"));
            out.push(seen);
        }
        Some(Err(e)) => panic!("{who}: consume error: {e}"),
        None => {}
    }
}

/// Committed offsets (and metadata) of partitions 0..partitions of `topic`.
fn committed<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, (Offset, String)> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, CALL).expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| {
            if let Err(error) = e.error() {
                panic!("committed offset of {topic}/{}: {error}", e.partition());
            }
            (e.partition(), (e.offset(), e.metadata().to_string()))
        })
        .collect()
}

/// Calls `step` until it returns Ok; panics with its last Err after `within`.
/// Every step must block a little (poll a consumer, or sleep).
fn wait_until(what: &str, within: Duration, mut step: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match step() {
            Ok(()) => return,
            Err(state) => assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last state: {state}"
            ),
        }
    }
}

/// Ok if `a` and `b` are non-empty, disjoint and together exactly `all`.
fn split_between(a: &BTreeSet<i32>, b: &BTreeSet<i32>, all: &BTreeSet<i32>) -> Result<(), String> {
    let union: BTreeSet<i32> = a.union(b).copied().collect();
    if !a.is_empty() && !b.is_empty() && a.is_disjoint(b) && &union == all {
        Ok(())
    } else {
        Err(format!("assignments {a:?} and {b:?}"))
    }
}

/// Runs a future (an admin call) to completion.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

// ---------------------------------------------------------------- helpers: raw protocol

/// ConsumerProtocolSubscription v0 for `topics`, with its version prefix.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| str_bytes(t)).collect())
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

/// ConsumerProtocolAssignment v0 of `partitions` of `topic`, with its version prefix.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![AssignedPartitions::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions.to_vec())])
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

/// The partitions of `topic` in an encoded ConsumerProtocolAssignment.
fn assigned_in(bytes: &[u8], topic: &str) -> BTreeSet<i32> {
    if bytes.is_empty() {
        return BTreeSet::new();
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = buf.get_i16();
    let decoded = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
        .unwrap_or_else(|e| panic!("member assignment (v{version}) does not decode: {e}"));
    decoded
        .assigned_partitions
        .iter()
        .filter(|t| t.topic.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

/// A JoinGroup v9 request, kept between the two steps of a KIP-394 join.
#[derive(Clone)]
struct Join {
    group: String,
    member_id: String,
    instance_id: Option<String>,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session_ms: i32,
    rebalance_ms: i32,
}

impl Join {
    /// A "consumer" member subscribed to `topic` with the "range" protocol.
    fn consumer(group: &str, topic: &str) -> Join {
        Join {
            group: group.to_string(),
            member_id: String::new(),
            instance_id: None,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), subscription(&[topic]))],
            session_ms: 10_000,
            rebalance_ms: 20_000,
        }
    }

    fn send(&self, conn: &mut Conn) -> JoinGroupResponse {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&self.group)))
            .with_session_timeout_ms(self.session_ms)
            .with_rebalance_timeout_ms(self.rebalance_ms)
            .with_member_id(str_bytes(&self.member_id))
            .with_group_instance_id(self.instance_id.as_deref().map(str_bytes))
            .with_protocol_type(str_bytes(&self.protocol_type))
            .with_protocols(
                self.protocols
                    .iter()
                    .map(|(name, metadata)| {
                        JoinGroupRequestProtocol::default()
                            .with_name(str_bytes(name))
                            .with_metadata(metadata.clone())
                    })
                    .collect(),
            );
        conn.call(ApiKey::JoinGroup, 9, &request)
    }

    /// The KIP-394 two-step join of a new dynamic member: MEMBER_ID_REQUIRED
    /// with a member id, then the real join with it. Returns the second answer.
    fn join_new(&mut self, conn: &mut Conn) -> JoinGroupResponse {
        assert!(self.member_id.is_empty());
        let first = self.send(conn);
        assert_eq!(
            first.error_code, MEMBER_ID_REQUIRED,
            "JoinGroup v9 of a new member without a member id: {first:?}"
        );
        assert!(
            !first.member_id.is_empty(),
            "MEMBER_ID_REQUIRED carries the member id to use"
        );
        self.member_id = first.member_id.to_string();
        let second = self.send(conn);
        assert_eq!(
            second.error_code, NONE,
            "JoinGroup v9 with the member id: {second:?}"
        );
        assert_eq!(second.member_id.as_str(), self.member_id);
        second
    }
}

/// SyncGroup v5 ("consumer"/"range"); returns the answer.
fn sync_group(
    conn: &mut Conn,
    join: &Join,
    generation: i32,
    assignments: &[(String, Bytes)],
) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(&join.group)))
        .with_generation_id(generation)
        .with_member_id(str_bytes(&join.member_id))
        .with_group_instance_id(join.instance_id.as_deref().map(str_bytes))
        .with_protocol_type(Some(str_bytes("consumer")))
        .with_protocol_name(Some(str_bytes("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(member, bytes)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(member))
                        .with_assignment(bytes.clone())
                })
                .collect(),
        );
    conn.call(ApiKey::SyncGroup, 5, &request)
}

/// Heartbeat v4; returns its error code.
fn heartbeat(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(generation)
        .with_member_id(str_bytes(member_id))
        .with_group_instance_id(instance_id.map(str_bytes));
    let response: HeartbeatResponse = conn.call(ApiKey::Heartbeat, 4, &request);
    response.error_code
}

/// OffsetCommit v8 of one offset; returns the partition's error code.
fn offset_commit(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    (topic, partition, offset): (&str, i32, i64),
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str_bytes(member_id))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(str_bytes("raw")))])]);
    let response: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 8, &request);
    assert_eq!(response.topics.len(), 1, "OffsetCommit v8: {response:?}");
    assert_eq!(
        response.topics[0].partitions.len(),
        1,
        "OffsetCommit v8: {response:?}"
    );
    response.topics[0].partitions[0].error_code
}

/// OffsetFetch v8 of one partition of one group: (group error, partition error, offset).
fn offset_fetch_v8(conn: &mut Conn, group: &str, topic: &str, partition: i32) -> (i16, i16, i64) {
    let request =
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(vec![partition])]))]);
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 8, &request);
    assert_eq!(response.groups.len(), 1, "OffsetFetch v8: {response:?}");
    let g = &response.groups[0];
    assert_eq!(g.group_id.0.as_str(), group);
    match g.topics.first().and_then(|t| t.partitions.first()) {
        Some(p) => (g.error_code, p.error_code, p.committed_offset),
        None => (g.error_code, NONE, -1),
    }
}

/// OffsetFetch v7 (one group per request) of one partition: (top-level error, offset).
fn offset_fetch_v7(conn: &mut Conn, group: &str, topic: &str, partition: i32) -> (i16, i64) {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(vec![partition])]));
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 7, &request);
    let offset = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.committed_offset);
    (response.error_code, offset)
}

/// DescribeGroups v5 of one group.
fn describe_group(conn: &mut Conn, group: &str) -> DescribedGroup {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]);
    let response: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &request);
    assert_eq!(response.groups.len(), 1, "DescribeGroups v5: {response:?}");
    let described = response.groups[0].clone();
    assert_eq!(
        described.error_code, NONE,
        "DescribeGroups v5 {group}: {described:?}"
    );
    described
}

// ---------------------------------------------------------------- 1. share and take over

/// Two consumers split a 4-partition topic, both consume and commit; when one
/// closes, the other takes all partitions over, starting from the committed
/// offsets: every message is read exactly once.
#[test]
fn two_consumers_share_a_topic_and_the_survivor_takes_over() {
    let broker = start_broker();
    let name = topic("cg-share");
    create_topic(&broker, &name, 4);
    let group = topic("g-share");
    let all: BTreeSet<i32> = (0..4).collect();

    // Every partition starts at a committed offset, and a reset is an error:
    // a position that jumps (a broker's OFFSET_OUT_OF_RANGE, a committed
    // offset that goes missing) fails by name. (With no commit, the members'
    // first positions come from ListOffsets; librdkafka 2.12 can replay such
    // a query late, after a rebalance, and move a partition back to its
    // start: a client race this test is not about.)
    {
        let starter = consumer(&broker, &group, "share-start", &[]);
        let mut zeros = TopicPartitionList::new();
        for p in 0..4 {
            zeros
                .add_partition_offset(&name, p, Offset::Offset(0))
                .unwrap();
        }
        starter
            .commit(&zeros, CommitMode::Sync)
            .expect("committing offset 0 outside the group");
    }
    let no_reset = [("auto.offset.reset", "error")];
    let a = consumer(&broker, &group, "share-a", &no_reset);
    let b = consumer(&broker, &group, "share-b", &no_reset);
    a.subscribe(&[&name]).unwrap();
    b.subscribe(&[&name]).unwrap();
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    wait_until("two disjoint assignments covering the topic", WAIT, || {
        poll_commit(&a, &mut seen_a, "a");
        poll_commit(&b, &mut seen_b, "b");
        split_between(&assigned(&a), &assigned(&b), &all)
    });
    let (part_a, part_b) = (assigned(&a), assigned(&b));

    let mut produced = produce_tagged(&broker, &name, 4, 10, "first");
    wait_until("both consumers read the first 40 messages", WAIT, || {
        poll_commit(&a, &mut seen_a, "a");
        poll_commit(&b, &mut seen_b, "b");
        let n = seen_a.len() + seen_b.len();
        (n >= 40).then_some(()).ok_or(format!("{n} of 40 read"))
    });
    assert_eq!(
        assigned(&a),
        part_a,
        "a's assignment changed without a membership change"
    );
    assert_eq!(
        assigned(&b),
        part_b,
        "b's assignment changed without a membership change"
    );
    assert!(
        seen_a.iter().all(|s| part_a.contains(&s.partition))
            && seen_b.iter().all(|s| part_b.contains(&s.partition)),
        "a consumer read a partition it does not own: a {part_a:?} {seen_a:?}, b {part_b:?} {seen_b:?}"
    );
    assert!(
        !seen_a.is_empty() && !seen_b.is_empty(),
        "both consumers read"
    );
    let committed_b = committed(&b, &name, 4);
    for p in &part_b {
        assert_eq!(
            committed_b[p].0,
            Offset::Offset(10),
            "b committed all it read of partition {p}"
        );
    }

    // b closes (LeaveGroup); a must take all 4 over, promptly.
    drop(b);
    let left = Instant::now();
    wait_until("the survivor owns all 4 partitions", WAIT, || {
        poll_commit(&a, &mut seen_a, "a");
        let mine = assigned(&a);
        (mine == all)
            .then_some(())
            .ok_or(format!("a owns {mine:?}"))
    });
    println!(
        "survivor owned all 4 partitions {:?} after the other closed",
        left.elapsed()
    );
    assert!(
        left.elapsed() < Duration::from_secs(5),
        "the survivor got b's partitions {:?} after b closed: a LeaveGroup must rebalance at \
         once, not after b's 6 s session timeout",
        left.elapsed()
    );

    produced.extend(produce_tagged(&broker, &name, 4, 10, "second"));
    wait_until("the survivor reads the second 40 messages", WAIT, || {
        poll_commit(&a, &mut seen_a, "a");
        let n = seen_a.len() + seen_b.len();
        (n >= 80).then_some(()).ok_or(format!("{n} of 80 read"))
    });
    // A little longer, to catch a duplicate.
    let grace = Instant::now() + Duration::from_millis(500);
    while Instant::now() < grace {
        poll_commit(&a, &mut seen_a, "a");
    }

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in seen_a.iter().chain(&seen_b) {
        *counts.entry(s.value.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "messages read more than once: {twice:?}\nin the order a read them (partition, offset, \
         value): {:?}\nb: {:?}\ncommitted now: {:?}",
        seen_a
            .iter()
            .map(|s| (s.partition, s.offset, &s.value))
            .collect::<Vec<_>>(),
        seen_b
            .iter()
            .map(|s| (s.partition, s.offset, &s.value))
            .collect::<Vec<_>>(),
        committed(&a, &name, 4),
    );
    let consumed: BTreeSet<String> = counts.keys().map(|v| v.to_string()).collect();
    assert_eq!(consumed, produced, "consumed set differs from produced set");
    for (p, (offset, _)) in committed(&a, &name, 4) {
        assert_eq!(
            offset,
            Offset::Offset(20),
            "committed offset of partition {p}"
        );
    }
}

// ---------------------------------------------------------------- 2. session expiry

/// A raw-protocol member joins alone, takes every partition and then falls
/// silent (no heartbeat, no leave). A librdkafka consumer joining the group
/// gets nothing until the silent member's 3 s session expires, then everything.
#[test]
fn silent_member_is_evicted_after_its_session_timeout() {
    let broker = start_broker();
    let name = topic("cg-evict");
    create_topic(&broker, &name, 4);
    let group = topic("g-evict");
    let all: BTreeSet<i32> = (0..4).collect();

    let mut conn = Conn::open(&broker.addr);
    let mut join = Join::consumer(&group, &name);
    join.session_ms = 3000;
    // Far beyond the session: eviction must come from the session timeout.
    join.rebalance_ms = 20_000;
    let joined = join.join_new(&mut conn);
    assert_eq!(
        joined.leader, joined.member_id,
        "alone in the group, it leads"
    );
    assert_eq!(joined.members.len(), 1, "the leader gets the member list");
    assert_eq!(
        joined.protocol_name.as_ref().map(|s| s.as_str()),
        Some("range")
    );
    assert_eq!(
        joined.protocol_type.as_ref().map(|s| s.as_str()),
        Some("consumer")
    );
    let everything = assignment(&name, &[0, 1, 2, 3]);
    let synced = sync_group(
        &mut conn,
        &join,
        joined.generation_id,
        &[(join.member_id.clone(), everything.clone())],
    );
    let synced_at = Instant::now();
    assert_eq!(synced.error_code, NONE, "SyncGroup v5: {synced:?}");
    assert_eq!(
        synced.assignment, everything,
        "the leader gets its own assignment back"
    );
    let described = describe_group(&mut conn, &group);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id.as_str(), join.member_id);
    assert_eq!(
        assigned_in(&described.members[0].member_assignment, &name),
        all
    );

    // From here on the raw member is silent.
    let c = consumer(&broker, &group, "evict-c", &[]);
    c.subscribe(&[&name]).unwrap();
    let mut first_assigned: Option<Duration> = None;
    wait_until(
        "the librdkafka consumer owns all 4 partitions",
        WAIT,
        || {
            let _ = poll_one(&c, "c");
            let mine = assigned(&c);
            if !mine.is_empty() && first_assigned.is_none() {
                first_assigned = Some(synced_at.elapsed());
            }
            (mine == all)
                .then_some(())
                .ok_or(format!("c owns {mine:?}"))
        },
    );
    let after = first_assigned.unwrap();
    println!("silent member (session 3 s) evicted; its partitions reassigned {after:?} after its SyncGroup");
    assert!(
        after >= Duration::from_millis(2500),
        "the new consumer got partitions {after:?} after the silent member's SyncGroup, \
         before that member's 3 s session expired"
    );
    assert!(
        after <= Duration::from_secs(3 + 5),
        "the silent member was evicted only {after:?} after its last request (session 3 s)"
    );

    let code = heartbeat(
        &mut conn,
        &group,
        joined.generation_id,
        &join.member_id,
        None,
    );
    assert_eq!(
        code, UNKNOWN_MEMBER_ID,
        "Heartbeat v4 of the evicted member"
    );
    let described = describe_group(&mut conn, &group);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(
        described.members.len(),
        1,
        "only the new consumer: {described:?}"
    );
    assert_eq!(described.members[0].client_id.as_str(), "evict-c");
    assert_eq!(
        assigned_in(&described.members[0].member_assignment, &name),
        all
    );

    let produced = produce_tagged(&broker, &name, 4, 3, "evict");
    let mut seen = BTreeSet::new();
    wait_until("the consumer reads the 12 messages", WAIT, || {
        if let Some(s) = poll_one(&c, "c") {
            seen.insert(s.value);
        }
        (seen.len() >= 12)
            .then_some(())
            .ok_or(format!("{} of 12", seen.len()))
    });
    assert_eq!(seen, produced);
}

// ---------------------------------------------------------------- 3. commit and resume

/// Reads partitions 0 and 1 of `topic` in `group` until the first message of
/// each; checks the committed offsets first and the start positions after.
fn check_resume(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    want: i64,
    metadata: &str,
    when: &str,
) {
    let c = consumer(broker, group, "resume-check", &[]);
    let before = committed(&c, topic, 2);
    assert_eq!(
        before[&0],
        (Offset::Offset(want), metadata.to_string()),
        "{when}: committed offset and metadata of partition 0"
    );
    assert_eq!(
        before[&1].0,
        Offset::Invalid,
        "{when}: partition 1 has no committed offset"
    );
    c.subscribe(&[topic]).unwrap();
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    wait_until(
        &format!("{when}: the first message of both partitions"),
        WAIT,
        || {
            if let Some(s) = poll_one(&c, when) {
                first.entry(s.partition).or_insert(s.offset);
            }
            (first.len() == 2)
                .then_some(())
                .ok_or(format!("first offsets {first:?}"))
        },
    );
    assert_eq!(
        first[&0], want,
        "{when}: a new member starts partition 0 at the committed offset"
    );
    assert_eq!(
        first[&1], 0,
        "{when}: partition 1 starts at auto.offset.reset=earliest"
    );
    // The same through the assignment.
    let through_assignment: BTreeMap<i32, (Offset, String)> = c
        .committed(CALL)
        .expect("committed()")
        .elements()
        .iter()
        .map(|e| (e.partition(), (e.offset(), e.metadata().to_string())))
        .collect();
    assert_eq!(
        through_assignment.get(&0),
        Some(&(Offset::Offset(want), metadata.to_string())),
        "{when}: committed() of the assignment"
    );
}

/// Commits `offset` (with `metadata`) for partition 0 of `topic` as a member of `group`.
fn commit_as_member(broker: &TestBroker, group: &str, topic: &str, offset: i64, metadata: &str) {
    let c = consumer(broker, group, "resume-commit", &[]);
    c.subscribe(&[topic]).unwrap();
    wait_until("the committing consumer owns both partitions", WAIT, || {
        let _ = poll_one(&c, "commit_as_member");
        let mine = assigned(&c);
        (mine.len() == 2)
            .then_some(())
            .ok_or(format!("owns {mine:?}"))
    });
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    tpl.find_partition(topic, 0).unwrap().set_metadata(metadata);
    c.commit(&tpl, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit of offset {offset} with metadata: {e}"));
}

/// A committed offset (with metadata) is where the next member of the group
/// starts: after the committer closed, after a clean restart and after a crash.
#[test]
fn committed_offset_survives_close_restart_and_crash() {
    let mut broker = start_broker();
    let name = topic("cg-resume");
    create_topic(&broker, &name, 2);
    let group = topic("g-resume");
    produce(
        &broker,
        &name,
        0,
        &(0..20).map(|i| format!("p0-{i}")).collect::<Vec<_>>(),
    );
    produce(
        &broker,
        &name,
        1,
        &(0..5).map(|i| format!("p1-{i}")).collect::<Vec<_>>(),
    );

    // A member reads past offset 7, then commits exactly 7 (not its position).
    {
        let c = consumer(&broker, &group, "resume-1", &[]);
        c.subscribe(&[&name]).unwrap();
        let mut last = -1;
        wait_until(
            "the first consumer reads 10 messages of partition 0",
            WAIT,
            || {
                if let Some(s) = poll_one(&c, "resume-1") {
                    if s.partition == 0 {
                        last = s.offset;
                    }
                }
                (last >= 9)
                    .then_some(())
                    .ok_or(format!("last offset of partition 0: {last}"))
            },
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&name, 0, Offset::Offset(7))
            .unwrap();
        tpl.find_partition(&name, 0)
            .unwrap()
            .set_metadata("seven;sluice");
        c.commit(&tpl, CommitMode::Sync).expect("commit offset 7");
    }
    check_resume(&broker, &group, &name, 7, "seven;sluice", "after close");

    broker.restart();
    check_resume(
        &broker,
        &group,
        &name,
        7,
        "seven;sluice",
        "after a clean restart",
    );

    // A newer commit, then a crash right after its acknowledgement.
    commit_as_member(&broker, &group, &name, 12, "twelve");
    broker.kill();
    broker.restart_after_kill();
    check_resume(
        &broker,
        &group,
        &name,
        12,
        "twelve",
        "after a crash (SIGKILL)",
    );
}

// ---------------------------------------------------------------- 4. cooperative-sticky

/// With cooperative-sticky, a second member joining makes the first give up
/// only the partitions that move, never everything at once.
#[test]
fn cooperative_sticky_revokes_only_the_partitions_that_move() {
    let broker = start_broker();
    let name = topic("cg-coop");
    create_topic(&broker, &name, 6);
    let group = topic("g-coop");
    let all: BTreeSet<i32> = (0..6).collect();
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];

    let rec_a = Recorder::default();
    let a = recording_consumer(&broker, &group, "coop-a", &coop, rec_a.clone());
    a.subscribe(&[&name]).unwrap();
    wait_until("the first member owns all 6 partitions", WAIT, || {
        let _ = poll_one(&a, "a");
        let mine = assigned(&a);
        (mine == all)
            .then_some(())
            .ok_or(format!("a owns {mine:?}"))
    });
    assert!(
        matches!(a.rebalance_protocol(), RebalanceProtocol::Cooperative),
        "a uses the cooperative protocol"
    );
    let before = rec_a.events().len();

    let rec_b = Recorder::default();
    let b = recording_consumer(&broker, &group, "coop-b", &coop, rec_b.clone());
    b.subscribe(&[&name]).unwrap();
    let mut smallest_a = all.len();
    let mut stable_since: Option<Instant> = None;
    wait_until("a stable split between the two members", WAIT, || {
        let _ = poll_one(&a, "a");
        let _ = poll_one(&b, "b");
        let (pa, pb) = (assigned(&a), assigned(&b));
        smallest_a = smallest_a.min(pa.len());
        match split_between(&pa, &pb, &all) {
            Ok(()) => {
                let since = *stable_since.get_or_insert_with(Instant::now);
                (since.elapsed() >= Duration::from_secs(1))
                    .then_some(())
                    .ok_or("settling".to_string())
            }
            Err(e) => {
                stable_since = None;
                Err(e)
            }
        }
    });
    let (final_a, final_b) = (assigned(&a), assigned(&b));
    assert!(
        matches!(b.rebalance_protocol(), RebalanceProtocol::Cooperative),
        "b uses the cooperative protocol"
    );
    assert_eq!(
        final_a.len(),
        3,
        "cooperative-sticky balances 6 partitions 3/3"
    );
    assert!(
        smallest_a >= 3,
        "the first member's assignment shrank to {smallest_a} partitions on the way"
    );

    let moved: BTreeSet<i32> = all.difference(&final_a).copied().collect();
    let events_a = rec_a.events()[before..].to_vec();
    let mut revoked = BTreeSet::new();
    for event in &events_a {
        match event {
            Event::Revoke(set) => {
                assert!(
                    set.len() < all.len(),
                    "a had everything revoked at once: {events_a:?}"
                );
                assert!(
                    set.is_subset(&moved),
                    "a had partitions revoked that it kept: {set:?} (kept {final_a:?})"
                );
                revoked.extend(set.iter().copied());
            }
            Event::Assign(set) => assert!(
                set.is_empty() || set.is_subset(&final_a),
                "a was assigned partitions it does not end with: {events_a:?}"
            ),
            Event::Error(e) => panic!("a: rebalance error {e}: {events_a:?}"),
        }
    }
    assert_eq!(
        revoked, moved,
        "a revoked exactly the partitions that moved: {events_a:?}"
    );
    assert_eq!(moved, final_b);
    let events_b = rec_b.events();
    let mut gained = BTreeSet::new();
    for event in &events_b {
        match event {
            Event::Assign(set) => gained.extend(set.iter().copied()),
            other => panic!("b: unexpected rebalance event {other:?}: {events_b:?}"),
        }
    }
    assert_eq!(gained, final_b, "b's incremental assignments: {events_b:?}");

    // The group still works: both read what is produced now.
    let produced = produce_tagged(&broker, &name, 6, 2, "coop");
    let mut seen = Vec::new();
    wait_until("both members read the 12 new messages", WAIT, || {
        for (c, who, owned) in [(&a, "a", &final_a), (&b, "b", &final_b)] {
            if let Some(s) = poll_one(c, who) {
                assert!(
                    owned.contains(&s.partition),
                    "{who} read {s:?} it does not own"
                );
                seen.push(s.value);
            }
        }
        (seen.len() >= 12)
            .then_some(())
            .ok_or(format!("{} of 12", seen.len()))
    });
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), produced);
}

// ---------------------------------------------------------------- 5. kafka-python

/// Runs `command` to completion, killing it after `timeout`: (exit code, stdout, stderr).
fn run_with_timeout(mut command: Command, timeout: Duration) -> (Option<i32>, String, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}; run tools/run-tests"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// kafka-python: a group consumes, commits, closes; a second member resumes at
/// the committed offsets; the admin client lists, describes, reports offsets
/// and lag, and deletes the group (see tests/clients/kafka_python_group.py).
#[test]
fn kafka_python_group_resume_and_admin() {
    let present = Command::new("python3")
        .args(["-c", "import kafka"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        present,
        "python3 with kafka-python (tests/clients/requirements.txt) is missing: run tools/run-tests"
    );
    let broker = start_broker();
    let name = topic("cg-kp");
    let group = topic("g-kp");
    let clients = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients");
    let mut command = Command::new("python3");
    command
        .current_dir(&clients)
        .arg(clients.join("kafka_python_group.py"))
        .args([&broker.addr, &name, &group]);
    let (status, stdout, stderr) = run_with_timeout(command, Duration::from_secs(120));
    assert_eq!(
        status,
        Some(0),
        "kafka_python_group.py {} {name} {group}: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        broker.addr,
        if status.is_none() { "timed out" } else { "failed" }
    );
    print!("{stdout}");
}

// ---------------------------------------------------------------- 6. librdkafka admin

/// ListGroups/DescribeGroups through librdkafka show a live group's state and
/// members; DeleteGroups refuses a group with members and deletes an empty
/// one together with its offsets.
#[test]
fn librdkafka_lists_describes_and_deletes_groups() {
    let mut broker = start_broker();
    let name = topic("cg-admin");
    create_topic(&broker, &name, 2);
    let group = topic("g-admin");
    let all: BTreeSet<i32> = (0..2).collect();
    let produced = produce_tagged(&broker, &name, 2, 5, "admin");

    let a = consumer(&broker, &group, "adm-a", &[]);
    let b = consumer(&broker, &group, "adm-b", &[]);
    a.subscribe(&[&name]).unwrap();
    b.subscribe(&[&name]).unwrap();
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    wait_until(
        "two members read and committed all 10 messages",
        WAIT,
        || {
            poll_commit(&a, &mut seen_a, "a");
            poll_commit(&b, &mut seen_b, "b");
            split_between(&assigned(&a), &assigned(&b), &all)?;
            let n = seen_a.len() + seen_b.len();
            (n >= 10).then_some(()).ok_or(format!("{n} of 10 read"))
        },
    );
    let consumed: BTreeSet<String> = seen_a
        .iter()
        .chain(&seen_b)
        .map(|s| s.value.clone())
        .collect();
    assert_eq!(consumed, produced);

    let list = a
        .fetch_group_list(Some(&group), CALL)
        .expect("fetch_group_list(group)");
    assert_eq!(list.groups().len(), 1, "one group described");
    let g = &list.groups()[0];
    assert_eq!(g.name(), group);
    assert_eq!(g.state(), "Stable");
    assert_eq!(g.protocol_type(), "consumer");
    assert_eq!(
        g.protocol(),
        "range",
        "librdkafka's first choice of range,roundrobin"
    );
    let members: BTreeMap<String, BTreeSet<i32>> = g
        .members()
        .iter()
        .map(|m| {
            assert!(!m.id().is_empty(), "member id");
            assert!(
                m.metadata().is_some_and(|md| !md.is_empty()),
                "member metadata"
            );
            let owned = assigned_in(m.assignment().unwrap_or_default(), &name);
            (m.client_id().to_string(), owned)
        })
        .collect();
    assert_eq!(
        members.keys().map(String::as_str).collect::<Vec<_>>(),
        ["adm-a", "adm-b"],
        "members {members:?}"
    );
    assert_eq!(members["adm-a"], assigned(&a), "described assignment of a");
    assert_eq!(members["adm-b"], assigned(&b), "described assignment of b");
    let every = a
        .fetch_group_list(None, CALL)
        .expect("fetch_group_list(all)");
    assert!(
        every.groups().iter().any(|g| g.name() == group),
        "ListGroups includes {group}"
    );

    let admin = admin(&broker);
    let options = AdminOptions::new().request_timeout(Some(CALL));
    let refused = block_on(admin.delete_groups(&[&group], &options)).expect("delete_groups");
    assert_eq!(
        refused,
        vec![Err((group.clone(), RDKafkaErrorCode::NonEmptyGroup))],
        "deleting a group with members"
    );

    drop(a);
    drop(b);
    let probe = consumer(&broker, &topic("g-probe"), "probe", &[]);
    wait_until("the group is empty", WAIT, || {
        std::thread::sleep(POLL);
        let list = probe
            .fetch_group_list(Some(&group), CALL)
            .expect("fetch_group_list");
        let g = &list.groups()[0];
        (g.state() == "Empty" && g.members().is_empty())
            .then_some(())
            .ok_or(format!("{} with {} members", g.state(), g.members().len()))
    });
    let deleted = block_on(admin.delete_groups(&[&group], &options)).expect("delete_groups");
    assert_eq!(deleted, vec![Ok(group.clone())], "deleting the empty group");
    let again = block_on(admin.delete_groups(&[&group], &options)).expect("delete_groups");
    assert_eq!(
        again,
        vec![Err((group.clone(), RDKafkaErrorCode::GroupIdNotFound))],
        "deleting it again"
    );
    let every = probe
        .fetch_group_list(None, CALL)
        .expect("fetch_group_list(all)");
    assert!(
        !every.groups().iter().any(|g| g.name() == group),
        "ListGroups still includes the deleted {group}"
    );

    // Its offsets went with it, also after a crash (the deletion is durable):
    // a new member starts from auto.offset.reset.
    drop(probe);
    broker.kill();
    broker.restart_after_kill();
    let c = consumer(&broker, &group, "adm-c", &[]);
    for (p, (offset, _)) in committed(&c, &name, 2) {
        assert_eq!(
            offset,
            Offset::Invalid,
            "partition {p} of the deleted group has an offset"
        );
    }
    c.subscribe(&[&name]).unwrap();
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    wait_until("the new member reads both partitions", WAIT, || {
        if let Some(s) = poll_one(&c, "c") {
            first.entry(s.partition).or_insert(s.offset);
        }
        (first.len() == 2)
            .then_some(())
            .ok_or(format!("first offsets {first:?}"))
    });
    assert_eq!(
        first,
        BTreeMap::from([(0, 0), (1, 0)]),
        "starts from earliest"
    );
}

/// The empty group id, as Kafka treats it "for backwards compatibility"
/// (KIP-289; clients that commit under `group.id=""`): OffsetCommit,
/// OffsetFetch (v7 and v8), DescribeGroups, ListGroups and DeleteGroups take
/// it; JoinGroup, Heartbeat and the other APIs of coordinated groups refuse
/// it (INVALID_GROUP_ID). kafka-python commits and reads back under it.
#[test]
fn the_empty_group_id_commits_offsets_as_kafka_allows() {
    let broker = start_broker();
    let name = topic("cg-empty-id");
    create_topic(&broker, &name, 2);
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(offset_commit(&mut conn, "", -1, "", (&name, 0, 5)), NONE);
    assert_eq!(offset_fetch_v8(&mut conn, "", &name, 0), (NONE, NONE, 5));
    assert_eq!(offset_fetch_v7(&mut conn, "", &name, 0), (NONE, 5));
    let described = describe_group(&mut conn, "");
    assert_eq!(described.group_state.as_str(), "Empty", "{described:?}");
    assert_eq!(
        heartbeat(&mut conn, "", 1, "some-member", None),
        INVALID_GROUP_ID,
        "Heartbeat with group id \"\""
    );

    // kafka-python, group_id='' given: a simple commit, read back.
    let script = "import sys\n\
         from kafka import KafkaConsumer, TopicPartition\n\
         from kafka.structs import OffsetAndMetadata\n\
         c = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id='', enable_auto_commit=False)\n\
         tp = TopicPartition(sys.argv[2], 1)\n\
         c.assign([tp])\n\
         try:\n\
         \x20   meta = OffsetAndMetadata(7, '', -1)\n\
         except TypeError:\n\
         \x20   meta = OffsetAndMetadata(7, '')\n\
         c.commit({tp: meta})\n\
         print(c.committed(tp))\n\
         c.close()\n";
    assert_eq!(common::python(script, &[&broker.addr, &name]), "7");
    assert_eq!(offset_fetch_v8(&mut conn, "", &name, 1), (NONE, NONE, 7));

    // Listed (librdkafka), then deleted with its offsets.
    let probe = consumer(&broker, &topic("g-probe"), "probe", &[]);
    let every = probe
        .fetch_group_list(None, CALL)
        .expect("fetch_group_list");
    assert!(
        every.groups().iter().any(|g| g.name().is_empty()),
        "ListGroups lists the empty group id"
    );
    let deleted: DeleteGroupsResponse = conn.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(""))]),
    );
    assert_eq!(deleted.results.len(), 1, "{deleted:?}");
    assert_eq!(deleted.results[0].error_code, NONE, "{deleted:?}");
    assert_eq!(offset_fetch_v8(&mut conn, "", &name, 0), (NONE, NONE, -1));
}

// ---------------------------------------------------------------- 7. bad input

/// Raw requests a coordinator must refuse, each with Kafka's error code; the
/// broker keeps serving other groups afterwards.
#[test]
fn group_requests_with_bad_input_are_refused() {
    let broker = start_broker();
    let name = topic("cg-bad");
    create_topic(&broker, &name, 2);
    let mut conn = Conn::open(&broker.addr);
    let group = topic("g-bad");

    // An empty group id.
    let mut nameless = Join::consumer("", &name);
    let answer = nameless.send(&mut conn);
    assert_eq!(
        answer.error_code, INVALID_GROUP_ID,
        "JoinGroup v9 with group id \"\": {answer:?}"
    );
    nameless.member_id = "some-member".to_string();
    let answer = nameless.send(&mut conn);
    assert_eq!(
        answer.error_code, INVALID_GROUP_ID,
        "JoinGroup v9 with group id \"\" and a member id"
    );

    // A real member: "consumer"/"range", generation g.
    let mut m1 = Join::consumer(&group, &name);
    let joined = m1.join_new(&mut conn);
    let generation = joined.generation_id;
    assert!(generation >= 1, "generation {generation}");
    let synced = sync_group(
        &mut conn,
        &m1,
        generation,
        &[(m1.member_id.clone(), assignment(&name, &[0, 1]))],
    );
    assert_eq!(synced.error_code, NONE, "SyncGroup v5: {synced:?}");

    // Joins that do not match the group's protocol type or protocols.
    let mut connect = Join::consumer(&group, &name);
    connect.protocol_type = "connect".to_string();
    let answer = connect.send(&mut conn);
    assert_eq!(
        answer.error_code, INCONSISTENT_GROUP_PROTOCOL,
        "JoinGroup v9 with protocol type 'connect' into a 'consumer' group: {answer:?}"
    );
    let mut roundrobin = Join::consumer(&group, &name);
    roundrobin.protocols = vec![("roundrobin".to_string(), subscription(&[&name]))];
    let answer = roundrobin.send(&mut conn);
    assert_eq!(
        answer.error_code, INCONSISTENT_GROUP_PROTOCOL,
        "JoinGroup v9 whose only protocol the group does not use: {answer:?}"
    );

    // OffsetCommit: wrong generation, unknown member; then a valid one.
    let code = offset_commit(
        &mut conn,
        &group,
        generation + 1,
        &m1.member_id,
        (&name, 0, 3),
    );
    assert_eq!(
        code,
        ILLEGAL_GENERATION,
        "OffsetCommit v8 with generation {}",
        generation + 1
    );
    let code = offset_commit(
        &mut conn,
        &group,
        generation,
        "no-such-member",
        (&name, 0, 3),
    );
    assert_eq!(
        code, UNKNOWN_MEMBER_ID,
        "OffsetCommit v8 of an unknown member"
    );
    let (group_error, partition_error, offset) = offset_fetch_v8(&mut conn, &group, &name, 0);
    assert_eq!(
        (group_error, partition_error, offset),
        (NONE, NONE, -1),
        "refused commits stored nothing"
    );
    let code = offset_commit(&mut conn, &group, generation, &m1.member_id, (&name, 0, 3));
    assert_eq!(
        code, NONE,
        "OffsetCommit v8 of the member at its generation"
    );
    assert_eq!(
        offset_fetch_v8(&mut conn, &group, &name, 0),
        (NONE, NONE, 3)
    );

    // Heartbeat: unknown group; stale generation; then the right one.
    let code = heartbeat(&mut conn, &topic("g-none"), 1, "no-such-member", None);
    assert_eq!(
        code, UNKNOWN_MEMBER_ID,
        "Heartbeat v4 to a group that does not exist"
    );
    let code = heartbeat(&mut conn, &group, generation - 1, &m1.member_id, None);
    assert_eq!(
        code, ILLEGAL_GENERATION,
        "Heartbeat v4 with a stale generation"
    );
    let code = heartbeat(&mut conn, &group, generation, &m1.member_id, None);
    assert_eq!(code, NONE, "Heartbeat v4 of the member at its generation");

    // SyncGroup: stale generation, unknown member.
    let stale = sync_group(&mut conn, &m1, generation - 1, &[]);
    assert_eq!(
        stale.error_code, ILLEGAL_GENERATION,
        "SyncGroup v5 with a stale generation: {stale:?}"
    );
    let mut stranger = m1.clone();
    stranger.member_id = "no-such-member".to_string();
    let unknown = sync_group(&mut conn, &stranger, generation, &[]);
    assert_eq!(
        unknown.error_code, UNKNOWN_MEMBER_ID,
        "SyncGroup v5 of an unknown member: {unknown:?}"
    );

    // Member ids are the broker's to hand out: a JoinGroup with a made-up one
    // (the KIP-394 step skipped) is refused, and so is a LeaveGroup of a
    // member that is not in the group; neither disturbs the real member.
    let mut impostor = Join::consumer(&group, &name);
    impostor.member_id = "made-up-member".to_string();
    let answer = impostor.send(&mut conn);
    assert_eq!(
        answer.error_code, UNKNOWN_MEMBER_ID,
        "JoinGroup v9 with a member id the broker never handed out: {answer:?}"
    );
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(str_bytes(&group)))
        .with_members(vec![
            MemberIdentity::default().with_member_id(str_bytes("made-up-member"))
        ]);
    let left: LeaveGroupResponse = conn.call(ApiKey::LeaveGroup, 5, &leave);
    assert_eq!(left.error_code, NONE, "LeaveGroup v5: {left:?}");
    assert_eq!(
        left.members
            .iter()
            .map(|m| m.error_code)
            .collect::<Vec<_>>(),
        [UNKNOWN_MEMBER_ID],
        "LeaveGroup v5 of a member that is not in the group: {left:?}"
    );

    // (OffsetCommit and OffsetFetch take the empty group id, as Kafka does:
    // `the_empty_group_id_commits_offsets_as_kafka_allows`.)

    // None of this disturbed the group: the member is still there, at its generation.
    assert_eq!(
        heartbeat(&mut conn, &group, generation, &m1.member_id, None),
        NONE
    );
    let described = describe_group(&mut conn, &group);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.members.len(), 1, "{described:?}");
    assert_eq!(described.protocol_type.as_str(), "consumer");
    assert_eq!(described.protocol_data.as_str(), "range");

    // And another group on the same broker works normally.
    let produced = produce_tagged(&broker, &name, 2, 4, "bad");
    let c = consumer(&broker, &topic("g-good"), "good", &[]);
    c.subscribe(&[&name]).unwrap();
    let mut seen = Vec::new();
    wait_until("a librdkafka group reads the 8 messages", WAIT, || {
        poll_commit(&c, &mut seen, "good");
        (seen.len() >= 8)
            .then_some(())
            .ok_or(format!("{} of 8", seen.len()))
    });
    assert_eq!(
        seen.iter()
            .map(|s| s.value.clone())
            .collect::<BTreeSet<_>>(),
        produced
    );
}

// ---------------------------------------------------------------- 8. static membership

/// KIP-345: a static member (group.instance.id) that restarts within its
/// session timeout gets its old assignment back without a rebalance; the
/// other member notices nothing, and the old member id is fenced.
#[test]
fn static_member_restart_keeps_its_assignment_without_a_rebalance() {
    let broker = start_broker();
    let name = topic("cg-static");
    create_topic(&broker, &name, 4);
    let group = topic("g-static");
    let all: BTreeSet<i32> = (0..4).collect();

    let rec_b = Recorder::default();
    let b = recording_consumer(
        &broker,
        &group,
        "static-b",
        &[("group.instance.id", "I2")],
        rec_b.clone(),
    );
    b.subscribe(&[&name]).unwrap();
    wait_until("the first static member owns the topic", WAIT, || {
        let _ = poll_one(&b, "b");
        let mine = assigned(&b);
        (mine == all)
            .then_some(())
            .ok_or(format!("b owns {mine:?}"))
    });
    let a = consumer(&broker, &group, "static-a", &[("group.instance.id", "I1")]);
    a.subscribe(&[&name]).unwrap();
    wait_until("two static members split the topic", WAIT, || {
        let _ = poll_one(&a, "a");
        let _ = poll_one(&b, "b");
        split_between(&assigned(&a), &assigned(&b), &all)
    });
    let (part_a, part_b) = (assigned(&a), assigned(&b));

    let mut conn = Conn::open(&broker.addr);
    let described = describe_group(&mut conn, &group);
    let ids: BTreeMap<String, String> = described
        .members
        .iter()
        .map(|m| {
            (
                m.group_instance_id
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                m.member_id.to_string(),
            )
        })
        .collect();
    assert_eq!(
        ids.keys().map(String::as_str).collect::<Vec<_>>(),
        ["I1", "I2"],
        "{described:?}"
    );
    let old_a = ids["I1"].clone();
    let events_b = rec_b.events().len();

    // a stops (a static member does not leave); a new process with the same
    // instance id comes back well within the 6 s session.
    drop(a);
    let a2 = consumer(&broker, &group, "static-a2", &[("group.instance.id", "I1")]);
    a2.subscribe(&[&name]).unwrap();
    wait_until(
        "the restarted static member is assigned",
        Duration::from_secs(5),
        || {
            let _ = poll_one(&a2, "a2");
            let _ = poll_one(&b, "b");
            let mine = assigned(&a2);
            (!mine.is_empty())
                .then_some(())
                .ok_or("nothing yet".to_string())
        },
    );
    assert_eq!(
        assigned(&a2),
        part_a,
        "the restarted static member gets its old partitions back"
    );
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        let _ = poll_one(&a2, "a2");
        let _ = poll_one(&b, "b");
        assert_eq!(
            assigned(&b),
            part_b,
            "the other member's assignment changed"
        );
        assert_eq!(
            assigned(&a2),
            part_a,
            "the restarted member's assignment changed"
        );
    }
    assert_eq!(
        rec_b.events()[events_b..],
        [],
        "the other static member saw a rebalance when I1 restarted"
    );

    let described = describe_group(&mut conn, &group);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.members.len(), 2, "{described:?}");
    let new_a = described
        .members
        .iter()
        .find(|m| m.group_instance_id.as_ref().map(|s| s.as_str()) == Some("I1"))
        .expect("I1 is a member")
        .member_id
        .to_string();
    assert_ne!(
        new_a, old_a,
        "a restarted static member gets a new member id"
    );
    // The old incarnation is fenced (generation 2: b alone, then b and a).
    let code = heartbeat(&mut conn, &group, 2, &old_a, Some("I1"));
    assert_eq!(
        code, FENCED_INSTANCE_ID,
        "Heartbeat v4 of the replaced member id of I1"
    );
}
