//! Applying the committed log: each command goes to a [`Machine`] (the
//! metadata image), in log order, on every node alike. Snapshots of the
//! machine are checkpoint files, named as KIP-630 names them
//! (`checkpoints/<end offset 20 digits>-<epoch 10 digits>.checkpoint`): a
//! restarted node loads the newest one and applies the log after it; a node
//! too far behind is sent one by the leader.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::cluster::types::{
    Applied, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::io::disk::Disk;

/// A node's Raft, driving the state machine over `M`.
pub type Raft<M> = openraft::Raft<TypeConfig, StateMachine<M>>;

/// What the quorum's log drives. Everything is deterministic: every node
/// applies the same commands in the same order to the same snapshot.
pub trait Machine: 'static {
    /// Applies a committed command; `Err` refuses it (every node alike).
    fn apply(&self, index: u64, command: &str) -> impl Future<Output = Result<(), String>>;
    /// The machine's whole state, encoded.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the machine's state with a snapshot's, which covers the log
    /// up to (not including) index `end`.
    fn restore(&self, end: u64, snapshot: &[u8]) -> impl Future<Output = Result<(), String>>;
}

const CHECKPOINT_DIR: &str = "checkpoints";
const CHECKPOINT_EXTENSION: &str = "checkpoint";

/// A checkpoint file: the snapshot's meta (what it covers, the membership
/// then) and the machine's bytes.
#[derive(Serialize, Deserialize)]
pub(super) struct Checkpoint {
    meta: SnapshotMeta,
    pub(super) data: Vec<u8>,
}

impl Checkpoint {
    /// The index after the last entry it covers.
    pub(super) fn end(&self) -> u64 {
        self.meta.last_log_id.map_or(0, |id| id.index + 1)
    }
}

/// The newest readable checkpoint under `log_dir` (a damaged newer one is
/// skipped, as KRaft does), with plain blocking reads.
pub(super) fn newest_checkpoint(log_dir: &Path) -> io::Result<Option<Checkpoint>> {
    let dir = log_dir.join(CHECKPOINT_DIR);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(CHECKPOINT_EXTENSION))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    names.sort_unstable();
    for name in names.iter().rev() {
        let path = dir.join(name);
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<Checkpoint>(&bytes).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(error) => {
                tracing::warn!(checkpoint = %path.display(), %error, "skipping an unreadable checkpoint");
            }
        }
    }
    Ok(None)
}

/// Applies the log to `M`. Clones share the machine.
pub struct StateMachine<M: Machine> {
    inner: Rc<Inner<M>>,
}

impl<M: Machine> Clone for StateMachine<M> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<M> {
    machine: M,
    dir: PathBuf,
    disk: Disk,
    applied: RefCell<Option<LogId>>,
    membership: RefCell<StoredMembership>,
    /// The newest checkpoint, in memory too (it is sent to lagging nodes).
    current: RefCell<Option<Rc<Checkpoint>>>,
}

impl<M: Machine> StateMachine<M> {
    /// Loads the newest valid checkpoint under `log_dir` into `machine`
    /// (a damaged newer one is skipped, as KRaft does); none: an empty start.
    pub async fn open(log_dir: &Path, disk: &Disk, machine: M) -> io::Result<StateMachine<M>> {
        let dir = log_dir.join(CHECKPOINT_DIR);
        disk.create_dir_durably(&dir)?;
        let current = newest_checkpoint(log_dir)?.map(Rc::new);
        let (applied, membership) = match &current {
            Some(checkpoint) => {
                machine
                    .restore(checkpoint.end(), &checkpoint.data)
                    .await
                    .map_err(io::Error::other)?;
                (
                    checkpoint.meta.last_log_id,
                    checkpoint.meta.last_membership.clone(),
                )
            }
            None => (None, StoredMembership::default()),
        };
        Ok(StateMachine {
            inner: Rc::new(Inner {
                machine,
                dir,
                disk: disk.clone(),
                applied: RefCell::new(applied),
                membership: RefCell::new(membership),
                current: RefCell::new(current),
            }),
        })
    }

    pub fn machine(&self) -> &M {
        &self.inner.machine
    }

    /// The last applied log id.
    pub fn applied(&self) -> Option<LogId> {
        *self.inner.applied.borrow()
    }

    /// Writes `checkpoint` durably, makes it current and removes older ones.
    fn keep(&self, checkpoint: Checkpoint) -> io::Result<Rc<Checkpoint>> {
        let index = checkpoint.end();
        let term = checkpoint
            .meta
            .last_log_id
            .map_or(0, |id| id.leader_id.term);
        let name = format!("{index:020}-{term:010}.{CHECKPOINT_EXTENSION}");
        let bytes = serde_json::to_vec(&checkpoint).map_err(io::Error::other)?;
        let path = self.inner.dir.join(&name);
        self.inner.disk.write_durably(&path, &bytes)?;
        for entry in std::fs::read_dir(&self.inner.dir)?.filter_map(|e| e.ok()) {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other != name && other.ends_with(CHECKPOINT_EXTENSION) {
                self.inner.disk.remove(&entry.path())?;
            }
        }
        let checkpoint = Rc::new(checkpoint);
        *self.inner.current.borrow_mut() = Some(checkpoint.clone());
        Ok(checkpoint)
    }
}

fn snapshot_of(checkpoint: &Checkpoint) -> Snapshot {
    Snapshot {
        meta: checkpoint.meta.clone(),
        snapshot: Cursor::new(checkpoint.data.clone()),
    }
}

impl<M: Machine> RaftSnapshotBuilder<TypeConfig> for StateMachine<M> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let meta = SnapshotMeta {
            last_log_id: self.applied(),
            last_membership: self.inner.membership.borrow().clone(),
        };
        let data = self.inner.machine.snapshot();
        let checkpoint = self.keep(Checkpoint { meta, data })?;
        Ok(snapshot_of(&checkpoint))
    }
}

impl<M: Machine> RaftStateMachine<TypeConfig> for StateMachine<M> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied(), self.inner.membership.borrow().clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut applied = Applied::default();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => {
                    if let Err(refused) = self
                        .inner
                        .machine
                        .apply(entry.log_id.index, &command.0)
                        .await
                    {
                        applied.refused = Some(refused);
                    }
                }
                EntryPayload::Membership(membership) => {
                    *self.inner.membership.borrow_mut() =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                }
            }
            *self.inner.applied.borrow_mut() = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let end = meta.last_log_id.map_or(0, |id| id.index + 1);
        self.inner
            .machine
            .restore(end, &data)
            .await
            .map_err(io::Error::other)?;
        *self.inner.applied.borrow_mut() = meta.last_log_id;
        *self.inner.membership.borrow_mut() = meta.last_membership.clone();
        self.keep(Checkpoint {
            meta: meta.clone(),
            data,
        })?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.inner.current.borrow().as_deref().map(snapshot_of))
    }
}
