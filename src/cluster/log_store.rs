//! The Raft log on disk: a partition log whose offsets are the entries'
//! indexes, one record batch per entry (the record's value is the entry,
//! JSON-encoded), written through the shard's group commit and synced before
//! openraft hears that it is durable. Beside it, `quorum-state` holds the
//! vote and the last purged log id (both durably, as Raft requires), and
//! `committed` the last known committed log id (a hint that lets a restarted
//! node apply its log before it hears from a leader; losing it is harmless).
//!
//! The entries from the last purge on are also kept in memory: the metadata
//! log is small (snapshots bound it), and openraft reads it often.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::records::Compression;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};

use crate::cluster::types::{Entry, LogId, TypeConfig, Vote};
use crate::io::clock::now_ms;
use crate::io::disk::Disk;
use crate::protocol::batch::validate_records;
use crate::protocol::encode;
use crate::storage::commit::GroupCommit;
use crate::storage::config::LogConfig;
use crate::storage::log::{self, LogRef, PartitionLog};
use crate::storage::replay;

/// The quorum's log directory under the data dir (KRaft's name).
pub const LOG_DIR: &str = "__cluster_metadata-0";
const QUORUM_STATE_FILE: &str = "quorum-state";
const COMMITTED_FILE: &str = "committed";

/// What must survive a crash besides the entries.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct QuorumState {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

/// The Raft log of one node. Cheap to clone: clones share the log (openraft
/// takes one as the storage and others as readers).
#[derive(Clone)]
pub struct LogStore {
    inner: Rc<Inner>,
}

struct Inner {
    dir: PathBuf,
    disk: Disk,
    log: LogRef,
    commit: Rc<GroupCommit>,
    entries: RefCell<BTreeMap<u64, Entry>>,
    state: RefCell<QuorumState>,
    committed: Cell<Option<LogId>>,
}

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

impl LogStore {
    /// Opens (recovering) or creates the log under `data_dir`, on the
    /// current shard, whose group commit `commit` is.
    pub fn open(data_dir: &Path, disk: &Disk, commit: Rc<GroupCommit>) -> io::Result<LogStore> {
        let dir = data_dir.join(LOG_DIR);
        let config = LogConfig {
            segment_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let log = PartitionLog::open_private_on(disk, "__cluster_metadata", 0, dir.clone(), config)
            .map_err(|e| other(format!("opening the quorum's log: {e}")))?;
        let state: QuorumState = read_json(&dir.join(QUORUM_STATE_FILE))?.unwrap_or_default();
        // Unreadable or absent, the hint is only a hint.
        let committed: Option<LogId> = read_json(&dir.join(COMMITTED_FILE)).ok().flatten();
        let (start, end) = {
            let log = log.borrow();
            (log.log_start_offset(), log.log_end_offset())
        };
        let purged_up_to = state.last_purged.map_or(-1, |id| id.index as i64);
        let mut entries = BTreeMap::new();
        replay::for_each_record(&dir, |record| {
            if record.offset < start || record.offset >= end || record.offset <= purged_up_to {
                return Ok(());
            }
            let value = record.value.ok_or("an entry without a value")?;
            let entry: Entry = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
            if entry.log_id.index as i64 != record.offset {
                return Err(format!(
                    "entry {} stored at offset {}",
                    entry.log_id.index, record.offset
                ));
            }
            entries.insert(entry.log_id.index, entry);
            Ok(())
        })
        .map_err(other)?;
        Ok(LogStore {
            inner: Rc::new(Inner {
                dir,
                disk: disk.clone(),
                log,
                commit,
                entries: RefCell::new(entries),
                state: RefCell::new(state),
                committed: Cell::new(committed),
            }),
        })
    }

    /// Closes the log's files cleanly (shutdown, after Raft stopped), so
    /// that the next start skips the scan.
    pub fn close(&self) {
        if let Err(error) = self.inner.log.borrow_mut().close() {
            tracing::warn!(%error, "closing the quorum's log");
        }
    }

    fn save_state(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&*self.inner.state.borrow()).map_err(io::Error::other)?;
        self.inner
            .disk
            .write_durably(&self.inner.dir.join(QUORUM_STATE_FILE), &bytes)
    }

    /// The index the next appended entry must have.
    fn log_end(&self) -> u64 {
        self.inner.log.borrow().log_end_offset() as u64
    }

