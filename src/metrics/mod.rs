//! Metrics: counters and histograms the shards update with relaxed atomics (each
//! shard writes only its own slot, so there is no contention), rendered in the
//! Prometheus text format by an HTTP endpoint on its own port (`http.rs`).
//!
//! What a user sees: per-API request counts and latency histograms, bytes in
//! and out, open connections, per-partition log end offsets and sizes, per-shard
//! queue depths and busy (CPU) time, group-commit batch sizes and sync latency.
//! Values that live in shard-local state (partition sizes) are collected at
//! scrape time by asking each shard over its queue, so the hot path pays nothing
//! for them.

pub mod http;
pub mod render;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// API keys are below this (Kafka's highest is in the 70s).
pub const API_SLOTS: usize = 96;

/// Upper bounds (seconds) of the latency buckets.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Upper bounds of the group-commit batch-size buckets (appends per sync round).
pub const BATCH_BOUNDS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A histogram with fixed bucket bounds; the last bucket is +Inf.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum of observations in millionths of the unit (microseconds for latencies).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// (upper bound, cumulative count) per bucket, +Inf last, then (count, sum).
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            out.push((
                self.bounds.get(i).copied().unwrap_or(f64::INFINITY),
                cumulative,
            ));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (out, cumulative, sum)
    }
}

/// What one shard records.
pub struct ShardMetrics {
    /// Request handling time per API key (decode to response ready).
    pub requests: Vec<Histogram>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections: AtomicI64,
    /// Connections closed at once because the broker held `--max-connections`.
    pub connections_refused: AtomicU64,
    /// Appends covered per group-commit round.
    pub commit_batch: Histogram,
    /// Duration of a group-commit round (the fdatasyncs it runs).
    pub commit_sync_seconds: Histogram,
    /// Request bytes read and not yet answered, over all connections.
    pub request_bytes_in_flight: AtomicU64,
    /// The largest value `request_bytes_in_flight` has had.
    pub request_bytes_in_flight_max: AtomicU64,
    /// The shard thread's kernel id, for its CPU time (0 until it starts).
    pub thread_id: AtomicI64,
    /// Record bytes put in Fetch responses, by reader (consumer, follower)
    /// and by how they are sent (spliced from the segment file, or copied
    /// through memory).
    pub fetch_record_bytes: [[AtomicU64; 2]; 2],
}

/// Who a Fetch's records are for, as `ShardMetrics::fetch_record_bytes`
/// indexes them.
#[derive(Debug, Clone, Copy)]
pub enum FetchReader {
    Consumer = 0,
    Follower = 1,
}

/// How a Fetch's record bytes are sent, as `ShardMetrics::fetch_record_bytes`
/// indexes them.
#[derive(Debug, Clone, Copy)]
pub enum FetchPath {
    Spliced = 0,
    Copied = 1,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            requests: (0..API_SLOTS)
                .map(|_| Histogram::new(&LATENCY_BOUNDS))
                .collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            commit_batch: Histogram::new(&BATCH_BOUNDS),
            commit_sync_seconds: Histogram::new(&LATENCY_BOUNDS),
            request_bytes_in_flight: AtomicU64::new(0),
            request_bytes_in_flight_max: AtomicU64::new(0),
            thread_id: AtomicI64::new(0),
            fetch_record_bytes: Default::default(),
        }
    }
}

impl ShardMetrics {
    pub fn fetched(&self, reader: FetchReader, path: FetchPath, bytes: usize) {
        if bytes > 0 {
            self.fetch_record_bytes[reader as usize][path as usize]
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn request_done(&self, api_key: i16, elapsed: Duration) {
        if let Some(h) = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.requests.get(k))
        {
            h.observe_duration(elapsed);
        }
    }

    pub fn add_in(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn add_out(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Records the calling thread as this shard's.
    pub fn set_current_thread(&self) {
        let tid = nix::unistd::gettid().as_raw();
        self.thread_id.store(i64::from(tid), Ordering::Relaxed);
    }
}

/// Every shard's metrics.
pub struct Metrics {
    pub shards: Vec<ShardMetrics>,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
        }
    }
}

/// What a scrape renders: the registry, and what the broker gathers at scrape
/// time from the shards and from the layers this module does not know.
pub struct Snapshot<'a> {
    pub metrics: &'a Metrics,
    /// The APIs the broker serves, in the order to show them.
    pub apis: Vec<kafka_protocol::messages::ApiKey>,
    /// Jobs waiting in each shard's cross-shard queue.
    pub queue_depths: Vec<usize>,
    /// The open file limit and its budget, as (kind, value).
    pub file_descriptors: Vec<(&'static str, u64)>,
    /// Page-aligned read buffers kept for reuse.
    pub read_buffer_pool_bytes: u64,
    /// Every partition of every shard that answered.
    pub partitions: Vec<PartitionSample>,
}

/// What a shard reports of one partition it owns, at scrape time.
#[derive(Debug, Clone)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&LATENCY_BOUNDS);
        for v in [0.000_05, 0.000_2, 0.003, 0.003, 20.0] {
            h.observe(v);
        }
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 5);
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(buckets[0], (0.000_1, 1));
        assert_eq!(buckets[1], (0.000_25, 2));
        assert_eq!(buckets[5], (0.005, 4));
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 5));
        assert!((sum - 20.00625).abs() < 1e-4, "sum {sum}");
        // A value equal to a bound falls in that bound's bucket (le semantics).
        let h = Histogram::new(&BATCH_BOUNDS);
        h.observe(4.0);
        assert_eq!(h.snapshot().0[2], (4.0, 1));
        assert_eq!(h.snapshot().0[1], (2.0, 0));
    }
}
