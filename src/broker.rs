//! Start-up and shutdown of a whole broker: lock the data dir, replay the
//! metadata log, bind the listeners, start one pinned shard per core, and stop
//! them in order.

use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use compio::driver::{DriverType, ProactorBuilder};

use crate::config::{Config, IoDriver};
use crate::group::coordinator::GroupCoordinator;
use crate::group::offsets::OffsetStore;
use crate::group::state::GroupConfig;
use crate::metadata::controller::Controller;
use crate::metadata::{is_internal_topic, records};
use crate::metrics::{Metrics, PartitionSample, Snapshot};
use crate::node::quorum::MetadataQuorum;
use crate::node::shard::{serve_queue, Peers, Shard, ShardHandle, SHARD_QUEUE_DEPTH};
use crate::node::txn_env::ShardTxnEnv;
use crate::node::Node;
use crate::runtime::descriptors::{raise_open_file_limit, DescriptorBudget};
use crate::runtime::signal::{AsyncBarrier, ShutdownSignal};
use crate::runtime::{queue, CONTROLLER_SHARD};
use crate::server::listener;
use crate::txn::coordinator::{TxnConfig, TxnCoordinator};

/// A running broker: its shard threads and the data-dir lock.
pub struct RunningBroker {
    pub node: Arc<Node>,
    /// Every shard's queue.
    pub peers: Peers,
    pub local_addr: SocketAddr,
    /// Where `/metrics` is served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    _lock: DataDirLock,
}

impl RunningBroker {
    /// Controlled shutdown (before [`RunningBroker::shutdown`]): in a
    /// cluster, this broker stops heartbeating and asks the active controller
    /// to move its leaderships to other in-sync replicas and take it out of
    /// the ISRs, then waits (up to `patience`) until its image shows that
    /// done, serving meanwhile, so that clients move to the new leaders
    /// before it stops. Alone, there is nobody to move to: nothing is done.
    pub fn controlled_shutdown(&self, patience: Duration) {
        let me = self.node.config.node_id;
        if self.node.image().live_brokers().all(|(id, _)| id == me) {
            return;
        }
        let runtime = match compio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::warn!(%error, "controlled shutdown skipped: no runtime");
                return;
            }
        };
        let sender = self.peers[CONTROLLER_SHARD].sender.clone();
        let started = Instant::now();
        let done = runtime.block_on(queue::call(&sender, move |shard| async move {
            crate::node::brokers::controlled_shutdown(&shard, patience).await
        }));
        match done {
            Ok(Ok(())) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "controlled shutdown: leaderships moved away"
            ),
            Ok(Err(why)) => {
                tracing::warn!(%why, "controlled shutdown did not complete; stopping anyway")
            }
            Err(_) => tracing::warn!("controlled shutdown: the controller shard did not answer"),
        }
    }

    /// Asks every shard to stop: no new connections, in-flight requests finish,
    /// logs are flushed and closed.
    pub fn shutdown(&self) {
        self.node.shutdown.trigger();
    }

    /// Waits for every shard thread to finish.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("data dir {0} is in use by another sluice process (lock file held)")]
    Locked(PathBuf),
    #[error("metadata log: {0}")]
    Metadata(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot listen for the metadata quorum on {addr}: {source}")]
    ControllerListen { addr: String, source: io::Error },
    #[error("shard start-up failed: {0}")]
    Shard(String),
    #[error("transaction log: {0}")]
    TxnLog(String),
}

/// Holds an exclusive `flock` on `<data-dir>/.lock` for the broker's lifetime, so
/// that a second broker on the same data dir is refused.
struct DataDirLock {
    /// Unlocked (and closed) when dropped.
    _lock: nix::fcntl::Flock<fs::File>,
}

impl DataDirLock {
    fn acquire(data_dir: &Path) -> Result<DataDirLock, StartError> {
        let path = data_dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StartError::DataDir {
                path: path.clone(),
                source,
            })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DataDirLock { _lock: lock }),
            Err(_) => Err(StartError::Locked(data_dir.to_path_buf())),
        }
    }
}

