//! The records of the transaction log (`__transaction_state`), in Kafka's
//! layout (`TransactionLogKey` v0, `TransactionLogValue` v0 and v1), so that
//! Kafka's tools read them as they read Kafka's own.
//!
//! Key: `int16 version = 0`, `string transactional id` (int16 length).
//! Value: `int16 version`, then `int64 producer id`, `int16 producer epoch`,
//! `int32 timeout ms`, `int8 state`, the partitions (null when Empty; else
//! per topic its name and partition ids), `int64 last update ms`, `int64
//! start ms`. Version 1 is flexible (compact strings and arrays, tagged
//! fields): tag 0 previous producer id, 1 next producer id, 2 the client's
//! transaction version. Kafka writes only tag 2; Sluice also writes tag 1
//! when set, so that a TV2 transaction that moves to a new producer id
//! completes on it after a restart. A null value is a tombstone (the id
//! expired). Every byte read is checked: these come from the disk.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, BytesMut};

use crate::txn::state::{Transit, TxnState, NO_PRODUCER_ID, TV_CLASSIC};

/// The value version written: 1 (flexible, with the client's transaction version).
pub const VALUE_VERSION: i16 = 1;

/// Why a record of the transaction log cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated")]
    Truncated,
    #[error("key version {0} is not 0")]
    KeyVersion(i16),
    #[error("value version {0} is unknown")]
    ValueVersion(i16),
    #[error("unknown transaction state {0}")]
    State(i8),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("trailing bytes")]
    Trailing,
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(transactional_id.len() as i16).to_be_bytes());
    out.extend_from_slice(transactional_id.as_bytes());
    out
}

/// The transactional id of a key. A key of another version is not ours to
/// read (Kafka skips it with a warning): `Err(KeyVersion)`.
pub fn decode_key(bytes: &[u8]) -> Result<String, RecordError> {
    let mut r = Reader { buf: bytes, at: 0 };
    let version = r.i16()?;
    if version != 0 {
        return Err(RecordError::KeyVersion(version));
    }
    let id = r
        .string(false)?
        .ok_or(RecordError::Invalid("null transactional id"))?;
    r.end()?;
    Ok(id)
}

