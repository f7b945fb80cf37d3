//! ECS verbs about services: create, update, delete, describe, list. The
//! reconciliation itself runs in the leader's controller.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{cluster_of, described, parse, propose, read_linearizable, ActionResult, Paging};
use crate::model::{self, DeploymentConfiguration, LoadBalancer, Service, TaskStatus};
use crate::raft::node::RaftHandle;
use crate::scheduler::placement::{self, PlacementConstraint, PlacementStrategy};
use crate::store::services::ServiceUpdate;
use crate::store::{Command, State};
use crate::vocab::ids::last_segment;
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// The default of `orc server --max-service-desired-count`: well above what
/// a lab of Pis can run, far below ECS's quota of 5,000 tasks per service.
pub const DEFAULT_MAX_SERVICE_DESIRED_COUNT: u32 = 1000;

/// Caps on what a service may ask for, set per server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceLimits {
    /// The largest desired count of one service.
    pub max_desired_count: u32,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            max_desired_count: DEFAULT_MAX_SERVICE_DESIRED_COUNT,
        }
    }
}

/// Refuses a desired count above the cap, with a sentence naming it.
pub fn check_desired_count(desired_count: u32, limits: ServiceLimits) -> Result<()> {
    if desired_count > limits.max_desired_count {
        return Err(Error::InvalidInput(format!(
            "desiredCount: {desired_count} is more than the {} tasks a service may run on this control plane; ask for fewer, or start the servers with a higher --max-service-desired-count",
            limits.max_desired_count
        )));
    }
    Ok(())
}

/// Checks deployment percentages as ECS does.
fn check_deployment_configuration(config: &DeploymentConfiguration) -> Result<()> {
    if config.maximum_percent < 100 || config.maximum_percent > 200 {
        return Err(Error::InvalidInput(format!(
            "deploymentConfiguration.maximumPercent: must be between 100 and 200, got {}",
            config.maximum_percent
        )));
    }
    if config.minimum_healthy_percent > 100 {
        return Err(Error::InvalidInput(format!(
            "deploymentConfiguration.minimumHealthyPercent: must be between 0 and 100, got {}",
            config.minimum_healthy_percent
        )));
    }
    Ok(())
}

/// Refuses a task definition whose images run on none of the cluster's
/// instances (`scheduler::platforms`), before the service changes. A
/// definition or cluster that does not resolve is left to the command,
/// which refuses it in ECS's words.
fn check_platforms(raft: &RaftHandle, cluster: &str, task_definition: &str) -> Result<()> {
    raft.store().read(
        |state| match state.resolve_task_definition(task_definition) {
            Ok(definition) => crate::scheduler::platforms::check(state, cluster, &definition),
            Err(_) => Ok(()),
        },
    )
}

/// Checks a service's `loadBalancers` as ECS does: each names a target
/// group that exists and a container of the task definition with a port
/// mapping for `containerPort`.
fn check_load_balancers(
    state: &State,
    load_balancers: &[LoadBalancer],
    task_definition: &str,
) -> Result<()> {
    if load_balancers.is_empty() {
        return Ok(());
    }
    if load_balancers.len() > 5 {
        return Err(Error::InvalidInput(format!(
            "loadBalancers: a service takes at most 5 target groups, got {}",
            load_balancers.len()
        )));
    }
    let definition = state.resolve_task_definition(task_definition)?;
    for (i, lb) in load_balancers.iter().enumerate() {
        let field = format!("loadBalancers[{i}]");
        state
            .elbv2
            .target_group(&lb.target_group_arn)
            .map_err(|e| match e {
                Error::InvalidInput(text) | Error::Refused(_, text) => {
                    Error::InvalidInput(format!("{field}.targetGroupArn: {text}"))
                }
                other => other,
            })?;
        let Some(container) = definition
            .container_definitions
            .iter()
            .find(|c| c.name == lb.container_name)
        else {
            return Err(Error::InvalidInput(format!(
                "{field}.containerName: the task definition has no container named {:?}; name one of its containers",
                lb.container_name
            )));
        };
        let mapped = container
            .port_mappings
            .iter()
            .any(|pm| pm.container_port == Some(i64::from(lb.container_port)));
        if !mapped {
            return Err(Error::InvalidInput(format!(
                "{field}.containerPort: container {:?} has no port mapping for port {}; add one to its portMappings (hostPort 0 for a dynamic port)",
                lb.container_name, lb.container_port
            )));
        }
    }
    Ok(())
}

