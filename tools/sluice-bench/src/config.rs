//! Command line: the flags, and their resolution into one or more
//! [`Workload`]s (one per grid point in `sweep`, one otherwise).
//!
//! The flag names are a contract: scripts drive the tool with them (issue 4),
//! so they are spelled out explicitly rather than derived.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// librdkafka's own defaults, used when a flag is absent so that an
/// unconfigured run measures what an unconfigured application gets.
const DEFAULT_BATCH_BYTES: &str = "1000000";
const DEFAULT_LINGER_MS: &str = "5";
/// The grid `sweep` explores when a dimension is not given on the command line.
const SWEEP_BATCH_BYTES: &str = "1024,4096,16384,65536,262144,1000000";
const SWEEP_LINGER_MS: &str = "0,5";

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load generator for any Kafka-compatible broker: throughput, producer-ack and \
             end-to-end latency (HDR histograms, open-loop at a fixed rate), batch-size sweeps"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Produce to a topic (created if missing); report throughput and ack latency.
    Produce(Args),
    /// Read a topic from the beginning; report throughput.
    Consume(Args),
    /// Produce and consume together; report end-to-end latency as well.
    E2e(Args),
    /// Run a grid of batch size x linger x message size x acks (x compression x rate);
    /// write a table, results.csv/json and chart.svg; name the best setting
    /// within --p99-budget-ms.
    Sweep(Args),
}

impl Mode {
    pub fn args(&self) -> &Args {
        match self {
            Mode::Produce(a) | Mode::Consume(a) | Mode::E2e(a) | Mode::Sweep(a) => a,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Produce(_) => "produce",
            Mode::Consume(_) => "consume",
            Mode::E2e(_) => "e2e",
            Mode::Sweep(_) => "sweep",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Bootstrap servers, host:port[,host:port...].
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,

    /// Topic to use; created with --partitions if missing.
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,

    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,

    /// Message (value) size in bytes: N, or a range A-B drawn uniformly per
    /// message. In sweep mode a comma list of those.
    #[arg(long, default_value = "100")]
    pub message_bytes: String,

    /// Number of messages to produce (or consume) after the warm-up.
    /// In sweep mode: per grid point.
    #[arg(long, conflicts_with = "duration_s")]
    pub messages: Option<u64>,

    /// Length of the measured run in seconds (after the warm-up).
    /// Default: 10 (produce, e2e), 3 per point (sweep); consume reads to the
    /// end of the topic as it was at the start.
    #[arg(long)]
    pub duration_s: Option<f64>,

    /// Target rate in messages/s over all producers; 0 = unthrottled.
    /// A fixed rate is open-loop: latency counts from each message's intended
    /// send time. In sweep mode a comma list (e.g. 0,20000).
    #[arg(long, default_value = "0")]
    pub rate: String,

    /// acks: all, 1 or 0 (-1 = all). In sweep mode a comma list.
    #[arg(long, default_value = "all")]
    pub acks: String,

    /// Producer batch.size in bytes. In sweep mode a comma list
    /// (default sweep grid: 1024,4096,16384,65536,262144,1000000).
    #[arg(long)]
    pub batch_bytes: Option<String>,

    /// Producer linger.ms. In sweep mode a comma list (default sweep grid: 0,5).
    #[arg(long)]
    pub linger_ms: Option<String>,

    /// compression.type: none, gzip, snappy, lz4, zstd. In sweep mode a comma list.
    #[arg(long, default_value = "none")]
    pub compression: String,

    /// Extra client property for producers and consumers (repeatable), applied
    /// last so it overrides anything the tool sets.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub extra: Vec<String>,

    /// Directory for results.csv, results.json (and chart.svg for sweep).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Latency budget for sweep: the setting with the highest throughput whose
    /// p99 is within it is named at the end.
    #[arg(long)]
    pub p99_budget_ms: Option<f64>,

    /// Also run the same workload against librdkafka's in-process mock cluster
    /// with N brokers, and print both results and their ratio.
    #[arg(long, value_name = "N")]
    pub baseline_mock: Option<i32>,

    /// consume with --baseline-mock: leave the copy of the data (topic
    /// <topic>-same-<ms>) on the target instead of deleting it after the run.
    #[arg(long)]
    pub keep_copy: bool,

    /// Keys drawn uniformly from N distinct keys; 0 = no key.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,

    /// Producer clients (one thread each).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,

    /// Consumer clients (one thread each; partitions are split between them).
    /// Default 1 for consume and e2e, 0 for sweep (ack latency only; give 1 to
    /// sweep end-to-end latency).
    #[arg(long)]
    pub consumers: Option<usize>,

    /// Seconds of load before measuring; those messages are sent but not counted.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_s: f64,

    /// enable.idempotence=true on producers (requires acks=all).
    #[arg(long)]
    pub idempotence: bool,

    /// Transactional producers (KIP-98): each commits a transaction every N
    /// of its messages (transactional.id sluice-bench-<process>-<producer>).
    /// Implies --idempotence and needs --acks all. Reports commit latency and
    /// committed/aborted counts; read such a topic with
    /// -X isolation.level=read_committed to measure the consumer side.
    #[arg(
        long = "transactional",
        value_name = "N",
        alias = "transaction-messages"
    )]
    pub transaction_messages: Option<u64>,

