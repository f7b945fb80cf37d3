//! The gRPC services every server exposes on one listener (`Orc` for
//! clients, `Peer` for other servers), plus `GET /metrics` for Prometheus
//! and the AWS door (`POST /`, in `door`) for the aws CLI and SDKs.
//! Handlers turn requests into proposals or reads on the raft handle; they
//! never touch sled or raft-rs directly.
//!
//! The tonic service trait impls (`Orc` and `Peer` here, `AgentApi` in
//! `agent`) are the only code of `api` that names protobuf types: they
//! convert at the boundary with `wire::convert` and call `ApiContext`'s
//! domain-typed methods.

pub mod agent;
pub mod blobsync;
pub mod door;
pub mod ecr;
pub mod ecs;
pub mod elbv2;
pub mod iam;
pub mod listener;
pub mod logs;
pub mod members;
pub mod pullthrough;
pub mod registry;
pub mod scope;
pub mod secrets;
pub mod services;
pub mod tasks;
pub mod trust;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use protobuf::Message as _;
use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response, Status};

use crate::client::Client;
use crate::error::Refusal;
use crate::model::{ControlPlaneStatus, Membership};
use crate::raft::node::{NodeStatus, RaftHandle, Role};
use crate::raft::transport::Transport;
use crate::store::ChangeStream;
use crate::vocab::action::Action;
use crate::vocab::principal::Principal;
use crate::wire::convert;
use crate::wire::proto::orc_server::{Orc, OrcServer};
use crate::wire::proto::peer_server::{Peer, PeerServer};
use crate::wire::proto::{
    ActionRequest, ActionResponse, AddServerRequest, BlobChunk, ClusterStatusRequest,
    ClusterStatusResponse, FetchBlobRequest, HoldBlobRequest, HoldBlobResponse, JoinRequest,
    JoinResponse, LogChunk, MembershipResponse, RaftAck, RaftBatch, RemoveServerRequest,
    RenewRequest, TaskLogsRequest, WatchEvent, WatchRequest,
};
use crate::wire::status::{respond, to_status};
use crate::{Error, Result};

/// Who sent `request`, as the listener authenticated its connection (an
/// extension it puts on every request); a request without one is refused,
/// never served as anybody.
pub fn principal<T>(request: &Request<T>) -> Result<Principal> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| {
        Error::Refused(
            Refusal::Unauthenticated,
            "the request reached the server without a checked credential: connect with your orc credential (orc config)".into(),
        )
    })
}

/// The address the request's connection comes from, when the listener
/// recorded it.
pub fn remote_address<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<listener::RemoteAddress>()
        .map(|address| address.0)
}

/// Servers only (and every caller of a cluster started `--insecure`): the
/// `Peer` service. Refusals are logged with the caller.
pub fn require_server<T>(request: &Request<T>, what: &str) -> Result<Principal> {
    let principal = principal(request)?;
    match principal {
        Principal::Server { .. } | Principal::Insecure => Ok(principal),
        Principal::Anonymous => {
            tracing::warn!(peer = ?remote_address(request), what, "refused a call without a certificate");
            Err(principal
                .may(crate::vocab::principal::Access::Read, what)
                .unwrap_err())
        }
        other => {
            tracing::warn!(peer = ?remote_address(request), caller = %other, what, "refused a server-only call");
            Err(Error::Refused(
                Refusal::AccessDenied,
                format!("{other} may not call {what}: only the cluster's servers may"),
            ))
        }
    }
}

/// Any caller with a certificate (or of an insecure cluster).
pub fn require_authenticated<T>(request: &Request<T>, what: &str) -> Result<Principal> {
    let principal = principal(request)?;
    if principal == Principal::Anonymous {
        tracing::debug!(peer = ?remote_address(request), what, "refused a call without a certificate");
        return Err(principal
            .may(crate::vocab::principal::Access::Read, what)
            .unwrap_err());
    }
    Ok(principal)
}

