//! Reading an internal log back: every record of every batch, in offset
//! order, with plain blocking reads (at start-up before the shards serve, or
//! on a blocking thread when a coordinator takes over an internal partition,
//! once every write to it settled). Where the log ends is decided as the
//! recovery scan decides it (a torn tail ends it, and the segments after a
//! torn one are not part of it), so that the replay never reads past the
//! log that the storage engine opens.
//!
//! Used by the metadata log, the offsets log and the transaction log. A torn tail is ignored
//! here (opening the log for appends truncates it); corruption elsewhere is an
//! error, because replaying past it would rebuild the wrong state. So is a
//! batch whose records decompress beyond `DECOMPRESSED_BYTES_FLOOR`: these logs
//! hold only what the broker wrote, so such a batch is damage, not data.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

use crate::protocol::compression::{decompress, DECOMPRESSED_BYTES_FLOOR};
use crate::storage::segment::{parse_segment_file_name, scan_batches, segment_file_name};

/// Calls `on_record` for each record of the log in `dir` (a missing dir is an empty log).
pub fn for_each_record(
    dir: &Path,
    mut on_record: impl FnMut(Record) -> Result<(), String>,
) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut bases: Vec<i64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
        .collect();
    bases.sort_unstable();
    for base in bases {
        let path = dir.join(segment_file_name(base, "log"));
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        // The batches as the recovery scan judges them: a damaged batch
        // that ends the file is a torn write (the log ends before it, and
        // recovery removes the segments after this one); one with data
        // after it is corruption.
        let file = fs::File::open(&path).map_err(|e| failed(&e))?;
        let file_len = file.metadata().map_err(|e| failed(&e))?.len();
        let mut batches = Vec::new();
        let outcome = scan_batches(&file, 0, file_len, |batch| {
            batches.push((batch.position as usize, batch.header.total_len()));
        })
        .map_err(|e| failed(&e))?;
        if let Some((position, error)) = outcome.corruption {
            return Err(failed(&format!(
                "corrupt batch at byte {position}: {error}"
            )));
        }
        let bytes = fs::read(&path).map_err(|e| failed(&e))?;
        for (position, len) in batches {
            let range = position..position + len;
            let mut batch = Bytes::copy_from_slice(
                bytes
                    .get(range)
                    .ok_or_else(|| failed(&"the segment shrank while it was read"))?,
            );
            let set = RecordBatchDecoder::decode_with_custom_compression(
                &mut batch,
                Some(bounded_decompress),
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            for record in set.records {
                let offset = record.offset;
                on_record(record)
                    .map_err(|e| format!("{} offset {offset}: {e}", path.display()))?;
            }
        }
        if outcome.valid_end < file_len {
            // Torn here: the log ends here, whatever later segments hold.
            return Ok(());
        }
    }
    Ok(())
}

/// kafka-protocol's decoder with our bounded decompression instead of its own.
fn bounded_decompress(compressed: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    let codec = match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    Ok(decompress(codec, compressed, DECOMPRESSED_BYTES_FLOOR)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;
    use std::io::Write;

    fn write_segment(dir: &Path, batches: &[Bytes]) {
        fs::create_dir_all(dir).unwrap();
        let mut file = fs::File::create(dir.join(segment_file_name(0, "log"))).unwrap();
        for batch in batches {
            file.write_all(batch).unwrap();
        }
    }

    #[test]
    fn compressed_batches_replay_and_a_bomb_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| encode::record(i, 1, None, Some(Bytes::from(format!("v{i}"))), None))
            .collect();
        write_segment(
            dir.path(),
            &[encode::encode_batch(
                &records,
                kafka_protocol::records::Compression::Zstd,
            )],
        );
        let mut values = Vec::new();
        for_each_record(dir.path(), |r| {
            values.push(r.value.unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(values, ["v0", "v1", "v2"]);

        // One record of 80 MiB of zeros, zstd-compressed to a few KiB.
        let value_bytes = 80usize << 20;
        let mut area = Vec::new();
        let mut body = vec![0u8, 0, 0, 1]; // attributes, timestamp delta, offset delta, null key
        zigzag(value_bytes as i64, &mut body);
        let mut length = Vec::new();
        zigzag((body.len() + value_bytes + 1) as i64, &mut length);
        let mut encoder = zstd::stream::write::Encoder::new(&mut area, 3).unwrap();
        encoder.write_all(&length).unwrap();
        encoder.write_all(&body).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..80 {
            encoder.write_all(&zeros).unwrap();
        }
        encoder.write_all(&[0]).unwrap(); // no headers
        encoder.finish().unwrap();
        let bomb_dir = dir.path().join("bomb");
        write_segment(&bomb_dir, &[batch_around(&area, 4)]);
        let error = for_each_record(&bomb_dir, |_| Ok(())).unwrap_err();
        assert!(error.contains("decompress to more than"), "{error}");
    }

    /// A one-record batch at `offset` holding `value`.
    fn batch_at(offset: i64, value: &str) -> Vec<u8> {
        let record = encode::record(0, 1, None, Some(Bytes::from(value.to_string())), None);
        let mut batch =
            encode::encode_batch(&[record], kafka_protocol::records::Compression::None).to_vec();
        // The base offset is outside what the CRC covers.
        batch[..8].copy_from_slice(&offset.to_be_bytes());
        batch
    }

    fn values(dir: &Path) -> Result<Vec<Bytes>, String> {
        let mut values = Vec::new();
        for_each_record(dir, |r| {
            values.push(r.value.unwrap());
            Ok(())
        })?;
        Ok(values)
    }

    #[test]
    fn a_torn_tail_ends_the_log_and_corruption_before_data_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // Segment 0: two whole batches and half of a third (a torn write);
        // segment 3 after it is not part of the log recovery keeps.
        let torn = batch_at(2, "v2");
        let mut first = [batch_at(0, "v0"), batch_at(1, "v1")].concat();
        first.extend_from_slice(&torn[..torn.len() / 2]);
        fs::write(dir.path().join(segment_file_name(0, "log")), &first).unwrap();
        fs::write(
            dir.path().join(segment_file_name(3, "log")),
            batch_at(3, "v3"),
        )
        .unwrap();
        assert_eq!(values(dir.path()).unwrap(), ["v0", "v1"]);

        // A damaged batch with a whole batch after it is corruption.
        let corrupt = tempfile::tempdir().unwrap();
        let mut middle = batch_at(1, "v1");
        let last = middle.len() - 1;
        middle[last] ^= 0xff;
        let bytes = [batch_at(0, "v0"), middle, batch_at(2, "v2")].concat();
        fs::write(corrupt.path().join(segment_file_name(0, "log")), bytes).unwrap();
        let error = values(corrupt.path()).unwrap_err();
        assert!(error.contains("corrupt batch"), "{error}");
    }

    fn zigzag(value: i64, out: &mut Vec<u8>) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A one-record v2 batch holding `area` (compressed with `codec`), CRC set.
    fn batch_around(area: &[u8], codec: i16) -> Bytes {
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset
        b.extend_from_slice(&((49 + area.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
        b.extend_from_slice(&codec.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
        b.extend_from_slice(&1i64.to_be_bytes());
        b.extend_from_slice(&1i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(area);
        let crc = crate::protocol::batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }
}
