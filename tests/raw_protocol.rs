//! The wire protocol spoken byte by byte over a plain TcpStream: hostile and
//! malformed input (garbage, bad length prefixes, lying array counts, truncated
//! bodies, unknown APIs and versions), version edges (ApiVersions v0/v3/v99,
//! Produce v0-2), Produce validation errors, pipelining order and idempotent
//! produce. After every hostile input the broker must still serve new
//! connections (which is also how we know its process is alive).

mod common;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, InitProducerIdRequest, InitProducerIdResponse,
    MetadataResponse, ProducerId, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::protocol::encode;

use common::wire::{
    create_topic, latest_offset, metadata, metadata_request, produce, produce_request, Conn,
    Outcome, CLOSE_WITHIN, CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE, NONE,
    OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_TOPIC_OR_PARTITION, UNSUPPORTED_FOR_MESSAGE_FORMAT,
    UNSUPPORTED_VERSION,
};
use common::TestBroker;

const MAX_REQUEST_BYTES: i32 = 100 << 20; // socket.request.max.bytes default

// ---------------------------------------------------------------- helpers

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-raw-test"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
}

/// A new connection gets a correct ApiVersions v3 answer: the broker is alive and serving.
fn assert_serves(addr: &str, context: &str) {
    let mut conn = Conn::open(addr);
    let response: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &api_versions_request());
    assert_eq!(response.error_code, NONE, "{context}: ApiVersions error");
    let metadata = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Metadata as i16)
        .unwrap_or_else(|| panic!("{context}: Metadata missing from ApiVersions"));
    assert_eq!(
        (metadata.min_version, metadata.max_version),
        (0, 12),
        "{context}"
    );
}

/// Asserts a Produce answer accepted the batch at `base_offset`.
fn assert_appended(answer: &PartitionProduceResponse, base_offset: i64, what: &str) {
    assert_eq!(
        (answer.error_code, answer.base_offset),
        (NONE, base_offset),
        "{what}: {:?}",
        answer.error_message
    );
}

