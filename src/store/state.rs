//! The replicated state and the pure function that changes it.
//!
//! `apply(state, proposal)` is deterministic: it reads only the state and the
//! proposal (time and ids travel inside the command), does no I/O, and uses
//! only sorted maps, so every server that applies the same proposals in the
//! same order reaches the same state. Persisting the changed rows is the
//! caller's job (`store::Store`).

use serde::{Deserialize, Serialize};

use super::command::{Command, Outcome, Proposal};
use super::ecs;
use super::registry;
use super::rows::Receipt;
use super::services;
use super::table::Table;
use crate::error::Refusal;
use crate::model::{
    self, Cluster, ClusterCounts, ContainerInstance, Service, Task, TaskStatus, DEFAULT_CLUSTER,
};
use crate::Error;

/// How many request ids are remembered for de-duplicating retried writes.
pub const REQUEST_MEMORY: usize = 10_000;

/// A control-plane member as recorded in the replicated state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The raft node id.
    pub id: u64,
    /// Where its gRPC listener is reachable.
    pub address: String,
}

/// The outcome of an applied request, kept to answer a retry of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The revision the request was applied at (orders eviction).
    pub revision: u64,
    /// What the request returned, its answer kept as JSON text (`null`
    /// when `receipt` renders it).
    pub outcome: Result<CompactJson, Error>,
    /// For an answer made of rows the request created: what renders it
    /// again (`rows::Receipt`), instead of a copy of their JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

impl RequestRecord {
    /// The outcome as the request first returned it.
    pub fn outcome(&self, state: &State) -> Outcome {
        if let Some(receipt) = &self.receipt {
            return receipt.render(state);
        }
        match &self.outcome {
            Ok(answer) => answer.to_value(),
            Err(error) => Err(error.clone()),
        }
    }
}

/// A JSON answer kept as its compact text. 10,000 answers are remembered,
/// and a tree of `serde_json::Value`s takes several times the size of its
/// text (a map node per object, an allocation per string); the text is
/// parsed again only when a request is retried. It serializes as the JSON
/// it holds, so checkpoints read the same as when the tree was kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CompactJson(Box<serde_json::value::RawValue>);

impl CompactJson {
    /// The compact text of `value`.
    pub fn of(value: &serde_json::Value) -> Result<CompactJson, Error> {
        serde_json::value::to_raw_value(value)
            .map(CompactJson)
            .map_err(|e| Error::Internal(format!("cannot keep an answer: {e}")))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The answer parsed again.
    pub fn to_value(&self) -> Outcome {
        serde_json::from_str(self.0.get())
            .map_err(|e| Error::Internal(format!("a kept answer is undecodable: {e}")))
    }
}

impl PartialEq for CompactJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Control-plane facts that never change after bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The id `orc server --bootstrap` generated; joiners must match it.
    pub control_plane_id: String,
    /// Bumped by every applied command; watchers resume from it.
    pub revision: u64,
}

/// Everything the control plane replicates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Identity and revision.
    pub meta: Meta,
    /// Control-plane members by zero-padded id.
    pub members: Table<MemberRecord>,
    /// ECS clusters by name.
    pub clusters: Table<Cluster>,
    /// Recently applied request ids, for retry de-duplication.
    pub requests: Table<RequestRecord>,
    /// Task definition revisions by `family:0000000001`, as compact JSON.
    pub task_definitions: Table<super::rows::StoredTaskDefinition>,
    /// Container instances by `cluster/id`.
    pub container_instances: Table<ContainerInstance>,
    /// Tasks by `cluster/id`.
    pub tasks: Table<Task>,
    /// Services by `cluster/name`.
    pub services: Table<Service>,
    /// The built-in load balancer's resources.
    #[serde(default)]
    pub elbv2: super::elbv2::Elbv2State,
    /// The image registry's repositories, manifests, tags and blob links.
    #[serde(default)]
    pub registry: super::registry::RegistryState,
    /// Users and their access keys (secrets sealed).
    #[serde(default)]
    pub iam: super::iam::IamState,
    /// Secrets for tasks (values sealed).
    #[serde(default)]
    pub secrets: super::secrets::SecretsState,
    /// Join tokens (hashes only).
    #[serde(default)]
    pub trust: super::trust::TrustState,
    /// Resource usage and assignments per instance; rebuilt after loading.
    #[serde(skip)]
    pub(crate) indexes: super::ecs::Indexes,
    /// `requests` ordered by revision, for eviction; rebuilt after loading.
    #[serde(skip)]
    request_order: std::collections::BTreeSet<(u64, String)>,
}

/// The key a member is stored under (zero-padded so keys sort by id).
pub fn member_key(id: u64) -> String {
    format!("{id:020}")
}

