#!/usr/bin/env python3
"""kafka-python smoke test against a running broker.

Usage: kafka_python_smoke.py ADDR TOPIC

Creates TOPIC with 2 partitions, describes it, produces 1000 keyed messages
(plain, idempotent, and gzip-compressed; some with headers), then reads both
partitions back from the beginning with a group-less consumer and checks that
every message came back exactly once, per-partition offsets are contiguous
from 0, each key maps to one partition, and headers round-trip.

Exits non-zero with a message on any mismatch; prints one summary line on
success.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

TOTAL = 1000
KEYS = 37  # distinct keys; not a multiple of 2 so both partitions get traffic
PARTITIONS = 2
TIMEOUT_S = 60


def fail(msg):
    print(f"kafka_python_smoke: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def step(msg):
    print(f"kafka_python_smoke: {msg}", flush=True)


def expected_message(i):
    key = f"key-{i % KEYS}".encode()
    value = f"value-{i:05d}".encode()
    headers = [("idx", str(i).encode()), ("kind", b"smoke")] if i % 3 == 0 else []
    return key, value, headers


def main():
    if len(sys.argv) != 3:
        fail("usage: kafka_python_smoke.py ADDR TOPIC")
    addr, topic = sys.argv[1], sys.argv[2]

    # --- admin: create + describe -----------------------------------------
    admin = KafkaAdminClient(bootstrap_servers=addr, client_id="kp-smoke-admin",
                             request_timeout_ms=30000)
    admin.create_topics([NewTopic(name=topic, num_partitions=PARTITIONS,
                                  replication_factor=1)], timeout_ms=30000)
    step(f"created topic {topic}")
    names = admin.list_topics()
    if topic not in names:
        fail(f"list_topics() does not include {topic}: {names}")
    described = admin.describe_topics([topic])
    if len(described) != 1:
        fail(f"describe_topics returned {len(described)} entries: {described}")
    d = described[0]
    if d.get("error_code", 0) != 0:
        fail(f"describe_topics error for {topic}: {d}")
    got_parts = sorted(p["partition"] for p in d["partitions"])
    if got_parts != list(range(PARTITIONS)):
        fail(f"describe_topics shows partitions {got_parts}, expected {list(range(PARTITIONS))}")
    step(f"described topic: partitions {got_parts}")
    admin.close()

    # --- produce ----------------------------------------------------------
    # Messages [0, 250): plain producer, acks=all.
    # Messages [250, 500): idempotent producer, acks=all.
    # Messages [500, 1000): gzip producer, acks=all.
    producers = [
        ("plain", range(0, 250), dict(acks="all")),
        ("idempotent", range(250, 500), dict(acks="all", enable_idempotence=True)),
        ("gzip", range(500, 1000), dict(acks="all", compression_type="gzip",
                                         linger_ms=20)),
    ]
    sent = {}  # i -> (partition, offset)
    for name, idxs, cfg in producers:
        producer = KafkaProducer(bootstrap_servers=addr, client_id=f"kp-smoke-{name}",
                                 request_timeout_ms=30000, **cfg)
        futures = []
        for i in idxs:
            key, value, headers = expected_message(i)
            futures.append((i, producer.send(topic, key=key, value=value,
                                             headers=headers)))
        producer.flush(timeout=TIMEOUT_S)
        for i, fut in futures:
            try:
                md = fut.get(timeout=TIMEOUT_S)
            except Exception as e:  # noqa: BLE001
                fail(f"{name} producer: send of message {i} failed: {e!r}")
            sent[i] = (md.partition, md.offset)
        producer.close(timeout=10)
        step(f"{name} producer sent {len(idxs)} messages")
    if len(sent) != TOTAL:
        fail(f"expected {TOTAL} acked sends, got {len(sent)}")

    key_partition = {}
    for i, (p, _) in sent.items():
        key = expected_message(i)[0]
        if key_partition.setdefault(key, p) != p:
            fail(f"producer put key {key!r} on partitions {key_partition[key]} and {p}")
    if len(set(key_partition.values())) != PARTITIONS:
        fail(f"expected keys spread over {PARTITIONS} partitions, got "
             f"{sorted(set(key_partition.values()))}")

    # --- consume (no group: explicit assignment) --------------------------
    consumer = KafkaConsumer(bootstrap_servers=addr, group_id=None,
                             client_id="kp-smoke-consumer",
                             enable_auto_commit=False,
                             auto_offset_reset="earliest",
                             request_timeout_ms=30000)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    end_total = sum(end.values())
    if end_total != TOTAL:
        fail(f"end_offsets {end} sum to {end_total}, expected {TOTAL}")
    begin = consumer.beginning_offsets(tps)
    if any(v != 0 for v in begin.values()):
        fail(f"beginning_offsets should all be 0, got {begin}")

    records = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(records) < TOTAL and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=1000)
        for _tp, recs in batch.items():
            records.extend(recs)
    # A short extra poll to catch any duplicates delivered past the end.
    for recs in consumer.poll(timeout_ms=500).values():
        records.extend(recs)
    consumer.close()
    if len(records) != TOTAL:
        fail(f"consumed {len(records)} records, expected {TOTAL}")

    # --- verify -----------------------------------------------------------
    by_value = {}
    offsets = {p: [] for p in range(PARTITIONS)}
    for r in records:
        if r.topic != topic:
            fail(f"record from unexpected topic {r.topic!r}")
        offsets[r.partition].append(r.offset)
        try:
            i = int(r.value.decode().split("-")[1])
        except Exception:  # noqa: BLE001
            fail(f"unexpected value {r.value!r} at {r.partition}/{r.offset}")
        if i in by_value:
            fail(f"message {i} consumed twice (at {by_value[i].partition}/"
                 f"{by_value[i].offset} and {r.partition}/{r.offset})")
        by_value[i] = r
    missing = sorted(set(range(TOTAL)) - set(by_value))
    if missing:
        fail(f"{len(missing)} messages never consumed, first: {missing[:10]}")

    for p, offs in offsets.items():
        if offs != list(range(len(offs))):
            fail(f"partition {p}: offsets not contiguous from 0 in consume order: "
                 f"first bad near {next((j for j, o in enumerate(offs) if o != j), None)}")
        if len(offs) != end[TopicPartition(topic, p)]:
            fail(f"partition {p}: consumed {len(offs)} but end offset is "
                 f"{end[TopicPartition(topic, p)]}")

    consumed_key_partition = {}
    headers_checked = 0
    for i, r in by_value.items():
        key, value, headers = expected_message(i)
        if r.key != key:
            fail(f"message {i}: key {r.key!r}, expected {key!r}")
        if r.value != value:
            fail(f"message {i}: value {r.value!r}, expected {value!r}")
        if (r.partition, r.offset) != sent[i]:
            fail(f"message {i}: consumed at {r.partition}/{r.offset} but the "
                 f"producer was acked {sent[i][0]}/{sent[i][1]}")
        if consumed_key_partition.setdefault(key, r.partition) != r.partition:
            fail(f"key {key!r} consumed from partitions "
                 f"{consumed_key_partition[key]} and {r.partition}")
        got_headers = [(h[0], h[1]) for h in (r.headers or [])]
        if got_headers != headers:
            fail(f"message {i}: headers {got_headers!r}, expected {headers!r}")
        headers_checked += bool(headers)

    # Messages per partition must also be in production order per key.
    last_by_key = {}
    for p in range(PARTITIONS):
        for r in sorted((r for r in records if r.partition == p), key=lambda r: r.offset):
            i = int(r.value.decode().split("-")[1])
            if last_by_key.get(r.key, -1) > i:
                fail(f"key {r.key!r}: message {i} after {last_by_key[r.key]}")
            last_by_key[r.key] = i

    counts = {p: len(o) for p, o in offsets.items()}
    print(f"kafka_python_smoke OK: kafka-python {__import__('kafka').__version__}, "
          f"topic {topic}, {TOTAL} messages (250 plain, 250 idempotent, 500 gzip) "
          f"consumed exactly once, per-partition counts {counts}, "
          f"{len(key_partition)} keys stable, {headers_checked} with headers",
          flush=True)


if __name__ == "__main__":
    main()
