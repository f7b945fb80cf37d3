//! The `AgentApi` service: what container instances call. Registration and
//! task reports become proposals; heartbeats stay in the leader's memory
//! (`Liveness`) so an idle cluster writes nothing, and only a change of
//! connectivity goes through Raft; assignments are streamed from the local
//! state, resent whole on every change that touches the instance.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{async_stream, ApiContext};
use crate::controller::Liveness;
use crate::error::Refusal;
use crate::model::{Assignment, InstanceRegistration, TaskStateChange};
use crate::store::{Command, Proposal, State};
use crate::vocab::principal::Principal;
use crate::vocab::time::now_ms;
use crate::wire::proto::agent_api_client::AgentApiClient;
use crate::wire::proto::agent_api_server::AgentApi;
use crate::wire::proto::{
    Assignments, HeartbeatRequest, HeartbeatResponse, LogChunk, LogRequest,
    RegisterInstanceRequest, RegisterInstanceResponse, RegistryToken, RegistryTokenRequest,
    ReportAck, TaskSecret, TaskSecrets, TaskSecretsRequest, TaskStateReport,
    WatchAssignmentsRequest,
};
use crate::wire::status::to_status;
use crate::wire::{AGENT_SESSION_LEASE, LIVE_AGENT_REFUSAL};
use crate::{Error, Result};

/// A channel to the leader at `address`, kept for the next forwarded
/// heartbeat (one connection per leader, not one per heartbeat).
fn leader_channel(address: &str) -> Result<Channel> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let mut channels = CHANNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(channel) = channels.get(address) {
        return Ok(channel.clone());
    }
    let channel = crate::wire::channel(address)?;
    if channels.len() >= 16 {
        channels.clear();
    }
    channels.insert(address.to_string(), channel.clone());
    Ok(channel)
}

/// Whether `principal` may act for `instance_id` through `AgentApi`: a
/// server (forwarding), an admin (who may do everything: simulated agents
/// in benchmarks), an insecure cluster's caller, or the agent whose
/// certificate names that instance. Refusals are logged.
fn may_serve_instance(principal: &Principal, instance_id: &str, what: &str) -> Result<()> {
    match principal {
        Principal::Server { .. }
        | Principal::Insecure
        | Principal::User {
            role: crate::vocab::principal::Role::Admin,
            ..
        } => Ok(()),
        Principal::Agent { instance } if instance == instance_id => Ok(()),
        Principal::Anonymous => {
            tracing::warn!(instance = %instance_id, what, "refused an agent call without a certificate");
            Err(Error::Refused(
                Refusal::Unauthenticated,
                format!("{what} needs the agent's certificate: start the agent with a join token (`orc agent --token ...`)"),
            ))
        }
        Principal::Agent { instance } => {
            tracing::warn!(agent = %instance, instance = %instance_id, what, "refused an agent acting for another node's instance");
            Err(Error::Refused(
                Refusal::AccessDenied,
                format!("agent {instance} may only act for its own container instance, not {instance_id:?} ({what})"),
            ))
        }
        other => Err(Error::Refused(
            Refusal::AccessDenied,
            format!("{other} may not call {what}: it is for agents"),
        )),
    }
}

/// Whether an agent with `session` may register `instance_id`: refused while
/// the instance's owner is another session this server heard within the
/// lease (a second agent with a copied data dir).
fn check_owner(
    state: &State,
    liveness: &Liveness,
    cluster: &str,
    instance_id: &str,
    session: &str,
) -> Result<()> {
    if session.is_empty() || instance_id.is_empty() {
        return Ok(());
    }
    let Ok(instance) = state.container_instance(cluster, instance_id) else {
        return Ok(());
    };
    let owner = &instance.agent_session;
    if owner.is_empty() || owner == session {
        return Ok(());
    }
    match liveness.session_heard(cluster, instance_id, owner) {
        Some(ago) if ago <= AGENT_SESSION_LEASE => Err(Error::Conflict(format!(
            "container instance {instance_id} {LIVE_AGENT_REFUSAL} (on host {:?}, heard {} ms ago): one instance has one agent",
            instance.registration.hostname,
            ago.as_millis()
        ))),
        _ => Ok(()),
    }
}