/// A request frame built by hand: header v1 (or v2 when `flexible`), then `body`.
fn raw_frame(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    flexible: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(correlation_id);
    buf.put_i16(4);
    buf.put_slice(b"test");
    if flexible {
        buf.put_u8(0); // no tagged fields
    }
    buf.put_slice(body);
    let length = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    buf.to_vec()
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// A v2 record batch of `count` records with `value_len`-byte values;
/// idempotent when `producer` = (id, epoch, base sequence) is given.
fn batch(count: usize, value_len: usize, producer: Option<(i64, i16, i32)>) -> Bytes {
    let producer =
        producer.map(
            |(producer_id, producer_epoch, base_sequence)| encode::ProducerFields {
                producer_id,
                producer_epoch,
                base_sequence,
            },
        );
    let records: Vec<_> = (0..count as i64)
        .map(|i| {
            let key = Some(Bytes::from(format!("k{i}")));
            let value = Some(Bytes::from(vec![b'v'; value_len]));
            encode::record(i, 1_700_000_000_000 + i, key, value, producer)
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// A one-batch record set whose total size (with the 12-byte log overhead) is exactly `size`.
fn batch_of_size(size: usize) -> Bytes {
    (0..size)
        .map(|value_len| batch(1, value_len, None))
        .find(|b| b.len() >= size)
        .filter(|b| b.len() == size)
        .unwrap_or_else(|| panic!("no batch of exactly {size} bytes"))
}

fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A legacy (magic 0 or 1) message set holding one message.
fn legacy_message_set(magic: i8, value: &[u8]) -> Bytes {
    let mut message = BytesMut::new();
    message.put_i8(magic);
    message.put_i8(0); // attributes
    if magic == 1 {
        message.put_i64(1_700_000_000_000);
    }
    message.put_i32(-1); // null key
    message.put_i32(value.len() as i32);
    message.put_slice(value);
    let mut out = BytesMut::new();
    out.put_i64(0);
    out.put_i32(4 + message.len() as i32);
    out.put_u32(crc32_ieee(&message));
    out.put_slice(&message);
    out.freeze()
}

/// A hand-encoded Produce v0-v2 request (header v1): topic "legacy", partitions
/// 0 and 1, each with a magic-1 message set.
fn legacy_produce_frame(version: i16, correlation_id: i32, acks: i16) -> Vec<u8> {
    let records = legacy_message_set(1, b"hello");
    let mut body = BytesMut::new();
    body.put_i16(acks);
    body.put_i32(1000);
    body.put_i32(1); // topics
    body.put_i16(6);
    body.put_slice(b"legacy");
    body.put_i32(2); // partitions
    for partition in [0, 1] {
        body.put_i32(partition);
        body.put_i32(records.len() as i32);
        body.put_slice(&records);
    }
    raw_frame(0, version, correlation_id, false, &body)
}

// ---------------------------------------------------------------- tests

const SEEDS: [u64; 5] = [1, 7, 42, 1234, 0xC0FFEE];

/// 1. Random bytes, framed or not: the broker closes (or answers), then serves others.
#[test]
fn random_bytes_do_not_hurt_the_broker() {
    let broker = TestBroker::start();
    // Valid headers (non-flexible and flexible) for bodies of random bytes.
    let headers: [(ApiKey, i16); 8] = [
        (ApiKey::Produce, 3),
        (ApiKey::Produce, 9),
        (ApiKey::Metadata, 1),
        (ApiKey::Metadata, 12),
        (ApiKey::ListOffsets, 8),
        (ApiKey::CreateTopics, 7),
        (ApiKey::InitProducerId, 4),
        (ApiKey::ApiVersions, 3),
    ];
    for seed in SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);

        // a) An unframed stream of garbage, then end of input.
        let mut garbage = vec![0u8; rng.gen_range(1..8192)];
        rng.fill(&mut garbage[..]);
        let mut conn = Conn::open(&broker.addr);
        conn.send_raw(&garbage);
        let _ = conn.stream.shutdown(Shutdown::Write);
        if let Err(e) = conn.wait_closed(CLOSE_WITHIN) {
            panic!("seed {seed}: garbage stream: {e}");
        }
        assert_serves(&broker.addr, &format!("seed {seed}, after garbage stream"));

        // b) A well-formed length prefix around a random header and body: no
        //    such API, so the connection is closed without an answer.
        let mut payload = vec![0u8; rng.gen_range(10..2000)];
        rng.fill(&mut payload[..]);
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        let mut conn = Conn::open(&broker.addr);
        conn.send_raw(&frame);
        conn.assert_closed_silently(&format!(
            "seed {seed}: random frame (api key {})",
            i16::from_be_bytes([payload[0], payload[1]])
        ));
        assert_serves(&broker.addr, &format!("seed {seed}, after random frame"));

        // c) Valid headers, random bodies: answered or closed, never a hang or crash.
        for (key, version) in headers {
            let mut body = vec![0u8; rng.gen_range(0..600)];
            rng.fill(&mut body[..]);
            let correlation_id = rng.gen_range(1..i32::MAX);
            let flexible = key.request_header_version(version) >= 2;
            let mut conn = Conn::open(&broker.addr);
            conn.send_raw(&raw_frame(
                key as i16,
                version,
                correlation_id,
                flexible,
                &body,
            ));
            if let Err(e) = conn.answered_or_closed(correlation_id) {
                panic!("seed {seed}: {key:?} v{version} with a random body: {e}");
            }
            assert_serves(
                &broker.addr,
                &format!("seed {seed}, after random {key:?} v{version} body"),
            );
        }
    }
}

/// 2. Length prefixes out of range close the connection at once; the largest
///    allowed one does not.
#[test]
fn bad_length_prefixes_close_the_connection() {
    let broker = TestBroker::start();
    for length in [
        i32::MAX,
        200 << 20,
        MAX_REQUEST_BYTES + 1,
        -1,
        i32::MIN,
        0,
        9,
    ] {
        let mut conn = Conn::open(&broker.addr);
        let start = Instant::now();
        let mut frame = length.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0]);
        conn.send_raw(&frame);
        conn.assert_closed_silently(&format!("length prefix {length}"));
        assert!(
            start.elapsed() < CLOSE_WITHIN,
            "length prefix {length}: slow close"
        );
        assert_serves(&broker.addr, &format!("after length prefix {length}"));
    }
    // Exactly socket.request.max.bytes is legal: the broker waits for the rest.
    let mut conn = Conn::open(&broker.addr);
    conn.send_raw(&MAX_REQUEST_BYTES.to_be_bytes());
    assert!(
        conn.wait_closed(Duration::from_millis(300)).is_err(),
        "a length prefix of exactly socket.request.max.bytes was refused"
    );
    assert_serves(&broker.addr, "while a max-size request is pending");
}