    /// Empties the on-disk log and starts it at `index`.
    fn restart_at(&self, index: u64) -> io::Result<()> {
        self.inner
            .log
            .borrow_mut()
            .restart_at(index as i64)
            .map(|_| ())
            .map_err(|e| other(e.to_string()))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// One entry as a batch of one record.
fn entry_batch(entry: &Entry) -> io::Result<Bytes> {
    let value = serde_json::to_vec(entry).map_err(io::Error::other)?;
    Ok(encode::encode_batch(
        &[encode::record(
            0,
            now_ms(),
            None,
            Some(Bytes::from(value)),
            None,
        )],
        Compression::None,
    ))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let entries = self.inner.entries.borrow();
        Ok(entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.state.borrow().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.inner.state.borrow().last_purged;
        let last_log_id = self
            .inner
            .entries
            .borrow()
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.inner.state.borrow_mut().vote = Some(*vote);
        self.save_state()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.committed.set(committed);
        // Not synced: a hint (see the module's comment). Written aside and
        // renamed, so that it is never torn.
        let path = self.inner.dir.join(COMMITTED_FILE);
        let aside = self.inner.dir.join("committed.tmp");
        let bytes = serde_json::to_vec(&committed).map_err(io::Error::other)?;
        self.inner.disk.write(&aside, &bytes)?;
        self.inner.disk.rename(&aside, &path)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.committed.get())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let mut batches = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let expected = self.log_end() + batches.len() as u64;
            if index != expected {
                let empty = batches.is_empty() && self.inner.entries.borrow().is_empty();
                if !empty {
                    return Err(other(format!(
                        "entry {index} appended where {expected} comes next"
                    )));
                }
                // An empty log (all of it purged) goes on where Raft says.
                self.restart_at(index)?;
            }
            let batch = entry_batch(&entry)?;
            let validated = validate_records(&batch, usize::MAX)
                .map_err(|e| other(format!("entry {index}: {e}")))?;
            batches.push((index, batch, validated));
            self.inner.entries.borrow_mut().insert(index, entry);
        }
        // Reserved in order on the first poll, synced in one group-commit round.
        let writes = batches.iter().map(|(_, batch, validated)| {
            log::append(
                &self.inner.log,
                &self.inner.commit,
                batch.clone(),
                validated,
                true,
            )
        });
        let outcomes = join_all(writes).await;
        let mut result = Ok(());
        for ((index, _, _), outcome) in batches.iter().zip(outcomes) {
            match outcome {
                Ok(o) if o.base_offset as u64 == *index => {}
                Ok(o) => {
                    result = Err(other(format!("entry {index} written at {}", o.base_offset)));
                    break;
                }
                Err(e) => {
                    result = Err(other(format!("entry {index}: {e}")));
                    break;
                }
            }
        }
        let failed = result.as_ref().err().map(|e| other(e.to_string()));
        callback.io_completed(result);
        match failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map_or(0, |id| id.index + 1);
        self.inner.entries.borrow_mut().retain(|&i, _| i < from);
        let truncated = self.inner.log.borrow_mut().truncate_to(from as i64);
        truncated.map(|_| ()).map_err(|e| other(e.to_string()))
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        // The record of what was purged first: a crash before the files go
        // then leaves entries that the next open skips.
        self.inner.state.borrow_mut().last_purged = Some(upto);
        self.save_state()?;
        self.inner
            .entries
            .borrow_mut()
            .retain(|&i, _| i > upto.index);
        let next = upto.index + 1;
        if next >= self.log_end() {
            return self.restart_at(next);
        }
        let deleted = self
            .inner
            .log
            .borrow_mut()
            .delete_records_before(next as i64);
        deleted
            .map(|_| ())
            .map_err(|code| other(format!("purging up to {}: {code:?}", upto.index)))
    }
}

/// The committed log id last saved (None when absent or unreadable).
pub(super) fn read_committed_hint(dir: &Path) -> Option<LogId> {
    read_json::<Option<LogId>>(&dir.join(COMMITTED_FILE))
        .ok()
        .flatten()
        .flatten()
}

/// The last purged log id, from `quorum-state`.
pub(super) fn read_last_purged(dir: &Path) -> io::Result<Option<LogId>> {
    Ok(read_json::<QuorumState>(&dir.join(QUORUM_STATE_FILE))?.and_then(|s| s.last_purged))
}

/// Where the quorum's files are, for tools and tests.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_DIR)
}
