//! A full disk: appends get KAFKA_STORAGE_ERROR, reads keep working, nothing
//! acknowledged is lost, and appends succeed again once space returns.
//!
//! Runs the broker on a small tmpfs, which needs root (as on CI). Without root
//! the test says so and checks nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use sluice::protocol::encode;

use common::wire::*;
use common::TestBroker;

const KAFKA_STORAGE_ERROR: i16 = 56;

/// A tmpfs mounted for the test's lifetime.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        status.ok().filter(|s| s.success()).map(|_| SmallFs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn batch(i: usize) -> Bytes {
    let value = Bytes::from(format!("{i:08}-{}", "x".repeat(4000)));
    encode::encode_batch(
        &[encode::record(
            0,
            1_700_000_000_000,
            None,
            Some(value),
            None,
        )],
        Compression::None,
    )
}

#[test]
fn appends_fail_cleanly_when_the_disk_is_full_and_resume_when_space_returns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("disk_full: not root, cannot mount a small tmpfs; nothing checked");
        return;
    }
    let fs = SmallFs::mount("6m").expect("mount a 6 MiB tmpfs (root is required)");
    let ballast: PathBuf = fs.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 3 << 20]).unwrap();
    let data_dir = fs.path().join("data");
    let mut broker = TestBroker::start_in(&data_dir, &[]);
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("full");
    create_topic(&mut conn, &topic, 1, &[("segment.bytes", "262144")]);

    let mut acked = 0usize;
    let mut refusals = 0usize;
    for i in 0..2000 {
        let response = produce(&mut conn, &topic, 0, batch(acked));
        match response.error_code {
            NONE => {
                assert_eq!(
                    response.base_offset, acked as i64,
                    "offsets stay contiguous"
                );
                acked += 1;
            }
            KAFKA_STORAGE_ERROR => {
                refusals += 1;
                if refusals >= 3 {
                    break;
                }
            }
            other => panic!("append {i}: unexpected error {other}"),
        }
    }
    assert!(acked > 100, "some appends fit ({acked})");
    assert!(refusals >= 3, "the disk filled up and appends were refused");
    assert_eq!(
        latest_offset(&mut conn, &topic, 0),
        acked as i64,
        "refused appends left nothing behind"
    );

    // Reads keep working while the disk is full.
    let request = sessionless(
        12,
        &topic,
        uuid::Uuid::nil(),
        &[(0, 0, 1 << 20)],
        0,
        0,
        1 << 20,
    );
    let response = fetch(&mut conn, 12, &request);
    assert_eq!(response.responses[0].partitions[0].error_code, NONE);
    assert!(!response.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());

    // Space returns: appends succeed again, right after the last acknowledged one.
    std::fs::remove_file(&ballast).unwrap();
    for _ in 0..20 {
        let response = produce(&mut conn, &topic, 0, batch(acked));
        assert_eq!(
            (response.error_code, response.base_offset),
            (NONE, acked as i64)
        );
        acked += 1;
    }

    // After a restart, every acknowledged record is there, in order, once.
    drop(conn);
    broker.restart();
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(latest_offset(&mut conn, &topic, 0), acked as i64);
    let mut offset = 0i64;
    while offset < acked as i64 {
        let mut request = request.clone();
        request.topics[0].partitions[0].fetch_offset = offset;
        let response = fetch(&mut conn, 12, &request);
        let mut records = response.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap() {
            for r in set.records {
                assert_eq!(r.offset, offset);
                let value = r.value.unwrap();
                assert_eq!(
                    &value[..8],
                    format!("{offset:08}").as_bytes(),
                    "record {offset} is the one acknowledged there"
                );
                offset += 1;
            }
        }
    }
    drop(conn);
    broker.stop();
}
