//! Results of runs and how they are shown: terminal tables, results.csv,
//! results.json, the baseline comparison and the error summary.
//!
//! MB means 10^6 bytes; bytes are value + key as the application sees them
//! (no protocol or batch overhead, no compression).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::histogram::Percentiles;

#[derive(Debug, Clone, Serialize)]
pub struct ProduceStats {
    /// Measured messages the producers tried to send (acked + failed).
    pub messages: u64,
    pub acked: u64,
    pub failed: u64,
    pub bytes: u64,
    /// From the end of the warm-up to the last acknowledgement.
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Messages acknowledged during the warm-up (not in the numbers above).
    pub warmup_messages: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeStats {
    /// Measured messages (for e2e: those sent after the warm-up).
    pub messages: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Every message consumed, warm-up included.
    pub total_consumed: u64,
    /// What the consumers should have read: e2e, every acked message; consume,
    /// the requested count or what the topic held at the start.
    pub expected: Option<u64>,
    /// expected - total_consumed when positive (counted as errors).
    pub missing: u64,
}

/// One run (or one sweep point) against one broker.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// "target" (the broker given by --bootstrap) or "mock" (the baseline).
    pub broker: String,
    pub bootstrap: String,
    pub mode: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    pub consumers: usize,
    pub keys: u64,
    pub idempotence: bool,
    pub batch_bytes: u64,
    pub linger_ms: u64,
    pub message_bytes: String,
    pub acks: String,
    pub compression: String,
    /// msgs/s, 0 = unthrottled.
    pub rate: f64,
    pub warmup_s: f64,
    pub requested_messages: Option<u64>,
    pub requested_duration_s: Option<f64>,
    pub produce: Option<ProduceStats>,
    pub consume: Option<ConsumeStats>,
    pub ack_latency: Option<Percentiles>,
    pub e2e_latency: Option<Percentiles>,
    /// Transactional producers only.
    pub transactions: Option<TxnStats>,
    pub errors: BTreeMap<String, u64>,
    pub error_count: u64,
}

/// What transactional producers did: transactions ended and how long each
/// end (commit or abort, with the flush of its messages) took.
#[derive(Debug, Clone, Serialize)]
pub struct TxnStats {
    pub messages_per_transaction: u64,
    pub abort_percent: f64,
    pub committed: u64,
    pub aborted: u64,
    pub committed_messages: u64,
    pub commit_latency: Percentiles,
}

impl RunResult {
    /// The latency a sweep compares settings by: end-to-end when measured,
    /// else producer acknowledgement.
    pub fn latency(&self) -> Option<&Percentiles> {
        self.e2e_latency
            .as_ref()
            .filter(|p| p.count > 0)
            .or(self.ack_latency.as_ref())
    }

    pub fn latency_kind(&self) -> &'static str {
        if self.e2e_latency.as_ref().is_some_and(|p| p.count > 0) {
            "e2e"
        } else {
            "ack"
        }
    }

    /// Throughput in MB/s: produced if producing, else consumed.
    pub fn mb_per_s(&self) -> f64 {
        self.produce
            .as_ref()
            .map(|p| p.mb_per_s)
            .or(self.consume.as_ref().map(|c| c.mb_per_s))
            .unwrap_or(0.0)
    }

    pub fn msgs_per_s(&self) -> f64 {
        self.produce
            .as_ref()
            .map(|p| p.msgs_per_s)
            .or(self.consume.as_ref().map(|c| c.msgs_per_s))
            .unwrap_or(0.0)
    }

    pub fn rate_label(&self) -> String {
        if self.rate > 0.0 {
            format!("{}/s", self.rate)
        } else {
            "max".into()
        }
    }
}

/// A metric of the target next to the mock baseline's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub metric: String,
    pub target: f64,
    pub mock: f64,
    /// target / mock (None when the mock's value is 0).
    pub ratio: Option<f64>,
}

