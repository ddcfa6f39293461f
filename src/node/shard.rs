//! A shard: one thread, one compio runtime, the logs of the partitions it owns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_channel::oneshot;

use crate::config::FetchZeroCopy;
use crate::group::coordinator::GroupCoordinator;
use crate::io::send::PipePool;
use crate::metadata::controller::Controller;
use crate::metrics::ShardMetrics;
use crate::node::fetchers::Replication;
use crate::node::Node;
use crate::partition::local::Partition;
use crate::runtime::budget::ByteBudget;
use crate::runtime::queue::{self, CallError};
use crate::storage::commit::GroupCommit;
use crate::txn::coordinator::TxnCoordinator;

/// With `--fetch-zero-copy auto`, a range of partition data of at least this
/// size is spliced from the file; smaller ranges are copied (a few kilobytes
/// cost less to copy than two splice operations). Measured on this machine
/// with a raw fetch client against the broker (BENCHMARKS.md), splicing beats
/// copying from 64 KiB fetches up (3.8 vs 2.7 GB/s at 64 KiB, 4.5 vs 1.1 GB/s
/// at 16 MiB); the in-process criterion bench `fetch_paths` puts the crossover
/// higher (512 KiB-1 MiB), where client and server share one runtime thread.
pub const ZERO_COPY_AUTO_MIN_BYTES: usize = 64 * 1024;

/// Depth of each shard's cross-shard queue. A full queue makes senders wait,
/// which is the back-pressure between shards.
pub const SHARD_QUEUE_DEPTH: usize = 4096;

/// The sending end of a shard's queue.
#[derive(Clone)]
pub struct ShardHandle {
    pub id: usize,
    pub(crate) sender: queue::Sender<Shard>,
}

/// Every shard's queue, by shard id; each shard holds a copy.
pub type Peers = Arc<[ShardHandle]>;

pub use crate::partition::state::PartitionKey;

/// The state of one shard. Lives on its own thread only (`Rc`).
pub struct Shard {
    pub id: usize,
    pub node: Arc<Node>,
    /// Every shard's queue, this one's included.
    pub peers: Peers,
    /// The partitions this shard owns.
    pub partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// Group commit for every log of this shard.
    pub commit: Rc<GroupCommit>,
    /// The metadata controller; only on shard 0.
    pub controller: RefCell<Option<Rc<Controller>>>,
    /// Sends a request to the active controller (this node's or another's)
    /// and returns its answer; only on shard 0, once the quorum runs.
    pub call_controller: RefCell<Option<ControllerCall>>,
    /// The coordinator of the consumer groups whose offsets partitions this
    /// shard owns (those this broker leads are loaded in it).
    pub groups: RefCell<Option<Rc<GroupCoordinator>>>,
    /// The coordinator of the transactional ids whose transaction-log
    /// partitions this shard owns (those this broker leads are loaded).
    pub txns: RefCell<Option<Rc<TxnCoordinator>>>,
    /// Fetch reads of at least this many bytes of a partition stay in the
    /// segment file and are spliced to the socket; None: always copied (no
    /// io_uring, or `--fetch-zero-copy never`).
    pub zero_copy_min_bytes: Option<usize>,
    /// Pipes for splicing file data to sockets.
    pub pipes: PipePool,
    /// The replica fetchers of the partitions this shard follows.
    pub replication: Rc<Replication>,
    /// Request bytes of all this shard's connections read and not yet answered.
    request_bytes: ByteBudget,
}

/// A request to the active controller, answered (see `node::controller_rpc`).
pub type ControllerCall =
    Rc<dyn Fn(Vec<u8>) -> futures_util::future::LocalBoxFuture<'static, std::io::Result<Vec<u8>>>>;

/// Request bytes a shard holds, given back when dropped (the request answered,
/// or dropped with its connection).
pub struct Admission {
    shard: Rc<Shard>,
    bytes: usize,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let left = self.shard.request_bytes.give_back(self.bytes);
        self.shard
            .metrics()
            .request_bytes_in_flight
            .store(left as u64, Ordering::Relaxed);
    }
}

