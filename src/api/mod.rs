//! The gRPC services every server exposes on one listener (`Orc` for
//! clients, `Peer` for other servers), plus `GET /metrics` for Prometheus.
//! Handlers turn requests into proposals or reads on the raft handle; they
//! never touch sled or raft-rs directly.

pub mod agent;
pub mod convert;
pub mod ecs;
pub mod services;
pub mod tasks;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use protobuf::Message as _;
use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response, Status};

use crate::client::Client;
use crate::raft::node::{RaftHandle, Role};
use crate::raft::transport::Transport;
use crate::vocab::action::EcsAction;
use crate::wire::proto::orc_server::{Orc, OrcServer};
use crate::wire::proto::peer_server::{Peer, PeerServer};
use crate::wire::proto::{
    ActionRequest, ActionResponse, AddServerRequest, ClusterStatusRequest, ClusterStatusResponse,
    MembershipResponse, RaftAck, RaftBatch, RemoveServerRequest, WatchEvent, WatchRequest,
};
use crate::wire::status::to_status;
use crate::{Error, Result};

/// Shared by every handler of one server.
#[derive(Clone)]
pub struct ApiContext {
    /// The raft node.
    pub raft: RaftHandle,
    /// Outbound raft traffic (to learn peer addresses from inbound batches).
    pub transport: Arc<Transport>,
    /// Agent heartbeats seen by this server.
    pub liveness: crate::controller::Liveness,
}

impl ApiContext {
    fn control_plane_id(&self) -> String {
        self.transport.cluster_id().to_string()
    }

    /// A client for the current leader, when this server is not it.
    fn leader_client(&self) -> Result<Option<Client>> {
        let status = self.raft.status();
        if status.role == Role::Leader {
            return Ok(None);
        }
        if status.leader_id == 0 {
            return Err(Error::Unavailable(
                "no leader is elected right now (is a majority of servers up?); retry in a moment"
                    .into(),
            ));
        }
        let address = self
            .raft
            .store()
            .read(|s| s.member_address(status.leader_id).map(str::to_string))
            .ok_or_else(|| {
                Error::Unavailable(
                    "the leader's address is not known yet; retry in a moment".into(),
                )
            })?;
        let mut client = Client::new(&address)?;
        client.retry_for = Duration::from_secs(5);
        Ok(Some(client))
    }

    fn membership(&self) -> MembershipResponse {
        let status = self.raft.status();
        MembershipResponse {
            cluster_id: self.control_plane_id(),
            members: self
                .raft
                .store()
                .read(|state| convert::members(&status, state)),
        }
    }

    async fn add_server(&self, request: AddServerRequest) -> Result<MembershipResponse> {
        if request.node_id == 0 || request.address.is_empty() {
            return Err(Error::InvalidInput(
                "add server: node id and address are required".into(),
            ));
        }
        let ours = self.control_plane_id();
        if !request.cluster_id.is_empty() && request.cluster_id != ours {
            return Err(Error::Conflict(format!(
                "the joining server belongs to control plane {} but this one is {ours}: use an empty data dir to join this control plane",
                request.cluster_id
            )));
        }
        if let Some(leader) = self.leader_client()? {
            return leader
                .add_server(request.node_id, &request.address, &request.cluster_id)
                .await;
        }
        let status = self.raft.status();
        let known =
            status.voters.contains(&request.node_id) || status.learners.contains(&request.node_id);
        let same_address = self
            .raft
            .store()
            .read(|s| s.member_address(request.node_id) == Some(request.address.as_str()));
        if known && same_address {
            return Ok(self.membership());
        }
        if known {
            return Err(Error::Conflict(format!(
                "server {} is already a member with another address; remove it first",
                request.node_id
            )));
        }
        self.raft
            .change_membership(
                ConfChangeType::AddLearnerNode,
                request.node_id,
                &request.address,
            )
            .await?;
        Ok(self.membership())
    }

    async fn remove_server(&self, node_id: u64) -> Result<MembershipResponse> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(leader) = self.leader_client()? {
                return leader.remove_server(node_id).await;
            }
            let status = self.raft.status();
            if !status.voters.contains(&node_id) && !status.learners.contains(&node_id) {
                return Err(Error::NotFound(format!(
                    "server {node_id} is not a member of this control plane (see `orc cluster status`)"
                )));
            }
            if node_id != status.id {
                self.raft
                    .change_membership(ConfChangeType::RemoveNode, node_id, "")
                    .await?;
                return Ok(self.membership());
            }
            // The leader removes itself by handing leadership to the most caught-up voter first.
            let successor = status
                .progress
                .iter()
                .filter(|(id, _, active)| *id != status.id && *active && status.voters.contains(id))
                .max_by_key(|(_, matched, _)| *matched)
                .map(|(id, _, _)| *id)
                .ok_or_else(|| {
                    Error::Conflict("the leader is the only healthy voter; add another server before removing it".into())
                })?;
            self.raft.transfer_leader(successor)?;
            let mut watch = self.raft.watch_status();
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                watch.wait_for(|s| s.leader_id != status.id && s.leader_id != 0),
            )
            .await;
            if Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "leadership transfer did not complete; retry".into(),
                ));
            }
        }
    }
}

