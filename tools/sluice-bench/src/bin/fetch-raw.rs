//! `fetch-raw`: reads one partition from a Kafka-compatible broker as fast as
//! the broker serves it, with hand-encoded Fetch v4 requests over a plain TCP
//! socket and no record parsing (only batch headers are walked, to learn the
//! next offset). It measures what the broker's fetch path can deliver, without
//! a client library's per-record costs.
//!
//! ```text
//! fetch-raw --bootstrap 127.0.0.1:9092 --topic big --partition 0 \
//!     [--from 0] [--fetch-bytes 16777216] [--repeat 3]
//! ```
//!
//! The broker must lead the partition (no metadata request is made). Prints
//! bytes, seconds and GB/s per pass, and the median of the passes.

use std::time::Instant;

use anyhow::{bail, Context, Result};

// Shared with sluice-bench, which also produces with it.
#[allow(dead_code)]
#[path = "../wire.rs"]
mod wire;

struct Args {
    bootstrap: String,
    topic: String,
    partition: i32,
    from: i64,
    fetch_bytes: i32,
    repeat: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        bootstrap: "127.0.0.1:9092".into(),
        topic: String::new(),
        partition: 0,
        from: 0,
        fetch_bytes: 16 << 20,
        repeat: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value()?,
            "--topic" => args.topic = value()?,
            "--partition" => args.partition = value()?.parse()?,
            "--from" => args.from = value()?.parse()?,
            "--fetch-bytes" => args.fetch_bytes = value()?.parse()?,
            "--repeat" => args.repeat = value()?.parse()?,
            "-h" | "--help" => {
                println!("fetch-raw --bootstrap HOST:PORT --topic T [--partition P] [--from OFFSET] [--fetch-bytes N] [--repeat N]");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if args.topic.is_empty() {
        bail!("--topic is required");
    }
    Ok(args)
}

fn one_pass(args: &Args) -> Result<(u64, f64)> {
    let mut conn = wire::Conn::connect(&args.bootstrap, "fetch-raw")?;
    let mut offset = args.from;
    let mut total = 0u64;
    let started = Instant::now();
    loop {
        let fetched = conn.fetch(&args.topic, args.partition, offset, args.fetch_bytes)?;
        total += fetched.records.len() as u64;
        let high_watermark = fetched.high_watermark;
        // Only batch headers are walked, to learn the next offset.
        let next = wire::batches(fetched.records)?
            .last()
            .map_or(offset, |&(_, last, _)| last + 1);
        if next >= high_watermark {
            break;
        }
        if next == offset {
            bail!("no progress at offset {offset} (fetch-bytes too small for a batch?)");
        }
        offset = next;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut rates = Vec::new();
    for pass in 1..=args.repeat {
        let (bytes, seconds) = one_pass(&args)?;
        let rate = bytes as f64 / seconds / 1e9;
        println!("pass {pass}: {bytes} bytes of records in {seconds:.3} s = {rate:.2} GB/s");
        rates.push(rate);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "median: {:.2} GB/s over {} passes",
        rates[rates.len() / 2],
        rates.len()
    );
    Ok(())
}