impl Shard {
    /// A shard; `splice_works` says whether the runtime's driver can splice
    /// from files (io_uring can; the polling fallback cannot wait on a file).
    pub fn new(id: usize, node: Arc<Node>, peers: Peers, splice_works: bool) -> Shard {
        let zero_copy_min_bytes = match node.config.fetch_zero_copy {
            _ if !splice_works => None,
            FetchZeroCopy::Auto => Some(ZERO_COPY_AUTO_MIN_BYTES),
            FetchZeroCopy::Always => Some(0),
            FetchZeroCopy::Never => None,
        };
        let commit = GroupCommit::with_metrics(node.metrics.clone(), id);
        Shard {
            zero_copy_min_bytes,
            pipes: PipePool::default(),
            replication: Rc::new(Replication::default()),
            request_bytes: ByteBudget::new(node.config.shard_max_request_bytes),
            id,
            peers,
            node,
            partitions: RefCell::new(HashMap::new()),
            commit: Rc::new(commit),
            controller: RefCell::new(None),
            call_controller: RefCell::new(None),
            groups: RefCell::new(None),
            txns: RefCell::new(None),
        }
    }

    /// Waits until `bytes` more request bytes fit the shard's budget
    /// (`--shard-max-request-bytes`), then holds them until the returned
    /// admission is dropped. A request larger than the budget is admitted when
    /// nothing else is held, so every legal request makes progress. This bounds
    /// what many connections together make the shard buffer, on top of each
    /// connection's own limits.
    pub async fn admit(self: &Rc<Self>, bytes: usize) -> Admission {
        let held = self.request_bytes.take(bytes, || false).await;
        let metrics = self.metrics();
        metrics
            .request_bytes_in_flight
            .store(held as u64, Ordering::Relaxed);
        metrics
            .request_bytes_in_flight_max
            .fetch_max(held as u64, Ordering::Relaxed);
        Admission {
            shard: self.clone(),
            bytes,
        }
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.node.metrics.shards[self.id]
    }

    pub fn shard_count(&self) -> usize {
        self.node.shard_count
    }

    pub fn partition(&self, key: &PartitionKey) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(key).cloned()
    }

    /// The partitions this shard owns now (a copy: nothing stays borrowed).
    pub fn partition_list(&self) -> Vec<(PartitionKey, Rc<Partition>)> {
        self.partitions
            .borrow()
            .iter()
            .map(|(k, p)| (*k, p.clone()))
            .collect()
    }

    pub fn groups(&self) -> Rc<GroupCoordinator> {
        self.groups
            .borrow()
            .clone()
            .expect("every shard has a group coordinator once started")
    }

    pub fn txns(&self) -> Rc<TxnCoordinator> {
        self.txns
            .borrow()
            .clone()
            .expect("every shard has a transaction coordinator once started")
    }

    /// The controller, unless shutdown has closed it (or this is not shard 0).
    pub fn try_controller(&self) -> Option<Rc<Controller>> {
        self.controller.borrow().clone()
    }

    pub fn controller(&self) -> Rc<Controller> {
        self.controller
            .borrow()
            .clone()
            .expect("the controller runs on shard 0")
    }

    /// Runs `f` on shard `target` and returns its result. The work runs as a task
    /// of its own on the target shard (this one included), so cancelling the caller
    /// (a client disconnecting) never stops storage work halfway.
    pub async fn run_on<R, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            let (tx, rx) = oneshot::channel();
            let fut = f(self.clone());
            compio::runtime::spawn(async move {
                let _ = tx.send(fut.await);
            })
            .detach();
            return rx
                .await
                .unwrap_or_else(|_| panic!("shard {target} dropped a job without answering"));
        }
        match queue::call(&self.peers[target].sender, f).await {
            Ok(result) => result,
            Err(CallError::Closed) => panic!(
                "shard {target} stopped while shard {} still sends to it",
                self.id
            ),
            Err(CallError::Dropped) => {
                panic!("shard {target} dropped a job without answering")
            }
        }
    }
}

impl Shard {
    /// [`Shard::run_on`] for work that may meet a shard already stopped
    /// (applying metadata while the broker shuts down): None then, instead
    /// of a panic.
    pub async fn try_run_on<R, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return Some(self.run_on(target, f).await);
        }
        queue::call(&self.peers[target].sender, f).await.ok()
    }
}

/// Runs the jobs other shards send to this one, each as its own task, until
/// every sender is gone.
pub async fn serve_queue(shard: Rc<Shard>, receiver: queue::Receiver<Shard>) {
    queue::serve(shard, receiver).await
}