    /// With --transactional: the percentage of transactions aborted
    /// instead of committed (drawn per transaction), 0-100.
    #[arg(long, default_value_t = 0.0)]
    pub abort_percent: f64,

    /// Seconds to wait for the broker at start and for consumers to drain at
    /// the end before counting the rest as missing.
    #[arg(long, default_value_t = 10.0)]
    pub timeout_s: f64,
}

/// How a produced message's size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    Fixed(usize),
    /// Uniform over [lo, hi], inclusive.
    Range(usize, usize),
}

impl SizeSpec {
    pub fn parse(s: &str) -> Result<SizeSpec> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let lo = parse_num::<usize>(a, "--message-bytes")?;
            let hi = parse_num::<usize>(b, "--message-bytes")?;
            if lo > hi {
                bail!("--message-bytes range {s}: lower bound above upper bound");
            }
            Ok(if lo == hi {
                SizeSpec::Fixed(lo)
            } else {
                SizeSpec::Range(lo, hi)
            })
        } else {
            Ok(SizeSpec::Fixed(parse_num(s, "--message-bytes")?))
        }
    }

    pub fn min(&self) -> usize {
        match *self {
            SizeSpec::Fixed(n) => n,
            SizeSpec::Range(lo, _) => lo,
        }
    }

    pub fn max(&self) -> usize {
        match *self {
            SizeSpec::Fixed(n) => n,
            SizeSpec::Range(_, hi) => hi,
        }
    }
}

impl std::fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeSpec::Fixed(n) => write!(f, "{n}"),
            SizeSpec::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    Messages(u64),
    Duration(Duration),
    /// consume only: the high watermarks seen at the start.
    EndOfTopic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Produce,
    Consume,
    E2e,
}

impl RunMode {
    pub fn name(&self) -> &'static str {
        match self {
            RunMode::Produce => "produce",
            RunMode::Consume => "consume",
            RunMode::E2e => "e2e",
        }
    }
}

/// The producer settings a sweep varies; a single run has exactly one.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub batch_bytes: u64,
    pub linger_ms: u64,
    pub message: SizeSpec,
    pub acks: String,
    pub compression: String,
    /// msgs/s over all producers; 0 = unthrottled.
    pub rate: f64,
}

/// One fully resolved run: what to do, against which topic, with which settings.
#[derive(Debug, Clone)]
pub struct Workload {
    pub mode: RunMode,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub point: Point,
    pub stop: Stop,
    pub keys: u64,
    pub producers: usize,
    pub consumers: usize,
    pub warmup: Duration,
    pub idempotence: bool,
    pub transactions: Option<Transactions>,
    pub extra: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Transactional producers: a commit every `messages`, `abort_percent` of
/// the transactions aborted instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transactions {
    pub messages: u64,
    pub abort_percent: f64,
}

fn parse_num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .map_err(|e| anyhow::anyhow!("{flag}: cannot parse {s:?}: {e}"))
}

fn list<T>(s: &str, flag: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let items: Vec<T> = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| parse(x.trim()).with_context(|| format!("in {flag}")))
        .collect::<Result<_>>()?;
    if items.is_empty() {
        bail!("{flag}: empty");
    }
    Ok(items)
}

/// Normalises an acks value to the spelling librdkafka and the tables use.
fn parse_acks(s: &str) -> Result<String> {
    match s {
        "all" | "-1" => Ok("all".into()),
        "0" | "1" => Ok(s.into()),
        _ => bail!("--acks {s:?}: expected all, -1, 0 or 1"),
    }
}

fn parse_compression(s: &str) -> Result<String> {
    match s {
        "none" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(s.into()),
        _ => bail!("--compression {s:?}: expected none, gzip, snappy, lz4 or zstd"),
    }
}

