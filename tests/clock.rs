//! Time under test control: `io::clock::advance` moves the broker's clock,
//! so that time-based rules (`segment.ms`, `retention.ms`) are tested without
//! sleeping. A test binary of its own: the clock is process-wide.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use sluice::io::clock::{advance, now_ms};
use sluice::protocol::batch::validate_records;
use sluice::protocol::encode;
use sluice::storage::commit::GroupCommit;
use sluice::storage::config::LogConfig;
use sluice::storage::log::{self, PartitionLog};

const HOUR_MS: i64 = 3_600_000;

#[test]
fn segment_ms_and_retention_ms_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: HOUR_MS,
        retention_ms: 2 * HOUR_MS,
        ..LogConfig::default()
    };
    let log = PartitionLog::open_private("t", 0, dir.path().join("t-0"), config).unwrap();
    let commit = Rc::new(GroupCommit::default());
    let append = |value: &'static str| {
        let record = encode::record(
            0,
            now_ms(),
            None,
            Some(Bytes::from_static(value.as_bytes())),
            None,
        );
        let records = encode::encode_batch(&[record], Compression::None);
        let validated = validate_records(&records, usize::MAX).unwrap();
        let (log, commit) = (log.clone(), commit.clone());
        async move {
            log::append(&log, &commit, records, &validated, true)
                .await
                .unwrap()
        }
    };
    let runtime = compio::runtime::Runtime::new().unwrap();
    runtime.block_on(append("first"));
    runtime.block_on(append("second"));
    assert_eq!(log.borrow().segment_count(), 1, "one hour has not passed");
    let before = now_ms();
    advance(HOUR_MS + 1_000);
    assert!(now_ms() - before >= HOUR_MS + 1_000);
    runtime.block_on(append("third"));
    assert_eq!(
        log.borrow().segment_count(),
        2,
        "segment.ms rolled the segment"
    );
    // Retention: the closed segment's newest record is not two hours old yet.
    assert_eq!(log.borrow_mut().apply_retention(now_ms()), 0);
    advance(2 * HOUR_MS);
    assert_eq!(
        log.borrow_mut().apply_retention(now_ms()),
        1,
        "retention.ms removed it"
    );
    assert_eq!(log.borrow().log_start_offset(), 2);
}