/// Shared by every handler of one server.
#[derive(Clone)]
pub struct ApiContext {
    /// The raft node.
    pub raft: RaftHandle,
    /// Outbound raft traffic (to learn peer addresses from inbound batches).
    pub transport: Arc<Transport>,
    /// Agent heartbeats seen by this server.
    pub liveness: crate::controller::Liveness,
    /// Caps on what a service may ask for (`orc server --max-service-desired-count`).
    pub service_limits: services::ServiceLimits,
    /// The log sessions of the agents connected to this server.
    pub logs: logs::LogSessions,
    /// The image registry's blob files on this server.
    pub blobs: Arc<crate::blobstore::BlobStore>,
    /// Copies blob files between this server and the others.
    pub blob_sync: Arc<blobsync::BlobSync>,
    /// The cluster's seal key: secrets are sealed with it before they are
    /// proposed, and opened with it where a server must read them.
    pub seal: crate::seal::SealKey,
    /// The CA and the listener's TLS (`None`: started `--insecure`).
    pub security: Option<Arc<trust::Security>>,
}

impl ApiContext {
    /// Runs one action of any service: the one `match` over [`Action`]
    /// that `Orc.Call` and the AWS door both go through, after checking that
    /// `principal` may run it. An empty request id gets a fresh one.
    pub async fn dispatch(
        &self,
        principal: &Principal,
        action: Action,
        body: &str,
        request_id: String,
    ) -> Result<ecs::ActionResult> {
        principal.may_call(action)?;
        let scoped = self.clusters_of(principal);
        if let Some((user, allowed)) = &scoped {
            scope::check(user, allowed, action, body)?;
        }
        let request_id = if request_id.is_empty() {
            crate::vocab::ids::request_id()
        } else {
            request_id
        };
        let mut result = self
            .dispatch_action(principal, action, body, request_id)
            .await?;
        if let (Some((_, allowed)), Action::Ecs(crate::vocab::action::EcsAction::ListClusters)) =
            (&scoped, action)
        {
            scope::filter_cluster_list(allowed, &mut result.body);
        }
        Ok(result)
    }

    /// The clusters a user is limited to (with its name), when it is.
    fn clusters_of(&self, principal: &Principal) -> Option<(String, Vec<String>)> {
        let Principal::User { name, .. } = principal else {
            return None;
        };
        self.raft
            .store()
            .read(|state| state.iam.users.get(name).map(|user| user.clusters.clone()))
            .filter(|clusters| !clusters.is_empty())
            .map(|clusters| (name.clone(), clusters))
    }

    async fn dispatch_action(
        &self,
        principal: &Principal,
        action: Action,
        body: &str,
        request_id: String,
    ) -> Result<ecs::ActionResult> {
        match action {
            Action::Ecs(action) => {
                ecs::call(&self.raft, self.service_limits, action, body, request_id).await
            }
            Action::Elbv2(action) => elbv2::call(&self.raft, action, body, request_id).await,
            Action::Ecr(action) => {
                ecr::call(&self.raft, &self.seal, principal, action, body, request_id).await
            }
            Action::Iam(action) => {
                iam::call(&self.raft, &self.seal, action, body, request_id).await
            }
            Action::SecretsManager(action) => {
                secrets::call(&self.raft, &self.seal, action, body, request_id).await
            }
        }
    }

    fn control_plane_id(&self) -> String {
        self.transport.cluster_id().to_string()
    }

    /// The leader's address when this server is a follower that knows it;
    /// `Ok(None)` on the leader; unavailable while no leader is elected.
    fn leader_address(&self) -> Result<Option<String>> {
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
        self.raft
            .store()
            .read(|s| s.member_address(status.leader_id).map(str::to_string))
            .map(Some)
            .ok_or_else(|| {
                Error::Unavailable(
                    "the leader's address is not known yet; retry in a moment".into(),
                )
            })
    }

    /// A client for the current leader, when this server is not it.
    fn leader_client(&self) -> Result<Option<Client>> {
        let Some(address) = self.leader_address()? else {
            return Ok(None);
        };
        let mut client = Client::new(&address)?;
        client.retry_for = Duration::from_secs(5);
        Ok(Some(client))
    }

    fn membership(&self) -> Membership {
        let status = self.raft.status();
        Membership {
            cluster_id: self.control_plane_id(),
            members: self
                .raft
                .store()
                .read(|state| members::members(&status, state)),
        }
    }