/// 3. Array counts far beyond the bytes that follow must not make the broker
///    allocate for them (that used to abort the process).
#[test]
fn hostile_array_counts_do_not_kill_the_broker() {
    let broker = TestBroker::start();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    for (label, count) in [("2^31-1", 0x8000_0000u32), ("u32::MAX", u32::MAX)] {
        // Produce v9: null transactional id, acks, timeout, topic_data compact array.
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_i16(-1);
        body.put_i32(1000);
        put_unsigned_varint(&mut body, count);
        body.put_slice(&[1, 2]);
        cases.push((label, raw_frame(0, 9, 11, true, &body)));
        // Metadata v12: topics compact array.
        let mut body = BytesMut::new();
        put_unsigned_varint(&mut body, count);
        cases.push((label, raw_frame(3, 12, 12, true, &body)));
    }
    // Metadata v1: topics array i32 0x7fffffff and nothing more, or one topic's worth.
    cases.push((
        "metadata v1",
        raw_frame(3, 1, 13, false, &0x7fff_ffffi32.to_be_bytes()),
    ));
    let mut body = 0x7fff_ffffi32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, b'a', 0, 1]);
    cases.push(("metadata v1 + 1 topic", raw_frame(3, 1, 14, false, &body)));
    // Produce v3: one topic whose partition array claims 0x7fffffff entries.
    let mut body = BytesMut::new();
    body.put_i16(-1);
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(1);
    body.put_i16(1);
    body.put_u8(b't');
    body.put_i32(0x7fff_ffff);
    body.put_i32(0);
    cases.push(("produce v3 partitions", raw_frame(0, 3, 15, false, &body)));
    // CreateTopics v7: one topic whose configs compact array is huge.
    let mut body = BytesMut::new();
    put_unsigned_varint(&mut body, 2); // one topic
    put_unsigned_varint(&mut body, 2);
    body.put_u8(b't');
    body.put_i32(1);
    body.put_i16(1);
    put_unsigned_varint(&mut body, 1); // no assignments
    put_unsigned_varint(&mut body, u32::MAX); // configs
    cases.push((
        "create topics v7 configs",
        raw_frame(19, 7, 16, true, &body),
    ));

    let mut bystander = Conn::open(&broker.addr);
    let refused = |label: &str, frame: &[u8]| {
        let what = format!(
            "{label}: api key {}",
            i16::from_be_bytes([frame[4], frame[5]])
        );
        let mut conn = Conn::open(&broker.addr);
        conn.send_raw(frame);
        conn.assert_closed_silently(&what);
        assert_serves(&broker.addr, &format!("after {what}"));
    };
    for (label, frame) in &cases {
        refused(label, frame);
    }
    // A connection open throughout still works: the process never restarted.
    let _: ApiVersionsResponse = bystander.call(ApiKey::ApiVersions, 3, &api_versions_request());

    // A record batch whose record count is i32::MAX (valid CRC) is refused, not allocated for.
    let topic = common::topic("hostile-count");
    create_topic(&mut bystander, &topic, 1, &[]);
    let mut lying = BytesMut::from(&batch(1, 10, None)[..]);
    lying[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes()); // last offset delta
    lying[57..61].copy_from_slice(&i32::MAX.to_be_bytes()); // record count
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let answer = produce(&mut bystander, &topic, 0, lying.freeze());
    assert!(
        matches!(answer.error_code, CORRUPT_MESSAGE | INVALID_RECORD),
        "batch claiming i32::MAX records: error {}",
        answer.error_code
    );
    assert_eq!(latest_offset(&mut bystander, &topic, 0), 0);
    assert_serves(&broker.addr, "after a batch claiming i32::MAX records");

    let mut legacy: Vec<(&str, Vec<u8>)> = Vec::new();
    // Last, Produce v2 (served by a hand-written parser): huge topic and partition counts.
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(0x7fff_ffff);
    body.put_slice(&[0, 1, b't']);
    legacy.push(("produce v2 topics", raw_frame(0, 2, 17, false, &body)));
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(1);
    body.put_slice(&[0, 1, b't']);
    body.put_i32(0x7fff_ffff);
    body.put_i32(0);
    legacy.push(("produce v2 partitions", raw_frame(0, 2, 18, false, &body)));
    for (label, frame) in &legacy {
        refused(label, frame);
    }
}