/// Reads the cluster id kept in the data dir, or stores `configured` / a new one.
fn load_cluster_id(data_dir: &Path, configured: Option<&str>) -> io::Result<String> {
    let path = data_dir.join("cluster.id");
    if let Ok(existing) = fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if let Some(configured) = configured {
            if configured != existing {
                tracing::warn!(%existing, %configured, "configured cluster id differs from the one in the data dir; using the configured one");
                return Ok(configured.to_string());
            }
        }
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let id = configured.map(str::to_string).unwrap_or_else(|| {
        // Kafka cluster ids are 22-character url-safe base64 of a UUID; any
        // string works for clients, so a simple hex UUID prefix is enough.
        uuid::Uuid::new_v4().simple().to_string()[..22].to_string()
    });
    fs::write(&path, &id)?;
    Ok(id)
}

/// Starts a broker and returns once every shard is serving.
pub fn start(config: Config) -> Result<RunningBroker, StartError> {
    let data_dir = config.data_dir.clone();
    fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let lock = DataDirLock::acquire(&data_dir)?;
    let cluster_id =
        load_cluster_id(&data_dir, config.cluster_id.as_deref()).map_err(|source| {
            StartError::DataDir {
                path: data_dir.clone(),
                source,
            }
        })?;
    let alone = config.quorum_voters.len() == 1;
    let (image, replayed_end) = records::replay(&data_dir, &config, alone)
        .map_err(|e| StartError::Metadata(e.to_string()))?;
    tracing::info!(
        topics = image.topics.len(),
        quorum_index = replayed_end,
        voters = config.quorum_voters.len(),
        "metadata replayed"
    );
    // Bound now, so that a port in use fails the start before any shard serves.
    let controller_listener = match &config.controller_listen {
        Some(addr) => {
            Some(
                crate::io::rpc::bind(addr).map_err(|source| StartError::ControllerListen {
                    addr: addr.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    crate::txn::coordinator::check_log_partitions(
        &data_dir,
        config.transaction_state_log_num_partitions,
    )
    .map_err(StartError::TxnLog)?;
    for name in image.topics.keys().filter(|name| is_internal_topic(name)) {
        tracing::warn!(
            topic = %name,
            "an ordinary topic has a name Kafka reserves for an internal topic (an older Sluice \
             let a client create it); clients cannot produce to it; DeleteTopics removes it"
        );
    }

    let shard_count = config.cores;
    let descriptors = open_file_budget(shard_count, config.max_connections);
    let listeners = listener::bind_reuseport(config.listen, shard_count).map_err(|source| {
        StartError::Listen {
            addr: config.listen,
            source,
        }
    })?;
    let local_addr = listeners[0]
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;

    // Bound now, so that a metrics port in use fails the start before any
    // shard serves (std's bind sets no SO_REUSEPORT: a second bind fails).
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };

    let mut receivers = Vec::with_capacity(shard_count);
    let mut handles = Vec::with_capacity(shard_count);
    for id in 0..shard_count {
        let (sender, receiver) = crate::runtime::queue::bounded::<Shard>(SHARD_QUEUE_DEPTH);
        handles.push(ShardHandle { id, sender });
        receivers.push(receiver);
    }
    let peers: Peers = handles.into();
    let next_producer_id = AtomicI64::new(image.next_producer_id);
    let producer_id_block = (
        AtomicI64::new(image.next_producer_id),
        AtomicI64::new(image.next_producer_id),
    );
    let checkpointed_high_watermarks = crate::storage::hw_checkpoint::read(&config.data_dir)
        .unwrap_or_else(|error| {
            tracing::warn!(%error, file = crate::storage::hw_checkpoint::FILE, "the high watermark checkpoint does not parse; high watermarks start at each log's start");
            Default::default()
        });
    let node = Arc::new(Node {
        config,
        cluster_id,
        next_producer_id,
        producer_id_block,
        descriptors,
        metadata: ArcSwap::from_pointee(image),
        shard_count,
        shutdown: Arc::new(ShutdownSignal::default()),
        port: local_addr.port(),
        metrics: Arc::new(Metrics::new(shard_count)),
        incarnation: uuid::Uuid::new_v4(),
        active_controller: std::sync::atomic::AtomicI32::new(-1),
        stopping: std::sync::atomic::AtomicBool::new(false),
        coordinator_partitions: std::sync::atomic::AtomicUsize::new(0),
        checkpointed_high_watermarks,
    });

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // Shards meet twice: once when all have opened their logs (start-up is then
    // complete), once when all have drained their connections (logs may close).
    let started = Arc::new(Barrier::new(shard_count + 1));
    let drained = Arc::new(AsyncBarrier::new(shard_count));
    let (error_tx, error_rx) = std::sync::mpsc::channel::<String>();
    let mut threads = Vec::with_capacity(shard_count);
    let mut quorum = Some(QuorumStart {
        listener: controller_listener,
        replayed_end,
    });
    for (id, (receiver, listener)) in receivers.into_iter().zip(listeners).enumerate() {
        let node = node.clone();
        let peers = peers.clone();
        let started = started.clone();
        let drained = drained.clone();
        let error_tx = error_tx.clone();
        let quorum = if id == CONTROLLER_SHARD {
            quorum.take()
        } else {
            None
        };
        let thread = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                let start = ShardStart {
                    id,
                    cpu: id % cpus,
                    node,
                    peers,
                    receiver,
                    listener,
                    quorum,
                };
                // A start-up error is reported before the start-up barrier,
                // so that the main thread sees it right after; so is a panic.
                let arrival = StartArrival::new(id, &started, &error_tx);
                run_reporting(&arrival, || run_shard(start, &arrival, &drained));
            })
            .map_err(|e| StartError::Shard(e.to_string()))?;
        threads.push(thread);
    }
    drop(error_tx);
    started.wait();
    if let Ok(error) = error_rx.try_recv() {
        node.shutdown.trigger();
        return Err(StartError::Shard(error));
    }
    if node.config.quorum_voters.len() == 1 {
        wait_for_coordinators(&node);
    }
    let budget = &node.descriptors;
    if budget.segment_descriptors() > budget.segments_max {
        tracing::warn!(
            segments = crate::storage::segment::segments_open(),
            descriptors = budget.segment_descriptors(),
            allowed = budget.segments_max,
            limit = budget.limit,
            "the partitions in the data dir may need more file descriptors than the budget allows; \
             raise the open file limit (ulimit -n) or lower --max-connections"
        );
    }
    let metrics_addr = match (metrics_listener, node.config.metrics_listen) {
        (Some(listener), Some(addr)) => {
            let page = {
                let (node, peers) = (node.clone(), peers.clone());
                move || -> Pin<Box<dyn Future<Output = String>>> {
                    Box::pin(scrape(node.clone(), peers.clone()))
                }
            };
            let stopping = {
                let node = node.clone();
                move || node.shutdown.is_triggered()
            };
            match crate::metrics::http::start(listener, page, stopping) {
                Ok(local) => Some(local),
                Err(source) => {
                    node.shutdown.trigger();
                    return Err(StartError::Listen { addr, source });
                }
            }
        }
        _ => None,
    };
    Ok(RunningBroker {
        node,
        peers,
        local_addr,
        metrics_addr,
        threads,
        _lock: lock,
    })
}

/// What the controller shard needs to join the metadata quorum.
struct QuorumStart {
    listener: Option<std::net::TcpListener>,
    /// Where the start-up replay of the quorum's log ended.
    replayed_end: u64,
}

/// How long a voter alone may take to elect itself at start-up.
const ALONE_ELECTION_PATIENCE: Duration = Duration::from_secs(10);

/// What a shard thread starts with.
struct ShardStart {
    id: usize,
    /// The CPU the thread is pinned to.
    cpu: usize,
    node: Arc<Node>,
    peers: Peers,
    /// This shard's end of its cross-shard queue.
    receiver: queue::Receiver<Shard>,
    /// The controller shard's part in the metadata quorum.
    quorum: Option<QuorumStart>,
    /// This shard's SO_REUSEPORT listener.
    listener: std::net::TcpListener,
}

/// Runs a shard's `body`. Its error is logged; a panic is logged with its
/// message and, if the shard had not reached the start-up barrier yet,
/// reported there as its start-up error; then it goes on unwinding.
fn run_reporting(arrival: &StartArrival, body: impl FnOnce() -> Result<(), String>) {
    let id = arrival.id;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(shard = id, %error, "shard stopped"),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(shard = id, %message, "shard panicked");
            arrival.arrive(Some(&format!("panicked: {message}")));
            std::panic::resume_unwind(payload);
        }
    }
}