pub fn encode_value(t: &Transit) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(VALUE_VERSION);
    out.put_i64(t.producer_id);
    out.put_i16(t.producer_epoch);
    out.put_i32(t.timeout_ms);
    out.put_i8(t.state.id());
    if t.state == TxnState::Empty {
        put_uvarint(&mut out, 0); // null
    } else {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &t.partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        put_uvarint(&mut out, by_topic.len() as u64 + 1);
        for (topic, partitions) in by_topic {
            put_uvarint(&mut out, topic.len() as u64 + 1);
            out.put_slice(topic.as_bytes());
            put_uvarint(&mut out, partitions.len() as u64 + 1);
            for p in partitions {
                out.put_i32(p);
            }
            put_uvarint(&mut out, 0); // no tagged fields
        }
    }
    out.put_i64(t.last_update_ms);
    out.put_i64(t.start_ms);
    let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
    // The previous producer id (the schema's tag 0) is kept when known, so
    // that a value read back (from Kafka's log or ours) is written unchanged.
    if t.prev_producer_id != NO_PRODUCER_ID {
        tags.push((0, t.prev_producer_id.to_be_bytes().to_vec()));
    }
    if t.next_producer_id != NO_PRODUCER_ID {
        tags.push((1, t.next_producer_id.to_be_bytes().to_vec()));
    }
    if t.client_tv != TV_CLASSIC {
        tags.push((2, t.client_tv.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut out, tags.len() as u64);
    for (tag, value) in tags {
        put_uvarint(&mut out, tag);
        put_uvarint(&mut out, value.len() as u64);
        out.put_slice(&value);
    }
    out.to_vec()
}

/// A value written by Kafka (v0 or v1) or by Sluice. Fields the record does
/// not hold take their defaults (`last_producer_epoch` -1, as Kafka reloads).
pub fn decode_value(bytes: &[u8]) -> Result<Transit, RecordError> {
    let mut r = Reader { buf: bytes, at: 0 };
    let version = r.i16()?;
    let flexible = match version {
        0 => false,
        1 => true,
        other => return Err(RecordError::ValueVersion(other)),
    };
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state_id = r.i8()?;
    let state = TxnState::from_id(state_id).ok_or(RecordError::State(state_id))?;
    let mut partitions = BTreeSet::new();
    if let Some(topics) = r.array_len(flexible)? {
        for _ in 0..topics {
            let topic = r
                .string(flexible)?
                .ok_or(RecordError::Invalid("null topic"))?;
            let count = r
                .array_len(flexible)?
                .ok_or(RecordError::Invalid("null partition list"))?;
            for _ in 0..count {
                partitions.insert((topic.clone(), r.i32()?));
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut t = Transit {
        producer_id,
        prev_producer_id: NO_PRODUCER_ID,
        next_producer_id: NO_PRODUCER_ID,
        producer_epoch,
        last_producer_epoch: -1,
        timeout_ms,
        state,
        // Kafka builds the partition set only when the state is not Empty.
        partitions: if state == TxnState::Empty {
            BTreeSet::new()
        } else {
            partitions
        },
        start_ms,
        last_update_ms,
        client_tv: TV_CLASSIC,
    };
    if flexible {
        let count = r.uvarint()?;
        for _ in 0..count {
            let tag = r.uvarint()?;
            let size = usize::try_from(r.uvarint()?).map_err(|_| RecordError::Truncated)?;
            let value = r.take(size)?;
            let fixed = |n: usize| -> Result<&[u8], RecordError> {
                (value.len() == n)
                    .then_some(value)
                    .ok_or(RecordError::Invalid("tagged field size"))
            };
            match tag {
                0 => {
                    t.prev_producer_id =
                        i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())
                }
                1 => {
                    t.next_producer_id =
                        i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())
                }
                2 => t.client_tv = i16::from_be_bytes(fixed(2)?.try_into().unwrap_or_default()),
                _ => {} // unknown tags are skipped, as the schema says
            }
        }
    }
    r.end()?;
    if t.producer_id < 0 || t.timeout_ms <= 0 || t.producer_epoch < -1 {
        return Err(RecordError::Invalid("producer id, epoch or timeout"));
    }
    Ok(t)
}

fn put_uvarint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(n).ok_or(RecordError::Truncated)?;
        let slice = self.buf.get(self.at..end).ok_or(RecordError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        self.take(N)?.try_into().map_err(|_| RecordError::Truncated)
    }
    fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(i8::from_be_bytes(self.fixed()?))
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }
    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::Invalid("varint"))
    }
    /// An array's element count (None: null), never more than the bytes
    /// left could hold, so that nothing is allocated for a lie.
    fn array_len(&mut self, flexible: bool) -> Result<Option<usize>, RecordError> {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => n - 1,
            }
        } else {
            match self.i32()? {
                -1 => return Ok(None),
                n if n < 0 => return Err(RecordError::Invalid("array length")),
                n => n as u64,
            }
        };
        let left = (self.buf.len() - self.at) as u64;
        if len > left {
            return Err(RecordError::Truncated);
        }
        Ok(Some(len as usize))
    }
    fn string(&mut self, flexible: bool) -> Result<Option<String>, RecordError> {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => usize::try_from(n - 1).map_err(|_| RecordError::Truncated)?,
            }
        } else {
            match self.i16()? {
                -1 => return Ok(None),
                n if n < 0 => return Err(RecordError::Invalid("string length")),
                n => n as usize,
            }
        };
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Invalid("utf-8"))
    }
    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| RecordError::Truncated)?;
            self.take(size)?;
        }
        Ok(())
    }
    fn end(&self) -> Result<(), RecordError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(RecordError::Trailing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::state::TV_EPOCH_BUMP;

    fn transit(state: TxnState) -> Transit {
        Transit {
            producer_id: 4_000,
            prev_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: 12,
            last_producer_epoch: -1,
            timeout_ms: 60_000,
            state,
            partitions: if state == TxnState::Empty {
                BTreeSet::new()
            } else {
                [
                    ("orders".to_string(), 3),
                    ("orders".to_string(), 0),
                    ("audit".to_string(), 1),
                ]
                .into_iter()
                .collect()
            },
            start_ms: 1_700_000_000_000,
            last_update_ms: 1_700_000_000_500,
            client_tv: TV_CLASSIC,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(
            decode_key(&encode_key("payments-7")),
            Ok("payments-7".to_string())
        );
        for state in TxnState::ALL {
            let mut t = transit(state);
            assert_eq!(decode_value(&encode_value(&t)), Ok(t.clone()), "{state:?}");
            t.client_tv = TV_EPOCH_BUMP;
            t.next_producer_id = 4_001;
            t.prev_producer_id = 3_999;
            assert_eq!(
                decode_value(&encode_value(&t)),
                Ok(t),
                "{state:?} with tags"
            );
        }
    }

    /// A version-0 value as Kafka writes it (non-flexible), by hand from the
    /// schema: state Ongoing with one topic of two partitions.
    #[test]
    fn a_kafka_v0_value_reads() {
        let mut v = Vec::new();
        v.extend_from_slice(&0i16.to_be_bytes());
        v.extend_from_slice(&5i64.to_be_bytes());
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(&30_000i32.to_be_bytes());
        v.push(1); // Ongoing
        v.extend_from_slice(&1i32.to_be_bytes()); // one topic
        v.extend_from_slice(&1i16.to_be_bytes());
        v.push(b't');
        v.extend_from_slice(&2i32.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&9i32.to_be_bytes());
        v.extend_from_slice(&200i64.to_be_bytes());
        v.extend_from_slice(&100i64.to_be_bytes());
        let t = decode_value(&v).unwrap();
        assert_eq!(
            (t.producer_id, t.producer_epoch, t.timeout_ms),
            (5, 1, 30_000)
        );
        assert_eq!(t.state, TxnState::Ongoing);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(
            (t.last_update_ms, t.start_ms, t.client_tv),
            (200, 100, TV_CLASSIC)
        );
    }

    #[test]
    fn hostile_records_are_refused_without_panics() {
        assert_eq!(decode_key(&[0, 1, 0, 1]), Err(RecordError::KeyVersion(1)));
        let good = encode_value(&transit(TxnState::Ongoing));
        for len in 0..good.len() {
            assert!(decode_value(&good[..len]).is_err(), "truncated at {len}");
        }
        for at in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut flipped = good.clone();
                flipped[at] ^= bit;
                let _ = decode_value(&flipped);
            }
        }
        let mut state = good.clone();
        state[16] = 9;
        assert_eq!(decode_value(&state), Err(RecordError::State(9)));
        let mut version = good.clone();
        version[1] = 7;
        assert_eq!(decode_value(&version), Err(RecordError::ValueVersion(7)));
        let mut trailing = good;
        trailing.push(0);
        assert_eq!(decode_value(&trailing), Err(RecordError::Trailing));
    }
}
