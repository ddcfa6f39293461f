//! Identities a client hands the broker, and what the broker does with them
//! (docs/IDENTITIES.md lists each with Kafka's rule): producer ids and epochs
//! in InitProducerId and in Produce batches. Group member ids and generations
//! are covered by `consumer_groups::group_requests_with_bad_input_are_refused`,
//! fetch sessions by `fetch_semantics` and by the cross-connection case here.
//!
//! The bug this file was started for: a client that sent InitProducerId with
//! producer id 0 and epoch 0 (and no transactional id) was told "id 0, epoch
//! 1" — another producer's id — so two such producers shared sequence state
//! and the second one's batches were acknowledged as duplicates of the first
//! one's, never stored.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use sluice::protocol::encode;
use uuid::Uuid;

use common::wire::{
    create_topic, fetch_partition, fetch_topic, latest_offset, produce, read_partition, Conn, NONE,
    OUT_OF_ORDER_SEQUENCE_NUMBER,
};
use common::TestBroker;

const INVALID_REQUEST: i16 = 42;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// InitProducerId v4 with the given fields.
fn init_producer_id(
    conn: &mut Conn,
    producer_id: i64,
    epoch: i16,
    transactional_id: Option<&str>,
) -> InitProducerIdResponse {
    let mut request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    request.transactional_id =
        transactional_id.map(|t| StrBytes::from_string(t.to_string()).into());
    conn.call(ApiKey::InitProducerId, 4, &request)
}

