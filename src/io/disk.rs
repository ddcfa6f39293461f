//! The storage engine's file operations, behind one seam: [`Disk::Real`] does
//! them; [`Disk::Faulty`] (for tests) does them too, and also records what a
//! power loss would keep (the contents of each file as of its last sync, the
//! entries of each directory as of its last directory sync), fails the Nth
//! write or sync when told to, and calls a hook at every sync point (as the
//! sync starts), where a test can take the image of a crash
//! ([`FaultyDisk::crash_image`]): what is durable before that sync.
//!
//! Every create, write, sync, rename, truncation and removal of the storage
//! engine goes through a `Disk`, so that the twin sees all of them; reads do not
//! (they change nothing a crash could lose). The real arm adds no copy and no
//! allocation: a match, then the same call as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use compio::io::AsyncWriteAtExt;

use crate::io::fs as durable;

/// Where the storage engine's file operations go. Cheap to clone.
#[derive(Clone, Default)]
pub enum Disk {
    /// The file system, directly.
    #[default]
    Real,
    /// The file system, watched: for fault and crash tests.
    Faulty(Arc<FaultyDisk>),
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disk::Real => f.write_str("Disk::Real"),
            Disk::Faulty(_) => f.write_str("Disk::Faulty"),
        }
    }
}

impl Disk {
    /// Creates (or truncates) `path` for reading and writing.
    pub fn create(&self, path: &Path) -> io::Result<File> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        if let (Disk::Faulty(faulty), false) = (self, existed) {
            // A new inode may reuse a deleted file's number: nothing of it is durable yet.
            faulty.forget(file.metadata()?.ino());
        }
        Ok(file)
    }

    /// Opens an existing `path` for reading and writing.
    pub fn open_rw(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }

    /// Writes `head` then `body` at `position` (an append to a segment).
    pub async fn write_at(
        &self,
        file: &compio::fs::File,
        head: Bytes,
        body: Bytes,
        position: u64,
    ) -> io::Result<()> {
        if let Disk::Faulty(faulty) = self {
            faulty.before_write()?;
        }
        let mut file = file;
        if body.is_empty() {
            file.write_all_at(head, position).await.0
        } else {
            file.write_vectored_all_at([head, body], position).await.0
        }
    }

    /// fdatasync of a file open with io_uring (the group commit's syncs).
    pub async fn sync_data_async(&self, file: &compio::fs::File) -> io::Result<()> {
        let snapshot = match self {
            Disk::Faulty(faulty) => Some(faulty.file_sync_starts(file.as_fd())?),
            Disk::Real => None,
        };
        file.sync_data().await?;
        if let (Disk::Faulty(faulty), Some(snapshot)) = (self, snapshot) {
            faulty.sync_done(snapshot);
        }
        Ok(())
    }

    /// fsync of a directory open with io_uring (see `open_dir`).
    pub async fn sync_dir_async(&self, dir: &compio::fs::File, path: &Path) -> io::Result<()> {
        let snapshot = match self {
            Disk::Faulty(faulty) => Some(faulty.dir_sync_starts(path)?),
            Disk::Real => None,
        };
        dir.sync_all().await?;
        if let (Disk::Faulty(faulty), Some(snapshot)) = (self, snapshot) {
            faulty.sync_done(snapshot);
        }
        Ok(())
    }

    /// `dir`, open for `sync_dir_async`.
    pub fn open_dir(&self, dir: &Path) -> io::Result<compio::fs::File> {
        durable::open_dir(dir)
    }

    /// fsync of a file open with std (file data and size).
    pub fn sync_file(&self, file: &File) -> io::Result<()> {
        let snapshot = match self {
            Disk::Faulty(faulty) => Some(faulty.file_sync_starts(file.as_fd())?),
            Disk::Real => None,
        };
        file.sync_all()?;
        if let (Disk::Faulty(faulty), Some(snapshot)) = (self, snapshot) {
            faulty.sync_done(snapshot);
        }
        Ok(())
    }

    /// fsync of `path`'s data through a descriptor of its own.
    pub fn sync_path(&self, path: &Path) -> io::Result<()> {
        self.sync_file(&File::open(path)?)
    }

    /// Makes the entries of `dir` durable.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let snapshot = match self {
            Disk::Faulty(faulty) => Some(faulty.dir_sync_starts(dir)?),
            Disk::Real => None,
        };
        durable::sync_dir(dir)?;
        if let (Disk::Faulty(faulty), Some(snapshot)) = (self, snapshot) {
            faulty.sync_done(snapshot);
        }
        Ok(())
    }

    /// Cuts `file` to `len` bytes.
    pub fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// Writes `path` whole, without syncing (index files: rebuilt from the log
    /// if lost).
    pub fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.create(path)?.write_all_at(bytes, 0)
    }

    /// Replaces `path` with `bytes` durably: temp file, sync, rename, directory sync.
    pub fn write_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = durable::temp_path(path);
        let file = self.create(&tmp)?;
        file.write_all_at(bytes, 0)?;
        self.sync_file(&file)?;
        drop(file);
        fs::rename(&tmp, path)?;
        self.sync_dir(durable::parent_of(path))
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    /// Removes `path`; a missing file is not an error.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Removes the `paths` that exist, then syncs `dir` if any did.
    pub fn remove_durably(&self, dir: &Path, paths: &[PathBuf]) -> io::Result<bool> {
        let mut removed = false;
        for path in paths {
            if path.exists() {
                self.remove(path)?;
                removed = true;
            }
        }
        if removed {
            self.sync_dir(dir)?;
        }
        Ok(removed)
    }

    /// Removes `dir` and everything in it (a deleted partition).
    pub fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    /// Creates `dir` and its missing parents durably; whether `dir` was created.
    pub fn create_dir_durably(&self, dir: &Path) -> io::Result<bool> {
        if dir.is_dir() {
            return Ok(false);
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.create_dir_durably(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(error) => return Err(error),
        }
        if let Disk::Faulty(faulty) = self {
            faulty.new_dir(fs::metadata(dir)?.ino());
        }
        self.sync_dir(durable::parent_of(dir))?;
        Ok(true)
    }
}

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The Nth write (from 1) fails with this errno (EIO, ENOSPC) and writes nothing.
    Write { nth: u64, errno: i32 },
    /// The Nth sync (from 1) fails with this errno and syncs nothing.
    Sync { nth: u64, errno: i32 },
}