/// Everything a run writes to results.json.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub mode: String,
    pub command_line: Vec<String>,
    pub started_unix_s: u64,
    pub results: Vec<RunResult>,
    pub baseline_mock: Vec<RunResult>,
    /// Per run (or sweep point), the target/mock comparison.
    pub ratios: Vec<Vec<Ratio>>,
    pub p99_budget_ms: Option<f64>,
    pub best_within_budget: Option<RunResult>,
    pub total_errors: u64,
}

pub fn fmt_count(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn fmt_ms(ms: f64) -> String {
    format!("{ms:.3}")
}

/// Renders rows under headers; the first `left` columns align left, the rest right.
pub fn table(headers: &[String], rows: &[Vec<String>], left: usize) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate().take(cols) {
            if i > 0 {
                s.push_str("  ");
            }
            if i < left {
                let _ = write!(s, "{c:<w$}", w = width[i]);
            } else {
                let _ = write!(s, "{c:>w$}", w = width[i]);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers);
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn latency_row(name: &str, p: &Percentiles) -> Vec<String> {
    vec![
        name.to_string(),
        fmt_count(p.count as f64),
        fmt_ms(p.p50_ms),
        fmt_ms(p.p90_ms),
        fmt_ms(p.p99_ms),
        fmt_ms(p.p99_9_ms),
        fmt_ms(p.p99_99_ms),
        fmt_ms(p.max_ms),
    ]
}

/// The terminal summary of one run.
pub fn render_run(r: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} against {} ({}), topic {} ({} partitions)",
        r.mode, r.broker, r.bootstrap, r.topic, r.partitions
    );
    let _ = writeln!(
        s,
        "  batch.size={} linger.ms={} acks={} compression={} message={} B keys={} producers={} consumers={} rate={} idempotence={} warm-up={} s",
        r.batch_bytes,
        r.linger_ms,
        r.acks,
        r.compression,
        r.message_bytes,
        if r.keys == 0 { "none".to_string() } else { r.keys.to_string() },
        r.producers,
        r.consumers,
        r.rate_label(),
        r.idempotence,
        r.warmup_s
    );
    let mut rows = Vec::new();
    if let Some(p) = &r.produce {
        rows.push(vec![
            "produced".into(),
            fmt_count(p.acked as f64),
            fmt_count(p.failed as f64),
            format!("{:.2}", p.bytes as f64 / 1e6),
            format!("{:.3}", p.elapsed_s),
            fmt_count(p.msgs_per_s),
            format!("{:.2}", p.mb_per_s),
        ]);
    }
    if let Some(c) = &r.consume {
        rows.push(vec![
            "consumed".into(),
            fmt_count(c.messages as f64),
            fmt_count(c.missing as f64),
            format!("{:.2}", c.bytes as f64 / 1e6),
            format!("{:.3}", c.elapsed_s),
            fmt_count(c.msgs_per_s),
            format!("{:.2}", c.mb_per_s),
        ]);
    }
    let headers: Vec<String> = ["", "messages", "failed", "MB", "seconds", "msgs/s", "MB/s"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    s.push_str(&indent(&table(&headers, &rows, 1)));
    let mut lat = Vec::new();
    if let Some(p) = &r.ack_latency {
        lat.push(latency_row("ack", p));
    }
    if let Some(p) = &r.e2e_latency {
        lat.push(latency_row("end-to-end", p));
    }
    if let Some(t) = &r.transactions {
        lat.push(latency_row("commit", &t.commit_latency));
        let _ = writeln!(
            s,
            "  transactions of {} messages: {} committed ({} messages), {} aborted (--abort-percent {})",
            t.messages_per_transaction, t.committed, t.committed_messages, t.aborted, t.abort_percent
        );
    }
    if !lat.is_empty() {
        let headers: Vec<String> = [
            "latency (ms)",
            "count",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "max",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect();
        s.push_str(&indent(&table(&headers, &lat, 1)));
    }
    s.push_str(&render_errors(&r.errors));
    s
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn render_errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "  errors: none\n".into();
    }
    let total: u64 = errors.values().sum();
    let mut s = format!("  errors: {total}\n");
    for (k, n) in errors {
        let _ = writeln!(s, "    {n:>10}  {k}");
    }
    s
}

/// The metrics compared between the target and the mock baseline.
pub fn ratios(t: &RunResult, m: &RunResult) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut push = |metric: &str, a: Option<f64>, b: Option<f64>| {
        if let (Some(a), Some(b)) = (a, b) {
            out.push(Ratio {
                metric: metric.into(),
                target: a,
                mock: b,
                ratio: if b != 0.0 { Some(a / b) } else { None },
            });
        }
    };
    push(
        "produce msgs/s",
        t.produce.as_ref().map(|p| p.msgs_per_s),
        m.produce.as_ref().map(|p| p.msgs_per_s),
    );
    push(
        "produce MB/s",
        t.produce.as_ref().map(|p| p.mb_per_s),
        m.produce.as_ref().map(|p| p.mb_per_s),
    );
    type Get = fn(&Percentiles) -> f64;
    let pcts: [(&str, Get); 4] = [
        ("p50 ms", |p| p.p50_ms),
        ("p99 ms", |p| p.p99_ms),
        ("p99.9 ms", |p| p.p99_9_ms),
        ("max ms", |p| p.max_ms),
    ];
    for (name, get) in pcts {
        push(
            &format!("ack {name}"),
            t.ack_latency.as_ref().map(get),
            m.ack_latency.as_ref().map(get),
        );
    }
    push(
        "consume msgs/s",
        t.consume.as_ref().map(|c| c.msgs_per_s),
        m.consume.as_ref().map(|c| c.msgs_per_s),
    );
    push(
        "consume MB/s",
        t.consume.as_ref().map(|c| c.mb_per_s),
        m.consume.as_ref().map(|c| c.mb_per_s),
    );
    for (name, get) in pcts {
        push(
            &format!("e2e {name}"),
            t.e2e_latency.as_ref().map(get),
            m.e2e_latency.as_ref().map(get),
        );
    }
    push(
        "errors",
        Some(t.error_count as f64),
        Some(m.error_count as f64),
    );
    out
}

