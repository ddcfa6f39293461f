//! Record batch validation and iteration as the produce path and start-up
//! recovery run them, then the codec's decoding (with decompression) of what
//! validation accepted, as ListOffsets-by-time and log replay do.
#![no_main]

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::batch::{validate_records, BatchIter};

fuzz_target!(|data: &[u8]| {
    let accepted = validate_records(data, 1 << 20).is_ok();
    let mut iter = BatchIter::new(data, true);
    for item in iter.by_ref() {
        if item.is_err() {
            break;
        }
    }
    assert!(iter.valid_len() <= data.len());
    if accepted {
        let mut bytes = Bytes::copy_from_slice(data);
        let _ = RecordBatchDecoder::decode_all(&mut bytes);
    }
});
