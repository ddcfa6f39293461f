#!/usr/bin/env python3
"""kafka-python's transactional producer against a running broker.

Usage: kafka_python_transactions.py ADDR TOPIC

Creates TOPIC with 3 partitions; one transactional producer commits 50
records, aborts 50, commits 50; then a second instance of the same
transactional id fences a first one that has a transaction open (its commit
must fail and its records must stay invisible). A read_committed consumer
must see exactly the committed records, each once; a read_uncommitted one
every record written.

Exits non-zero with a message on any mismatch; prints one summary line on
success.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

PARTITIONS = 3
TIMEOUT_S = 60


def fail(msg):
    print(f"kafka_python_transactions: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def step(msg):
    print(f"kafka_python_transactions: {msg}", flush=True)


def producer(addr, txn_id):
    p = KafkaProducer(
        bootstrap_servers=addr,
        transactional_id=txn_id,
        acks="all",
        request_timeout_ms=30000,
    )
    p.init_transactions()
    return p


def read_all(addr, topic, isolation, at_least):
    consumer = KafkaConsumer(
        bootstrap_servers=addr,
        isolation_level=isolation,
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values = []
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        batch = consumer.poll(timeout_ms=500)
        got = [m.value.decode() for records in batch.values() for m in records]
        values.extend(got)
        if not got and len(values) >= at_least:
            break
    consumer.close()
    return values


def main():
    addr, topic = sys.argv[1], sys.argv[2]
    admin = KafkaAdminClient(bootstrap_servers=addr)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()

    p = producer(addr, "kafka-python-txn")
    committed = set()
    for round_, commit in [(0, True), (1, False), (2, True)]:
        p.begin_transaction()
        for i in range(50):
            value = f"r{round_}-{i}"
            p.send(topic, key=f"k{i}".encode(), value=value.encode())
            if commit:
                committed.add(value)
        if commit:
            p.commit_transaction()
        else:
            # Written first, so that the abort has records to hide (an
            # abort drops records still in the producer's buffer).
            p.flush()
            p.abort_transaction()
    step("committed 100 records and aborted 50")

    zombie = producer(addr, "kafka-python-fence")
    zombie.begin_transaction()
    for i in range(10):
        zombie.send(topic, value=f"zombie-{i}".encode())
    zombie.flush()
    fresh = producer(addr, "kafka-python-fence")
    fresh.begin_transaction()
    for i in range(10):
        value = f"fresh-{i}"
        fresh.send(topic, value=value.encode())
        committed.add(value)
    fresh.commit_transaction()
    try:
        zombie.commit_transaction()
        fail("the fenced instance committed")
    except Exception as e:  # kafka-python raises ProducerFencedError (or a wrapper)
        step(f"the fenced instance cannot commit: {type(e).__name__}")

    seen = read_all(addr, topic, "read_committed", len(committed))
    if len(seen) != len(set(seen)):
        fail(f"duplicates under read_committed: {len(seen)} records, {len(set(seen))} distinct")
    if set(seen) != committed:
        extra = sorted(set(seen) - committed)[:5]
        missing = sorted(committed - set(seen))[:5]
        fail(f"read_committed saw the wrong records: extra {extra}, missing {missing}")
    everything = read_all(addr, topic, "read_uncommitted", 170)
    if len(everything) != 170:
        fail(f"read_uncommitted saw {len(everything)} records, not 170")
    print(
        f"kafka_python_transactions: ok: read_committed {len(seen)} records, "
        f"read_uncommitted {len(everything)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
