//! Puts the same record batches on two brokers, byte for byte, so that a
//! consume comparison reads the same data from both.
//!
//! A consumer's speed depends on how the data is batched (per-batch work in
//! the client, and librdkafka's mock cluster serves at most one batch per
//! partition per Fetch), and a producer's batching depends on the broker it
//! writes to. So the data is taken once, as a client wrote it to the broker
//! under test, and copied batch by batch with raw Produce requests (a client
//! library would re-batch it) into a new topic on every destination.

use std::collections::{BTreeMap, HashMap};

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

/// Where a topic's partitions are: the address of each partition's leader.
pub type Leaders = HashMap<i32, String>;

/// One connection per broker address, opened when first needed.
#[derive(Default)]
struct Conns(HashMap<String, Conn>);

impl Conns {
    fn to(&mut self, address: &str) -> Result<&mut Conn> {
        if !self.0.contains_key(address) {
            let conn = Conn::connect(address, "sluice-bench-copy")?;
            self.0.insert(address.to_string(), conn);
        }
        Ok(self.0.get_mut(address).expect("just inserted"))
    }
}

fn leader<'a>(leaders: &'a Leaders, topic: &str, partition: i32) -> Result<&'a str> {
    match leaders.get(&partition) {
        Some(address) => Ok(address),
        None => bail!("{topic}/{partition}: no leader known"),
    }
}

/// Reads whole batches from the start (`starts[p]`) of every partition of
/// `topic` (on the brokers `source`), up to `max_bytes` and `max_messages`
/// per partition, and appends them, in order and one batch per partition per
/// request, to `dest_topic` (which must exist with as many partitions) on
/// each destination. Fails if some partition with data yields no whole batch
/// within the limits.
pub fn copy_prefix(
    source: &Leaders,
    topic: &str,
    starts: &[(i32, i64)],
    max_bytes: usize,
    max_messages: u64,
    dests: &[Leaders],
    dest_topic: &str,
) -> Result<Copied> {
    let mut conns = Conns::default();
    let mut per_partition: Vec<(i32, Vec<Vec<u8>>)> = Vec::with_capacity(starts.len());
    let mut copied = Copied {
        batches: 0,
        messages: 0,
        bytes: 0,
    };
    for &(partition, start) in starts {
        let conn = conns.to(leader(source, topic, partition)?)?;
        let (mut offset, mut bytes, mut messages) = (start, 0usize, 0u64);
        let mut kept = Vec::new();
        let mut high_watermark: i64;
        'fetching: loop {
            let fetched = conn.fetch(topic, partition, offset, READ_BYTES)?;
            high_watermark = fetched.high_watermark;
            let found = wire::batches(fetched.records)?;
            if found.is_empty() {
                if offset < high_watermark {
                    bail!("{topic}/{partition}: the broker returned no whole batch at offset {offset}");
                }
                break;
            }
            for (base, last, batch) in found {
                let count = last.saturating_sub(base).saturating_add(1).max(0) as u64;
                if bytes + batch.len() > max_bytes || messages + count > max_messages {
                    break 'fetching;
                }
                bytes += batch.len();
                messages += count;
                offset = last.saturating_add(1);
                kept.push(batch.to_vec());
            }
            if offset >= high_watermark {
                break;
            }
        }
        if kept.is_empty() && start < high_watermark {
            bail!(
                "{topic}/{partition}: its first batch is over the copy's limits \
                 ({max_bytes} bytes, {max_messages} messages per partition)"
            );
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
        for round in 0..rounds {
            // This round's batches, one per partition, grouped by leader.
            let mut by_leader: BTreeMap<&str, Vec<(i32, &[u8])>> = BTreeMap::new();
            for (partition, batches) in &per_partition {
                if let Some(batch) = batches.get(round) {
                    by_leader
                        .entry(leader(dest, dest_topic, *partition)?)
                        .or_default()
                        .push((*partition, batch.as_slice()));
                }
            }
            for (address, request) in by_leader {
                conns.to(address)?.produce(dest_topic, &request)?;
            }
        }
    }
    Ok(copied)
}
