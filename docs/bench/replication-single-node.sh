#!/bin/bash
# Single node, before (88f729f) vs after (daad504), alternating.
set -u
B=/work/main/target/release/sluice-bench
run() { # $1 binary tag, $2 extra bench args
  rm -rf /work/scratch/single-data
  /work/scratch/sluice-$1 --listen 127.0.0.1:19192 --data-dir /work/scratch/single-data > /work/scratch/single-$1.log 2>&1 &
  pid=$!
  sleep 1.5
  $B produce --bootstrap 127.0.0.1:19192 --topic t --partitions 3 --message-bytes 1024 --duration-s 8 --warmup-s 2 --acks all $2 2>&1 | grep -E "produced|^  ack"
  kill $pid; wait $pid 2>/dev/null
}
for round in 1 2 3; do
  for tag in before after; do
    echo "=== round $round $tag unthrottled"; run $tag ""
  done
done
for tag in before after; do
  echo "=== $tag at 5000/s"; run $tag "--rate 5000"
done
