//! A minimal blocking Kafka wire client: hand-encoded Fetch v4 and Produce v3
//! over one TCP connection, for the places where a client library would
//! change what is measured or stored: `fetch-raw` (no record parsing) and
//! copying a topic's record batches byte for byte to another broker (a client
//! library would re-batch them).
//!
//! Only what those need: one topic per request, non-flexible versions, the
//! connected broker assumed to lead every partition asked for.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};

const FETCH: i16 = 1;
const PRODUCE: i16 = 0;
/// Offset of the length field, and the size of the fixed part of a v2 batch header.
const BATCH_LENGTH_AT: usize = 8;
const BATCH_HEADER_LEN: usize = 61;
/// Largest response accepted (a bench tool talking to a broker it was
/// pointed at: a bad length costs at most this much memory, then an error).
const MAX_RESPONSE: usize = 1 << 30;
/// Where a response's body starts in `Conn::body`: after the correlation id.
const BODY_AT: usize = 4;

pub struct Conn {
    stream: TcpStream,
    client_id: &'static str,
    correlation_id: i32,
    body: Vec<u8>,
}

/// What a Fetch returned for its one partition.
pub struct Fetched<'a> {
    pub high_watermark: i64,
    /// The partition's record bytes (whole batches, maybe a partial one at the end).
    pub records: &'a [u8],
}

impl Conn {
    pub fn connect(addr: &str, client_id: &'static str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            client_id,
            correlation_id: 0,
            body: Vec::new(),
        })
    }

    /// Fetch v4 of one partition from `offset`, waiting at most 500 ms for data.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> Result<Fetched<'_>> {
        let mut b = self.request(FETCH, 4);
        b.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        b.extend_from_slice(&500i32.to_be_bytes()); // max wait ms
        b.extend_from_slice(&1i32.to_be_bytes()); // min bytes
        b.extend_from_slice(&max_bytes.to_be_bytes());
        b.push(0); // isolation level: read uncommitted
        b.extend_from_slice(&1i32.to_be_bytes()); // one topic
        put_string(&mut b, topic);
        b.extend_from_slice(&1i32.to_be_bytes()); // one partition
        b.extend_from_slice(&partition.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&max_bytes.to_be_bytes()); // partition max bytes
        self.round_trip(b)?;

        let mut c = Cursor::new(&self.body[BODY_AT..]);
        c.i32()?; // throttle
        expect_one(&mut c, "topic")?;
        expect_name(&mut c, topic)?;
        expect_one(&mut c, "partition")?;
        let answered = c.i32()?;
        if answered != partition {
            bail!("fetch of {topic}/{partition} answered for partition {answered}");
        }
        let error = c.i16()?;
        if error != 0 {
            bail!("fetch {topic}/{partition} at offset {offset}: error code {error}");
        }
        let high_watermark = c.i64()?;
        c.i64()?; // last stable offset
        let aborted = c.i32()?;
        for _ in 0..aborted.max(0) {
            c.take(16)?;
        }
        let len = c.i32()?.max(0) as usize;
        let records = c.take(len)?;
        Ok(Fetched {
            high_watermark,
            records,
        })
    }

    /// Produce v3 with acks=all of one record batch per listed partition;
    /// returns the base offsets in the order answered, or fails on any error code.
    pub fn produce(&mut self, topic: &str, batches: &[(i32, &[u8])]) -> Result<Vec<i64>> {
        let mut b = self.request(PRODUCE, 3);
        b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        b.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
        b.extend_from_slice(&30_000i32.to_be_bytes()); // timeout ms
        b.extend_from_slice(&1i32.to_be_bytes()); // one topic
        put_string(&mut b, topic);
        b.extend_from_slice(&(batches.len() as i32).to_be_bytes());
        for (partition, records) in batches {
            b.extend_from_slice(&partition.to_be_bytes());
            b.extend_from_slice(&(records.len() as i32).to_be_bytes());
            b.extend_from_slice(records);
        }
        self.round_trip(b)?;

        let mut c = Cursor::new(&self.body[BODY_AT..]);
        expect_one(&mut c, "topic")?;
        expect_name(&mut c, topic)?;
        let n = c.i32()?;
        if n != batches.len() as i32 {
            bail!(
                "produce to {topic}: {n} partitions answered, {} sent",
                batches.len()
            );
        }
        let mut offsets = Vec::with_capacity(batches.len());
        for _ in 0..n {
            let partition = c.i32()?;
            if !batches.iter().any(|&(sent, _)| sent == partition) {
                bail!("produce to {topic}: answer for partition {partition}, which was not sent");
            }
            let error = c.i16()?;
            let base_offset = c.i64()?;
            c.i64()?; // log append time
            if error != 0 {
                bail!("produce to {topic}/{partition}: error code {error}");
            }
            offsets.push(base_offset);
        }
        Ok(offsets)
    }

    /// A request frame with its length left to fill and header v1 written.
    fn request(&mut self, api_key: i16, version: i16) -> Vec<u8> {
        self.correlation_id += 1;
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&api_key.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&self.correlation_id.to_be_bytes());
        put_string(&mut b, self.client_id);
        b
    }

    /// Sends `frame` and reads the response (correlation id, then body) into `self.body`.
    fn round_trip(&mut self, mut frame: Vec<u8>) -> Result<()> {
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(4..=MAX_RESPONSE as i32).contains(&len) {
            bail!("implausible response length {len}");
        }
        self.body.resize(len as usize, 0);
        self.stream.read_exact(&mut self.body)?;
        let correlation_id = i32::from_be_bytes(self.body[..BODY_AT].try_into()?);
        if correlation_id != self.correlation_id {
            bail!(
                "response for correlation id {correlation_id}, expected {}",
                self.correlation_id
            );
        }
        Ok(())
    }
}

