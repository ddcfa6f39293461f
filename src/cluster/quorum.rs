//! One node's place in the metadata quorum: its Raft, its controller
//! listener, and the calls the rest of the broker makes (write a command,
//! who leads, the quorum's state for DescribeQuorum).
//!
//! The voters are static, given on every node's command line as KRaft's
//! `controller.quorum.voters` (`1@host:port,2@host:port,...`); a node whose
//! quorum was never initialised initialises it with them (every voter does,
//! with the same set, which Raft allows). The timeouts are KRaft's, because
//! the quorum shares shard 0's event loop with client traffic.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, RaftError};
use openraft::impls::BasicNode;
use openraft::ServerState;

use crate::cluster::log_store::{log_dir, LogStore};
use crate::cluster::network::{self, ControllerHandler, ControllerRequests, Network};
use crate::cluster::state_machine::{Machine, Raft, StateMachine};
use crate::cluster::types::{Applied, Command, NodeId};
use crate::io::disk::Disk;
use crate::io::rpc;
use crate::storage::commit::GroupCommit;

/// How a node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// Every voter's controller listener, this node's among them.
    pub voters: BTreeMap<NodeId, String>,
    /// `controller.quorum.election.timeout.ms`: a follower that hears no
    /// leader for a random time between this and twice this stands.
    pub election_timeout_ms: u64,
    /// How often a leader heartbeats its followers.
    pub heartbeat_interval_ms: u64,
}

impl QuorumConfig {
    /// KRaft's defaults: election timeout 1,000 ms, heartbeats every 500 ms.
    pub fn new(node_id: NodeId, voters: BTreeMap<NodeId, String>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 500,
        }
    }

    /// Parses `controller.quorum.voters`: `id@host:port` separated by commas.
    pub fn parse_voters(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
        let mut voters = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, addr) = item
                .split_once('@')
                .ok_or_else(|| format!("`{item}` is not id@host:port"))?;
            let id: NodeId = id
                .parse()
                .map_err(|_| format!("`{id}` in `{item}` is not a node id"))?;
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(format!("`{addr}` in `{item}` is not host:port"));
            }
            if voters.insert(id, addr.to_string()).is_some() {
                return Err(format!("node {id} is listed twice"));
            }
        }
        if voters.is_empty() {
            return Err("no voters".to_string());
        }
        Ok(voters)
    }
}

/// Why a command was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// This node does not lead; the leader, if one is known.
    #[error("not the quorum's leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Leadership changed after the command was appended: it may or may not
    /// be committed by the next leader.
    #[error("leadership changed; the command may or may not have been committed")]
    Unknown,
    #[error("the quorum stopped: {0}")]
    Stopped(String),
}

/// What a node knows of the quorum (for DescribeQuorum and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    /// The term: KRaft's leader epoch.
    pub term: u64,
    pub is_leader: bool,
    /// The index after the last entry in this node's log.
    pub log_end: u64,
    /// The index after the last committed entry this node knows of: KRaft's
    /// high watermark.
    pub committed_end: u64,
    pub applied_end: u64,
    /// Leads, and has applied an entry of its own term: everything
    /// committed before its term is applied here (a new leader's first
    /// entry of its term follows them all). Only then may it decide
    /// anything from what it has applied.
    pub leads_applied: bool,
    /// On the leader: the index after each voter's last replicated entry.
    pub replicated_end: BTreeMap<NodeId, u64>,
    /// On the leader: how long ago each other voter last acknowledged a
    /// heartbeat or an append.
    pub last_ack: BTreeMap<NodeId, Duration>,
}

/// A running member of the quorum.
pub struct Quorum<M: Machine> {
    node_id: NodeId,
    raft: Raft<M>,
    log: LogStore,
    machine: StateMachine<M>,
    stop: std::cell::Cell<Option<futures_channel::oneshot::Sender<()>>>,
    /// Every voter's controller listener.
    voters: BTreeMap<NodeId, String>,
    /// Who answers the controller requests sent to this node.
    requests: ControllerRequests,
    /// The connection to the leader's listener, while it leads.
    leader_client: std::cell::RefCell<Option<(NodeId, rpc::RpcClient)>>,
}

