//! The file-descriptor budget (`runtime::descriptors`): a broker whose open
//! file limit is small refuses partitions it has no descriptors for, with
//! POLICY_VIOLATION and a message naming the limit, and keeps serving:
//! produce, fetch, new connections, segment rolls and creations that fit.
//! Before, one CreateTopics could take the last descriptors, and from then on
//! every shard failed to accept in a tight loop and the broker was unreachable.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, CreateTopicsResponse};

use common::wire::{
    create_topic, create_topics_request, produce, read_partition, value_batch, Conn, NONE,
};
use common::TestBroker;

const POLICY_VIOLATION: i16 = 44;
/// The open file limit the broker runs with in these tests.
const NOFILE: u64 = 600;

/// CreateTopics v7 of one topic: (error, message).
fn try_create(
    conn: &mut Conn,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (i16, String) {
    let request = create_topics_request(name, partitions, 1, configs);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
    let t = &response.topics[0];
    (
        t.error_code,
        t.error_message.as_deref().unwrap_or_default().to_string(),
    )
}

fn open_descriptors(broker: &TestBroker) -> usize {
    let pid = broker.pid().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// "... room for N. ..." in a refusal.
fn room_in(message: &str) -> usize {
    message
        .split("room for ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no room figure in {message:?}"))
}

#[test]
fn partitions_beyond_the_descriptor_budget_are_refused_and_the_broker_keeps_serving() {
    let broker = TestBroker::start_with_nofile(NOFILE, &["--max-connections", "64"]);
    let mut conn = Conn::open(&broker.addr);

    // A topic that will roll segments once the budget is full.
    let rolling = common::topic("rolling");
    create_topic(&mut conn, &rolling, 1, &[("segment.bytes", "1024")]);

    // Topics of 10 partitions until one is refused.
    let mut created = Vec::new();
    let refusal = loop {
        let name = common::topic("ten");
        let (code, message) = try_create(&mut conn, &name, 10, &[]);
        if code != NONE {
            break (code, message);
        }
        created.push(name);
        assert!(created.len() < 100, "never refused");
    };
    assert_eq!(refusal.0, POLICY_VIOLATION, "{refusal:?}");
    assert!(
        refusal.1.contains(&format!("open file limit is {NOFILE}")),
        "{refusal:?}"
    );
    assert!(
        created.len() >= 10,
        "only {} topics of 10 partitions fit in {NOFILE} descriptors",
        created.len()
    );
    let room = room_in(&refusal.1);
    assert!(room < 10, "{refusal:?}");

    // What fits is still created: `room` one-partition topics, then no more.
    for i in 0..room {
        let (code, message) = try_create(&mut conn, &common::topic("fits"), 1, &[]);
        assert_eq!(code, NONE, "topic {i} of the {room} that fit: {message}");
    }
    let (code, message) = try_create(&mut conn, &common::topic("over"), 1, &[]);
    assert_eq!(code, POLICY_VIOLATION, "{message}");
    assert_eq!(room_in(&message), 0);

    // Produce and fetch on every topic, over new connections.
    for name in created.iter().take(20) {
        let mut conn = Conn::open(&broker.addr);
        let answer = produce(&mut conn, name, 9, value_batch(name));
        assert_eq!(answer.error_code, NONE, "{name}: {answer:?}");
        let (error, records) = read_partition(&mut conn, name, 9);
        assert_eq!((error, records.len()), (NONE, 1), "{name}");
    }
    // Segment rolls of an existing partition still have descriptors.
    let mut expected = Vec::new();
    for i in 0..40 {
        let value = format!("{i:0>300}");
        let answer = produce(&mut conn, &rolling, 0, value_batch(&value));
        assert_eq!(
            answer.error_code, NONE,
            "append {i} to the rolling topic: {answer:?}"
        );
        expected.push(value);
    }
    let (error, records) = read_partition(&mut conn, &rolling, 0);
    assert_eq!(error, NONE);
    assert_eq!(
        records.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        expected
    );
    // Many connections at once, within --max-connections.
    let mut many: Vec<Conn> = (0..40).map(|_| Conn::open(&broker.addr)).collect();
    for c in &mut many {
        let response = common::wire::metadata(c, None, false);
        assert_eq!(response.brokers.len(), 1);
    }
    let open = open_descriptors(&broker);
    assert!(open as u64 <= NOFILE, "{open} descriptors open");
    println!(
        "{NOFILE} descriptors: {} topics of 10 partitions and {room} of 1 created; \
         {open} descriptors open with 41 connections",
        created.len()
    );
    drop(many);

    let log = broker.log_text();
    assert!(
        !log.contains("Too many open files"),
        "the broker ran out of descriptors:\n{log}"
    );
}

/// Past `--max-connections`, a new connection is closed at once; when one
/// closes, the next is served again.
#[test]
fn connections_beyond_max_connections_are_closed_at_once() {
    let broker = TestBroker::start_with_nofile(NOFILE, &["--max-connections", "16"]);
    let mut held: Vec<Conn> = (0..16).map(|_| Conn::open(&broker.addr)).collect();
    for c in &mut held {
        assert_eq!(common::wire::metadata(c, None, false).brokers.len(), 1);
    }
    let mut extra = TcpStream::connect(&broker.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // An ApiVersions v0 frame: the broker must not answer it.
    let _ = extra.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0]);
    let mut byte = [0u8; 1];
    let read = extra.read(&mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "connection 17 was served: {read:?}"
    );
    held.pop();
    // The broker notices the close and accepts again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(&broker.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 2, 0, 0]);
        if matches!(stream.read(&mut byte), Ok(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        broker.log_text().contains("--max-connections"),
        "the refusal is logged"
    );
}

/// When accept itself fails (a limit set above what the descriptors allow),
/// the shards back off instead of spinning: a handful of log lines, not
/// thousands, and service resumes when descriptors are free again.
#[test]
fn failed_accepts_back_off_and_recover() {
    let broker = TestBroker::start_with_nofile(200, &["--max-connections", "100000"]);
    // Hold connections until the broker runs out of descriptors.
    let mut held = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(&broker.addr) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = broker.log_text();
    let warnings = log.matches("accept failed").count();
    assert!(
        warnings >= 1,
        "accept never failed with {} connections held",
        held.len()
    );
    assert!(warnings <= 40, "{warnings} accept warnings in 3 s:\n{log}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut counts = BTreeMap::new();
    loop {
        let mut conn = Conn::open(&broker.addr);
        let response = common::wire::metadata(&mut conn, None, false);
        *counts.entry(response.brokers.len()).or_insert(0) += 1;
        if counts.get(&1).is_some_and(|&n| n >= 3) {
            break;
        }
        assert!(Instant::now() < deadline, "not serving again: {counts:?}");
    }
}
