//! Raft RPCs over the peer transport: openraft's `RaftNetworkFactory`/`RaftNetwork` on the
//! sending side, and the inbound handlers that hand requests to the local Raft on the other.
//!
//! Every RPC is one transport request (kinds [`super::kind::RAFT_APPEND`], `RAFT_VOTE`,
//! `RAFT_SNAPSHOT`) whose body is the postcard encoding of openraft's request, answered with the
//! postcard encoding of `Result<response, RaftError>`. Snapshots use openraft's default chunking
//! (`install_snapshot` per chunk, 3 MiB by default, below the transport's 16 MiB frame limit).
//! A transport failure is reported as `Unreachable` (openraft backs off), a timeout or an
//! undecodable answer as a network error, and the remote node's refusal as a `RemoteError`.
//! Peer addresses come from openraft's membership: `new_client` tells the transport where the
//! target lives.

use bytes::Bytes;
use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use roost_engine::ids::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::kind;
use crate::raft::ControlRaft;
use crate::raft::Node;
use crate::raft::RaftNodeId;
use crate::raft::TypeConfig;
use crate::transport::Kind;
use crate::transport::Responder;
use crate::transport::Transport;

/// Creates one [`PeerClient`] per replication target.
pub(crate) struct Network {
    transport: Transport,
}

impl Network {
    pub(crate) fn new(transport: Transport) -> Self {
        Self { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftNodeId, node: &Node) -> PeerClient {
        self.transport.set_peer(NodeId(target), node.peer_addr.clone());
        PeerClient {
            transport: self.transport.clone(),
            target,
        }
    }
}

/// Raft RPCs to one peer.
pub(crate) struct PeerClient {
    transport: Transport,
    target: RaftNodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("raft rpc to node {target} timed out")]
struct RpcTimeout {
    target: RaftNodeId,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        kind: Kind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<RaftNodeId, Node, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = postcard::to_allocvec(request).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let pending = self.transport.request(NodeId(self.target), kind, Bytes::from(body));
        let reply = match tokio::time::timeout(option.hard_ttl(), pending).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&RpcTimeout {
                    target: self.target,
                })));
            }
            Ok(Err(error)) => return Err(RPCError::Unreachable(Unreachable::new(&error))),
            Ok(Ok(reply)) => reply,
        };
        let answer: Result<Resp, E> =
            postcard::from_bytes(&reply).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<RaftNodeId, Node, RaftError<RaftNodeId, E>>>;

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        self.call(kind::RAFT_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        self.call(kind::RAFT_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<RaftNodeId>, option: RPCOption) -> RpcResult<VoteResponse<RaftNodeId>> {
        self.call(kind::RAFT_VOTE, &rpc, &option).await
    }
}

/// Answers one inbound Raft RPC with the local Raft. Spawns; returns at once.
pub(crate) fn serve(raft: ControlRaft, kind: Kind, body: Bytes, reply: Responder) {
    tokio::spawn(async move {
        let answer = match kind {
            kind::RAFT_APPEND => match postcard::from_bytes(&body) {
                Ok(request) => encode(&raft.append_entries(request).await),
                Err(error) => Err(error),
            },
            kind::RAFT_VOTE => match postcard::from_bytes(&body) {
                Ok(request) => encode(&raft.vote(request).await),
                Err(error) => Err(error),
            },
            kind::RAFT_SNAPSHOT => match postcard::from_bytes(&body) {
                Ok(request) => encode(&raft.install_snapshot(request).await),
                Err(error) => Err(error),
            },
            other => {
                reply.err(format!("unknown raft message kind {other}"));
                return;
            }
        };
        match answer {
            Ok(bytes) => reply.ok(bytes),
            Err(error) => reply.err(format!("cannot decode or encode a raft message: {error}")),
        }
    });
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, postcard::Error> {
    postcard::to_allocvec(value).map(Bytes::from)
}
