//! The quorum's messages between nodes, over `io::rpc`: openraft's append,
//! vote and pre-vote requests and whole snapshots, JSON-encoded (the
//! metadata log is small and rarely busy; the encoding is one function each
//! way if it ever shows in a profile). The other node answers with openraft's
//! response, or `Failed` when its Raft has stopped.
//!
//! The same listener carries the brokers' requests to the active controller
//! (registration and heartbeats, `Controller`): opaque bytes here, handed to
//! whatever [`ControllerRequests`] holds on the receiving node.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Cursor};
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::{Deserialize, Serialize};

use crate::cluster::state_machine::{Machine, Raft};
use crate::cluster::types::{NodeId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use crate::io::rpc::RpcClient;

#[derive(Serialize, Deserialize)]
enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    Controller(Vec<u8>),
}

/// A request on the wire, with the voter it is meant for: a node answers
/// Raft messages meant for itself only, so that a wrong address in a
/// node's `--controller-quorum-voters` (one voter's address naming
/// another, or this node) cannot make one node's vote count twice.
#[derive(Serialize, Deserialize)]
struct Frame {
    /// None: a controller request (for whoever leads).
    to: Option<NodeId>,
    request: Request,
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Controller(Vec<u8>),
    Failed(String),
}

/// A broker's request to the active controller, answered: bytes in, bytes
/// out (what they mean is the caller's).
pub type ControllerHandler = Rc<dyn Fn(Vec<u8>) -> LocalBoxFuture<'static, Vec<u8>>>;

/// Who serves this node's controller requests, once it does (set after the
/// quorum starts: the controller is built on it).
#[derive(Clone, Default)]
pub struct ControllerRequests(Rc<RefCell<Option<ControllerHandler>>>);

impl ControllerRequests {
    pub fn serve(&self, handler: ControllerHandler) {
        *self.0.borrow_mut() = Some(handler);
    }

    /// `request` answered here, or why not.
    pub async fn answer(&self, request: Vec<u8>) -> Result<Vec<u8>, String> {
        let handler = self.0.borrow().clone();
        match handler {
            Some(handler) => Ok(handler(request).await),
            None => Err("this node does not serve controller requests yet".to_string()),
        }
    }
}

/// Sends a controller request over `client` (another voter's listener).
pub async fn call_controller(
    client: &mut RpcClient,
    request: Vec<u8>,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let mut peer = Peer {
        client: std::mem::replace(client, RpcClient::new(String::new())),
        target: None,
    };
    let result = peer.call(Request::Controller(request), timeout).await;
    *client = peer.client;
    match result? {
        Answer::Controller(answer) => Ok(answer),
        _ => Err(io::Error::other("a mismatched answer")),
    }
}

/// Answers one request frame with `raft` (the controller listener's handler).
pub async fn answer<M: Machine>(
    raft: &Raft<M>,
    me: NodeId,
    requests: &ControllerRequests,
    request: &[u8],
) -> Vec<u8> {
    let request = match serde_json::from_slice::<Frame>(request) {
        Ok(Frame { to: Some(to), .. }) if to != me => Err(format!(
            "a message for voter {to} reached voter {me}: check --controller-quorum-voters"
        )),
        Ok(frame) => Ok(frame.request),
        Err(error) => Err(format!("undecodable request: {error}")),
    };
    let answer = match request {
        Ok(Request::Controller(request)) => match requests.answer(request).await {
            Ok(answer) => Answer::Controller(answer),
            Err(why) => Answer::Failed(why),
        },
        Err(why) => Answer::Failed(why),
        Ok(Request::Append(rpc)) => match raft.append_entries(rpc).await {
            Ok(response) => Answer::Append(response),
            Err(error) => Answer::Failed(error.to_string()),
        },
        Ok(Request::Vote(rpc)) => match raft.vote(rpc).await {
            Ok(response) => Answer::Vote(response),
            Err(error) => Answer::Failed(error.to_string()),
        },
        Ok(Request::PreVote(rpc)) => match raft.pre_vote(rpc).await {
            Ok(response) => Answer::Vote(response),
            Err(error) => Answer::Failed(error.to_string()),
        },
        Ok(Request::Snapshot { vote, meta, data }) => {
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(data),
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(response) => Answer::Snapshot(response),
                Err(error) => Answer::Failed(error.to_string()),
            }
        }
    };
    serde_json::to_vec(&answer).expect("answers encode")
}

/// Makes one [`Peer`] per node the Raft talks to, at the address this
/// node's own `--controller-quorum-voters` gives (as each KRaft node dials
/// what its `controller.quorum.voters` says: one node may reach a voter
/// through a proxy or a NAT that another does not use); the membership's
/// address, the first voter's view, when the flag has none.
pub struct Network {
    pub voters: BTreeMap<NodeId, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &openraft::impls::BasicNode) -> Peer {
        let addr = self
            .voters
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        Peer {
            client: RpcClient::new(addr),
            target: Some(target),
        }
    }
}

/// The client end of one other node's controller listener.
pub struct Peer {
    client: RpcClient,
    /// The voter it reaches (None: whoever leads, for controller requests).
    target: Option<NodeId>,
}

fn unreachable(error: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::from_string(error.to_string())
}

impl Peer {
    async fn call(&mut self, request: Request, timeout: Duration) -> io::Result<Answer> {
        let frame = Frame {
            to: self.target,
            request,
        };
        let bytes = serde_json::to_vec(&frame).map_err(io::Error::other)?;
        let answer = self.client.call(bytes, timeout).await?;
        match serde_json::from_slice(&answer).map_err(io::Error::other)? {
            Answer::Failed(why) => Err(io::Error::other(format!(
                "{} could not answer: {why}",
                self.client.addr()
            ))),
            answer => Ok(answer),
        }
    }

    async fn vote_like(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(request, option.hard_ttl()).await {
            Ok(Answer::Vote(response)) => Ok(response),
            Ok(_) => Err(RPCError::Unreachable(unreachable("a mismatched answer"))),
            Err(error) => Err(RPCError::Unreachable(unreachable(error))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Append(rpc), option.hard_ttl()).await {
            Ok(Answer::Append(response)) => Ok(response),
            Ok(_) => Err(RPCError::Unreachable(unreachable("a mismatched answer"))),
            Err(error) => Err(RPCError::Unreachable(unreachable(error))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_like(Request::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_like(Request::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        match self.call(request, option.hard_ttl()).await {
            Ok(Answer::Snapshot(response)) => Ok(response),
            Ok(_) => Err(StreamingError::Unreachable(unreachable(
                "a mismatched answer",
            ))),
            Err(error) => Err(StreamingError::Unreachable(unreachable(error))),
        }
    }
}