/// The whole v2 batches at the start of `records`: (base offset, last offset, bytes).
pub fn batches(records: &[u8]) -> Result<Vec<(i64, i64, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + BATCH_HEADER_LEN <= records.len() {
        let field = |from: usize, n: usize| &records[at + from..at + from + n];
        let base = i64::from_be_bytes(field(0, 8).try_into()?);
        let len = i32::from_be_bytes(field(BATCH_LENGTH_AT, 4).try_into()?);
        let delta = i32::from_be_bytes(field(23, 4).try_into()?);
        if len < (BATCH_HEADER_LEN - 12) as i32 || field(16, 1)[0] != 2 {
            bail!("not a v2 record batch at byte {at} (length {len})");
        }
        let total = len as usize + 12;
        if at + total > records.len() {
            break; // a partial batch at the end (allowed by the protocol)
        }
        let Some(last) = base.checked_add(i64::from(delta)) else {
            bail!("batch at byte {at}: offsets overflow (base {base}, delta {delta})");
        };
        out.push((base, last, &records[at..at + total]));
        at += total;
    }
    Ok(out)
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn expect_name(c: &mut Cursor, topic: &str) -> Result<()> {
    let name = c.string()?;
    if name != topic.as_bytes() {
        bail!(
            "answer for topic {:?} where {topic} was asked",
            String::from_utf8_lossy(name)
        );
    }
    Ok(())
}

fn expect_one(c: &mut Cursor, what: &str) -> Result<()> {
    let n = c.i32()?;
    if n != 1 {
        bail!("expected one {what} in the response, got {n}");
    }
    Ok(())
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, at: 0 }
    }
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
    fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.i16()?.max(0) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, delta: i32, total: usize) -> Vec<u8> {
        let mut b = vec![0u8; total];
        b[..8].copy_from_slice(&base.to_be_bytes());
        b[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&delta.to_be_bytes());
        b
    }

    #[test]
    fn batches_are_split_by_their_lengths_and_a_partial_tail_is_left() {
        let mut records = batch(0, 4, 100);
        records.extend(batch(5, 0, 70));
        records.extend(&batch(6, 9, 200)[..150]);
        let got = batches(&records).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[0].1, got[0].2.len()), (0, 4, 100));
        assert_eq!((got[1].0, got[1].1, got[1].2.len()), (5, 5, 70));
        assert_eq!(got[1].2, &records[100..170]);
    }

    #[test]
    fn a_batch_that_is_not_v2_is_refused() {
        let mut records = batch(0, 0, 80);
        records[16] = 1;
        assert!(batches(&records).is_err());
        let mut short = batch(0, 0, 80);
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(batches(&short).is_err());
    }
}