/// A batch of `count` records from producer (id, epoch) starting at
/// `base_sequence`, each value `"{tag}-{sequence}"`.
fn batch(tag: &str, count: i32, producer: (i64, i16, i32), transactional: bool) -> Bytes {
    let (producer_id, producer_epoch, base_sequence) = producer;
    let fields = Some(encode::ProducerFields {
        producer_id,
        producer_epoch,
        base_sequence,
    });
    let records: Vec<_> = (0..count)
        .map(|i| {
            let value = Some(Bytes::from(format!("{tag}-{}", base_sequence + i)));
            let mut record = encode::record(i64::from(i), 1_700_000_000_000, None, value, fields);
            record.transactional = transactional;
            record
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// Two clients each send InitProducerId(producer_id=0, epoch=0) — on a broker
/// that has handed out no id yet — and must get two different, fresh ids with
/// epoch 0; then their interleaved batches (same sequences) are all stored.
#[test]
fn init_producer_id_with_an_id_and_no_transactional_id_always_gets_a_fresh_id() {
    let broker = TestBroker::start();
    let topic = common::topic("pid-zero");
    let mut a = Conn::open(&broker.addr);
    let mut b = Conn::open(&broker.addr);
    create_topic(&mut a, &topic, 1, &[]);

    let first = init_producer_id(&mut a, 0, 0, None);
    let second = init_producer_id(&mut b, 0, 0, None);
    for (what, answer) in [("first", &first), ("second", &second)] {
        assert_eq!(answer.error_code, NONE, "{what}: {answer:?}");
        assert!(answer.producer_id.0 >= 0, "{what}: {answer:?}");
        assert_eq!(
            answer.producer_epoch, 0,
            "{what}: a new id starts at epoch 0"
        );
    }
    assert_ne!(
        first.producer_id, second.producer_id,
        "two producers were given the same id"
    );
    // Re-sending one's own id and epoch is not an epoch bump either (Kafka
    // bumps only for transactional ids): a third fresh id.
    let again = init_producer_id(&mut a, first.producer_id.0, first.producer_epoch, None);
    assert_eq!(again.error_code, NONE);
    assert_eq!(again.producer_epoch, 0);
    assert!(
        again.producer_id != first.producer_id && again.producer_id != second.producer_id,
        "{again:?}"
    );

    // Both producers write sequences 0..30 in batches of 3, interleaved.
    let mut acknowledged = BTreeMap::new();
    for round in 0..10 {
        for (tag, conn, pid) in [
            ("a", &mut a, first.producer_id.0),
            ("b", &mut b, second.producer_id.0),
        ] {
            let answer = produce(conn, &topic, 0, batch(tag, 3, (pid, 0, round * 3), false));
            assert_eq!(answer.error_code, NONE, "{tag} round {round}: {answer:?}");
            for i in 0..3 {
                let previous = acknowledged.insert(
                    answer.base_offset + i64::from(i),
                    format!("{tag}-{}", round * 3 + i),
                );
                assert!(
                    previous.is_none(),
                    "offset acknowledged twice: {previous:?}"
                );
            }
        }
    }
    let (error, stored) = read_partition(&mut a, &topic, 0);
    assert_eq!(error, NONE);
    let stored: BTreeMap<i64, String> = stored.into_iter().collect();
    assert_eq!(stored.len(), 60, "60 records acknowledged");
    assert_eq!(
        stored, acknowledged,
        "every acknowledged record at its offset"
    );
}

/// Kafka's checks of the request's own fields.
#[test]
fn init_producer_id_refuses_half_an_identity_and_an_empty_transactional_id() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    for (pid, epoch) in [(0, -1), (-1, 0), (7, -1)] {
        let answer = init_producer_id(&mut conn, pid, epoch, None);
        assert_eq!(
            (answer.error_code, answer.producer_id.0),
            (INVALID_REQUEST, -1),
            "producer id {pid} with epoch {epoch}"
        );
    }
    let answer = init_producer_id(&mut conn, -1, -1, Some(""));
    assert_eq!(answer.error_code, INVALID_REQUEST, "empty transactional id");
    // A transactional id: its coordinator hands out an id at epoch 0, and
    // the next instance of the same id the same producer id at epoch 1
    // (which fences the first).
    let first = init_producer_id(&mut conn, -1, -1, Some("txn-1"));
    assert_eq!(
        (first.error_code, first.producer_epoch),
        (NONE, 0),
        "{first:?}"
    );
    let second = init_producer_id(&mut conn, -1, -1, Some("txn-1"));
    assert_eq!(
        (second.error_code, second.producer_id, second.producer_epoch),
        (NONE, first.producer_id, 1)
    );
    // Naming another producer's id as its own (KIP-360): fenced
    // (PRODUCER_FENCED, 90, from version 4).
    let stranger = init_producer_id(&mut conn, first.producer_id.0 + 1000, 0, Some("txn-1"));
    assert_eq!((stranger.error_code, stranger.producer_id.0), (90, -1));
    // Still serving: a proper request gets an id.
    let answer = init_producer_id(&mut conn, -1, -1, None);
    assert_eq!((answer.error_code, answer.producer_epoch), (NONE, 0));
}

/// What Produce does with producer identities it did not hand out, with
/// stale epochs, and with batches that look like retries but are not.
#[test]
fn produce_refuses_unissued_ids_stale_epochs_and_false_duplicates() {
    let broker = TestBroker::start();
    let topic = common::topic("pid-produce");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 2, &[]);
    let init = init_producer_id(&mut conn, -1, -1, None);
    assert_eq!(init.error_code, NONE);
    let pid = init.producer_id.0;

    // An id far beyond anything issued, and the next one not yet issued.
    for unissued in [pid + 1, 1 << 40] {
        let answer = produce(&mut conn, &topic, 0, batch("x", 2, (unissued, 0, 0), false));
        assert_eq!(
            answer.error_code, UNKNOWN_PRODUCER_ID,
            "producer id {unissued} was never issued: {answer:?}"
        );
        assert!(
            answer
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains("never issued")),
            "{answer:?}"
        );
    }
    assert_eq!(latest_offset(&mut conn, &topic, 0), 0, "nothing stored");

    // The issued id: sequences 0..3 at epoch 0.
    let a = produce(&mut conn, &topic, 0, batch("a", 3, (pid, 0, 0), false));
    assert_eq!((a.error_code, a.base_offset), (NONE, 0));
    // A batch that starts where a cached one starts but ends elsewhere is not
    // that batch: refused, not acknowledged at offset 0.
    let longer = produce(&mut conn, &topic, 0, batch("a", 5, (pid, 0, 0), false));
    assert_eq!(
        longer.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "same first sequence, different last: {longer:?}"
    );
    let shorter = produce(&mut conn, &topic, 0, batch("a", 1, (pid, 0, 0), false));
    assert_eq!(
        shorter.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "{shorter:?}"
    );
    // The same sequences under another epoch are a new epoch's batch, not a
    // retry: a bumped epoch (the Java client bumps it itself) restarts at 0.
    let bumped = produce(&mut conn, &topic, 0, batch("b", 3, (pid, 1, 0), false));
    assert_eq!(
        (bumped.error_code, bumped.base_offset),
        (NONE, 3),
        "{bumped:?}"
    );
    // Now epoch 0 is stale: fenced, whether it looks like a retry or not.
    for (what, records) in [
        ("a retry of epoch 0", batch("a", 3, (pid, 0, 0), false)),
        ("epoch 0's next batch", batch("a", 3, (pid, 0, 3), false)),
    ] {
        let answer = produce(&mut conn, &topic, 0, records);
        assert_eq!(
            answer.error_code, INVALID_PRODUCER_EPOCH,
            "{what}: {answer:?}"
        );
    }
    // A bumped epoch must start at sequence 0.
    let late_start = produce(&mut conn, &topic, 0, batch("c", 1, (pid, 2, 4), false));
    assert_eq!(late_start.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(
        latest_offset(&mut conn, &topic, 0),
        6,
        "only the two good batches"
    );

    // An issued id the partition has no state for may start at any sequence
    // (Kafka since KIP-360: its earlier batches may have been removed).
    let elsewhere = produce(&mut conn, &topic, 1, batch("d", 2, (pid, 1, 40), false));
    assert_eq!((elsewhere.error_code, elsewhere.base_offset), (NONE, 0));

    // Transactional batches without a transactional id: the whole request is
    // refused, as Kafka does.
    let transactional = produce(&mut conn, &topic, 1, batch("t", 1, (pid, 1, 42), true));
    assert_eq!(
        transactional.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        "{transactional:?}"
    );

    let (error, stored) = read_partition(&mut conn, &topic, 0);
    assert_eq!(error, NONE);
    let values: Vec<&str> = stored.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]);
}