/// 4. Unknown API keys and versions close only their own connection.
#[test]
fn unknown_api_or_version_closes_only_that_connection() {
    let broker = TestBroker::start();
    let mut before = Conn::open(&broker.addr);
    let _: ApiVersionsResponse = before.call(ApiKey::ApiVersions, 3, &api_versions_request());

    // (api key, version, flexible header): unknown key, negative key, Fetch v99,
    // Fetch v3 (below our 4), Metadata v13, a known-but-unserved API (JoinGroup).
    let bad: [(i16, i16, bool); 6] = [
        (9999, 0, false),
        (-1, 0, false),
        (1, 99, true),
        (1, 3, false),
        (3, 13, true),
        (11, 5, false),
    ];
    for (key, version, flexible) in bad {
        let mut conn = Conn::open(&broker.addr);
        conn.send_raw(&raw_frame(key, version, 77, flexible, &[0; 16]));
        conn.assert_closed_silently(&format!("api key {key} v{version}"));
        // The connection opened earlier still works.
        let metadata = metadata(&mut before, None, false);
        assert_eq!(metadata.brokers.len(), 1, "after api key {key} v{version}");
        assert_serves(&broker.addr, &format!("after api key {key} v{version}"));
    }

    // On one connection: requests before the bad one are answered, later ones are not.
    let mut conn = Conn::open(&broker.addr);
    let (first, mut bytes) = conn.frame(ApiKey::ApiVersions, 3, &api_versions_request());
    bytes.extend(raw_frame(1, 99, 1000, true, &[0; 16]));
    let (_, last) = conn.frame(ApiKey::ApiVersions, 3, &api_versions_request());
    bytes.extend(last);
    conn.send_raw(&bytes);
    let response: ApiVersionsResponse = conn.recv(ApiKey::ApiVersions, 3, first);
    assert_eq!(response.error_code, NONE);
    conn.assert_closed_silently("requests pipelined after Fetch v99");
}

/// 5. ApiVersions v0, v3 and a too-new v99 (answered as v0 with error 35), with our ranges.
#[test]
fn api_versions_old_new_and_too_new() {
    let broker = TestBroker::start();
    let check_ranges = |response: &ApiVersionsResponse, what: &str| {
        let range = |key: ApiKey| {
            response
                .api_keys
                .iter()
                .find(|k| k.api_key == key as i16)
                .map(|k| (k.min_version, k.max_version))
                .unwrap_or_else(|| panic!("{what}: {key:?} missing"))
        };
        assert_eq!(range(ApiKey::Produce), (0, 13), "{what}: Produce");
        assert_eq!(range(ApiKey::Fetch).1, 16, "{what}: Fetch max");
        assert_eq!(range(ApiKey::ApiVersions), (0, 4), "{what}: ApiVersions");
        assert_eq!(range(ApiKey::Metadata), (0, 12), "{what}: Metadata");
        assert_eq!(range(ApiKey::ListOffsets), (1, 8), "{what}: ListOffsets");
        assert_eq!(
            range(ApiKey::InitProducerId),
            (0, 5),
            "{what}: InitProducerId"
        );
    };
    let mut conn = Conn::open(&broker.addr);
    let v0: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    assert_eq!(v0.error_code, NONE);
    check_ranges(&v0, "v0");
    let v3: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &api_versions_request());
    assert_eq!(v3.error_code, NONE);
    check_ranges(&v3, "v3");

    // v99: header v2, body as v3 would have it; the answer is v0-encoded.
    let mut body = BytesMut::new();
    api_versions_request().encode(&mut body, 3).unwrap();
    conn.send_raw(&raw_frame(18, 99, 4242, true, &body));
    let mut frame = conn.recv_frame();
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, 4242);
    let v99 = ApiVersionsResponse::decode(&mut frame, 0).expect("v99 answer decodes as v0");
    assert_eq!(
        frame.remaining(),
        0,
        "v99 answer has trailing bytes beyond v0"
    );
    assert_eq!(v99.error_code, UNSUPPORTED_VERSION);
    check_ranges(&v99, "v99");
    // The client may retry on the same connection with a version we speak.
    let again: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &api_versions_request());
    assert_eq!(again.error_code, NONE);
}