    async fn add_server(
        &self,
        node_id: u64,
        address: &str,
        cluster_id: &str,
    ) -> Result<Membership> {
        if node_id == 0 || address.is_empty() {
            return Err(Error::InvalidInput(
                "add server: node id and address are required".into(),
            ));
        }
        let ours = self.control_plane_id();
        if !cluster_id.is_empty() && cluster_id != ours {
            return Err(Error::Conflict(format!(
                "the joining server belongs to control plane {} but this one is {ours}: use an empty data dir to join this control plane",
                cluster_id
            )));
        }
        if let Some(leader) = self.leader_client()? {
            return leader.add_server(node_id, address, cluster_id).await;
        }
        let status = self.raft.status();
        let known = status.voters.contains(&node_id) || status.learners.contains(&node_id);
        let same_address = self
            .raft
            .store()
            .read(|s| s.member_address(node_id) == Some(address));
        if known && same_address {
            return Ok(self.membership());
        }
        if known {
            return Err(Error::Conflict(format!(
                "server {} is already a member with another address; remove it first",
                node_id
            )));
        }
        self.raft
            .change_membership(ConfChangeType::AddLearnerNode, node_id, address)
            .await?;
        Ok(self.membership())
    }

    async fn remove_server(&self, node_id: u64) -> Result<Membership> {
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

impl ApiContext {
    /// Asks every other voter for its own view (1 s each, at once) and
    /// names those that do not answer.
    async fn waiting_for_quorum(&self, status: &NodeStatus) -> String {
        let addresses: Vec<(u64, String)> = self.raft.store().read(|state| {
            status
                .voters
                .iter()
                .filter(|id| **id != status.id)
                .filter_map(|id| state.member_address(*id).map(|a| (*id, a.to_string())))
                .collect()
        });
        let probes = addresses.into_iter().map(|(id, address)| async move {
            let mut client = Client::new(&address).ok()?;
            client.retry_for = Duration::from_millis(0);
            let answer = tokio::time::timeout(Duration::from_secs(1), client.cluster_status(false));
            matches!(answer.await, Ok(Ok(_))).then_some(id)
        });
        let answering: Vec<u64> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.raft
            .store()
            .read(|state| members::waiting_for_quorum(status, state, &answering))
    }

    /// `orc cluster status`: a linearizable status comes from the leader,
    /// which knows every member's progress; a local one is this server's own
    /// view.
    async fn cluster_status(&self, linearizable: bool) -> Result<ControlPlaneStatus> {
        let status = self.raft.status();
        if let (Some(failure), true) = (&status.failed, linearizable) {
            return Err(Error::Unavailable(format!(
                "{failure} (`orc cluster status --local` shows this server's view)"
            )));
        }
        if linearizable && status.role != Role::Leader && status.leader_id == 0 {
            return Err(Error::Unavailable(self.waiting_for_quorum(&status).await));
        }
        if linearizable && status.role != Role::Leader {
            let mut leader = self.leader_client()?.ok_or_else(|| {
                Error::Unavailable("no leader is elected right now; retry in a moment".into())
            })?;
            leader.retry_for = Duration::from_millis(0);
            return match tokio::time::timeout(Duration::from_secs(3), leader.cluster_status(true)).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::Unavailable(
                    "the leader did not answer in time; retry, or use --local for this server's own view".into(),
                )),
            };
        }
        if linearizable {
            self.raft.read_barrier().await?;
        }
        let status = self.raft.status();
        Ok(self
            .raft
            .store()
            .read(|state| members::cluster_status(&status, state)))
    }
}

