//! Puts the same record batches on two brokers, byte for byte, so that a
//! consume comparison reads the same data from both.
//!
//! A consumer's speed depends on how the data is batched (per-batch work in
//! the client, and librdkafka's mock cluster serves at most one batch per
//! partition per Fetch), and a producer's batching depends on the broker it
//! writes to. So the data is taken once, as a client wrote it to the broker
//! under test, and copied batch by batch with raw Produce requests (a client
//! library would re-batch it) into a new topic on every destination.

use anyhow::{bail, Result};

use crate::wire::{self, Conn};

/// Largest Fetch used to read the source.
const READ_BYTES: i32 = 4 << 20;

/// What was copied to each destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub batches: u64,
    pub messages: u64,
    pub bytes: u64,
}

/// Reads whole batches from the start (`starts[p]`) of every partition of
/// `topic` on `source`, up to `max_bytes` and `max_messages` per partition,
/// and appends them, in order and one batch per partition per request, to
/// `dest_topic` (which must exist with as many partitions) on each of `dests`.
pub fn copy_prefix(
    source: &str,
    topic: &str,
    starts: &[(i32, i64)],
    max_bytes: usize,
    max_messages: u64,
    dests: &[&str],
    dest_topic: &str,
) -> Result<Copied> {
    let mut conn = Conn::connect(source, "sluice-bench-copy")?;
    let mut per_partition: Vec<(i32, Vec<Vec<u8>>)> = Vec::with_capacity(starts.len());
    let mut copied = Copied {
        batches: 0,
        messages: 0,
        bytes: 0,
    };
    for &(partition, start) in starts {
        let (mut offset, mut bytes, mut messages) = (start, 0usize, 0u64);
        let mut kept = Vec::new();
        'fetching: loop {
            let fetched = conn.fetch(topic, partition, offset, READ_BYTES)?;
            let high_watermark = fetched.high_watermark;
            let found = wire::batches(fetched.records)?;
            if found.is_empty() {
                if offset < high_watermark {
                    bail!("{topic}/{partition}: no whole batch at offset {offset} within {READ_BYTES} bytes");
                }
                break;
            }
            for (base, last, batch) in found {
                let count = (last - base + 1).max(0) as u64;
                if bytes + batch.len() > max_bytes || messages + count > max_messages {
                    break 'fetching;
                }
                bytes += batch.len();
                messages += count;
                offset = last + 1;
                kept.push(batch.to_vec());
            }
            if offset >= high_watermark {
                break;
            }
        }
        copied.batches += kept.len() as u64;
        copied.messages += messages;
        copied.bytes += bytes as u64;
        per_partition.push((partition, kept));
    }

    let rounds = per_partition
        .iter()
        .map(|(_, b)| b.len())
        .max()
        .unwrap_or(0);
    for dest in dests {
        let mut conn = Conn::connect(dest, "sluice-bench-copy")?;
        for round in 0..rounds {
            let request: Vec<(i32, &[u8])> = per_partition
                .iter()
                .filter_map(|(p, batches)| batches.get(round).map(|b| (*p, b.as_slice())))
                .collect();
            conn.produce(dest_topic, &request)?;
        }
    }
    Ok(copied)
}
