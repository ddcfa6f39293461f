//! Frames and requests as the broker decodes them: the header peek, the header
//! and body codecs for every API and version the broker serves, and the
//! hand-written Produce v0-2 parser. Any panic or abort (e.g. an allocation
//! sized by a hostile length) is a bug.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;
use sluice::protocol::frame;
use sluice::server::handlers::produce::{legacy_unsupported, PRODUCE_MIN_SERVED};
use sluice::server::registry;

fuzz_target!(|data: &[u8]| {
    let Some(prefix) = frame::peek_header(data) else {
        return;
    };
    let Some(support) = registry::find(prefix.api_key) else {
        return;
    };
    let Ok(key) = ApiKey::try_from(prefix.api_key) else {
        return;
    };
    let version = prefix.api_version;
    if version < support.min || version > support.max {
        return;
    }
    if key == ApiKey::Produce && version < PRODUCE_MIN_SERVED {
        let _ = legacy_unsupported(&Bytes::copy_from_slice(data), version);
        return;
    }
    let mut body = Bytes::copy_from_slice(data);
    if frame::decode_header(key, version, &mut body).is_ok() {
        let _ = RequestKind::decode(key, &mut body, version);
    }
});