pub fn render_ratios(rs: &[Ratio]) -> String {
    let headers: Vec<String> = ["metric", "target", "mock", "target/mock"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let num = |v: f64| {
        if v.abs() >= 1000.0 {
            fmt_count(v)
        } else {
            format!("{v:.3}")
        }
    };
    let rows: Vec<Vec<String>> = rs
        .iter()
        .map(|r| {
            vec![
                r.metric.clone(),
                num(r.target),
                num(r.mock),
                r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            ]
        })
        .collect();
    table(&headers, &rows, 1)
}

const CSV_HEADER: &[&str] = &[
    "broker",
    "bootstrap",
    "mode",
    "topic",
    "partitions",
    "producers",
    "consumers",
    "keys",
    "idempotence",
    "batch_bytes",
    "linger_ms",
    "message_bytes",
    "acks",
    "compression",
    "rate",
    "warmup_s",
    "produced_messages",
    "acked",
    "failed",
    "produced_bytes",
    "produce_s",
    "produce_msgs_per_s",
    "produce_mb_per_s",
    "consumed_messages",
    "consumed_bytes",
    "consume_s",
    "consume_msgs_per_s",
    "consume_mb_per_s",
    "missing",
    "ack_count",
    "ack_p50_ms",
    "ack_p90_ms",
    "ack_p99_ms",
    "ack_p99_9_ms",
    "ack_p99_99_ms",
    "ack_max_ms",
    "e2e_count",
    "e2e_p50_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
    "e2e_p99_9_ms",
    "e2e_p99_99_ms",
    "e2e_max_ms",
    "errors",
];

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(r: &RunResult) -> Vec<String> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let p = r.produce.as_ref();
    let c = r.consume.as_ref();
    let mut row = vec![
        r.broker.clone(),
        r.bootstrap.clone(),
        r.mode.clone(),
        r.topic.clone(),
        r.partitions.to_string(),
        r.producers.to_string(),
        r.consumers.to_string(),
        r.keys.to_string(),
        r.idempotence.to_string(),
        r.batch_bytes.to_string(),
        r.linger_ms.to_string(),
        r.message_bytes.clone(),
        r.acks.clone(),
        r.compression.clone(),
        r.rate.to_string(),
        r.warmup_s.to_string(),
        opt(p.map(|p| p.messages.to_string())),
        opt(p.map(|p| p.acked.to_string())),
        opt(p.map(|p| p.failed.to_string())),
        opt(p.map(|p| p.bytes.to_string())),
        opt(p.map(|p| format!("{:.6}", p.elapsed_s))),
        opt(p.map(|p| format!("{:.1}", p.msgs_per_s))),
        opt(p.map(|p| format!("{:.3}", p.mb_per_s))),
        opt(c.map(|c| c.messages.to_string())),
        opt(c.map(|c| c.bytes.to_string())),
        opt(c.map(|c| format!("{:.6}", c.elapsed_s))),
        opt(c.map(|c| format!("{:.1}", c.msgs_per_s))),
        opt(c.map(|c| format!("{:.3}", c.mb_per_s))),
        opt(c.map(|c| c.missing.to_string())),
    ];
    for l in [&r.ack_latency, &r.e2e_latency] {
        match l {
            Some(l) => {
                row.push(l.count.to_string());
                for v in [
                    l.p50_ms,
                    l.p90_ms,
                    l.p99_ms,
                    l.p99_9_ms,
                    l.p99_99_ms,
                    l.max_ms,
                ] {
                    row.push(format!("{v:.3}"));
                }
            }
            None => row.extend(std::iter::repeat_n(String::new(), 7)),
        }
    }
    row.push(r.error_count.to_string());
    row
}