/// The address of every control-plane member, for agents to fail over to.
fn server_addresses(state: &State) -> Vec<String> {
    state
        .members
        .iter()
        .map(|(_, member)| member.address.clone())
        .filter(|address| !address.is_empty())
        .collect()
}

/// The cluster an agent names (name or ARN), `default` when empty.
fn cluster_or_default(cluster: &str) -> String {
    crate::model::cluster_name_from(if cluster.is_empty() {
        crate::model::DEFAULT_CLUSTER
    } else {
        cluster
    })
}

fn bad_json(what: &str, error: serde_json::Error) -> Status {
    to_status(Error::InvalidInput(format!(
        "{what}: invalid json: {error}"
    )))
}

/// The assignments of one instance as the agent receives them.
pub fn assignments(state: &State, cluster: &str, instance_id: &str) -> Vec<String> {
    state
        .assigned_tasks(cluster, instance_id)
        .into_iter()
        .filter_map(|task| {
            let task_definition = state.task_definition_of(task).ok()?;
            let assignment = Assignment {
                task: task.clone(),
                task_definition,
            };
            serde_json::to_string(&assignment).ok()
        })
        .collect()
}

impl ApiContext {
    /// A client for the leader (see `leader_address`).
    fn leader_agent_client(&self, address: &str) -> Result<AgentApiClient<Channel>> {
        Ok(AgentApiClient::new(leader_channel(address)?))
    }
}

/// A forwarded call's failure as this server's answer: the leader's own
/// refusal passes through; a leader that cannot be reached makes this server
/// unavailable, so the agent tries another one.
fn forward_failure(leader: &str, outcome: Result<Status, tokio::time::error::Elapsed>) -> Status {
    match outcome {
        Ok(status)
            if matches!(
                status.code(),
                tonic::Code::FailedPrecondition
                    | tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
            ) =>
        {
            status
        }
        Ok(status) => Status::unavailable(format!(
            "this server cannot reach the leader at {leader} ({}); try another server",
            status.message()
        )),
        Err(_) => Status::unavailable(format!(
            "the leader at {leader} did not answer in time; try another server"
        )),
    }
}

/// How long an agent's pull token lasts (it asks again for each pull).
const REGISTRY_TOKEN_MS: u64 = 60 * 60 * 1000;