/// 6. Produce v0-v2 is advertised but answered with UNSUPPORTED_VERSION per partition.
#[test]
fn legacy_produce_is_answered_unsupported() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    for version in 0..=2i16 {
        let correlation_id = 500 + i32::from(version);
        conn.send_raw(&legacy_produce_frame(version, correlation_id, 1));
        let mut frame = conn.recv_frame();
        assert_eq!(
            frame.get_i32(),
            correlation_id,
            "Produce v{version}: correlation id"
        );
        assert_eq!(frame.get_i32(), 1, "Produce v{version}: topic count");
        let name_len = frame.get_i16() as usize;
        assert_eq!(
            &frame.split_to(name_len)[..],
            b"legacy",
            "Produce v{version}: topic"
        );
        assert_eq!(frame.get_i32(), 2, "Produce v{version}: partition count");
        for partition in [0, 1] {
            assert_eq!(frame.get_i32(), partition, "Produce v{version}: partition");
            assert_eq!(
                frame.get_i16(),
                UNSUPPORTED_VERSION,
                "Produce v{version}: error"
            );
            assert_eq!(frame.get_i64(), -1, "Produce v{version}: base offset");
            if version >= 2 {
                assert_eq!(frame.get_i64(), -1, "Produce v{version}: log append time");
            }
        }
        if version >= 1 {
            assert_eq!(frame.get_i32(), 0, "Produce v{version}: throttle time");
        }
        assert_eq!(frame.remaining(), 0, "Produce v{version}: trailing bytes");
    }
    // acks=0: no answer at all; the next answer is for the next request.
    conn.send_raw(&legacy_produce_frame(2, 600, 0));
    let _: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &api_versions_request());
}