#[tonic::async_trait]
impl Orc for ApiContext {
    #[tracing::instrument(level = "debug", skip_all, fields(node = self.raft.status().id, linearizable = request.get_ref().linearizable))]
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        require_authenticated(&request, "orc:ClusterStatus").map_err(to_status)?;
        respond(ApiContext::cluster_status(self, request.into_inner().linearizable).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node = request.get_ref().node_id, address = %request.get_ref().address))]
    async fn add_server(
        &self,
        request: Request<AddServerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        principal(&request)
            .and_then(|p| p.may(crate::vocab::principal::Access::Admin, "orc:AddServer"))
            .map_err(to_status)?;
        let request = request.into_inner();
        respond(
            ApiContext::add_server(self, request.node_id, &request.address, &request.cluster_id)
                .await,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node = request.get_ref().node_id))]
    async fn remove_server(
        &self,
        request: Request<RemoveServerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        principal(&request)
            .and_then(|p| p.may(crate::vocab::principal::Access::Admin, "orc:RemoveServer"))
            .map_err(to_status)?;
        respond(ApiContext::remove_server(self, request.into_inner().node_id).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(action = %request.get_ref().action, request_id = %request.get_ref().request_id))]
    async fn call(
        &self,
        request: Request<ActionRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        let result = async {
            let principal = principal?;
            let action: Action = request.action.parse()?;
            self.dispatch(&principal, action, &request.body_json, request.request_id)
                .await
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
        // Agents watch too (`orc agent --proxy` follows the load
        // balancers): a change names actions and ids, never a document.
        require_authenticated(&request, "orc:Watch").map_err(to_status)?;
        let after_revision = request.into_inner().after_revision;
        let changes: ChangeStream =
            watch::open(self.raft.store().clone(), after_revision).map_err(to_status)?;
        let events = changes.map(|change| change.map(convert::watch_event).map_err(to_status));
        Ok(Response::new(Box::pin(events)))
    }

    type TaskLogsStream = ResponseStream<LogChunk>;

    #[tracing::instrument(level = "debug", skip_all, fields(task = %request.get_ref().task))]
    async fn task_logs(
        &self,
        request: Request<TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        // A task's output is a user's to read (and a server's, asking its
        // peers), never an agent's: it is another node's.
        principal(&request)
            .and_then(|p| p.may(crate::vocab::principal::Access::Read, "orc:TaskLogs"))
            .map_err(to_status)?;
        ApiContext::task_logs(self, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(role = %request.get_ref().role))]
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let remote = remote_address(&request);
        let request = request.into_inner();
        let issued = ApiContext::join(
            self,
            remote,
            &request.token,
            &request.role,
            request.node_id,
            &request.signing_request,
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(issued.into()))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        let principal = principal(&request).map_err(to_status)?;
        let issued = self
            .renew_certificate(&principal, &request.into_inner().signing_request)
            .await
            .map_err(to_status)?;
        Ok(Response::new(issued.into()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(action = %request.get_ref().action))]
    async fn admin(
        &self,
        request: Request<ActionRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let principal = principal(&request).map_err(to_status)?;
        let request = request.into_inner();
        let answer = ApiContext::admin(
            self,
            &principal,
            &request.action,
            &request.body_json,
            request.request_id,
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(ActionResponse {
            body_json: answer.to_string(),
            warnings: vec![],
        }))
    }
}

impl ApiContext {
    /// Steps one inbound batch of raft messages from a peer (both `Peer`
    /// calls), sent by `principal` (a server may only speak for itself).
    fn step_wire_batch(&self, principal: &Principal, batch: &RaftBatch) -> Result<(), Status> {
        if let Principal::Server { node_id } = principal {
            if *node_id != batch.from_id {
                return Err(to_status(Error::Refused(
                    Refusal::AccessDenied,
                    format!(
                        "server {node_id}'s certificate cannot send raft messages as server {}",
                        batch.from_id
                    ),
                )));
            }
        }
        self.step_batch(
            &batch.cluster_id,
            batch.from_id,
            &batch.from_address,
            &batch.messages,
        )
        .map_err(to_status)
    }
}