/// Called at each sync point (from 1) as the sync starts: a crash image taken
/// then holds what was durable before that sync.
pub type SyncHook = Box<dyn FnMut(u64, &FaultyDisk) + Send>;

/// What a sync makes durable, read as it starts.
enum Snapshot {
    File {
        id: u64,
        contents: Vec<u8>,
    },
    Dir {
        id: u64,
        entries: BTreeMap<OsString, u64>,
        subdirs: Vec<u64>,
    },
}

/// The file system as a crash would leave it, and injected faults.
pub struct FaultyDisk {
    root: PathBuf,
    state: Mutex<FaultState>,
    hook: Mutex<Option<SyncHook>>,
}

/// Files and directories are known by an id of their own, not by inode
/// number: a new file may reuse the inode of a deleted one while a durable
/// directory entry still names the old file, which a crash must bring back.
#[derive(Default)]
struct FaultState {
    /// Inode number -> the id of the file or directory now holding it.
    ids: HashMap<u64, u64>,
    next_id: u64,
    /// Per file id: its contents as of its last sync.
    files: HashMap<u64, Vec<u8>>,
    /// Per directory id: its entries (name -> id) as of its last sync.
    dirs: HashMap<u64, BTreeMap<OsString, u64>>,
    /// Ids that are directories.
    dir_ids: HashSet<u64>,
    writes: u64,
    syncs: u64,
    faults: Vec<Fault>,
}

impl FaultState {
    /// The id of the file or directory at `ino` (a new one if unseen).
    fn id(&mut self, ino: u64) -> u64 {
        if let Some(&id) = self.ids.get(&ino) {
            return id;
        }
        self.fresh(ino)
    }

    /// A new id for `ino`: a new file or directory, nothing of it durable.
    fn fresh(&mut self, ino: u64) -> u64 {
        self.next_id += 1;
        self.ids.insert(ino, self.next_id);
        self.next_id
    }
}

impl FaultyDisk {
    /// Watches the tree under `root`; everything already there counts as durable.
    pub fn new(root: &Path) -> io::Result<Arc<FaultyDisk>> {
        let disk = FaultyDisk {
            root: root.to_path_buf(),
            state: Mutex::new(FaultState::default()),
            hook: Mutex::new(None),
        };
        disk.record_tree(root)?;
        Ok(Arc::new(disk))
    }