pub(super) async fn create_service(
    raft: &RaftHandle,
    limits: ServiceLimits,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        service_name: String,
        task_definition: String,
        desired_count: Option<u32>,
        deployment_configuration: Option<DeploymentConfiguration>,
        #[serde(default)]
        placement_strategy: Vec<PlacementStrategy>,
        #[serde(default)]
        placement_constraints: Vec<PlacementConstraint>,
        #[serde(default)]
        load_balancers: Vec<LoadBalancer>,
        health_check_grace_period_seconds: Option<u32>,
        scheduling_strategy: Option<String>,
    }
    let request: Request = parse("CreateService", body)?;
    model::validate_cluster_name(&request.service_name)
        .map_err(|e| Error::InvalidInput(e.to_string().replace("clusterName", "serviceName")))?;
    let scheduling = request
        .scheduling_strategy
        .clone()
        .unwrap_or_else(|| "REPLICA".into());
    if scheduling != "REPLICA" && scheduling != "DAEMON" {
        return Err(Error::InvalidInput(format!(
            "schedulingStrategy: must be REPLICA or DAEMON, got {scheduling:?}"
        )));
    }
    if scheduling == "DAEMON" && request.desired_count.is_some() {
        return Err(Error::InvalidInput(
            "desiredCount: a DAEMON service runs one task per instance; leave desiredCount out"
                .into(),
        ));
    }
    if let Some(count) = request.desired_count {
        check_desired_count(count, limits)?;
    }
    let config = request.deployment_configuration.clone().unwrap_or_default();
    check_deployment_configuration(&config)?;
    placement::validate_strategies(&request.placement_strategy)
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    placement::validate_constraints(&request.placement_constraints)
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    let cluster = cluster_of(&request.cluster);
    check_platforms(raft, &cluster, &request.task_definition)?;
    raft.store().read(|state| {
        check_load_balancers(state, &request.load_balancers, &request.task_definition)
    })?;
    let service = Service {
        service_arn: model::arn("service", &format!("{cluster}/{}", request.service_name)),
        service_name: request.service_name,
        cluster_arn: model::arn("cluster", &cluster),
        status: "ACTIVE".into(),
        desired_count: request
            .desired_count
            .unwrap_or(if scheduling == "DAEMON" { 0 } else { 1 }),
        task_definition: request.task_definition,
        deployment_configuration: config,
        placement_strategy: request.placement_strategy,
        placement_constraints: request.placement_constraints,
        load_balancers: request.load_balancers,
        health_check_grace_period_seconds: request.health_check_grace_period_seconds.unwrap_or(0),
        scheduling_strategy: scheduling,
        deployments: vec![],
        events: vec![],
        created_at: 0.0,
        next_deployment: 0,
        last_completed_task_definition: None,
    };
    propose(
        raft,
        request_id.clone(),
        Command::CreateService {
            service: Box::new(service.clone()),
            now_ms: now_ms(),
        },
    )
    .await?;
    raft.store().read(|state| {
        let stored = state.service(&cluster, &service.service_name)?;
        Ok(json!({ "service": service_view(state, stored) }).into())
    })
}

pub(super) async fn update_service(
    raft: &RaftHandle,
    limits: ServiceLimits,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        service: String,
        desired_count: Option<u32>,
        task_definition: Option<String>,
        #[serde(default)]
        force_new_deployment: bool,
        deployment_configuration: Option<DeploymentConfiguration>,
        health_check_grace_period_seconds: Option<u32>,
        load_balancers: Option<Vec<LoadBalancer>>,
    }
    let request: Request = parse("UpdateService", body)?;
    if let Some(count) = request.desired_count {
        check_desired_count(count, limits)?;
    }
    if let Some(config) = &request.deployment_configuration {
        check_deployment_configuration(config)?;
    }
    let cluster = cluster_of(&request.cluster);
    let name = last_segment(&request.service).to_string();
    if let Some(task_definition) = &request.task_definition {
        check_platforms(raft, &cluster, task_definition)?;
    }
    if request.task_definition.is_some() || request.load_balancers.is_some() {
        // The load balancers (new or kept) must name containers and ports
        // of the task definition (new or kept).
        raft.store()
            .read(|state| match state.service(&cluster, &name) {
                Ok(service) => check_load_balancers(
                    state,
                    request
                        .load_balancers
                        .as_deref()
                        .unwrap_or(&service.load_balancers),
                    request
                        .task_definition
                        .as_deref()
                        .unwrap_or(&service.task_definition),
                ),
                Err(_) => Ok(()),
            })?;
    }
    let update = ServiceUpdate {
        desired_count: request.desired_count,
        task_definition: request.task_definition,
        force_new_deployment: request.force_new_deployment,
        deployment_configuration: request.deployment_configuration,
        health_check_grace_period_seconds: request.health_check_grace_period_seconds,
        load_balancers: request.load_balancers,
    };
    let command = Command::UpdateService {
        cluster: cluster.clone().into(),
        service_name: name.clone().into(),
        update,
        now_ms: now_ms(),
    };
    propose(raft, request_id, command).await?;
    raft.store().read(|state| {
        let stored = state.service(&cluster, &name)?;
        Ok(json!({ "service": service_view(state, stored) }).into())
    })
}