pub fn write_csv(path: &Path, runs: &[&RunResult]) -> Result<()> {
    let mut s = CSV_HEADER.join(",");
    s.push('\n');
    for r in runs {
        let row: Vec<String> = csv_row(r).iter().map(|f| csv_field(f)).collect();
        s.push_str(&row.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

pub fn write_json(path: &Path, report: &Report) -> Result<()> {
    let s = serde_json::to_string_pretty(report).context("encoding results.json")?;
    std::fs::write(path, s + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_tables() {
        assert_eq!(fmt_count(1234567.4), "1,234,567");
        assert_eq!(fmt_count(999.0), "999");
        let t = table(
            &["a".into(), "bb".into()],
            &[vec!["xyz".into(), "1".into()]],
            1,
        );
        assert_eq!(t, "a    bb\nxyz   1\n");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("q\""), "\"q\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn csv_rows_match_the_header() {
        let r = RunResult {
            broker: "target".into(),
            bootstrap: "x:1".into(),
            mode: "produce".into(),
            topic: "t".into(),
            partitions: 1,
            producers: 1,
            consumers: 0,
            keys: 0,
            idempotence: false,
            batch_bytes: 1,
            linger_ms: 0,
            message_bytes: "10-20".into(),
            acks: "all".into(),
            compression: "none".into(),
            rate: 0.0,
            warmup_s: 0.0,
            requested_messages: Some(1),
            requested_duration_s: None,
            produce: None,
            consume: None,
            ack_latency: Some(Percentiles::default()),
            transactions: None,
            e2e_latency: None,
            errors: BTreeMap::new(),
            error_count: 0,
        };
        assert_eq!(csv_row(&r).len(), CSV_HEADER.len());
    }
}
