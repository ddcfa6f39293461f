//! What the broker reads back from disk about transactions: transaction-log
//! keys and values (Kafka's TransactionLogKey/Value, from any writer), the
//! producer-state snapshot of a clean shutdown, and transaction markers in
//! control batches. Any panic or abort (e.g. an allocation sized by a
//! hostile count) is a bug; a value or snapshot that decodes must survive a
//! round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::protocol::batch::BatchHeader;
use sluice::protocol::control::parse_marker;
use sluice::storage::producer_state::ProducerStateTable;
use sluice::txn::log::{decode_key, decode_value, encode_value};

fuzz_target!(|data: &[u8]| {
    let _ = decode_key(data);
    if let Ok(transit) = decode_value(data) {
        let again = decode_value(&encode_value(&transit)).expect("what we write reads back");
        assert_eq!(again, transit);
    }
    let end = data
        .get(..8)
        .map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
    if let Some((table, used)) = ProducerStateTable::decode_snapshot(data, end) {
        assert!(used <= data.len());
        // The format is canonical: what decodes is written back byte for byte.
        let mut again = Vec::new();
        table.encode_snapshot(&mut again);
        assert_eq!(again, data[..used]);
    }
    if let Ok(header) = BatchHeader::parse(data) {
        let _ = parse_marker(&header, data);
    }
});