fn parse_rate(s: &str) -> Result<f64> {
    let r: f64 = parse_num(s, "--rate")?;
    if !r.is_finite() || r < 0.0 {
        bail!("--rate {s}: must be >= 0");
    }
    Ok(r)
}

impl Args {
    /// Resolves the flags into the runs to perform: several for `sweep` (the
    /// grid in nested order batch, linger, message size, acks, compression,
    /// rate — so the table groups by batch size), one otherwise.
    pub fn workloads(&self, mode: &Mode) -> Result<Vec<Workload>> {
        let sweep = matches!(mode, Mode::Sweep(_));
        let run_mode = match mode {
            Mode::Produce(_) => RunMode::Produce,
            Mode::Consume(_) => RunMode::Consume,
            Mode::E2e(_) => RunMode::E2e,
            Mode::Sweep(_) => {
                if self.consumers.unwrap_or(0) > 0 {
                    RunMode::E2e
                } else {
                    RunMode::Produce
                }
            }
        };
        let batch = self.batch_bytes.clone().unwrap_or_else(|| {
            if sweep {
                SWEEP_BATCH_BYTES
            } else {
                DEFAULT_BATCH_BYTES
            }
            .to_string()
        });
        let linger = self.linger_ms.clone().unwrap_or_else(|| {
            if sweep {
                SWEEP_LINGER_MS
            } else {
                DEFAULT_LINGER_MS
            }
            .to_string()
        });
        let batches = list(&batch, "--batch-bytes", |s| {
            parse_num::<u64>(s, "--batch-bytes")
        })?;
        let lingers = list(&linger, "--linger-ms", |s| {
            parse_num::<u64>(s, "--linger-ms")
        })?;
        let sizes = list(&self.message_bytes, "--message-bytes", SizeSpec::parse)?;
        let ackss = list(&self.acks, "--acks", parse_acks)?;
        let comps = list(&self.compression, "--compression", parse_compression)?;
        let rates = list(&self.rate, "--rate", parse_rate)?;
        if !sweep {
            for (flag, n) in [
                ("--batch-bytes", batches.len()),
                ("--linger-ms", lingers.len()),
                ("--message-bytes", sizes.len()),
                ("--acks", ackss.len()),
                ("--compression", comps.len()),
                ("--rate", rates.len()),
            ] {
                if n > 1 {
                    bail!("{flag}: a list of values is only accepted by sweep");
                }
            }
        }
        if batches.contains(&0) {
            bail!("--batch-bytes: must be > 0");
        }
        if self.partitions < 1 {
            bail!("--partitions: must be >= 1");
        }
        if self.producers < 1 && run_mode != RunMode::Consume {
            bail!("--producers: must be >= 1");
        }
        let consumers = self.consumers.unwrap_or(match run_mode {
            RunMode::Produce => 0,
            RunMode::Consume | RunMode::E2e => 1,
        });
        if consumers < 1 && run_mode != RunMode::Produce {
            bail!(
                "--consumers: {} needs at least one consumer",
                run_mode.name()
            );
        }
        if run_mode == RunMode::E2e {
            // The send time travels in the payload's first 8 bytes.
            if let Some(s) = sizes.iter().find(|s| s.min() < 8) {
                bail!("--message-bytes {s}: end-to-end latency needs messages of at least 8 bytes (the send time travels in the payload)");
            }
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            bail!("--warmup-s: must be >= 0");
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            bail!("--timeout-s: must be > 0");
        }
        if let Some(n) = self.baseline_mock {
            if n < 1 {
                bail!("--baseline-mock: must be >= 1 broker");
            }
        }
        let stop = match (self.messages, self.duration_s) {
            (Some(0), _) => bail!("--messages: must be > 0"),
            (Some(n), _) => Stop::Messages(n),
            (None, Some(d)) if d > 0.0 && d.is_finite() => {
                Stop::Duration(Duration::from_secs_f64(d))
            }
            (None, Some(d)) => bail!("--duration-s {d}: must be > 0"),
            (None, None) => match mode {
                Mode::Consume(_) => Stop::EndOfTopic,
                Mode::Sweep(_) => Stop::Duration(Duration::from_secs(3)),
                _ => Stop::Duration(Duration::from_secs(10)),
            },
        };
        let extra = self
            .extra
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
                _ => bail!("-X {kv:?}: expected key=value"),
            })
            .collect::<Result<Vec<_>>>()?;

        let transactions = match self.transaction_messages {
            None => {
                if self.abort_percent != 0.0 {
                    bail!("--abort-percent needs --transactional");
                }
                None
            }
            Some(0) => bail!("--transactional must be at least 1"),
            Some(messages) => {
                if !(0.0..=100.0).contains(&self.abort_percent) {
                    bail!("--abort-percent {}: must be 0-100", self.abort_percent);
                }
                Some(Transactions {
                    messages,
                    abort_percent: self.abort_percent,
                })
            }
        };
        let mut out = Vec::new();
        for &batch_bytes in &batches {
            for &linger_ms in &lingers {
                for &message in &sizes {
                    for acks in &ackss {
                        for compression in &comps {
                            for &rate in &rates {
                                if (self.idempotence || transactions.is_some()) && acks != "all" {
                                    bail!(
                                        "--idempotence and --transactional need --acks all (got {acks})"
                                    );
                                }
                                out.push(Workload {
                                    mode: run_mode,
                                    bootstrap: self.bootstrap.clone(),
                                    topic: self.topic.clone(),
                                    partitions: self.partitions,
                                    point: Point {
                                        batch_bytes,
                                        linger_ms,
                                        message,
                                        acks: acks.clone(),
                                        compression: compression.clone(),
                                        rate,
                                    },
                                    stop,
                                    keys: self.keys,
                                    producers: self.producers,
                                    consumers,
                                    warmup: Duration::from_secs_f64(self.warmup_s),
                                    idempotence: self.idempotence || transactions.is_some(),
                                    transactions,
                                    extra: extra.clone(),
                                    timeout: Duration::from_secs_f64(self.timeout_s),
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (Mode, Result<Vec<Workload>>) {
        let cli = Cli::try_parse_from(std::iter::once("sluice-bench").chain(args.iter().copied()))
            .expect("flags parse");
        let w = cli.mode.args().workloads(&cli.mode);
        (cli.mode, w)
    }

    #[test]
    fn sizes() {
        assert_eq!(SizeSpec::parse("100").unwrap(), SizeSpec::Fixed(100));
        assert_eq!(SizeSpec::parse("10-20").unwrap(), SizeSpec::Range(10, 20));
        assert_eq!(SizeSpec::parse("7-7").unwrap(), SizeSpec::Fixed(7));
        assert!(SizeSpec::parse("20-10").is_err());
        assert!(SizeSpec::parse("x").is_err());
    }

    #[test]
    fn sweep_grid_is_the_product() {
        let (_, w) = parse(&[
            "sweep",
            "--batch-bytes",
            "1024,16384,65536",
            "--linger-ms",
            "0,5",
            "--acks",
            "1,all",
        ]);
        let w = w.unwrap();
        assert_eq!(w.len(), 12);
        assert_eq!(w[0].point.batch_bytes, 1024);
        assert_eq!(w[11].point.batch_bytes, 65536);
        assert_eq!(w[0].mode, RunMode::Produce);
        assert_eq!(w[0].stop, Stop::Duration(Duration::from_secs(3)));
    }

    #[test]
    fn lists_only_in_sweep() {
        let (_, w) = parse(&["produce", "--batch-bytes", "1024,2048"]);
        assert!(w.is_err());
    }

    #[test]
    fn defaults() {
        let (_, w) = parse(&["produce", "--messages", "5", "-X", "a=b=c"]);
        let w = w.unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].point.batch_bytes, 1_000_000);
        assert_eq!(w[0].point.acks, "all");
        assert_eq!(w[0].stop, Stop::Messages(5));
        assert_eq!(w[0].extra, vec![("a".to_string(), "b=c".to_string())]);
        let (_, w) = parse(&["consume"]);
        assert_eq!(w.unwrap()[0].stop, Stop::EndOfTopic);
        let (_, w) = parse(&["e2e", "--message-bytes", "4"]);
        assert!(w.is_err(), "e2e needs room for the timestamp");
        let (_, w) = parse(&["produce", "--idempotence", "--acks", "1"]);
        assert!(w.is_err());
    }

    #[test]
    fn transactions() {
        let (_, w) = parse(&["produce", "--transactional", "10", "--abort-percent", "5"]);
        let w = w.unwrap();
        assert!(w[0].idempotence, "transactional producers are idempotent");
        assert_eq!(
            w[0].transactions,
            Some(Transactions {
                messages: 10,
                abort_percent: 5.0
            })
        );
        for bad in [
            &["produce", "--transactional", "10", "--acks", "1"][..],
            &["produce", "--transactional", "0"],
            &["produce", "--transactional", "10", "--abort-percent", "101"],
            &["produce", "--abort-percent", "5"],
        ] {
            assert!(parse(bad).1.is_err(), "{bad:?}");
        }
    }
}
