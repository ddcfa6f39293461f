#!/usr/bin/env python3
"""Reads every record of a topic with kafka-python, for a history check.

Usage: kafka_python_dump.py ADDR TOPIC PARTITIONS

Assigns partitions 0..PARTITIONS-1 (no group), reads each from the beginning
up to the end offset the broker reports when the read starts, and prints one
line per record: `PARTITION OFFSET VALUE` (values are UTF-8 text). Exits
non-zero if the end offsets are not reached within 60 s.
"""
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main():
    addr, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    consumer = KafkaConsumer(
        bootstrap_servers=addr,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=20000,
    )
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    positions = {tp: 0 for tp in partitions}
    deadline = time.time() + 60
    while any(positions[tp] < ends[tp] for tp in partitions):
        if time.time() > deadline:
            print(f"kafka_python_dump: FAIL: ends {ends} not reached: {positions}", file=sys.stderr)
            sys.exit(1)
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                print(f"{tp.partition} {r.offset} {r.value.decode()}")
                positions[tp] = r.offset + 1
    consumer.close()


if __name__ == "__main__":
    main()