/// The text a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// A shard's arrival at the start-up barrier, with its start-up error if it
/// has one. A shard that panics before arriving still arrives (on unwinding),
/// with the panic as its error, so that the main thread never waits forever.
struct StartArrival<'a> {
    id: usize,
    started: &'a Barrier,
    errors: &'a std::sync::mpsc::Sender<String>,
    arrived: std::cell::Cell<bool>,
}

impl<'a> StartArrival<'a> {
    fn new(
        id: usize,
        started: &'a Barrier,
        errors: &'a std::sync::mpsc::Sender<String>,
    ) -> StartArrival<'a> {
        StartArrival {
            id,
            started,
            errors,
            arrived: std::cell::Cell::new(false),
        }
    }

    /// Meets the others at the barrier (once), reporting `error` first.
    fn arrive(&self, error: Option<&str>) {
        if self.arrived.replace(true) {
            return;
        }
        if let Some(error) = error {
            let _ = self.errors.send(format!("shard {}: {error}", self.id));
        }
        self.started.wait();
    }
}

impl Drop for StartArrival<'_> {
    fn drop(&mut self) {
        if !self.arrived.get() {
            self.arrive(Some("panicked while starting (see the log above)"));
        }
    }
}

fn run_shard(
    start: ShardStart,
    arrival: &StartArrival,
    drained: &AsyncBarrier,
) -> Result<(), String> {
    let ShardStart {
        id,
        cpu,
        node,
        peers,
        receiver,
        listener,
        quorum,
    } = start;
    let mut builder = compio::runtime::RuntimeBuilder::new();
    builder.thread_affinity([cpu].into_iter().collect());
    let forced = match node.config.io_driver {
        IoDriver::Auto => None,
        IoDriver::IoUring => Some(DriverType::IoUring),
        IoDriver::Polling => Some(DriverType::Poll),
    };
    if let Some(driver) = forced {
        let mut proactor = ProactorBuilder::new();
        proactor.driver_type(driver);
        builder.with_proactor(proactor);
    }
    let runtime = builder.build();
    // Reports a start-up failure, then meets the others at the barrier.
    let fail = |error: String| -> Result<(), String> {
        arrival.arrive(Some(&error));
        Err(error)
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot build the runtime: {error}")),
    };
    let driver = runtime.driver_type();
    if id == 0 {
        tracing::info!(
            ?driver,
            shards = node.shard_count,
            "shards starting (driver IoUring: io_uring; Poll: the epoll fallback)"
        );
    }
    runtime.block_on(async move {
        node.metrics.shards[id].set_current_thread();
        let splice_works = driver == DriverType::IoUring;
        let shard = Rc::new(Shard::new(id, node.clone(), peers, splice_works));
        // The coordinators first: they take over the internal partitions
        // this broker leads as soon as roles are applied.
        let groups = new_group_coordinator(&shard);
        let txns = new_txn_coordinator(&shard);
        *shard.groups.borrow_mut() = Some(groups.clone());
        *shard.txns.borrow_mut() = Some(txns.clone());
        let open_result = crate::partition::open_owned_logs(&shard);
        if let Some(QuorumStart {
            listener,
            replayed_end,
        }) = quorum
        {
            // Its own group commit: the quorum's syncs are not the
            // partitions' (nor counted in their metrics).
            let commit = Rc::new(crate::storage::commit::GroupCommit::default());
            let started = MetadataQuorum::start(&shard, commit, listener, replayed_end).await;
            let quorum = match started {
                Ok(quorum) => quorum,
                Err(error) => return fail(format!("metadata quorum: {error}")),
            };
            let alone = shard.node.config.quorum_voters.len() == 1;
            if alone && !quorum.wait_to_lead(ALONE_ELECTION_PATIENCE).await {
                return fail(format!(
                    "metadata quorum: this node, its only voter, did not elect itself within \
                     {ALONE_ELECTION_PATIENCE:?}"
                ));
            }
            let quorum = Rc::new(quorum);
            let controller = Controller::open(&shard.node, quorum.clone());
            *shard.controller.borrow_mut() = Some(Rc::new(controller));
            crate::node::brokers::start(&shard, quorum).await;
        }
        if let Err(error) = open_result {
            return fail(error);
        }
        arrival.arrive(None);
        // Leader or follower of each partition here, as the image has it
        // (later images apply their changes as they are published).
        crate::node::replication::apply_roles(&shard, &shard.node.image());
        crate::node::replication::start_isr_upkeep(&shard);
        groups.start_timers(&shard.node);
        txns.start();
        let retention_interval =
            std::time::Duration::from_millis(shard.node.config.log_retention_check_interval_ms);
        crate::partition::start_retention(&shard, retention_interval);
        crate::partition::start_periodic_flush(&shard);
        if shard.id == crate::runtime::CONTROLLER_SHARD {
            crate::partition::start_hw_checkpoints(&shard);
            start_buffer_trim(&shard);
        }
        let cleaner_interval =
            std::time::Duration::from_millis(shard.node.config.log_cleaner_interval_ms);
        crate::partition::start_cleaner(&shard, cleaner_interval);
        let queue = compio::runtime::spawn(serve_queue(shard.clone(), receiver));
        listener::serve(shard.clone(), listener).await;
        // Every connection of this shard has finished. Wait for the others, still
        // serving the queue, since their in-flight requests may need this shard.
        drained.wait().await;
        drop(queue);
        crate::partition::close_owned_logs(&shard);
        let controller = shard.controller.borrow_mut().take();
        if let Some(controller) = controller {
            controller.close().await;
        }
        shard.groups.borrow_mut().take();
        shard.txns.borrow_mut().take();
        Ok(())
    })
}