/// 7. Produce v9 validation errors write nothing; a valid batch then gets offset 0.
#[test]
fn produce_rejects_bad_batches_and_writes_nothing() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("bad-batches");
    create_topic(&mut conn, &topic, 1, &[("max.message.bytes", "2000")]);

    let mut corrupt = BytesMut::from(&batch(3, 20, None)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55; // a value byte: the CRC no longer matches
    let mut two = BytesMut::from(&batch(2, 10, None)[..]);
    two.extend_from_slice(&batch(2, 10, None));
    let cases: [(&str, Bytes, i16); 5] = [
        ("corrupt CRC", corrupt.freeze(), CORRUPT_MESSAGE),
        (
            "magic 1",
            legacy_message_set(1, b"old"),
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
        ),
        (
            "magic 0",
            legacy_message_set(0, b"older"),
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
        ),
        ("two batches", two.freeze(), INVALID_RECORD),
        ("2001-byte batch", batch_of_size(2001), MESSAGE_TOO_LARGE),
    ];
    for (what, records, expected) in cases {
        let answer = produce(&mut conn, &topic, 0, records);
        assert_eq!(
            answer.error_code, expected,
            "{what}: {:?}",
            answer.error_message
        );
        assert_eq!(answer.base_offset, -1, "{what}: base offset");
        assert_eq!(
            latest_offset(&mut conn, &topic, 0),
            0,
            "{what} wrote something"
        );
    }
    let unknown = produce(
        &mut conn,
        &common::topic("no-such-topic"),
        0,
        batch(1, 5, None),
    );
    assert_eq!(unknown.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let no_partition = produce(&mut conn, &topic, 1, batch(1, 5, None));
    assert_eq!(
        no_partition.error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "partition 1 of 1"
    );

    let ok = produce(&mut conn, &topic, 0, batch(3, 20, None));
    assert_appended(&ok, 0, "valid batch");
    assert_eq!(latest_offset(&mut conn, &topic, 0), 3);
    // max.message.bytes bounds the whole batch, inclusively.
    let full = produce(&mut conn, &topic, 0, batch_of_size(2000));
    assert_appended(&full, 3, "a batch of exactly max.message.bytes");
    assert_eq!(latest_offset(&mut conn, &topic, 0), 4);
}

/// 8. A request cut short (with a consistent length prefix) closes the connection.
#[test]
fn truncated_requests_close_the_connection() {
    let broker = TestBroker::start();
    let topic = common::topic("truncated");
    let frames = [
        (
            "Produce v9",
            Conn::frame_with(
                ApiKey::Produce,
                9,
                5,
                &produce_request(&topic, 0, batch(2, 8, None)),
            ),
        ),
        (
            "Metadata v12",
            Conn::frame_with(
                ApiKey::Metadata,
                12,
                6,
                &metadata_request(Some(&[&topic]), true),
            ),
        ),
        (
            "Metadata v4",
            Conn::frame_with(
                ApiKey::Metadata,
                4,
                7,
                &metadata_request(Some(&[&topic]), true),
            ),
        ),
        (
            "ApiVersions v3",
            Conn::frame_with(ApiKey::ApiVersions, 3, 8, &api_versions_request()),
        ),
        // Last: Produce v0-2 bodies are parsed by hand, not by the codec.
        ("Produce v2", legacy_produce_frame(2, 9, 1)),
    ];
    for (what, frame) in &frames {
        let payload = &frame[4..];
        for cut in 0..payload.len() {
            let mut conn = Conn::open(&broker.addr);
            let mut bytes = (cut as i32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&payload[..cut]);
            conn.send_raw(&bytes);
            conn.assert_closed_silently(&format!("{what} cut to {cut} of {} bytes", payload.len()));
        }
        // The uncut request is fine.
        let mut conn = Conn::open(&broker.addr);
        conn.send_raw(frame);
        let correlation_id = i32::from_be_bytes(frame[8..12].try_into().unwrap());
        assert_eq!(
            conn.answered_or_closed(correlation_id),
            Ok(Outcome::Answered),
            "{what} uncut"
        );
    }
    assert_serves(&broker.addr, "after truncated requests");
}

/// 9. Pipelined requests are answered in request order.
#[test]
fn pipelined_responses_come_back_in_order() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        // Correlation ids that are not in increasing order.
        let correlation_id = 10_000 - 37 * i + (i % 4) * 1000;
        let (key, version) = match i % 4 {
            0 => {
                // Auto-creates a topic: slower than its neighbours.
                let topic = common::topic("pipelined");
                let request = metadata_request(Some(&[&topic]), true);
                bytes.extend(Conn::frame_with(
                    ApiKey::Metadata,
                    12,
                    correlation_id,
                    &request,
                ));
                (ApiKey::Metadata, 12)
            }
            1 | 3 => {
                let request = api_versions_request();
                bytes.extend(Conn::frame_with(
                    ApiKey::ApiVersions,
                    3,
                    correlation_id,
                    &request,
                ));
                (ApiKey::ApiVersions, 3)
            }
            _ => {
                // v1 has no auto-create flag (it is implied true).
                let request = metadata_request(None, true);
                bytes.extend(Conn::frame_with(
                    ApiKey::Metadata,
                    1,
                    correlation_id,
                    &request,
                ));
                (ApiKey::Metadata, 1)
            }
        };
        expected.push((correlation_id, key, version));
    }
    conn.send_raw(&bytes);
    for (i, (correlation_id, key, version)) in expected.into_iter().enumerate() {
        if key == ApiKey::ApiVersions {
            let r: ApiVersionsResponse = conn.recv(key, version, correlation_id);
            assert_eq!(r.error_code, NONE, "response {i}");
        } else {
            let r: MetadataResponse = conn.recv(key, version, correlation_id);
            assert_eq!(r.brokers.len(), 1, "response {i}");
        }
    }
    // More than the broker's per-connection in-flight cap (64): back-pressure, no stall.
    let mut bytes = Vec::new();
    for i in 0..150 {
        let request = api_versions_request();
        bytes.extend(Conn::frame_with(
            ApiKey::ApiVersions,
            3,
            50_000 + i,
            &request,
        ));
    }
    conn.send_raw(&bytes);
    for i in 0..150 {
        let _: ApiVersionsResponse = conn.recv(ApiKey::ApiVersions, 3, 50_000 + i);
    }
}

