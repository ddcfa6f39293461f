//! Segment rolls, retention by time and size, and DeleteRecords: what moves a
//! log's start and its segment list.

use std::io;
use std::rc::Rc;

use crate::protocol::errors::ErrorCode;
use crate::storage::segment::Segment;

use super::state::*;

impl PartitionLog {
    /// Rolls to a new segment if the active one is full or old.
    pub(super) fn maybe_roll(&mut self, incoming_bytes: u64, now: i64) -> io::Result<()> {
        let active = self
            .segments
            .last()
            .expect("a log has at least one segment");
        let too_big = active.reserved_bytes + incoming_bytes > self.config.segment_bytes;
        // KIP-354: a compacted log also rolls by max.compaction.lag.ms, so
        // that the active segment's records become cleanable in time.
        let roll_ms = if self.config.cleanup_policy.compact {
            self.config
                .segment_ms
                .min(self.config.max_compaction_lag_ms)
        } else {
            self.config.segment_ms
        };
        let too_old = now.saturating_sub(active.created_ms) > roll_ms;
        if active.is_empty() || !(too_big || too_old) {
            return Ok(());
        }
        self.roll_now(now)
    }

    /// Rolls to a new active segment starting at the next offset (the
    /// active one must not be empty). A roll that fails for want of space
    /// or descriptors fails its append and may succeed later; any other
    /// failure (EIO, a directory gone or read-only) takes the log offline,
    /// as Kafka takes a log directory offline, so that in a cluster its
    /// replica leaves the ISR and another leads.
    pub(super) fn roll_now(&mut self, now: i64) -> io::Result<()> {
        let rolled = self.roll_to_new_segment(now);
        if let Err(error) = &rolled {
            if !runs_short(error) {
                self.fail(format!("rolling a new segment failed: {error}"));
            }
        }
        rolled
    }

    fn roll_to_new_segment(&mut self, now: i64) -> io::Result<()> {
        let active = self
            .segments
            .last()
            .expect("a log has at least one segment");
        if active.is_empty() {
            return Ok(());
        }
        active.write_index_files(&self.disk)?;
        // The next acknowledged append waits for a round that also syncs the
        // segment rolled away from (so that no acknowledged offset lies
        // above an unsynced one) and the directory (the new segment's name).
        let dir = Rc::new(self.disk.open_dir(&self.dir)?);
        let outgoing = active.file.clone();
        let segment = Segment::create(&self.disk, &self.dir, self.next_offset, now)?;
        self.segments.push(segment);
        if !self
            .pending_sync
            .files
            .iter()
            .any(|f| Rc::ptr_eq(f, &outgoing))
        {
            self.pending_sync.files.push(outgoing);
        }
        self.pending_sync.dir = Some(dir);
        Ok(())
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high
    /// watermark) and removes the segments entirely below it. Returns the new
    /// log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, ErrorCode> {
        if self.failure.is_some() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let high_watermark = self.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if target <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        write_log_start_checkpoint(&self.disk, &self.dir, target).map_err(|error| {
            tracing::error!(topic = %self.topic, partition = self.partition, %error, "writing the log start checkpoint");
            ErrorCode::KafkaStorageError
        })?;
        self.log_start_offset = target;
        self.shared.set_log_start_offset(target);
        self.publish_watermarks(self.high_watermark());
        while self.segments.len() > 1 && self.segments[1].base_offset <= target {
            let segment = self.segments.remove(0);
            // Readers holding the file keep it readable until they finish (Linux unlink semantics).
            segment.remove_files(&self.disk);
        }
        Ok(target)
    }

    /// Retention, for topics whose cleanup.policy includes `delete`: removes the
    /// oldest closed segments while the newest record in them is older than
    /// `retention.ms`, or while the log without them would still hold at least
    /// `retention.bytes` (Kafka's rules). The active segment is never removed.
    /// Returns how many segments went.
    pub fn apply_retention(&mut self, now_ms: i64) -> usize {
        if self.failure.is_some() || !self.config.cleanup_policy.delete {
            return 0;
        }
        let mut removed = 0;
        let mut total: u64 = self.size_bytes();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            // A segment without timestamps is aged by when it was written.
            let newest_ms = if oldest.max_timestamp_ms >= 0 {
                oldest.max_timestamp_ms
            } else {
                oldest.created_ms
            };
            let too_old = self.config.retention_ms >= 0
                && now_ms.saturating_sub(newest_ms) > self.config.retention_ms;
            let too_big = self.config.retention_bytes >= 0
                && total.saturating_sub(oldest.reserved_bytes)
                    >= self.config.retention_bytes as u64;
            if !(too_old || too_big) {
                break;
            }
            let segment = self.segments.remove(0);
            total -= segment.reserved_bytes;
            // Readers holding the file keep it readable until they finish (Linux unlink semantics).
            segment.remove_files(&self.disk);
            removed += 1;
        }
        if removed > 0 {
            let start = self.segments[0].base_offset.max(self.log_start_offset);
            self.log_start_offset = start;
            self.shared.set_log_start_offset(start);
            self.publish_watermarks(self.high_watermark());
            tracing::info!(topic = %self.topic, partition = self.partition, removed, log_start_offset = start, "retention removed segments");
        }
        removed
    }
}

/// Whether `error` is a resource running short (space, quota, descriptors)
/// rather than a failing disk: what may pass without intervention.
fn runs_short(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

#[cfg(test)]
mod tests {
    use super::runs_short;
    use std::io;

    #[test]
    fn space_and_descriptors_run_short_a_failing_disk_does_not() {
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EMFILE, libc::ENFILE] {
            assert!(runs_short(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [
            libc::EIO,
            libc::ENOENT,
            libc::ENOTDIR,
            libc::EROFS,
            libc::EACCES,
        ] {
            assert!(!runs_short(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!runs_short(&io::Error::other("no errno")));
    }
}
