#!/usr/bin/env python3
"""kafka-python consumer group test against a running broker.

Usage: kafka_python_group.py ADDR TOPIC GROUP

Creates TOPIC (2 partitions) and produces 200 messages. A first KafkaConsumer
in GROUP (manual commits, auto_offset_reset='earliest') reads at least 120 of
them, commits its position and closes (leaving the group). The admin client
then sees the committed offsets and the lag against the end offsets. A second
consumer in GROUP must resume exactly at the committed offsets and read the
rest: every message once, none twice. While it is a member, the group is
listed and described as Stable with one member owning both partitions, and
deleting it fails with NON_EMPTY_GROUP. Once it closed, the group is Empty,
deleting it succeeds, and it is neither listed nor has offsets any more.

Exits non-zero with a message on any mismatch; prints one summary line on
success.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

PARTITIONS = 2
TOTAL = 200
FIRST_AT_LEAST = 120
TIMEOUT_S = 60


def fail(msg):
    print(f"kafka_python_group: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def step(msg):
    print(f"kafka_python_group: {msg}", flush=True)


def consumer(addr, group, client_id):
    return KafkaConsumer(
        bootstrap_servers=addr,
        group_id=group,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_records=10,
        # One small batch per partition and fetch: both partitions advance together.
        max_partition_fetch_bytes=256,
    )


def consume(c, who, want_total, seen, first_offsets):
    """Polls until `seen` holds want_total messages; fails on a duplicate."""
    deadline = time.time() + TIMEOUT_S
    while len(seen) < want_total:
        if time.time() > deadline:
            fail(f"{who}: timed out with {len(seen)} of {want_total} messages "
                 f"(assignment {sorted(c.assignment())})")
        for tp, records in c.poll(timeout_ms=500).items():
            for r in records:
                key = (r.partition, r.offset)
                if key in seen:
                    fail(f"{who}: read partition {r.partition} offset {r.offset} twice")
                seen[key] = r.value
                first_offsets.setdefault(r.partition, r.offset)


def group_listed(admin, group):
    return any(g[0] == group for g in admin.list_consumer_groups())


def main():
    if len(sys.argv) != 4:
        fail("usage: kafka_python_group.py ADDR TOPIC GROUP")
    addr, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    admin = KafkaAdminClient(bootstrap_servers=addr, client_id="kp-group-admin",
                             request_timeout_ms=30000)
    admin.create_topics([NewTopic(name=topic, num_partitions=PARTITIONS,
                                  replication_factor=1)], timeout_ms=30000)

    # --- produce -----------------------------------------------------------
    producer = KafkaProducer(bootstrap_servers=addr, acks="all")
    produced = {}
    futures = []
    for i in range(TOTAL):
        value = f"value-{i:04d}".encode()
        futures.append((value, producer.send(topic, value=value, partition=i % PARTITIONS)))
        if i % 10 == 9:
            producer.flush(timeout=30)  # small batches, so that fetches interleave
    producer.flush(timeout=30)
    for value, f in futures:
        md = f.get(timeout=30)
        produced[(md.partition, md.offset)] = value
    producer.close()
    if len(produced) != TOTAL:
        fail(f"produced {len(produced)} distinct offsets, expected {TOTAL}")
    step(f"produced {TOTAL} messages to {topic}")

    # --- first consumer: read part, commit, close ---------------------------
    c1 = consumer(addr, group, "kp-group-1")
    c1.subscribe([topic])
    seen1, first1 = {}, {}
    consume(c1, "consumer 1", FIRST_AT_LEAST, seen1, first1)
    c1.commit()  # synchronous: the positions of everything poll() returned
    committed = {}
    for tp in tps:
        read = [o for (p, o) in seen1 if p == tp.partition]
        expected = max(read) + 1 if read else None
        got = c1.committed(tp)
        if got != expected:
            fail(f"consumer 1: committed({tp}) = {got}, expected {expected} "
                 f"(last offset read + 1)")
        committed[tp.partition] = got
    c1.close()  # leaves the group
    step(f"consumer 1 read {len(seen1)}, committed {committed}, closed")

    # --- admin: offsets and lag of the empty group ---------------------------
    offsets = admin.list_consumer_group_offsets(group)
    got = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
    if got != committed:
        fail(f"list_consumer_group_offsets({group}) = {offsets}, expected {committed}")
    probe = KafkaConsumer(bootstrap_servers=addr)
    ends = {tp.partition: o for tp, o in probe.end_offsets(tps).items()}
    probe.close()
    lag = {p: ends[p] - committed[p] for p in committed}
    if not any(lag.values()):
        fail(f"consumer 1 read everything ({committed}); nothing left to resume")
    if sum(lag.values()) != TOTAL - len(seen1):
        fail(f"lag {lag} (end offsets {ends}) does not add up to the "
             f"{TOTAL - len(seen1)} unread messages")
    step(f"group offsets {got}, end offsets {ends}, lag {lag}")

    # --- second consumer resumes exactly at the committed offsets ------------
    c2 = consumer(addr, group, "kp-group-2")
    c2.subscribe([topic])
    seen2, first2 = {}, {}
    consume(c2, "consumer 2", TOTAL - len(seen1), seen2, first2)
    for p, offset in committed.items():
        if offset < ends[p] and first2.get(p) != offset:
            fail(f"consumer 2: first offset of partition {p} is {first2.get(p)}, "
                 f"expected the committed {offset}")
    both = set(seen1) & set(seen2)
    if both:
        fail(f"read by both consumers: {sorted(both)[:10]}")
    seen = {**seen1, **seen2}
    if seen != produced:
        missing = sorted(set(produced) - set(seen))[:10]
        extra = sorted(set(seen) - set(produced))[:10]
        fail(f"consumed != produced: missing {missing}, unexpected {extra}")
    c2.commit()
    step(f"consumer 2 resumed at {first2} and read the other {len(seen2)}")

    # --- admin while consumer 2 is a member ---------------------------------
    if not group_listed(admin, group):
        fail(f"list_consumer_groups() does not include {group}: {admin.list_consumer_groups()}")
    if (group, "consumer") not in admin.list_consumer_groups():
        fail(f"list_consumer_groups(): {group} not listed with protocol type 'consumer'")
    described = admin.describe_consumer_groups([group])
    if len(described) != 1:
        fail(f"describe_consumer_groups returned {len(described)} entries: {described}")
    d = described[0]
    if d.group != group or d.state != "Stable" or d.protocol_type != "consumer":
        fail(f"describe_consumer_groups: expected {group} Stable consumer, got {d}")
    if len(d.members) != 1:
        fail(f"describe_consumer_groups: expected 1 member, got {d.members}")
    m = d.members[0]
    if m.client_id != "kp-group-2":
        fail(f"describe_consumer_groups: member client id {m.client_id!r}, expected 'kp-group-2'")
    owned = sorted(m.member_assignment.partitions()) if m.member_assignment else []
    if owned != sorted(tps):
        fail(f"describe_consumer_groups: member assignment {owned}, expected {sorted(tps)}")
    result = admin.delete_consumer_groups([group])
    if len(result) != 1 or result[0][0] != group or getattr(result[0][1], "errno", None) != 68:
        fail(f"deleting a group with a member: expected NON_EMPTY_GROUP (68), got {result}")
    offsets = admin.list_consumer_group_offsets(group)
    got = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
    if got != ends:
        fail(f"after consumer 2 committed: group offsets {got}, expected the end offsets {ends}")
    step(f"while consumer 2 is a member: listed, described Stable, delete refused, lag 0")
    c2.close()

    # --- empty group: delete ------------------------------------------------
    d = admin.describe_consumer_groups([group])[0]
    if d.state != "Empty" or d.members:
        fail(f"after the last member closed: expected Empty without members, got {d}")
    result = admin.delete_consumer_groups([group])
    if len(result) != 1 or result[0][0] != group or getattr(result[0][1], "errno", None) != 0:
        fail(f"deleting the empty group: expected no error, got {result}")
    if group_listed(admin, group):
        fail(f"{group} still listed after delete_consumer_groups: {admin.list_consumer_groups()}")
    offsets = admin.list_consumer_group_offsets(group)
    if any(tp.topic == topic for tp in offsets):
        fail(f"deleted group still has offsets: {offsets}")
    admin.close()
    print(f"kafka_python_group: OK: {len(seen1)}+{len(seen2)} of {TOTAL} messages, "
          f"resumed at {committed}, group described, listed and deleted", flush=True)


if __name__ == "__main__":
    main()