#[tonic::async_trait]
impl AgentApi for ApiContext {
    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id))]
    async fn register_container_instance(
        &self,
        request: Request<RegisterInstanceRequest>,
    ) -> Result<Response<RegisterInstanceResponse>, Status> {
        let principal = super::principal(&request).map_err(to_status)?;
        let mut request = request.into_inner();
        // An agent registers the instance its certificate names.
        if let (Principal::Agent { instance }, true) =
            (&principal, request.container_instance_id.is_empty())
        {
            request.container_instance_id = instance.clone();
        }
        may_serve_instance(
            &principal,
            &request.container_instance_id,
            "RegisterContainerInstance",
        )
        .map_err(to_status)?;
        // The leader hears every heartbeat, so it decides whether another
        // agent still owns this instance.
        if let Some(leader) = self.leader_address().map_err(to_status)? {
            let mut client = self.leader_agent_client(&leader).map_err(to_status)?;
            let forwarded = tokio::time::timeout(
                Duration::from_secs(8),
                client.register_container_instance(request),
            )
            .await;
            return match forwarded {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(status)) => Err(forward_failure(&leader, Ok(status))),
                Err(elapsed) => Err(forward_failure(&leader, Err(elapsed))),
            };
        }
        let registration: InstanceRegistration = serde_json::from_str(&request.instance_json)
            .map_err(|e| bad_json("instance_json", e))?;
        let cluster = cluster_or_default(&request.cluster);
        let session = request.agent_session.clone();
        let instance_id = if request.container_instance_id.is_empty() {
            format!("{:032x}", rand::random::<u128>())
        } else {
            request.container_instance_id.clone()
        };
        self.raft
            .store()
            .read(|state| check_owner(state, &self.liveness, &cluster, &instance_id, &session))
            .map_err(|error| {
                tracing::warn!(cluster = %cluster, instance = %instance_id, %error, "refused a second agent for one container instance");
                to_status(error)
            })?;
        let command = Command::RegisterContainerInstance {
            cluster: cluster.clone().into(),
            instance_id: instance_id.clone().into(),
            registration,
            now_ms: now_ms(),
            agent_session: session.clone(),
        };
        let answer = self
            .raft
            .propose(Proposal {
                request_id: crate::vocab::ids::request_id(),
                command,
            })
            .await
            .map_err(to_status)?;
        self.liveness.beat(&cluster, &instance_id, &session);
        tracing::info!(cluster = %cluster, instance = %instance_id, "container instance registered");
        Ok(Response::new(RegisterInstanceResponse {
            container_instance_arn: answer["containerInstance"]["containerInstanceArn"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            instance_json: answer["containerInstance"].to_string(),
            container_instance_id: instance_id,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id))]
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let principal = super::principal(&request).map_err(to_status)?;
        let request = request.into_inner();
        may_serve_instance(&principal, &request.container_instance_id, "Heartbeat")
            .map_err(to_status)?;
        let cluster = cluster_or_default(&request.cluster);
        // The leader decides connectivity, so it must hear every heartbeat.
        if let Some(leader) = self.leader_address().map_err(to_status)? {
            let mut client = self.leader_agent_client(&leader).map_err(to_status)?;
            let forwarded =
                tokio::time::timeout(Duration::from_secs(2), client.heartbeat(request.clone()))
                    .await;
            return match forwarded {
                Ok(Ok(answer)) => {
                    self.liveness.beat(
                        &cluster,
                        &request.container_instance_id,
                        &request.agent_session,
                    );
                    Ok(answer)
                }
                Ok(Err(status)) => Err(forward_failure(&leader, Ok(status))),
                Err(elapsed) => Err(forward_failure(&leader, Err(elapsed))),
            };
        }
        let session = &request.agent_session;
        let (owner, servers) = self.raft.store().read(|state| {
            let owner = state
                .container_instance(&cluster, &request.container_instance_id)
                .map(|instance| instance.agent_session.clone())
                .unwrap_or_default();
            (owner, server_addresses(state))
        });
        if !session.is_empty() && !owner.is_empty() && owner != *session {
            return Err(to_status(Error::Conflict(format!(
                "container instance {} was registered by another agent process since this one did (two agents share one instance id): this agent stops",
                request.container_instance_id
            ))));
        }
        self.liveness
            .beat(&cluster, &request.container_instance_id, session);
        Ok(Response::new(HeartbeatResponse {
            revision: self.raft.store().revision(),
            servers,
            trust: self
                .security
                .as_ref()
                .map(|s| s.trust_id())
                .unwrap_or_default(),
        }))
    }

    type WatchAssignmentsStream = super::ResponseStream<Assignments>;

    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id))]
    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let principal = super::principal(&request).map_err(to_status)?;
        let request = request.into_inner();
        may_serve_instance(
            &principal,
            &request.container_instance_id,
            "WatchAssignments",
        )
        .map_err(to_status)?;
        let cluster = cluster_or_default(&request.cluster);
        let instance_id = request.container_instance_id.clone();
        let store = self.raft.store().clone();
        // Subscribe before the first read so no change is missed.
        let mut revisions = store.subscribe();
        let stream = async_stream(move |sender| async move {
            let mut last_sent: Option<Vec<String>> = None;
            loop {
                let (revision, tasks) = store.read(|state| {
                    (
                        state.meta.revision,
                        assignments(state, &cluster, &instance_id),
                    )
                });
                if last_sent.as_ref() != Some(&tasks) {
                    let message = Assignments {
                        revision,
                        tasks_json: tasks.clone(),
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                    last_sent = Some(tasks);
                }
                if revisions.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    type ServeLogsStream = super::ResponseStream<LogRequest>;

    async fn serve_logs(
        &self,
        request: Request<tonic::Streaming<LogChunk>>,
    ) -> Result<Response<Self::ServeLogsStream>, Status> {
        let principal = super::principal(&request).map_err(to_status)?;
        let only_instance = match &principal {
            Principal::Agent { instance } => Some(instance.clone()),
            Principal::Server { .. }
            | Principal::Insecure
            | Principal::User {
                role: crate::vocab::principal::Role::Admin,
                ..
            } => None,
            other => {
                return Err(to_status(Error::Refused(
                    if *other == Principal::Anonymous {
                        Refusal::Unauthenticated
                    } else {
                        Refusal::AccessDenied
                    },
                    format!("{other} may not serve logs: ServeLogs is for agents"),
                )))
            }
        };
        Ok(Response::new(
            self.logs.serve(request.into_inner(), only_instance),
        ))
    }

    async fn get_registry_token(
        &self,
        request: Request<RegistryTokenRequest>,
    ) -> Result<Response<RegistryToken>, Status> {
        use crate::vocab::principal::Principal;
        let principal = super::principal(&request).map_err(to_status)?;
        if !matches!(
            principal,
            Principal::Agent { .. } | Principal::Server { .. } | Principal::Insecure
        ) {
            return Err(to_status(Error::Refused(
                crate::error::Refusal::AccessDenied,
                format!("{principal} is not an agent: log in to the registry with an access key or `orc ecr get-login-password`"),
            )));
        }
        let secret = super::ecr::secret(&self.raft, &self.seal)
            .await
            .map_err(to_status)?;
        let token = super::ecr::sign_pull_token(&secret, now_ms() + REGISTRY_TOKEN_MS);
        Ok(Response::new(RegistryToken { token }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id, task = %request.get_ref().task_arn))]
    async fn get_task_secrets(
        &self,
        request: Request<TaskSecretsRequest>,
    ) -> Result<Response<TaskSecrets>, Status> {
        let principal = super::principal(&request).map_err(to_status)?;
        let request = request.into_inner();
        let cluster = cluster_or_default(&request.cluster);
        super::secrets::may_receive(&principal, &request.container_instance_id)
            .map_err(to_status)?;
        self.raft.read_barrier().await.map_err(to_status)?;
        let secrets = self
            .raft
            .store()
            .read(|state| {
                super::secrets::for_task(
                    state,
                    &self.seal,
                    &cluster,
                    &request.container_instance_id,
                    &request.task_arn,
                )
            })
            .map_err(to_status)?;
        tracing::info!(task = %request.task_arn, instance = %request.container_instance_id, count = secrets.len(), "task secrets delivered to its agent");
        Ok(Response::new(TaskSecrets {
            secrets: secrets
                .into_iter()
                .map(|s| TaskSecret {
                    container: s.container,
                    name: s.name,
                    value: s.value,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id, task = tracing::field::Empty))]
    async fn report_task_state(
        &self,
        request: Request<TaskStateReport>,
    ) -> Result<Response<ReportAck>, Status> {
        let principal = super::principal(&request).map_err(to_status)?;
        let request = request.into_inner();
        may_serve_instance(
            &principal,
            &request.container_instance_id,
            "ReportTaskState",
        )
        .map_err(to_status)?;
        let change: TaskStateChange =
            serde_json::from_str(&request.report_json).map_err(|e| bad_json("report_json", e))?;
        tracing::Span::current().record("task", change.task_arn.as_str());
        let cluster = cluster_or_default(&request.cluster);
        tracing::debug!(cluster = %cluster, instance = %request.container_instance_id, task = %change.task_arn, status = change.status.as_str(), "task state reported");
        let command = Command::SubmitTaskStateChange {
            cluster: cluster.into(),
            instance_id: request.container_instance_id.into(),
            change,
        };
        self.raft
            .propose(Proposal {
                request_id: crate::vocab::ids::request_id(),
                command,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(ReportAck {
            revision: self.raft.store().revision(),
        }))
    }
}
