//! Group commit: one round of fdatasync covers every append of a shard that is
//! waiting for durability.
//!
//! An append that must be durable registers its file and waits. If no sync round
//! is running, one starts at once; appends arriving while a round runs wait for
//! the next one, which then covers all of them. So under load the number of
//! syncs per second stays near 1 / (sync latency) no matter how many appends
//! arrive, and an idle shard pays a single sync's latency per append.
//!
//! Lives on one shard (`Rc`, not `Send`).

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;

use crate::io::disk::Disk;
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<Result<(), Rc<io::Error>>>;

/// The appends waiting for the next sync round, grouped by file so that a failed
/// sync is reported to exactly the appends it covers.
#[derive(Default)]
struct Round {
    /// (file, its path if it is a directory, the appends waiting for it).
    files: Vec<(Rc<compio::fs::File>, Option<PathBuf>, Vec<Waiter>)>,
}

#[derive(Default)]
pub struct GroupCommit {
    next: RefCell<Round>,
    running: RefCell<bool>,
    stats: RefCell<CommitStats>,
    /// Where batch sizes and sync latencies go: the broker's metrics and this shard's slot.
    metrics: Option<(Arc<Metrics>, usize)>,
    /// Where the syncs go.
    disk: Disk,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitStats {
    pub rounds: u64,
    pub appends_covered: u64,
    pub files_synced: u64,
}

impl GroupCommit {
    /// A group commit that reports each round to shard `shard`'s metrics.
    pub fn with_metrics(metrics: Arc<Metrics>, shard: usize) -> GroupCommit {
        GroupCommit {
            metrics: Some((metrics, shard)),
            ..GroupCommit::default()
        }
    }

    /// A group commit whose syncs go to `disk` (a fault-injecting one in tests).
    pub fn on(disk: Disk) -> GroupCommit {
        GroupCommit {
            disk,
            ..GroupCommit::default()
        }
    }

    /// Waits until everything written to `file` before this call is durable.
    pub async fn sync(self: &Rc<Self>, file: Rc<compio::fs::File>) -> Result<(), Rc<io::Error>> {
        self.join_round(file, None).await
    }

    /// Waits until the entries of directory `dir` (open as a file) as they
    /// are at this call are durable: an fsync of the directory, in the same
    /// round as the files' syncs.
    pub async fn sync_dir(
        self: &Rc<Self>,
        dir: Rc<compio::fs::File>,
        path: PathBuf,
    ) -> Result<(), Rc<io::Error>> {
        self.join_round(dir, Some(path)).await
    }

    async fn join_round(
        self: &Rc<Self>,
        file: Rc<compio::fs::File>,
        directory: Option<PathBuf>,
    ) -> Result<(), Rc<io::Error>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut next = self.next.borrow_mut();
            match next.files.iter_mut().find(|(f, _, _)| Rc::ptr_eq(f, &file)) {
                Some((_, _, waiters)) => waiters.push(tx),
                None => next.files.push((file, directory, vec![tx])),
            }
        }
        if !*self.running.borrow() {
            *self.running.borrow_mut() = true;
            let this = self.clone();
            compio::runtime::spawn(async move { this.run().await }).detach();
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(Rc::new(io::Error::other("group commit stopped"))),
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            let round = std::mem::take(&mut *self.next.borrow_mut());
            if round.files.is_empty() {
                *self.running.borrow_mut() = false;
                return;
            }
            let syncs = round.files.iter().map(|(f, directory, _)| {
                let (f, directory, disk) = (f.clone(), directory.clone(), self.disk.clone());
                async move {
                    match directory {
                        Some(path) => disk.sync_dir_async(&f, &path).await,
                        None => disk.sync_data_async(&f).await,
                    }
                }
            });
            let started = Instant::now();
            let results = futures_util::future::join_all(syncs).await;
            if let Some((metrics, shard)) = &self.metrics {
                let shard = &metrics.shards[*shard];
                shard
                    .commit_sync_seconds
                    .observe_duration(started.elapsed());
                let appends: usize = round.files.iter().map(|(_, _, w)| w.len()).sum();
                shard.commit_batch.observe(appends as f64);
            }
            let mut stats = self.stats.borrow_mut();
            stats.rounds += 1;
            stats.files_synced += round.files.len() as u64;
            for ((_, _, waiters), result) in round.files.into_iter().zip(results) {
                stats.appends_covered += waiters.len() as u64;
                let result = result.map_err(Rc::new);
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        }
    }

    pub fn stats(&self) -> CommitStats {
        *self.stats.borrow()
    }
}