impl State {
    /// Rebuilds the derived indexes after the rows were loaded from disk or
    /// a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.request_order = self
            .requests
            .iter()
            .map(|(key, record)| (record.revision, key.clone()))
            .collect();
        self.rebuild_ecs_indexes();
    }

    /// Whether the first leader has written `InitControlPlane` yet.
    pub fn is_initialized(&self) -> bool {
        !self.meta.control_plane_id.is_empty()
    }

    /// The address of a member, if known.
    pub fn member_address(&self, id: u64) -> Option<&str> {
        self.members
            .get(&member_key(id))
            .map(|member| member.address.as_str())
    }

    /// An ACTIVE cluster by name or ARN, or ECS's "cluster not found" error.
    pub fn active_cluster(&self, name_or_arn: &str) -> Result<&Cluster, Error> {
        let name = model::cluster_name_from(name_or_arn);
        match self.clusters.get(&name) {
            Some(cluster) if cluster.status == "ACTIVE" => Ok(cluster),
            _ => Err(Error::Refused(Refusal::ClusterNotFound, format!(
                "cluster not found: {name:?} (create it with `orc create-cluster --cluster-name {name}`)"
            ))),
        }
    }

    /// The derived counts ECS shows beside a cluster.
    pub fn cluster_counts(&self, cluster_name: &str) -> ClusterCounts {
        let mut counts = ClusterCounts {
            registered_container_instances_count: self
                .container_instances
                .scan_prefix(&format!("{cluster_name}/"))
                .filter(|(_, i)| i.status != "INACTIVE")
                .count() as u64,
            active_services_count: self
                .services
                .scan_prefix(&format!("{cluster_name}/"))
                .filter(|(_, s)| s.status == "ACTIVE")
                .count() as u64,
            ..Default::default()
        };
        for (_, task) in self.tasks.scan_prefix(&format!("{cluster_name}/")) {
            match task.last_status {
                TaskStatus::Running => counts.running_tasks_count += 1,
                TaskStatus::Stopped => {}
                _ if task.last_status < TaskStatus::Running => counts.pending_tasks_count += 1,
                _ => {}
            }
        }
        counts
    }
}

/// Applies one proposal. A request id seen before returns the earlier
/// outcome without applying again.
pub fn apply(state: &mut State, proposal: &Proposal) -> Outcome {
    if let Some(previous) = state.requests.get(&proposal.request_id) {
        return previous.outcome(state);
    }
    state.meta.revision += 1;
    let outcome = apply_command(state, &proposal.command);
    if !proposal.request_id.is_empty() {
        remember_request(state, &proposal.request_id, &outcome);
    }
    outcome
}

/// Records a membership change that Raft committed (a conf change entry).
/// `address` is `None` when the member was removed.
pub fn apply_membership(state: &mut State, id: u64, address: Option<String>) {
    state.meta.revision += 1;
    match address {
        Some(address) => state
            .members
            .insert(member_key(id), MemberRecord { id, address }),
        None => {
            state.members.remove(&member_key(id));
        }
    }
}

fn remember_request(state: &mut State, request_id: &str, outcome: &Outcome) {
    let revision = state.meta.revision;
    let receipt = outcome
        .as_ref()
        .ok()
        .and_then(|answer| Receipt::of(state, answer));
    let record = match (outcome, receipt) {
        (_, Some(receipt)) => RequestRecord {
            revision,
            outcome: CompactJson::of(&serde_json::Value::Null),
            receipt: Some(receipt),
        },
        (Ok(answer), None) => RequestRecord {
            revision,
            outcome: CompactJson::of(answer),
            receipt: None,
        },
        (Err(error), None) => RequestRecord {
            revision,
            outcome: Err(error.clone()),
            receipt: None,
        },
    };
    state.requests.insert(request_id, record);
    state
        .request_order
        .insert((revision, request_id.to_string()));
    if state.requests.len() > REQUEST_MEMORY {
        // Evict the oldest: deterministic because every server holds the same rows.
        if let Some((_, oldest)) = state.request_order.pop_first() {
            state.requests.remove(&oldest);
        }
    }
}