/// Producer ids come from blocks recorded in the metadata log: a restart
/// (clean or not) never hands out an id again, and ids issued before the
/// restart are still accepted by Produce.
#[test]
fn producer_ids_are_never_reused_across_restarts() {
    let mut broker = TestBroker::start();
    let topic = common::topic("pid-restart");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 1, &[]);
    let mut issued = Vec::new();
    for _ in 0..3 {
        let answer = init_producer_id(&mut conn, -1, -1, None);
        assert_eq!(answer.error_code, NONE);
        issued.push(answer.producer_id.0);
    }
    drop(conn);
    for restart in ["clean", "kill"] {
        if restart == "clean" {
            broker.restart();
        } else {
            broker.restart_after_kill();
        }
        let mut conn = Conn::open(&broker.addr);
        let answer = init_producer_id(&mut conn, 0, 0, None);
        assert_eq!(answer.error_code, NONE);
        let max = *issued.iter().max().expect("ids");
        assert!(
            answer.producer_id.0 > max,
            "after a {restart} restart: id {} handed out again (issued {issued:?})",
            answer.producer_id.0
        );
        issued.push(answer.producer_id.0);
        // An id from before the restart is still one the broker issued.
        let old = issued[0];
        let sequence = if restart == "clean" { 0 } else { 1 };
        let answer = produce(
            &mut conn,
            &topic,
            0,
            batch("old", 1, (old, 0, sequence), false),
        );
        assert_eq!(answer.error_code, NONE, "{restart}: {answer:?}");
    }
}

/// A fetch session lives on the connection that created it: another
/// connection presenting its id and next epoch is told the session does not
/// exist, and the owner's session is not disturbed.
#[test]
fn a_fetch_session_cannot_be_used_from_another_connection() {
    let broker = TestBroker::start();
    let topic = common::topic("session-owner");
    let mut owner = Conn::open(&broker.addr);
    create_topic(&mut owner, &topic, 1, &[]);
    let answer = produce(&mut owner, &topic, 0, common::wire::value_batch("v0"));
    assert_eq!(answer.error_code, NONE);
    let fetch_v12 = |conn: &mut Conn, session_id: i32, epoch: i32, offset: Option<i64>| {
        let topics = offset
            .map(|offset| {
                vec![fetch_topic(
                    12,
                    &topic,
                    Uuid::nil(),
                    vec![fetch_partition(0, offset, 1 << 20)],
                )]
            })
            .unwrap_or_default();
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(topics);
        let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request);
        response
    };
    let created = fetch_v12(&mut owner, 0, 0, Some(0));
    assert_eq!(created.error_code, NONE);
    let session = created.session_id;
    assert_ne!(session, 0, "a session was created");

    let mut stranger = Conn::open(&broker.addr);
    let stolen = fetch_v12(&mut stranger, session, 1, None);
    assert_eq!(
        stolen.error_code, FETCH_SESSION_ID_NOT_FOUND,
        "session {session} used from another connection"
    );
    // The owner's session goes on at epoch 1.
    let next = fetch_v12(&mut owner, session, 1, None);
    assert_eq!((next.error_code, next.session_id), (NONE, session));
}

/// The end-to-end case from the issue, with an independent client:
/// two idempotent producers of @platformatic/kafka (which sends
/// InitProducerId with id 0 and epoch 0) write 300 messages each to one
/// partition, interleaved; every acknowledged message must be in the log at
/// its acknowledged offset.
#[test]
fn platformatic_idempotent_producers_lose_nothing() {
    let broker = TestBroker::start();
    let topic = common::topic("platformatic");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 1, &[]);
    const PER_PRODUCER: usize = 300;

    let started = Instant::now();
    let stdout = common::run_node_client(
        "platformatic_idempotent.mjs",
        &[&broker.addr, &topic, &PER_PRODUCER.to_string()],
    );
    assert!(started.elapsed() < Duration::from_secs(120));

    let mut acknowledged = BTreeMap::new();
    let mut ids = Vec::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["ack", _, value, offset] => {
                let offset: i64 = offset.parse().expect("offset");
                let previous = acknowledged.insert(offset, value.to_string());
                assert!(
                    previous.is_none(),
                    "offset {offset} acknowledged for {previous:?} and {value}"
                );
            }
            ["ids", a, b] => ids = vec![a.to_string(), b.to_string()],
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(acknowledged.len(), 2 * PER_PRODUCER, "{stdout}");
    assert_eq!(ids.len(), 2, "{stdout}");
    assert_ne!(
        ids[0], ids[1],
        "both producers were given producer id {}",
        ids[0]
    );

    let (error, stored) = read_partition(&mut conn, &topic, 0);
    assert_eq!(error, NONE);
    let stored: BTreeMap<i64, String> = stored.into_iter().collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|(offset, value)| stored.get(offset) != Some(value))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the log at that offset (first 5): {missing:?}; log end {}",
        latest_offset(&mut conn, &topic, 0)
    );
    assert_eq!(stored.len(), 2 * PER_PRODUCER, "nothing else in the log");
}