#[tonic::async_trait]
impl Peer for ApiContext {
    async fn raft(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let principal = require_server(&request, "Peer.Raft").map_err(to_status)?;
        self.step_wire_batch(&principal, &request.into_inner())?;
        Ok(Response::new(RaftAck {}))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn raft_stream(
        &self,
        request: Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<Response<RaftAck>, Status> {
        let principal = require_server(&request, "Peer.RaftStream").map_err(to_status)?;
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.step_wire_batch(&principal, &batch)?;
        }
        Ok(Response::new(RaftAck {}))
    }

    type FetchBlobStream = ResponseStream<BlobChunk>;

    #[tracing::instrument(level = "debug", skip_all, fields(digest = %request.get_ref().digest))]
    async fn fetch_blob(
        &self,
        request: Request<FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        require_server(&request, "Peer.FetchBlob").map_err(to_status)?;
        let digest = crate::oci::Digest::parse(&request.get_ref().digest)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let file = tokio::fs::File::open(self.blobs.blob_path(&digest))
            .await
            .map_err(|_| Status::not_found(format!("blob {digest} is not on this server")))?;
        let pieces = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(|piece| {
            piece
                .map(|data| BlobChunk {
                    data: data.to_vec(),
                })
                .map_err(|e| Status::unavailable(format!("cannot read the blob: {e}")))
        });
        Ok(Response::new(Box::pin(pieces)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(digest = %request.get_ref().digest))]
    async fn hold_blob(
        &self,
        request: Request<HoldBlobRequest>,
    ) -> Result<Response<HoldBlobResponse>, Status> {
        require_server(&request, "Peer.HoldBlob").map_err(to_status)?;
        let digest = crate::oci::Digest::parse(&request.get_ref().digest)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.blob_sync.ensure(&digest).await.map_err(to_status)?;
        Ok(Response::new(HoldBlobResponse {}))
    }
}

impl ApiContext {
    /// Checks a batch's control plane, learns the sender's address, and hands
    /// the messages to raft.
    fn step_batch(
        &self,
        cluster_id: &str,
        from_id: u64,
        from_address: &str,
        encoded: &[Vec<u8>],
    ) -> Result<()> {
        if cluster_id != self.transport.cluster_id() {
            return Err(Error::Conflict(format!(
                "this server belongs to control plane {} but the message came from control plane {}",
                self.transport.cluster_id(),
                cluster_id
            )));
        }
        self.transport.set_address(from_id, from_address);
        let mut messages = Vec::with_capacity(encoded.len());
        for bytes in encoded {
            let message = raft::eraftpb::Message::parse_from_bytes(bytes)
                .map_err(|e| Error::InvalidInput(format!("undecodable raft message: {e}")))?;
            messages.push(message);
        }
        self.raft.step(messages)
    }
}

/// A server-streaming answer.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Turns a producer that writes into a channel into a boxed stream. The
/// producer runs as its own task; it should stop once the channel closes
/// (the client went away).
fn async_stream<T, E, F, Fut>(producer: F) -> Pin<Box<dyn Stream<Item = Result<T, E>> + Send>>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, E>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(producer(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// The exposition format's content type (Prometheus text format 0.0.4).
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`, for a caller with a certificate of the cluster (any
/// role: a server, an agent, a user, readonly included) or on a server
/// started `--insecure` (loopback only); anyone else gets 401. It reads no
/// body, and refuses one (`limits::MAX_HTTP_BODY_BYTES`).
async fn metrics(
    principal: Option<axum::Extension<Principal>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse as _;
    let certified = matches!(
        principal.as_ref().map(|p| &p.0),
        Some(
            Principal::Insecure
                | Principal::Server { .. }
                | Principal::Agent { .. }
                | Principal::User { .. }
        )
    );
    if !certified {
        return (
            StatusCode::UNAUTHORIZED,
            "GET /metrics needs a certificate of this cluster: scrape with a credential's certificate and key (Prometheus: tls_config cert_file/key_file, see the README's Security section)\n",
        )
            .into_response();
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if length > crate::vocab::limits::MAX_HTTP_BODY_BYTES
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "GET /metrics takes no request body: send the request without one\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        crate::metrics::render(),
    )
        .into_response()
}

/// Serves the gRPC services and `/metrics` on `listener` until `shutdown`
/// resolves, closing idle connections as `options` says (see `listener`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    context: ApiContext,
    options: listener::ListenerOptions,
    tls: Option<crate::tls::ServerTlsSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let routes = tonic::service::Routes::new(
        // Requests are capped where they are decoded: one oversized message
        // is refused before it is held whole (answers may be bigger).
        OrcServer::new(context.clone())
            .max_decoding_message_size(crate::vocab::limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024),
    )
    .add_service(
        crate::wire::proto::agent_api_server::AgentApiServer::new(context.clone())
            .max_decoding_message_size(crate::vocab::limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024),
    )
    .add_service(
        PeerServer::new(context.clone())
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024),
    );
    let router = routes
        .into_axum_router()
        .route("/metrics", axum::routing::get(metrics))
        .merge(registry::router(Arc::new(registry::Registry {
            raft: context.raft.clone(),
            blobs: context.blobs.clone(),
            sync: context.blob_sync.clone(),
            fetches: Default::default(),
            seal: context.seal.clone(),
        })))
        .merge(door::routes(context))
        .fallback(door::not_served)
        .method_not_allowed_fallback(door::not_served);
    listener::serve(listener, router, options, tls, shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("the listener failed: {e}")))
}