#[tonic::async_trait]
impl Orc for ApiContext {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let linearizable = request.into_inner().linearizable;
        let status = self.raft.status();
        // A linearizable status comes from the leader, which knows every
        // member's progress; a local one is this server's own view.
        if linearizable && status.role != Role::Leader {
            let mut leader = self.leader_client().map_err(to_status)?.ok_or_else(|| {
                Status::unavailable("no leader is elected right now; retry in a moment")
            })?;
            leader.retry_for = Duration::from_millis(0);
            return match tokio::time::timeout(Duration::from_secs(3), leader.cluster_status(true)).await {
                Ok(Ok(answer)) => Ok(Response::new(answer)),
                Ok(Err(error)) => Err(to_status(error)),
                Err(_) => Err(Status::unavailable(
                    "the leader did not answer in time; retry, or use --local for this server's own view",
                )),
            };
        }
        if linearizable {
            self.raft.read_barrier().await.map_err(to_status)?;
        }
        let status = self.raft.status();
        let answer = self
            .raft
            .store()
            .read(|state| convert::cluster_status(&status, state));
        Ok(Response::new(answer))
    }

    async fn add_server(
        &self,
        request: Request<AddServerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        ApiContext::add_server(self, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn remove_server(
        &self,
        request: Request<RemoveServerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        ApiContext::remove_server(self, request.into_inner().node_id)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(action = %request.get_ref().action))]
    async fn call(
        &self,
        request: Request<ActionRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let action: EcsAction = request.action.parse()?;
            ecs::call(&self.raft, action, &request.body_json, request.request_id).await
        }
        .await
        .map_err(|error| {
            tracing::debug!(%error, "action failed");
            to_status(error)
        })?;
        Ok(Response::new(ActionResponse {
            body_json: result.body.to_string(),
            warnings: result.warnings,
        }))
    }

    type WatchStream = ResponseStream<WatchEvent>;

    #[tracing::instrument(level = "debug", skip_all, fields(after_revision = request.get_ref().after_revision))]
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let after_revision = request.into_inner().after_revision;
        watch::open(self.raft.store().clone(), after_revision)
            .map(Response::new)
            .map_err(to_status)
    }
}

#[tonic::async_trait]
impl Peer for ApiContext {
    async fn raft(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        self.step_batch(request.into_inner())?;
        Ok(Response::new(RaftAck {}))
    }

    async fn raft_stream(
        &self,
        request: Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.step_batch(batch)?;
        }
        Ok(Response::new(RaftAck {}))
    }
}

impl ApiContext {
    /// Checks a batch's control plane, learns the sender's address, and hands
    /// the messages to raft.
    fn step_batch(&self, batch: RaftBatch) -> Result<(), Status> {
        if batch.cluster_id != self.transport.cluster_id() {
            return Err(Status::failed_precondition(format!(
                "this server belongs to control plane {} but the message came from control plane {}",
                self.transport.cluster_id(),
                batch.cluster_id
            )));
        }
        self.transport
            .set_address(batch.from_id, &batch.from_address);
        let mut messages = Vec::with_capacity(batch.messages.len());
        for bytes in &batch.messages {
            let message = raft::eraftpb::Message::parse_from_bytes(bytes)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            messages.push(message);
        }
        self.raft.step(messages).map_err(to_status)
    }
}

/// A server-streaming answer.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Turns a producer that writes into a channel into a boxed stream. The
/// producer runs as its own task; it should stop once the channel closes
/// (the client went away).
fn async_stream<T, F, Fut>(producer: F) -> ResponseStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(producer(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

async fn metrics() -> String {
    crate::metrics::render()
}

/// Serves the gRPC services and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    context: ApiContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let routes = tonic::service::Routes::new(
        OrcServer::new(context.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024),
    )
    .add_service(
        crate::wire::proto::agent_api_server::AgentApiServer::new(context.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024),
    )
    .add_service(
        PeerServer::new(context)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024),
    );
    let router = routes
        .into_axum_router()
        .route("/metrics", axum::routing::get(metrics));
    use axum::serve::ListenerExt as _;
    // Replies must not wait for Nagle's algorithm (a 40 ms stall per write
    // against the client's delayed ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("the listener failed: {e}")))
}