fn apply_command(state: &mut State, command: &Command) -> Outcome {
    match command {
        Command::InitControlPlane {
            control_plane_id,
            first_member_id,
            first_member_address,
            now_ms,
        } => {
            if state.is_initialized() {
                return Ok(serde_json::json!({"controlPlaneId": state.meta.control_plane_id}));
            }
            state.meta.control_plane_id = control_plane_id.clone();
            if state.member_address(*first_member_id).is_none() {
                state.members.insert(
                    member_key(*first_member_id),
                    MemberRecord {
                        id: *first_member_id,
                        address: first_member_address.clone(),
                    },
                );
            }
            create_cluster(state, DEFAULT_CLUSTER, &[], *now_ms)
        }
        Command::CreateCluster {
            cluster_name,
            tags,
            now_ms,
        } => {
            model::validate_cluster_name(cluster_name)?;
            create_cluster(state, cluster_name, tags, *now_ms)
        }
        Command::RegisterTaskDefinition {
            task_definition,
            now_ms,
        } => ecs::register_task_definition(state, task_definition, *now_ms),
        Command::DeregisterTaskDefinition {
            family,
            revision,
            now_ms,
        } => ecs::deregister_task_definition(state, family, *revision, *now_ms),
        Command::DeleteTaskDefinitions { task_definitions } => {
            ecs::delete_task_definitions(state, task_definitions)
        }
        Command::RegisterContainerInstance {
            cluster,
            instance_id,
            registration,
            now_ms,
            agent_session,
        } => ecs::register_container_instance(
            state,
            cluster,
            instance_id,
            registration,
            *now_ms,
            agent_session,
        ),
        Command::UpdateContainerInstancesState {
            cluster,
            instance_ids,
            status,
        } => ecs::update_container_instances_state(state, cluster, instance_ids, status),
        Command::SetInstanceConnected {
            cluster,
            instance_id,
            connected,
        } => ecs::set_instance_connected(state, cluster, instance_id, *connected),
        Command::RunTask {
            launch,
            planned,
            unplaced,
            now_ms,
        } => ecs::run_task(state, launch, planned, unplaced, *now_ms),
        Command::PlaceTasks { cluster, planned } => ecs::place_tasks(state, cluster, planned),
        Command::StopTask {
            cluster,
            task_id,
            reason,
            stop_code,
            now_ms,
        } => services::stop_task(state, cluster, task_id, reason, stop_code, *now_ms),
        Command::SubmitTaskStateChange {
            cluster,
            instance_id,
            change,
        } => ecs::submit_task_state_change(state, cluster, instance_id, change),
        Command::PruneStoppedTasks { stopped_before_ms } => {
            ecs::prune_stopped_tasks(state, *stopped_before_ms)
        }
        Command::CreateService { service, now_ms } => {
            services::create_service(state, service, *now_ms)
        }
        Command::UpdateService {
            cluster,
            service_name,
            update,
            now_ms,
        } => services::update_service(state, cluster, service_name, update, *now_ms),
        Command::DeleteService {
            cluster,
            service_name,
            force,
        } => services::delete_service(state, cluster, service_name, *force),
        Command::ServiceLaunch {
            service_name,
            launch,
            planned,
            event,
            now_ms,
        } => services::launch(state, service_name, launch, planned, event, *now_ms),
        Command::ServicePlan {
            cluster,
            service_name,
            plan,
            now_ms,
        } => services::apply_plan(state, cluster, service_name, plan, *now_ms),
        Command::Elbv2(command) => super::elbv2::apply(state, command),
        Command::Iam(command) => super::iam::apply(&mut state.iam, command),
        Command::Secrets(command) => super::secrets::apply(&mut state.secrets, command),
        Command::Trust(command) => super::trust::apply(state, command),
        Command::RegistryCreateRepository {
            repository_name,
            must_be_new,
            now_ms,
        } => {
            registry::create_repository(&mut state.registry, repository_name, *must_be_new, *now_ms)
        }
        Command::RegistryDeleteRepository {
            repository_name,
            force,
        } => registry::delete_repository(&mut state.registry, repository_name, *force),
        Command::RegistryLinkBlob {
            repository_name,
            digest,
            size,
            now_ms,
        } => registry::link_blob(&mut state.registry, repository_name, digest, *size, *now_ms),
        Command::RegistryUnlinkBlob {
            repository_name,
            digest,
        } => registry::unlink_blob(&mut state.registry, repository_name, digest),
        Command::RegistryPutCacheRule { rule } => {
            registry::put_cache_rule(&mut state.registry, rule)
        }
        Command::RegistryDeleteCacheRule { prefix } => {
            registry::delete_cache_rule(&mut state.registry, prefix)
        }
        Command::RegistryCollectGarbage { links } => {
            Ok(registry::collect_garbage(&mut state.registry, links))
        }
        Command::RegistryPutManifest { manifest, tag } => {
            registry::put_manifest(&mut state.registry, manifest, tag.as_deref())
        }
        Command::RegistryDeleteManifest {
            repository_name,
            digest,
        } => registry::delete_manifest(&mut state.registry, repository_name, digest),
        Command::RegistryDeleteTag {
            repository_name,
            tag,
        } => registry::delete_tag(&mut state.registry, repository_name, tag),
        Command::RegistrySetSecret { secret } => registry::set_secret(&mut state.registry, secret),
        Command::DeleteCluster { cluster_name } => {
            let name = model::cluster_name_from(cluster_name);
            state.active_cluster(&name)?;
            if name == DEFAULT_CLUSTER {
                return Err(Error::InvalidInput(
                    "the default cluster cannot be deleted: it always exists in orc".to_string(),
                ));
            }
            if state
                .container_instances
                .scan_prefix(&format!("{name}/"))
                .any(|(_, i)| i.status != "INACTIVE")
            {
                return Err(Error::Refused(Refusal::ClusterContainsContainerInstances, format!(
                    "the cluster {name} still has container instances registered: deregister them first"
                )));
            }
            if state
                .services
                .scan_prefix(&format!("{name}/"))
                .any(|(_, s)| s.status != "INACTIVE")
            {
                return Err(Error::Refused(
                    Refusal::ClusterContainsServices,
                    format!("the cluster {name} still has active services: delete them first"),
                ));
            }
            if state
                .tasks
                .scan_prefix(&format!("{name}/"))
                .any(|(_, t)| t.last_status != TaskStatus::Stopped)
            {
                return Err(Error::Refused(
                    Refusal::ClusterContainsTasks,
                    format!(
                        "the cluster {name} still has tasks that are not stopped: stop them first"
                    ),
                ));
            }
            let cluster = state.clusters.get_mut(&name).expect("checked above");
            cluster.status = "INACTIVE".to_string();
            Ok(serde_json::to_value(cluster.clone())?)
        }
    }
}

