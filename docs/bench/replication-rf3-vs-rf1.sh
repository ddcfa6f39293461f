#!/bin/bash
# RF=3 vs RF=1 on one 3-node cluster, interleaved rounds.
set -u
cd /work/scratch/rf
./start.sh
sleep 4
python3 - <<'PY'
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers="127.0.0.1:19092")
a.create_topics([NewTopic("bench-rf1", 3, 1), NewTopic("bench-rf3", 3, 3, topic_configs={"min.insync.replicas": "2"})])
PY
sleep 2
B=/work/main/target/release/sluice-bench
for round in 1 2 3; do
  for t in bench-rf1 bench-rf3; do
    echo "=== round $round $t"
    $B produce --bootstrap 127.0.0.1:19092 --topic $t --message-bytes 1024 --duration-s 8 --warmup-s 2 --acks all --out /work/scratch/rf/out-$t-$round 2>&1 | tail -12
  done
done
for t in bench-rf1 bench-rf3; do
  echo "=== latency at 5000 msg/s $t"
  $B produce --bootstrap 127.0.0.1:19092 --topic $t --message-bytes 1024 --duration-s 8 --warmup-s 2 --acks all --rate 5000 --out /work/scratch/rf/rate-$t 2>&1 | tail -12
done
for n in 1 2 3; do kill $(cat pid-$n); done