    fn record_tree(&self, dir: &Path) -> io::Result<()> {
        let snapshot = self.dir_snapshot(dir)?;
        self.sync_done(snapshot);
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                self.record_tree(&path)?;
            } else {
                let file = File::open(&path)?;
                let metadata = file.metadata()?;
                let mut contents = vec![0u8; metadata.len() as usize];
                file.read_exact_at(&mut contents, 0)?;
                let id = self.state.lock().expect("state lock").id(metadata.ino());
                self.sync_done(Snapshot::File { id, contents });
            }
        }
        Ok(())
    }

    /// Calls `hook` at every sync point from now on, as the sync starts.
    pub fn on_sync(&self, hook: SyncHook) {
        *self.hook.lock().expect("hook lock") = Some(hook);
    }

    /// Makes a later write or sync fail.
    pub fn inject(&self, fault: Fault) {
        self.state.lock().expect("state lock").faults.push(fault);
    }

    /// Sync points so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().expect("state lock").syncs
    }

    /// Writes so far.
    pub fn writes(&self) -> u64 {
        self.state.lock().expect("state lock").writes
    }

    fn forget(&self, ino: u64) {
        self.state.lock().expect("state lock").fresh(ino);
    }

    fn new_dir(&self, ino: u64) {
        let mut state = self.state.lock().expect("state lock");
        let id = state.fresh(ino);
        state.dir_ids.insert(id);
    }

    fn before_write(&self) -> io::Result<()> {
        let mut state = self.state.lock().expect("state lock");
        state.writes += 1;
        let n = state.writes;
        let fault = state.faults.iter().find_map(|f| match f {
            Fault::Write { nth, errno } if *nth == n => Some(*errno),
            _ => None,
        });
        match fault {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    /// A sync starts: a sync point. An injected fault fails it here (nothing
    /// becomes durable). Otherwise the hook sees the durable state as it is
    /// while the sync runs (a crash now keeps none of it), and what the sync
    /// will make durable is read now: what is written while it runs is not
    /// covered by it.
    fn sync_starts(&self) -> io::Result<()> {
        let (n, fault) = {
            let mut state = self.state.lock().expect("state lock");
            state.syncs += 1;
            let n = state.syncs;
            let fault = state.faults.iter().find_map(|f| match f {
                Fault::Sync { nth, errno } if *nth == n => Some(*errno),
                _ => None,
            });
            (n, fault)
        };
        let hook = self.hook.lock().expect("hook lock").take();
        if let Some(mut hook) = hook {
            hook(n, self);
            *self.hook.lock().expect("hook lock") = Some(hook);
        }
        match fault {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn file_sync_starts(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Snapshot> {
        self.sync_starts()?;
        let file = File::from(fd.try_clone_to_owned()?);
        let metadata = file.metadata()?;
        let mut contents = vec![0u8; metadata.len() as usize];
        file.read_exact_at(&mut contents, 0)?;
        let id = self.state.lock().expect("state lock").id(metadata.ino());
        Ok(Snapshot::File { id, contents })
    }

    fn dir_sync_starts(&self, dir: &Path) -> io::Result<Snapshot> {
        self.sync_starts()?;
        self.dir_snapshot(dir)
    }

    fn dir_snapshot(&self, dir: &Path) -> io::Result<Snapshot> {
        let dir_ino = fs::metadata(dir)?.ino();
        let mut listed = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            listed.push((entry.file_name(), metadata.ino(), metadata.is_dir()));
        }
        let mut state = self.state.lock().expect("state lock");
        let dir_id = state.id(dir_ino);
        let mut entries = BTreeMap::new();
        let mut subdirs = Vec::new();
        for (name, ino, is_dir) in listed {
            let id = state.id(ino);
            if is_dir {
                subdirs.push(id);
            }
            entries.insert(name, id);
        }
        Ok(Snapshot::Dir {
            id: dir_id,
            entries,
            subdirs,
        })
    }

    /// A sync completed: what it covered (read when it started) is durable.
    fn sync_done(&self, snapshot: Snapshot) {
        let mut state = self.state.lock().expect("state lock");
        match snapshot {
            Snapshot::File { id, contents } => {
                state.files.insert(id, contents);
            }
            Snapshot::Dir {
                id,
                entries,
                subdirs,
            } => {
                state.dir_ids.insert(id);
                state.dir_ids.extend(subdirs);
                state.dirs.insert(id, entries);
            }
        }
    }

    /// Writes into `to` (which must not exist) the tree as a power loss now
    /// would leave it: only directory entries made durable by a directory
    /// sync, each file with the contents of its last sync (empty if never
    /// synced).
    pub fn crash_image(&self, to: &Path) -> io::Result<()> {
        let root_ino = fs::metadata(&self.root)?.ino();
        let mut state = self.state.lock().expect("state lock");
        let root_id = state.id(root_ino);
        fn copy(state: &FaultState, dir_id: u64, to: &Path) -> io::Result<()> {
            fs::create_dir(to)?;
            let Some(entries) = state.dirs.get(&dir_id) else {
                return Ok(());
            };
            for (name, id) in entries {
                let path = to.join(name);
                if state.dir_ids.contains(id) {
                    copy(state, *id, &path)?;
                } else {
                    let contents = state.files.get(id).map(Vec::as_slice).unwrap_or(&[]);
                    fs::write(&path, contents)?;
                }
            }
            Ok(())
        }
        copy(&state, root_id, to)
    }
}
