//! The `AgentApi` service: what container instances call. Registration and
//! task reports become proposals; heartbeats stay in the leader's memory
//! (`Liveness`) so an idle cluster writes nothing, and only a change of
//! connectivity goes through Raft; assignments are streamed from the local
//! state, resent whole on every change that touches the instance.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{async_stream, ApiContext};
use crate::model::{Assignment, InstanceRegistration, TaskStateChange};
use crate::raft::node::Role;
use crate::store::{Command, Proposal, State};
use crate::vocab::time::now_ms;
use crate::wire::proto::agent_api_client::AgentApiClient;
use crate::wire::proto::agent_api_server::AgentApi;
use crate::wire::proto::{
    Assignments, HeartbeatRequest, HeartbeatResponse, RegisterInstanceRequest,
    RegisterInstanceResponse, ReportAck, TaskStateReport, WatchAssignmentsRequest,
};
use crate::wire::status::to_status;
use crate::{Error, Result};

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

#[tonic::async_trait]
impl AgentApi for ApiContext {
    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id))]
    async fn register_container_instance(
        &self,
        request: Request<RegisterInstanceRequest>,
    ) -> Result<Response<RegisterInstanceResponse>, Status> {
        let request = request.into_inner();
        let registration: InstanceRegistration = serde_json::from_str(&request.instance_json)
            .map_err(|e| bad_json("instance_json", e))?;
        let cluster = cluster_or_default(&request.cluster);
        let instance_id = if request.container_instance_id.is_empty() {
            format!("{:032x}", rand::random::<u128>())
        } else {
            request.container_instance_id.clone()
        };
        let command = Command::RegisterContainerInstance {
            cluster: cluster.clone().into(),
            instance_id: instance_id.clone().into(),
            registration,
            now_ms: now_ms(),
        };
        let answer = self
            .raft
            .propose(Proposal {
                request_id: crate::vocab::ids::request_id(),
                command,
            })
            .await
            .map_err(to_status)?;
        self.liveness.beat(&cluster, &instance_id);
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
        let request = request.into_inner();
        self.liveness
            .beat(&request.cluster, &request.container_instance_id);
        let status = self.raft.status();
        // The leader decides connectivity, so it must hear every heartbeat.
        if status.role != Role::Leader && status.leader_id != 0 {
            let leader = self
                .raft
                .store()
                .read(|s| s.member_address(status.leader_id).map(str::to_string));
            if let Some(address) = leader {
                if let Ok(channel) = crate::wire::channel(&address) {
                    let mut client = AgentApiClient::new(channel);
                    let forwarded = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.heartbeat(request.clone()),
                    )
                    .await;
                    if let Ok(Ok(answer)) = forwarded {
                        return Ok(answer);
                    }
                }
            }
        }
        Ok(Response::new(HeartbeatResponse {
            revision: self.raft.store().revision(),
        }))
    }

    type WatchAssignmentsStream = super::ResponseStream<Assignments>;

    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id))]
    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let request = request.into_inner();
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

    #[tracing::instrument(level = "debug", skip_all, fields(cluster = %request.get_ref().cluster, instance = %request.get_ref().container_instance_id, task = tracing::field::Empty))]
    async fn report_task_state(
        &self,
        request: Request<TaskStateReport>,
    ) -> Result<Response<ReportAck>, Status> {
        let request = request.into_inner();
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
