//! Batches the benchmarks feed to the code under test.

use bytes::Bytes;
use kafka_protocol::records::Compression;
use sluice::protocol::encode;

/// One uncompressed batch of `records` keyed records with `value_bytes`-byte
/// values, as a producer would send it.
pub fn keyed_batch(records: i64, value_bytes: usize) -> Bytes {
    let records: Vec<_> = (0..records)
        .map(|i| {
            let key = Some(Bytes::from(format!("key-{i}")));
            let value = Some(Bytes::from(vec![b'x'; value_bytes]));
            encode::record(i, 1_700_000_000_000 + i, key, value, None)
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}