fn other(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

impl<M: Machine> Quorum<M> {
    /// Opens the quorum's storage under `data_dir`, starts Raft and answers
    /// the other voters on `listener` (bound by the caller, so that a port in
    /// use fails the start before anything else; a voter alone needs none).
    pub async fn start(
        config: &QuorumConfig,
        data_dir: &Path,
        disk: &Disk,
        commit: Rc<GroupCommit>,
        listener: Option<std::net::TcpListener>,
        machine: M,
    ) -> io::Result<Quorum<M>> {
        if listener.is_none() && config.voters.len() > 1 {
            return Err(other("the other voters need a controller listener"));
        }
        if !config.voters.contains_key(&config.node_id) {
            return Err(other(format!(
                "node {} is not among the voters {:?}",
                config.node_id, config.voters
            )));
        }
        let log = LogStore::open(data_dir, disk, commit)?;
        let machine = StateMachine::open(&log_dir(data_dir), disk, machine).await?;
        let raft_config = openraft::Config {
            cluster_name: "sluice".to_string(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 2,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(other)?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network {
                voters: config.voters.clone(),
            },
            log.clone(),
            machine.clone(),
        )
        .await
        .map_err(other)?;
        let (stop, stopped) = futures_channel::oneshot::channel::<()>();
        let requests = ControllerRequests::default();
        if let Some(listener) = listener {
            let server_raft = raft.clone();
            let server_requests = requests.clone();
            let me = config.node_id;
            let serve = rpc::serve(
                listener,
                move |_, request| {
                    let raft = server_raft.clone();
                    let requests = server_requests.clone();
                    async move { network::answer(&raft, me, &requests, &request).await }
                },
                async {
                    let _ = stopped.await;
                },
            );
            compio::runtime::spawn(async move {
                if let Err(error) = serve.await {
                    tracing::error!(%error, "the controller listener stopped");
                }
            })
            .detach();
        }
        if !raft.is_initialized().await.map_err(other)? {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(&id, addr)| (id, BasicNode::new(addr)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(voters = ?config.voters, "initialised the metadata quorum")
                }
                // Another voter's initialisation reached us first.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(other(error)),
            }
        }
        check_membership(&raft, &config.voters).await?;
        compio::runtime::spawn(log_leader_changes(raft.clone())).detach();
        if config.voters.len() == 1 {
            // Alone, there is nobody to wait for.
            raft.trigger().elect(false).await.map_err(other)?;
        }
        Ok(Quorum {
            node_id: config.node_id,
            raft,
            log,
            machine,
            stop: std::cell::Cell::new(Some(stop)),
            voters: config.voters.clone(),
            requests,
            leader_client: std::cell::RefCell::new(None),
        })
    }

    /// From now on, controller requests sent to this node are answered by
    /// `handler` (whether this node leads is the handler's to check).
    pub fn serve_controller_requests(&self, handler: ControllerHandler) {
        self.requests.serve(handler);
    }

    /// Sends `request` to the quorum's leader as it is known now (this node
    /// itself, or another voter over its listener) and returns its answer.
    /// No leader known, the leader unreachable or silent past `timeout`: an
    /// error (the caller tries again later).
    pub async fn call_controller(
        &self,
        request: Vec<u8>,
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let Some(leader) = self.status().leader else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no quorum leader is known",
            ));
        };
        if leader == self.node_id {
            return rpc::with_deadline(timeout, async {
                self.requests.answer(request).await.map_err(other)
            })
            .await;
        }
        let addr = self
            .voters
            .get(&leader)
            .ok_or_else(|| other(format!("the leader {leader} is not a known voter")))?;
        // One caller at a time uses the cached connection; another opens its own.
        let cached = self.leader_client.borrow_mut().take();
        let mut client = match cached {
            Some((id, client)) if id == leader => client,
            _ => rpc::RpcClient::new(addr.clone()),
        };
        let answer = network::call_controller(&mut client, request, timeout).await;
        *self.leader_client.borrow_mut() = Some((leader, client));
        answer
    }

    pub fn machine(&self) -> &M {
        self.machine.machine()
    }

    /// Appends `command` to the quorum's log and returns once it is
    /// committed and applied here (on the leader only): what applying it
    /// said, and the index after its entry (the metrics' last applied index
    /// may not show it yet).
    pub async fn write(&self, command: String) -> Result<(Applied, u64), WriteError> {
        match self.raft.client_write(Command(command)).await {
            Ok(response) => Ok((response.response().clone(), response.log_id().index + 1)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                Err(WriteError::NotLeader {
                    leader: to.leader_id,
                })
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(WriteError::Unknown)
            }
            Err(error) => Err(WriteError::Stopped(error.to_string())),
        }
    }

    pub fn status(&self) -> QuorumStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let end = |id: Option<u64>| id.map_or(0, |i| i + 1);
        QuorumStatus {
            node_id: self.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            is_leader: metrics.state == ServerState::Leader,
            log_end: end(metrics.last_log_index),
            committed_end: end(metrics.cluster_committed.map(|id| id.index)),
            applied_end: end(metrics.last_applied.map(|id| id.index)),
            leads_applied: metrics.state == ServerState::Leader
                && metrics
                    .last_applied
                    .is_some_and(|id| id.leader_id.term == metrics.current_term),
            replicated_end: metrics
                .replication
                .iter()
                .flatten()
                .map(|(&id, matched)| (id, end(matched.as_ref().map(|m| m.index))))
                .collect(),
            last_ack: metrics
                .heartbeat
                .iter()
                .flatten()
                .filter_map(|(&id, at)| Some((id, at.as_ref()?.elapsed())))
                .collect(),
        }
    }

    /// Stops Raft and the controller listener; writes still waiting fail.
    pub async fn shutdown(&self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "the quorum's Raft did not stop cleanly");
        }
        self.log.close();
    }
}

