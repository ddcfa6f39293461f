//! The records inside a v2 record batch: a walk over a (decompressed) records
//! area that borrows every field from it, with every length checked against
//! the bytes present. The one record parser of the broker: the log cleaner,
//! Produce's record checks and ListOffsets use it.

use bytes::Bytes;

use crate::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::compression::{decompress, DecompressError};

/// A record inside a batch's (decompressed) records area.
pub(crate) struct RecordView<'a> {
    /// The whole record, its length prefix included.
    pub(crate) raw: &'a [u8],
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) value_is_null: bool,
}

/// Walks the records of a records area, at most `count` of them.
pub(crate) struct RecordIter<'a> {
    area: &'a [u8],
    position: usize,
    remaining: i32,
}

impl<'a> RecordIter<'a> {
    pub(crate) fn new(area: &'a [u8], count: i32) -> RecordIter<'a> {
        RecordIter {
            area,
            position: 0,
            remaining: count.max(0),
        }
    }

    fn parse(&mut self) -> Result<RecordView<'a>, String> {
        let start = self.position;
        let mut cursor = Cursor {
            buf: self.area,
            at: start,
        };
        let length = cursor.varint()?;
        let length = usize::try_from(length).map_err(|_| "negative record length")?;
        let end = cursor
            .at
            .checked_add(length)
            .filter(|&e| e <= self.area.len())
            .ok_or("record runs past its batch")?;
        let mut body = Cursor {
            buf: &self.area[..end],
            at: cursor.at,
        };
        body.take(1)?; // attributes
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        let key = body.nullable()?;
        let value = body.nullable()?;
        self.position = end;
        Ok(RecordView {
            raw: &self.area[start..end],
            timestamp_delta,
            offset_delta,
            key,
            value,
            value_is_null: value.is_none(),
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.position >= self.area.len() {
            return None;
        }
        self.remaining -= 1;
        let item = self.parse();
        if item.is_err() {
            self.remaining = 0;
        }
        Some(item)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or("record truncated")?;
        let taken = &self.buf[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn unsigned(&mut self, max_bytes: u32) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".to_string())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let raw = self.unsigned(5)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, String> {
        let raw = self.unsigned(10)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A length-prefixed byte string, -1 meaning null.
    fn nullable(&mut self) -> Result<Option<&'a [u8]>, String> {
        match self.varint()? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| "invalid length")?;
                self.take(len).map(Some)
            }
        }
    }
}

/// The records area of a batch, decompressed (at most `limit` bytes of it).
pub(crate) fn records_area(
    header: &BatchHeader,
    batch: &Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let area = batch.slice(BATCH_HEADER_LEN.min(batch.len())..);
    decompress(header.compression(), &area, limit)
}
