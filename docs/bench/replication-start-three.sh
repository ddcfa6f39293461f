#!/bin/bash
# start.sh: three brokers on 19092/29092/39092, controllers on +1
BIN=/work/main/target/release/sluice
V="1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"
for id in 1 2 3; do
  $BIN --node-id $id --listen 127.0.0.1:${id}9092 --controller-listen 127.0.0.1:${id}9093 \
    --controller-quorum-voters $V --data-dir /work/scratch/rf/node-$id \
    --controller-quorum-election-timeout-ms 300 --broker-heartbeat-interval-ms 200 --broker-session-timeout-ms 2000 \
    > /work/scratch/rf/log-$id.txt 2>&1 &
  echo $! > /work/scratch/rf/pid-$id
done
