//! The wall clock, in milliseconds since the epoch, read in one place: every
//! timestamp the broker stamps or compares (LogAppendTime, retention,
//! `segment.ms`, flush intervals, group sessions, offset expiry) comes from
//! [`now_ms`]. Tests move it forward with [`advance`] instead of sleeping.
//!
//! It sits in `io` rather than `runtime` because the storage engine, below the
//! runtime, reads it too.

use std::sync::atomic::{AtomicI64, Ordering};

/// How far tests have moved the clock, in milliseconds.
static ADVANCED_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch (plus whatever [`advance`] added).
pub fn now_ms() -> i64 {
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    system.saturating_add(ADVANCED_MS.load(Ordering::Relaxed))
}

/// Moves the clock `ms` forward for the whole process. For tests; a test
/// binary that uses it should hold only tests that expect the jump.
pub fn advance(ms: i64) {
    ADVANCED_MS.fetch_add(ms, Ordering::Relaxed);
}