/// 10. Idempotent produce: a retried batch is acknowledged with its first offset
///     and not written again; a sequence gap is refused.
#[test]
fn idempotent_produce_on_the_wire() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("idempotent");
    create_topic(&mut conn, &topic, 1, &[]);
    let mut request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    request.transactional_id = None;
    let init: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &request);
    assert_eq!(init.error_code, NONE);
    assert!(
        init.producer_id.0 >= 0,
        "producer id {:?}",
        init.producer_id
    );
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);

    let first = batch(3, 10, Some((pid, epoch, 0)));
    let a = produce(&mut conn, &topic, 0, first.clone());
    assert_appended(&a, 0, "first batch");
    let retry = produce(&mut conn, &topic, 0, first.clone());
    assert_appended(&retry, 0, "retry");
    assert_eq!(
        latest_offset(&mut conn, &topic, 0),
        3,
        "the retry was written again"
    );

    let gap = produce(&mut conn, &topic, 0, batch(2, 10, Some((pid, epoch, 5))));
    assert_eq!(
        gap.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "sequence 5 after 0..2"
    );
    assert_eq!(
        latest_offset(&mut conn, &topic, 0),
        3,
        "the out-of-order batch was written"
    );

    let next = produce(&mut conn, &topic, 0, batch(2, 10, Some((pid, epoch, 3))));
    assert_appended(&next, 3, "sequence 3");
    // An older batch retried late is still recognised (Kafka keeps the last 5).
    let late = produce(&mut conn, &topic, 0, first);
    assert_appended(&late, 0, "late retry");
    assert_eq!(latest_offset(&mut conn, &topic, 0), 5);
}

/// 11. Produce v13 (KIP-516) names topics by id: the batch is appended and the
///     answer carries the id; an unknown or nil id is UNKNOWN_TOPIC_ID and
///     writes nothing; Fetch by the same id reads the record back.
#[test]
fn produce_v13_addresses_topics_by_id() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("by-id");
    create_topic(&mut conn, &name, 2, &[]);
    let described = metadata(&mut conn, Some(&[&name]), false);
    let id = described.topics[0].topic_id;
    assert!(!id.is_nil(), "{described:?}");
    let by_id = |id: uuid::Uuid, partition: i32, value: &str| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_topic_id(id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(common::wire::value_batch(value)))])])
    };
    for (i, partition) in [1, 1, 0].into_iter().enumerate() {
        let response: ProduceResponse =
            conn.call(ApiKey::Produce, 13, &by_id(id, partition, &format!("v{i}")));
        assert_eq!(response.responses.len(), 1);
        assert_eq!(response.responses[0].topic_id, id, "{response:?}");
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.index, partition);
        let expected = if i == 1 { 1 } else { 0 };
        assert_appended(answer, expected, &format!("v13 record {i}"));
    }
    for unknown in [uuid::Uuid::new_v4(), uuid::Uuid::nil()] {
        let response: ProduceResponse = conn.call(ApiKey::Produce, 13, &by_id(unknown, 0, "lost"));
        assert_eq!(response.responses[0].topic_id, unknown);
        assert_eq!(
            response.responses[0].partition_responses[0].error_code,
            common::wire::UNKNOWN_TOPIC_ID,
            "{unknown}: {response:?}"
        );
    }
    assert_eq!(
        latest_offset(&mut conn, &name, 0),
        1,
        "nothing more written"
    );
    assert_eq!(latest_offset(&mut conn, &name, 1), 2);
    let request = common::wire::sessionless(13, &name, id, &[(1, 0, 1 << 20)], 0, 0, 1 << 20);
    let response = common::wire::fetch(&mut conn, 13, &request);
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, NONE);
    let mut records = p.records.clone().unwrap_or_default();
    let values: Vec<String> = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values, ["v0", "v1"]);
}
