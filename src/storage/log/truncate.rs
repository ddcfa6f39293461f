//! Truncation of a log's tail: what a replica whose log diverged from its
//! leader's does (KIP-101, KIP-279), and what a Raft log does when a new
//! leader overwrites entries it never committed.
//!
//! Rare and never on the produce path, so it takes the simple road: cut the
//! files, make the cut durable, and open the log again with the full scan,
//! which rebuilds the indexes, the producer state and the transaction indexes
//! from what is left exactly as a recovery after a crash does. The cost is a
//! scan of the log (at the page cache's speed, as at start-up).

use std::fs;
use std::io;

use crate::io::clock::now_ms;
use crate::storage::cleaner;
use crate::storage::log::state::{write_log_start_checkpoint, PartitionLog};
use crate::storage::segment::{scan_batches, segment_file_name, Segment, INDEX_EXTENSIONS};

#[derive(Debug, thiserror::Error)]
pub enum TruncateError {
    /// Appends are being written or rolled back; the caller waits for them
    /// and tries again.
    #[error("writes are in flight or being rolled back")]
    WritesInFlight,
    #[error("storage error: {0}")]
    Storage(String),
}

impl PartitionLog {
    /// Removes every batch that holds an offset at or above `offset`, so that
    /// the log ends at or below `offset` (a batch that straddles `offset`
    /// goes whole: the cut is always at a batch boundary, and the new log end
    /// offset is returned). At or below the log start offset the log is
    /// emptied and starts again at `offset` (a follower whose leader's log
    /// starts past its end). Durable when it returns. The high watermark
    /// never rises here: it becomes the lower of itself and the new log end.
    ///
    /// Readers that already hold a view of the cut files may read bytes past
    /// the cut; only logs nobody fetches from with zero copy (followers, the
    /// metadata quorum's log) are truncated.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, TruncateError> {
        self.check_idle()?;
        if offset >= self.next_offset {
            // Nothing to cut, but an epoch begun at the log end (this
            // broker took the lead and never wrote in it) goes: a follower
            // told to end there must not name that epoch again, or its
            // leader answers with the same divergence forever.
            if self
                .epochs
                .entries()
                .iter()
                .any(|&(_, start)| start >= offset)
            {
                self.epochs.truncate_from_end(offset);
                self.epochs
                    .save(&self.disk, &self.dir)
                    .map_err(|e| TruncateError::Storage(e.to_string()))?;
                self.epochs_unsaved = false;
            }
            return Ok(self.next_offset);
        }
        if offset <= self.log_start_offset {
            return self.restart_at(offset);
        }
        let high_watermark = self.high_watermark();
        let cut = self.cut_files_at(offset);
        self.reopen_after(cut, offset, high_watermark)
    }

    /// Empties the log and starts it again at `offset`, below or above its
    /// end (Kafka's `truncateFullyAndStartAt`: a follower whose leader's log
    /// starts past its end, a Raft log that installed a snapshot beyond it).
    /// Durable when it returns; the high watermark is the new end.
    pub fn restart_at(&mut self, offset: i64) -> Result<i64, TruncateError> {
        self.check_idle()?;
        let cut = self.empty_and_start_at(offset);
        self.reopen_after(cut, offset, i64::MAX)
    }

    fn check_idle(&self) -> Result<(), TruncateError> {
        self.check_online().map_err(TruncateError::Storage)?;
        if !self.in_flight.is_empty() || self.write_error.is_some() {
            return Err(TruncateError::WritesInFlight);
        }
        Ok(())
    }

    /// Opens the cut files again with the full scan; the high watermark is
    /// the lower of `high_watermark` and the new end (never below the start).
    fn reopen_after(
        &mut self,
        cut: io::Result<()>,
        offset: i64,
        high_watermark: i64,
    ) -> Result<i64, TruncateError> {
        if let Err(error) = cut {
            // What is on disk is no longer what this log describes.
            self.fail(format!("truncation to {offset} failed: {error}"));
            return Err(TruncateError::Storage(error.to_string()));
        }
        let reopened = PartitionLog::open_on(
            &self.disk,
            self.topic.clone(),
            self.partition,
            self.dir.clone(),
            self.config.clone(),
            self.shared.clone(),
        );
        let mut fresh = match reopened {
            Ok(log) => log,
            Err(error) => {
                self.fail(format!("reopening after truncation to {offset}: {error}"));
                return Err(TruncateError::Storage(error.to_string()));
            }
        };
        fresh.next_write_id = self.next_write_id;
        fresh.stamp_epoch = self.stamp_epoch;
        fresh.rollbacks = self.rollbacks + 1;
        let end = fresh.next_offset;
        fresh.publish_watermarks(high_watermark.min(end).max(fresh.log_start_offset));
        tracing::info!(
            topic = %self.topic,
            partition = self.partition,
            requested = offset,
            log_start_offset = fresh.log_start_offset,
            log_end_offset = end,
            "truncated the log"
        );
        // The old segments' descriptors close as they drop.
        *self = fresh;
        Ok(end)
    }

    /// Removes every segment and starts the log again, empty, at `offset`.
    fn empty_and_start_at(&mut self, offset: i64) -> io::Result<()> {
        cleaner::truncate_checkpoint(&self.disk, &self.dir, offset)?;
        // Last first, so that a crash midway leaves a prefix of the log.
        for segment in self.segments.iter().rev() {
            segment.remove_files(&self.disk);
        }
        self.disk.sync_dir(&self.dir)?;
        let fresh = Segment::create(&self.disk, &self.dir, offset, now_ms())?;
        self.disk.sync_path(&fresh.log_path)?;
        write_log_start_checkpoint(&self.disk, &self.dir, offset)?;
        self.disk.sync_dir(&self.dir)
    }

    /// Cuts the segment files so that the batch holding `offset` and
    /// everything after it are gone.
    fn cut_files_at(&mut self, offset: i64) -> io::Result<()> {
        let i = self.segments.partition_point(|s| s.base_offset <= offset) - 1;
        let segment = &self.segments[i];
        // The index points at or before the batch; scan to it.
        let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let from = u64::from(segment.index.lookup(relative).position);
        let file = fs::File::open(&segment.log_path)?;
        let mut cut = None;
        scan_batches(&file, from, segment.readable_bytes, |batch| {
            if cut.is_none() && batch.header.last_offset() >= offset {
                cut = Some((batch.position, batch.header.base_offset));
            }
        })?;
        // No batch reaches `offset` (it falls in a gap the cleaner left at
        // the segment's end): the segment stays whole.
        let (position, end) = cut.unwrap_or((segment.readable_bytes, segment.next_offset));
        // What the cleaner calls clean must end at the new end; lowering it
        // first is safe whatever happens next.
        cleaner::truncate_checkpoint(&self.disk, &self.dir, end.min(offset))?;
        // The later segments go first, durably: a crash between the two
        // steps then leaves a longer prefix of the log, never a log with a
        // hole where the cut segment's tail was. A segment file that cannot
        // be removed stops the truncation (it would be a hole).
        for later in self.segments[i + 1..].iter().rev() {
            later.remove_files(&self.disk);
            let path = &later.log_path;
            if path.exists() {
                return Err(io::Error::other(format!(
                    "{} could not be removed",
                    path.display()
                )));
            }
        }
        self.disk.sync_dir(&self.dir)?;
        let segment = &self.segments[i];
        let writable = self.disk.open_rw(&segment.log_path)?;
        self.disk.truncate(&writable, position)?;
        self.disk.sync_file(&writable)?;
        // Stale from here on; the reopening scan rebuilds them.
        for extension in INDEX_EXTENSIONS {
            match self.disk.remove(
                &self
                    .dir
                    .join(segment_file_name(segment.base_offset, extension)),
            ) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.disk.sync_dir(&self.dir)
    }
}