/// A shard's partitions are left out of a scrape when it does not answer
/// within this long (stuck, or its queue full).
const SCRAPE_SHARD_TIMEOUT: Duration = Duration::from_secs(2);

/// One `/metrics` page: the registry, plus what only the shards know (their
/// partitions, asked over their queues) and the broker's descriptor budget.
async fn scrape(node: Arc<Node>, peers: Peers) -> String {
    let calls = peers.iter().map(|handle| {
        let call = queue::call(&handle.sender, |shard| async move {
            crate::partition::samples(&shard)
        });
        compio::time::timeout(SCRAPE_SHARD_TIMEOUT, call)
    });
    let mut partitions: Vec<PartitionSample> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(|answer| answer.ok().and_then(Result::ok))
        .flatten()
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let budget = &node.descriptors;
    crate::metrics::render::render(&Snapshot {
        metrics: &node.metrics,
        apis: crate::server::registry::APIS
            .iter()
            .map(|api| api.key)
            .collect(),
        queue_depths: peers.iter().map(|h| h.sender.len()).collect(),
        file_descriptors: vec![
            ("limit", budget.limit),
            ("connections_max", budget.connections_max),
            ("segments_max", budget.segments_max),
            ("segments", budget.segment_descriptors()),
        ],
        read_buffer_pool_bytes: crate::io::aligned::pooled_bytes() as u64,
        partitions,
    })
}

