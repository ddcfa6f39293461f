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

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use anyhow::{bail, Context, Result};

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

/// A Fetch v4 request frame (header v1) for one partition.
fn fetch_request(args: &Args, correlation_id: i32, offset: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&0i32.to_be_bytes()); // length, patched below
    b.extend_from_slice(&1i16.to_be_bytes()); // api key: Fetch
    b.extend_from_slice(&4i16.to_be_bytes()); // version 4
    b.extend_from_slice(&correlation_id.to_be_bytes());
    let client = b"fetch-raw";
    b.extend_from_slice(&(client.len() as i16).to_be_bytes());
    b.extend_from_slice(client);
    b.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    b.extend_from_slice(&500i32.to_be_bytes()); // max wait ms
    b.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    b.extend_from_slice(&args.fetch_bytes.to_be_bytes()); // max bytes
    b.push(0); // isolation level: read uncommitted
    b.extend_from_slice(&1i32.to_be_bytes()); // one topic
    b.extend_from_slice(&(args.topic.len() as i16).to_be_bytes());
    b.extend_from_slice(args.topic.as_bytes());
    b.extend_from_slice(&1i32.to_be_bytes()); // one partition
    b.extend_from_slice(&args.partition.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&args.fetch_bytes.to_be_bytes()); // partition max bytes
    let len = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.at + n > self.buf.len() {
            bail!("response shorter than its fields");
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
    }
}

/// From a Fetch v4 response body: (high watermark, record bytes, next offset).
fn parse_response(body: &[u8], offset: i64) -> Result<(i64, usize, i64)> {
    let mut c = Cursor { buf: body, at: 0 };
    c.i32()?; // correlation id
    c.i32()?; // throttle
    if c.i32()? != 1 {
        bail!("expected one topic in the response");
    }
    let name_len = c.i16()?.max(0) as usize;
    c.take(name_len)?;
    if c.i32()? != 1 {
        bail!("expected one partition in the response");
    }
    c.i32()?; // partition
    let error = c.i16()?;
    if error != 0 {
        bail!("fetch at offset {offset}: error code {error}");
    }
    let high_watermark = c.i64()?;
    c.i64()?; // last stable offset
    let aborted = c.i32()?;
    for _ in 0..aborted.max(0) {
        c.take(16)?;
    }
    let records_len = c.i32()?.max(0) as usize;
    let records = c.take(records_len)?;
    // Walk batch headers only: base offset (8), length (4), ..., last offset delta at 23.
    let mut next = offset;
    let mut at = 0;
    while at + 61 <= records.len() {
        let base = i64::from_be_bytes(records[at..at + 8].try_into()?);
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into()?) as usize + 12;
        if at + len > records.len() {
            break; // a partial batch at the end (allowed by the protocol)
        }
        let delta = i32::from_be_bytes(records[at + 23..at + 27].try_into()?);
        next = base + i64::from(delta) + 1;
        at += len;
    }
    Ok((high_watermark, records_len, next))
}

fn one_pass(args: &Args) -> Result<(u64, f64)> {
    let mut stream = TcpStream::connect(&args.bootstrap)
        .with_context(|| format!("connect {}", args.bootstrap))?;
    stream.set_nodelay(true)?;
    let mut offset = args.from;
    let mut total = 0u64;
    let mut correlation_id = 0;
    let mut body = Vec::new();
    let started = Instant::now();
    loop {
        correlation_id += 1;
        stream.write_all(&fetch_request(args, correlation_id, offset))?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(4..=1 << 30).contains(&len) {
            bail!("implausible response length {len}");
        }
        body.resize(len as usize, 0);
        stream.read_exact(&mut body)?;
        let (high_watermark, bytes, next) = parse_response(&body, offset)?;
        total += bytes as u64;
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
