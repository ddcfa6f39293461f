//! The quorum's messages between nodes, over `io::rpc`: openraft's append,
//! vote and pre-vote requests and whole snapshots, JSON-encoded (the
//! metadata log is small and rarely busy; the encoding is one function each
//! way if it ever shows in a profile). The other node answers with openraft's
//! response, or `Failed` when its Raft has stopped.

use std::future::Future;
use std::io::{self, Cursor};
use std::time::Duration;

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
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Failed(String),
}

/// Answers one request frame with `raft` (the controller listener's handler).
pub async fn answer<M: Machine>(raft: &Raft<M>, request: &[u8]) -> Vec<u8> {
    let answer = match serde_json::from_slice::<Request>(request) {
        Err(error) => Answer::Failed(format!("undecodable request: {error}")),
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

/// Makes one [`Peer`] per node the Raft talks to.
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, _target: NodeId, node: &openraft::impls::BasicNode) -> Peer {
        Peer {
            client: RpcClient::new(node.addr.clone()),
        }
    }
}

/// The client end of one other node's controller listener.
pub struct Peer {
    client: RpcClient,
}

fn unreachable(error: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::from_string(error.to_string())
}

impl Peer {
    async fn call(&mut self, request: &Request, timeout: Duration) -> io::Result<Answer> {
        let bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
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
        match self.call(&request, option.hard_ttl()).await {
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
        match self.call(&Request::Append(rpc), option.hard_ttl()).await {
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
        match self.call(&request, option.hard_ttl()).await {
            Ok(Answer::Snapshot(response)) => Ok(response),
            Ok(_) => Err(StreamingError::Unreachable(unreachable(
                "a mismatched answer",
            ))),
            Err(error) => Err(StreamingError::Unreachable(unreachable(error))),
        }
    }
}