pub(super) async fn delete_service(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        service: String,
        #[serde(default)]
        force: bool,
    }
    let request: Request = parse("DeleteService", body)?;
    let cluster = cluster_of(&request.cluster);
    let name = last_segment(&request.service).to_string();
    let command = Command::DeleteService {
        cluster: cluster.clone().into(),
        service_name: name.clone().into(),
        force: request.force,
    };
    propose(raft, request_id, command).await?;
    raft.store().read(|state| {
        let stored = state.service(&cluster, &name)?;
        Ok(json!({ "service": service_view(state, stored) }).into())
    })
}

pub(super) async fn describe_services(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        services: Vec<String>,
    }
    let request: Request = parse("DescribeServices", body)?;
    let limit = crate::vocab::limits::MAX_DESCRIBE_SERVICES;
    if request.services.len() > limit {
        return Err(crate::Error::InvalidInput(crate::vocab::limits::too_many(
            "services",
            limit,
            request.services.len(),
            "DescribeServices",
        )));
    }
    let cluster = cluster_of(&request.cluster);
    read_linearizable(raft, |state| {
        state.active_cluster(&cluster)?;
        Ok(described(
            "services",
            &request.services,
            |name| Some(service_view(state, state.service(&cluster, name).ok()?)),
            |name| model::arn("service", &format!("{cluster}/{name}")),
        )
        .into())
    })
    .await
}

pub(super) async fn list_services(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        #[serde(flatten)]
        paging: Paging,
    }
    let request: Request = parse("ListServices", body)?;
    let cluster = cluster_of(&request.cluster);
    read_linearizable(raft, |state| {
        state.active_cluster(&cluster)?;
        let arns = super::ecs::arns_in_cluster(
            &state.services,
            &cluster,
            |s| s.status != "INACTIVE",
            |s| s.service_arn.as_str(),
        );
        Ok(request.paging.answer("serviceArns", arns)?.into())
    })
    .await
}

/// A service as ECS describes it, with counts derived from its tasks.
pub fn service_view(state: &State, service: &Service) -> Value {
    let cluster = model::cluster_name_from(&service.cluster_arn);
    let tasks = state.service_tasks(&cluster, &service.service_name);
    let live: Vec<_> = tasks
        .iter()
        .filter(|t| t.desired_status == TaskStatus::Running && t.last_status != TaskStatus::Stopped)
        .collect();
    let running = |deployment: Option<&str>| {
        live.iter()
            .filter(|t| deployment.is_none_or(|d| t.started_by.as_deref() == Some(d)))
            .filter(|t| t.last_status == TaskStatus::Running)
            .count()
    };
    let pending = |deployment: Option<&str>| {
        live.iter()
            .filter(|t| deployment.is_none_or(|d| t.started_by.as_deref() == Some(d)))
            .filter(|t| t.last_status < TaskStatus::Running)
            .count()
    };
    let desired = if service.scheduling_strategy == "DAEMON" {
        crate::scheduler::cluster_views(state, &cluster)
            .iter()
            .filter(|v| v.status == placement::InstanceStatus::Active)
            .count() as u32
    } else {
        service.desired_count
    };
    let deployments: Vec<Value> = service
        .deployments
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "status": d.status,
                "taskDefinition": d.task_definition,
                "desiredCount": if d.status == "PRIMARY" { desired } else { 0 },
                "runningCount": running(Some(&d.id)),
                "pendingCount": pending(Some(&d.id)),
                "failedTasks": d.failed_tasks,
                "rolloutState": d.rollout_state,
                "rolloutStateReason": d.rollout_state_reason,
                "createdAt": d.created_at,
                "updatedAt": d.updated_at,
                "launchType": "EC2",
            })
        })
        .collect();
    json!({
        "serviceArn": service.service_arn,
        "serviceName": service.service_name,
        "clusterArn": service.cluster_arn,
        "status": service.status,
        "desiredCount": desired,
        "runningCount": running(None),
        "pendingCount": pending(None),
        "launchType": "EC2",
        "taskDefinition": service.task_definition,
        "deploymentConfiguration": service.deployment_configuration,
        "deployments": deployments,
        "events": service.events,
        "placementStrategy": service.placement_strategy,
        "placementConstraints": service.placement_constraints,
        "loadBalancers": service.load_balancers,
        "healthCheckGracePeriodSeconds": service.health_check_grace_period_seconds,
        "schedulingStrategy": service.scheduling_strategy,
        "createdAt": service.created_at,
    })
}