fn create_cluster(state: &mut State, name: &str, tags: &[model::Tag], now_ms: u64) -> Outcome {
    if let Some(existing) = state.clusters.get(name) {
        if existing.status == "ACTIVE" {
            return Ok(serde_json::to_value(existing)?);
        }
    }
    let cluster = Cluster {
        cluster_name: name.to_string(),
        cluster_arn: model::arn("cluster", name),
        status: "ACTIVE".to_string(),
        tags: tags.to_vec(),
        created_at_ms: now_ms,
    };
    state.clusters.insert(name, cluster.clone());
    Ok(serde_json::to_value(cluster)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(request_id: &str, command: Command) -> Proposal {
        Proposal {
            request_id: request_id.to_string(),
            command,
        }
    }

    fn create(name: &str) -> Command {
        Command::CreateCluster {
            cluster_name: name.to_string().into(),
            tags: vec![],
            now_ms: 7,
        }
    }

    fn history() -> Vec<Proposal> {
        vec![
            proposal(
                "init",
                Command::InitControlPlane {
                    control_plane_id: "cp".into(),
                    first_member_id: 1,
                    first_member_address: "127.0.0.1:1".into(),
                    now_ms: 1,
                },
            ),
            proposal("a", create("lab")),
            proposal("b", create("bad name")),
            proposal("c", create("other")),
            proposal(
                "d",
                Command::DeleteCluster {
                    cluster_name: "other".into(),
                },
            ),
            proposal("a", create("lab")),
        ]
    }

    #[test]
    fn apply_is_deterministic() {
        let mut first = State::default();
        let mut second = State::default();
        let outcomes_first: Vec<Outcome> = history().iter().map(|p| apply(&mut first, p)).collect();
        let outcomes_second: Vec<Outcome> =
            history().iter().map(|p| apply(&mut second, p)).collect();
        assert_eq!(first, second);
        assert_eq!(outcomes_first, outcomes_second);
        assert_eq!(
            first.meta.revision, 5,
            "the retried request must not bump the revision"
        );
        assert!(outcomes_first[2].is_err());
        assert_eq!(first.clusters.get("other").unwrap().status, "INACTIVE");
        assert!(first.active_cluster("default").is_ok());
    }

    #[test]
    fn retried_request_returns_first_outcome() {
        let mut state = State::default();
        let first = apply(&mut state, &proposal("same", create("x")));
        state.clusters.get_mut("x").unwrap().tags.push(model::Tag {
            key: "k".into(),
            value: "v".into(),
        });
        let again = apply(&mut state, &proposal("same", create("x")));
        assert_eq!(first, again);
    }

    #[test]
    fn default_cluster_cannot_be_deleted() {
        let mut state = State::default();
        apply(&mut state, &history()[0]).unwrap();
        let error = apply(
            &mut state,
            &proposal(
                "x",
                Command::DeleteCluster {
                    cluster_name: "default".into(),
                },
            ),
        )
        .unwrap_err();
        assert!(error.to_string().contains("cannot be deleted"));
    }

    #[test]
    fn request_memory_is_bounded() {
        let mut state = State::default();
        for i in 0..(REQUEST_MEMORY + 5) {
            apply(
                &mut state,
                &proposal(&format!("r{i}"), create(&format!("c{}", i % 3))),
            )
            .unwrap();
        }
        assert_eq!(state.requests.len(), REQUEST_MEMORY);
        assert!(!state.requests.contains("r0"));
        assert!(state.requests.contains(&format!("r{}", REQUEST_MEMORY + 4)));
    }
}
