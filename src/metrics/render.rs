//! The Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::metrics::{Histogram, PartitionSample, Snapshot};

/// Renders every metric of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let metrics = snapshot.metrics;
    let partitions = &snapshot.partitions;
    let mut out = String::with_capacity(16 * 1024);

    header(
        &mut out,
        "sluice_request_duration_seconds",
        "histogram",
        "Time from a request's decoding to its response being ready, by API.",
    );
    for api in &snapshot.apis {
        let key = *api as i16 as usize;
        let name = format!("{api:?}");
        let merged: Vec<&Histogram> = metrics.shards.iter().map(|s| &s.requests[key]).collect();
        histogram(
            &mut out,
            "sluice_request_duration_seconds",
            &format!("api=\"{name}\""),
            &merged,
        );
    }
    header(
        &mut out,
        "sluice_requests_total",
        "counter",
        "Requests handled, by API.",
    );
    for api in &snapshot.apis {
        let key = *api as i16 as usize;
        let count: u64 = metrics.shards.iter().map(|s| s.requests[key].count()).sum();
        let _ = writeln!(out, "sluice_requests_total{{api=\"{api:?}\"}} {count}");
    }

    header(
        &mut out,
        "sluice_network_bytes_total",
        "counter",
        "Bytes of request frames read and response frames written, by shard.",
    );
    for (id, s) in metrics.shards.iter().enumerate() {
        for (direction, value) in [("in", &s.bytes_in), ("out", &s.bytes_out)] {
            let _ = writeln!(
                out,
                "sluice_network_bytes_total{{shard=\"{id}\",direction=\"{direction}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
    header(
        &mut out,
        "sluice_fetch_record_bytes_total",
        "counter",
        "Record bytes put in Fetch responses, by reader (consumer, follower) and path (splice: from the segment file to the socket; copy: through memory).",
    );
    for (reader, r) in [("consumer", 0), ("follower", 1)] {
        for (path, p) in [("splice", 0), ("copy", 1)] {
            let total: u64 = metrics
                .shards
                .iter()
                .map(|s| s.fetch_record_bytes[r][p].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "sluice_fetch_record_bytes_total{{reader=\"{reader}\",path=\"{path}\"}} {total}"
            );
        }
    }
    gauge_per_shard(
        &mut out,
        "sluice_connections",
        "Open client connections, by shard.",
        metrics
            .shards
            .iter()
            .map(|s| s.connections.load(Ordering::Relaxed) as f64),
    );
    header(
        &mut out,
        "sluice_connections_refused_total",
        "counter",
        "Connections closed at once because the broker held --max-connections, by shard.",
    );
    for (id, s) in metrics.shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "sluice_connections_refused_total{{shard=\"{id}\"}} {}",
            s.connections_refused.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "sluice_file_descriptors",
        "gauge",
        "The open file limit and how it is shared out (limit; the most connections may hold; \
         the most segments may hold; what open segments may hold now).",
    );
    for (kind, value) in &snapshot.file_descriptors {
        let _ = writeln!(out, "sluice_file_descriptors{{kind=\"{kind}\"}} {value}");
    }
    gauge_per_shard(
        &mut out,
        "sluice_shard_queue_depth",
        "Jobs waiting in a shard's cross-shard queue.",
        snapshot.queue_depths.iter().map(|&d| d as f64),
    );
    gauge_per_shard(
        &mut out,
        "sluice_shard_request_bytes_in_flight",
        "Request bytes read and not yet answered, over a shard's connections.",
        metrics
            .shards
            .iter()
            .map(|s| s.request_bytes_in_flight.load(Ordering::Relaxed) as f64),
    );
    gauge_per_shard(
        &mut out,
        "sluice_shard_request_bytes_in_flight_max",
        "The largest sluice_shard_request_bytes_in_flight seen since start.",
        metrics
            .shards
            .iter()
            .map(|s| s.request_bytes_in_flight_max.load(Ordering::Relaxed) as f64),
    );
    header(
        &mut out,
        "sluice_read_buffer_pool_bytes",
        "gauge",
        "Bytes of page-aligned read buffers kept for reuse by the copying Fetch path (at most 64 MiB).",
    );
    let _ = writeln!(
        out,
        "sluice_read_buffer_pool_bytes {}",
        snapshot.read_buffer_pool_bytes
    );
    header(
        &mut out,
        "sluice_shard_busy_seconds_total",
        "counter",
        "CPU time (user + system) of each shard thread.",
    );
    for (id, s) in metrics.shards.iter().enumerate() {
        if let Some(seconds) = thread_cpu_seconds(s.thread_id.load(Ordering::Relaxed)) {
            let _ = writeln!(
                out,
                "sluice_shard_busy_seconds_total{{shard=\"{id}\"}} {seconds}"
            );
        }
    }

    header(
        &mut out,
        "sluice_group_commit_batch_appends",
        "histogram",
        "Appends made durable by one group-commit round (one fdatasync per file), by shard.",
    );
    for (id, s) in metrics.shards.iter().enumerate() {
        histogram(
            &mut out,
            "sluice_group_commit_batch_appends",
            &format!("shard=\"{id}\""),
            &[&s.commit_batch],
        );
    }
    header(
        &mut out,
        "sluice_group_commit_sync_seconds",
        "histogram",
        "Duration of a group-commit round's fdatasyncs, by shard.",
    );
    for (id, s) in metrics.shards.iter().enumerate() {
        histogram(
            &mut out,
            "sluice_group_commit_sync_seconds",
            &format!("shard=\"{id}\""),
            &[&s.commit_sync_seconds],
        );
    }

    for (name, help, value) in [
        (
            "sluice_partition_log_end_offset",
            "Offset after the last readable batch.",
            (|p: &PartitionSample| p.log_end_offset as f64) as fn(&PartitionSample) -> f64,
        ),
        (
            "sluice_partition_log_start_offset",
            "First offset still in the log.",
            |p| p.log_start_offset as f64,
        ),
        (
            "sluice_partition_size_bytes",
            "Bytes of the partition's segment files.",
            |p| p.size_bytes as f64,
        ),
        (
            "sluice_partition_segments",
            "Segment files of the partition.",
            |p| p.segments as f64,
        ),
    ] {
        header(&mut out, name, "gauge", help);
        for p in partitions {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                escape(&p.topic),
                p.partition,
                value(p)
            );
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge_per_shard(out: &mut String, name: &str, help: &str, values: impl Iterator<Item = f64>) {
    header(out, name, "gauge", help);
    for (id, value) in values.enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{id}\"}} {value}");
    }
}

/// One histogram series, the sum of `parts` (same bounds).
fn histogram(out: &mut String, name: &str, labels: &str, parts: &[&Histogram]) {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let (mut count, mut sum) = (0u64, 0f64);
    for part in parts {
        let (b, c, s) = part.snapshot();
        if buckets.is_empty() {
            buckets = b;
        } else {
            for (acc, (_, n)) in buckets.iter_mut().zip(b) {
                acc.1 += n;
            }
        }
        count += c;
        sum += s;
    }
    for (bound, cumulative) in buckets {
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{bound}")
        };
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// CPU seconds of thread `tid` of this process: from `schedstat` (time on a
/// CPU, in nanoseconds) where the kernel has it, else user + system ticks.
fn thread_cpu_seconds(tid: i64) -> Option<f64> {
    if tid <= 0 {
        return None;
    }
    let task = format!("/proc/self/task/{tid}");
    if let Ok(schedstat) = std::fs::read_to_string(format!("{task}/schedstat")) {
        if let Some(ns) = schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Some(ns as f64 / 1e9);
        }
    }
    let stat = std::fs::read_to_string(format!("{task}/stat")).ok()?;
    // Fields after the parenthesised command name: state is the first, utime
    // and stime the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_threads_cpu_time_is_readable() {
        let tid = nix::unistd::gettid().as_raw();
        // Spin for 200 ms of wall-clock time: the kernel counts CPU time in
        // ticks (10 ms), so a shorter spin (an optimised loop) may read 0.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        std::hint::black_box(x);
        let seconds = thread_cpu_seconds(i64::from(tid)).expect("readable");
        assert!(
            seconds > 0.0,
            "200 ms of spinning takes CPU time: {seconds}"
        );
        assert!(thread_cpu_seconds(0).is_none());
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
