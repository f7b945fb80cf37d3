//! The ECS verbs: each action takes the ECS request body (JSON) and returns
//! the ECS response body, so `--output json` prints what `aws ecs` prints.
//! Writes become `store::Command`s proposed through Raft; reads wait on a
//! ReadIndex barrier and then read the local state.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{self, Cluster, Tag};
use crate::raft::node::RaftHandle;
use crate::store::{Command, Proposal, State};
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// What an action returns: the ECS body and warnings for stderr.
pub struct ActionResult {
    /// The ECS response body.
    pub body: Value,
    /// Things the caller should know (e.g. ignored fields).
    pub warnings: Vec<String>,
}

impl From<Value> for ActionResult {
    fn from(body: Value) -> Self {
        ActionResult {
            body,
            warnings: Vec::new(),
        }
    }
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(action: &str, body: &str) -> Result<T> {
    let body = if body.trim().is_empty() { "{}" } else { body };
    serde_json::from_str(body)
        .map_err(|e| Error::InvalidInput(format!("{action}: invalid request: {e}")))
}

/// Dispatches one ECS action.
pub async fn call(
    raft: &RaftHandle,
    action: &str,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    let request_id = if request_id.is_empty() {
        crate::vocab::ids::request_id()
    } else {
        request_id
    };
    if let Some(result) = super::tasks::call(raft, action, body, request_id.clone()).await {
        return result;
    }
    if let Some(result) = super::services::call(raft, action, body, request_id.clone()).await {
        return result;
    }
    match action {
        "CreateCluster" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Request {
                cluster_name: Option<String>,
                #[serde(default)]
                tags: Vec<Tag>,
            }
            let request: Request = parse(action, body)?;
            let cluster_name = request
                .cluster_name
                .unwrap_or_else(|| model::DEFAULT_CLUSTER.to_string());
            model::validate_cluster_name(&cluster_name)?;
            let command = Command::CreateCluster {
                cluster_name: cluster_name.clone(),
                tags: request.tags,
                now_ms: now_ms(),
            };
            raft.propose(Proposal {
                request_id,
                command,
            })
            .await?;
            read_now(raft, |state| {
                let cluster = state.active_cluster(&cluster_name)?;
                Ok(json!({ "cluster": cluster_view(state, cluster) }).into())
            })
        }
        "DeleteCluster" => {
            #[derive(Deserialize)]
            struct Request {
                cluster: String,
            }
            let request: Request = parse(action, body)?;
            let cluster_name = model::cluster_name_from(&request.cluster);
            let command = Command::DeleteCluster {
                cluster_name: cluster_name.clone(),
            };
            raft.propose(Proposal {
                request_id,
                command,
            })
            .await?;
            read_now(raft, |state| {
                let cluster = state
                    .clusters
                    .get(&cluster_name)
                    .ok_or_else(|| Error::Internal("a deleted cluster vanished".into()))?;
                Ok(json!({ "cluster": cluster_view(state, cluster) }).into())
            })
        }
        "DescribeClusters" => {
            #[derive(Deserialize)]
            struct Request {
                #[serde(default)]
                clusters: Vec<String>,
            }
            let request: Request = parse(action, body)?;
            let wanted = if request.clusters.is_empty() {
                vec![model::DEFAULT_CLUSTER.to_string()]
            } else {
                request.clusters
            };
            read_linearizable(raft, |state| {
                let mut clusters = Vec::new();
                let mut failures = Vec::new();
                for name_or_arn in &wanted {
                    let name = model::cluster_name_from(name_or_arn);
                    match state.clusters.get(&name) {
                        Some(cluster) => clusters.push(cluster_view(state, cluster)),
                        None => failures.push(
                            json!({"arn": model::arn("cluster", &name), "reason": "MISSING"}),
                        ),
                    }
                }
                Ok(json!({ "clusters": clusters, "failures": failures }).into())
            })
            .await
        }
        "ListClusters" => {
            read_linearizable(raft, |state| {
                let arns: Vec<&str> = state
                    .clusters
                    .values()
                    .filter(|c| c.status == "ACTIVE")
                    .map(|c| c.cluster_arn.as_str())
                    .collect();
                Ok(json!({ "clusterArns": arns }).into())
            })
            .await
        }
        other => Err(Error::InvalidInput(format!(
            "unknown action {other:?}: run `orc --help` for the supported commands"
        ))),
    }
}

/// The cluster a request names (name or ARN), `default` when it names none.
pub(crate) fn cluster_of(cluster: &Option<String>) -> String {
    model::cluster_name_from(cluster.as_deref().unwrap_or(model::DEFAULT_CLUSTER))
}

/// Proposes one command under the request's id and waits for its outcome.
pub(crate) async fn propose(
    raft: &RaftHandle,
    request_id: String,
    command: Command,
) -> Result<serde_json::Value> {
    raft.propose(Proposal {
        request_id,
        command,
    })
    .await
}

/// Reads after a ReadIndex barrier: linearizable.
pub(crate) async fn read_linearizable<R>(
    raft: &RaftHandle,
    f: impl FnOnce(&State) -> Result<R>,
) -> Result<R> {
    raft.read_barrier().await?;
    raft.store().read(f)
}

/// Reads the local state right after this server applied our own write.
fn read_now<R>(raft: &RaftHandle, f: impl FnOnce(&State) -> Result<R>) -> Result<R> {
    raft.store().read(f)
}

/// A cluster as ECS shows it, with its derived counts.
pub fn cluster_view(state: &State, cluster: &Cluster) -> Value {
    let counts = state.cluster_counts(&cluster.cluster_name);
    json!({
        "clusterArn": cluster.cluster_arn,
        "clusterName": cluster.cluster_name,
        "status": cluster.status,
        "registeredContainerInstancesCount": counts.registered_container_instances_count,
        "runningTasksCount": counts.running_tasks_count,
        "pendingTasksCount": counts.pending_tasks_count,
        "activeServicesCount": counts.active_services_count,
        "statistics": [],
        "tags": cluster.tags,
        "settings": [{"name": "containerInsights", "value": "disabled"}],
        "capacityProviders": [],
        "defaultCapacityProviderStrategy": [],
    })
}