/// How long a node alone waits at start-up for its coordinators.
const COORDINATORS_PATIENCE: Duration = Duration::from_secs(30);

/// A node that is the whole cluster leads every partition of the internal
/// topics: it reports itself started once its group and transaction
/// coordinators have loaded them all (created on a first start), so that
/// its first FindCoordinator and JoinGroup are answered, not retried.
/// Clients retry anyway, so a slow load only delays that.
fn wait_for_coordinators(node: &Node) {
    let wanted = crate::node::coordinators::internal_partition_count(&node.config);
    let deadline = Instant::now() + COORDINATORS_PATIENCE;
    while node.coordinator_partitions.load(Ordering::Acquire) < wanted {
        if Instant::now() >= deadline {
            tracing::warn!(
                loaded = node.coordinator_partitions.load(Ordering::Acquire),
                wanted,
                "the group and transaction coordinators are still loading"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Raises the open file limit and shares it out (see `runtime::descriptors`).
fn open_file_budget(shards: usize, max_connections: Option<u64>) -> DescriptorBudget {
    let (before, limit) = match raise_open_file_limit() {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open file limit; assuming 1024");
            (1024, 1024)
        }
    };
    let budget = DescriptorBudget::new(limit, shards, max_connections);
    if let Some(asked) = max_connections {
        if asked.saturating_add(budget.reserved) >= limit {
            tracing::warn!(
                max_connections = asked,
                limit,
                "--max-connections leaves no file descriptors for partitions"
            );
        }
    }
    tracing::info!(
        limit,
        raised_from = before,
        connections_max = budget.connections_max,
        partition_descriptors_max = budget.segments_max,
        "open file limit"
    );
    budget
}

/// This shard's transaction coordinator (no partition loaded yet).
fn new_txn_coordinator(shard: &Rc<Shard>) -> Rc<TxnCoordinator> {
    let config = &shard.node.config;
    let txn_config = TxnConfig {
        max_timeout_ms: config.transaction_max_timeout_ms,
        abort_interval_ms: config.transaction_abort_interval_ms,
        id_expiration_ms: config.transactional_id_expiration_ms,
        partitions: config.transaction_state_log_num_partitions,
        transaction_version: config.transaction_version,
        ..TxnConfig::default()
    };
    let env = Rc::new(ShardTxnEnv {
        shard: Rc::downgrade(shard),
    });
    Rc::new(TxnCoordinator::new(
        txn_config,
        shard.commit.clone(),
        env,
        shard.node.clone(),
    ))
}

/// This shard's group coordinator (no partition loaded yet).
fn new_group_coordinator(shard: &Rc<Shard>) -> Rc<GroupCoordinator> {
    let config = &shard.node.config;
    let group_config = GroupConfig {
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        ..GroupConfig::default()
    };
    let retention_ms = config.offsets_retention_minutes.saturating_mul(60_000);
    Rc::new(GroupCoordinator::new(
        group_config,
        retention_ms,
        OffsetStore::new(),
        shard.commit.clone(),
    ))
}

/// How often kept read buffers no request needed meanwhile are freed.
const BUFFER_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Frees, every [`BUFFER_TRIM_INTERVAL`], the read buffers the process
/// kept (up to 64 MiB, for large requests) that no request took since the
/// last round: an idle broker gives that memory back.
fn start_buffer_trim(shard: &Rc<Shard>) {
    let shard = shard.clone();
    compio::runtime::spawn(async move {
        while !shard.node.shutdown.is_triggered() {
            compio::time::sleep(BUFFER_TRIM_INTERVAL).await;
            let freed = crate::io::aligned::trim_idle_buffers();
            if freed > 0 {
                tracing::debug!(freed, "freed idle read buffers");
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard thread that panics before the start-up barrier still arrives
    /// there, with the panic's message as its error, and one that fails
    /// reports its error once: the main thread is never left waiting.
    #[test]
    fn a_shard_that_panics_or_fails_while_starting_still_arrives() {
        let started = Arc::new(Barrier::new(3));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let panicking = {
            let (started, tx) = (started.clone(), tx.clone());
            std::thread::spawn(move || {
                let arrival = StartArrival::new(0, &started, &tx);
                run_reporting(&arrival, || panic!("planted"));
            })
        };
        let failing = {
            let (started, tx) = (started.clone(), tx.clone());
            std::thread::spawn(move || {
                let arrival = StartArrival::new(1, &started, &tx);
                run_reporting(&arrival, || {
                    arrival.arrive(Some("no disk"));
                    arrival.arrive(Some("only once"));
                    Err("no disk".to_string())
                });
            })
        };
        drop(tx);
        started.wait();
        assert!(panicking.join().is_err());
        failing.join().unwrap();
        let mut errors: Vec<String> = rx.iter().collect();
        errors.sort();
        assert_eq!(errors, ["shard 0: panicked: planted", "shard 1: no disk"]);
    }
}