/// Refuses to run with voters other than those the quorum's log holds: the
/// membership is decided once, when the quorum is first formed, and a node
/// started later with other `--controller-quorum-voters` ids would count
/// votes of a quorum that is not this one. Changing the voters needs a
/// membership change, not a flag. Their addresses are each node's own
/// concern (it dials what its flag says: a proxy, a NAT).
async fn check_membership<M: Machine>(
    raft: &Raft<M>,
    voters: &BTreeMap<NodeId, String>,
) -> io::Result<()> {
    let metrics = raft
        .wait(Some(std::time::Duration::from_secs(5)))
        .metrics(
            |m| m.membership_config.voter_ids().next().is_some(),
            "the stored membership is loaded",
        )
        .await
        .map_err(other)?;
    let membership = metrics.membership_config.membership();
    let voter_ids: Vec<NodeId> = membership.voter_ids().collect();
    let stored: BTreeMap<NodeId, String> = membership
        .nodes()
        .filter(|(id, _)| voter_ids.contains(id))
        .map(|(&id, node)| (id, node.addr.clone()))
        .collect();
    let same = stored.keys().eq(voters.keys());
    if !same {
        return Err(other(format!(
            "--controller-quorum-voters {} differs from the voters this node's metadata quorum was formed with ({}); start it with those, or with a new --data-dir",
            format_voters(voters),
            format_voters(&stored)
        )));
    }
    Ok(())
}

fn format_voters(voters: &BTreeMap<NodeId, String>) -> String {
    voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Logs each change of leader (or term) this node sees, until Raft stops.
async fn log_leader_changes<M: Machine>(raft: Raft<M>) {
    let mut metrics = raft.metrics();
    let mut seen = None;
    loop {
        let now = {
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if seen != Some(now) {
            seen = Some(now);
            match now.0 {
                Some(leader) => {
                    tracing::info!(leader, term = now.1, "metadata quorum: leader elected")
                }
                None => tracing::info!(term = now.1, "metadata quorum: no leader"),
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl<M: Machine> Drop for Quorum<M> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// How long a caller waits between looks at the quorum's state.
pub const POLL: Duration = Duration::from_millis(10);
