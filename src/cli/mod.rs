//! The `orc` command line: one binary for every role (`server`, `up`, later
//! `agent`) and the client verbs, named and flagged like `aws ecs`. Only
//! this module and `main` use `anyhow`; output goes through `output`.

pub mod output;
pub mod shorthand;
pub mod wait;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::client::Client;
use crate::server::{self, ServerOptions};
use output::Output;

/// The default API address of `orc up` and `orc server`.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7400";

/// orc: a self-hosted mini container orchestrator shaped like AWS ECS.
#[derive(Parser, Debug)]
#[command(name = "orc", version, about, propagate_version = true)]
pub struct Cli {
    /// The orc server to talk to.
    #[arg(long, global = true, env = "ORC_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// How to print results: tables for people, json shaped like `aws ecs` for scripts.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// The ECS response as JSON.
    Json,
}

/// Every subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a whole single-machine cluster in one process (the place to start).
    Up(UpArgs),
    /// Run a control-plane server, or change the control plane's membership.
    Server(ServerCommand),
    /// Run the container instance agent on this machine (drives the local Docker).
    Agent(crate::agent::config::AgentArgs),
    /// Print a task's container logs (from the local Docker Engine).
    Logs {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// The task id or ARN.
        task: String,
        /// Only this container (default: every container of the task).
        #[arg(long)]
        container: Option<String>,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// Only lines newer than this many seconds ago.
        #[arg(long)]
        since: Option<i64>,
    },
    /// Control-plane commands.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print each change of the control plane's state as it is applied, one
    /// line each, until ctrl-c; resumes where it was after a lost connection.
    Watch {
        /// Print the changes after this revision (default, or 0: the
        /// server's current revision, so only new changes).
        #[arg(long)]
        after_revision: Option<u64>,
    },
    /// Create an ECS cluster.
    CreateCluster {
        /// The cluster's name.
        #[arg(long)]
        cluster_name: String,
        /// Tags as key=value (repeatable).
        #[arg(long = "tags", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// List cluster ARNs.
    ListClusters,
    /// Describe clusters (default: the default cluster).
    DescribeClusters {
        /// Cluster names or ARNs.
        #[arg(long, num_args = 1..)]
        clusters: Vec<String>,
    },
    /// Delete a cluster (it turns INACTIVE).
    DeleteCluster {
        /// The cluster's name or ARN.
        #[arg(long)]
        cluster: String,
    },
    /// Register a task definition (ECS JSON) as the family's next revision.
    RegisterTaskDefinition {
        /// The whole request as JSON, or file://PATH.
        #[arg(long, required_unless_present = "family")]
        cli_input_json: Option<String>,
        /// The family (with --container-definitions).
        #[arg(long, requires = "container_definitions")]
        family: Option<String>,
        /// Container definitions as a JSON list, or file://PATH.
        #[arg(long)]
        container_definitions: Option<String>,
    },
    /// Describe a task definition (family, family:revision or ARN).
    DescribeTaskDefinition {
        /// The task definition.
        #[arg(long)]
        task_definition: String,
    },
    /// List task definition ARNs.
    ListTaskDefinitions {
        /// Only families starting with this.
        #[arg(long)]
        family_prefix: Option<String>,
        /// ACTIVE (default), INACTIVE or DELETE_IN_PROGRESS.
        #[arg(long)]
        status: Option<String>,
    },
    /// Deregister a task definition revision (it turns INACTIVE).
    DeregisterTaskDefinition {
        /// family:revision.
        #[arg(long)]
        task_definition: String,
    },
    /// Delete INACTIVE task definition revisions.
    DeleteTaskDefinitions {
        /// family:revision (repeatable).
        #[arg(long, num_args = 1..)]
        task_definitions: Vec<String>,
    },
    /// Run tasks from a task definition.
    RunTask(RunTaskArgs),
    /// Stop a task.
    StopTask {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// The task id or ARN.
        #[arg(long)]
        task: String,
        /// Why (shown as stoppedReason).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Why a task runs where it runs, or why it fits nowhere: a verdict per instance.
    ExplainTask {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// The task id or ARN.
        task: String,
    },
    /// Describe tasks.
    DescribeTasks {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Task ids or ARNs.
        #[arg(long, num_args = 1.., required = true)]
        tasks: Vec<String>,
    },
    /// List task ARNs.
    ListTasks {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only tasks on this container instance.
        #[arg(long)]
        container_instance: Option<String>,
        /// Only tasks of this family.
        #[arg(long)]
        family: Option<String>,
        /// Only tasks of this service.
        #[arg(long)]
        service_name: Option<String>,
        /// RUNNING (default), PENDING or STOPPED.
        #[arg(long)]
        desired_status: Option<String>,
        /// Only tasks started by this.
        #[arg(long)]
        started_by: Option<String>,
    },
    /// Wait until tasks reach a state, with a live progress line.
    #[command(subcommand)]
    Wait(WaitCommand),
    /// List container instance ARNs.
    ListContainerInstances {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only instances with this status.
        #[arg(long)]
        status: Option<String>,
    },
    /// Describe container instances (default: all of the cluster).
    DescribeContainerInstances {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Instance ids or ARNs.
        #[arg(long, num_args = 1..)]
        container_instances: Vec<String>,
    },
    /// Create a service that keeps tasks running.
    CreateService(CreateServiceArgs),
    /// Change a service: desired count, task definition, deployment configuration.
    UpdateService {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// The service.
        #[arg(long)]
        service: String,
        /// New desired count.
        #[arg(long)]
        desired_count: Option<u32>,
        /// New task definition (starts a deployment).
        #[arg(long)]
        task_definition: Option<String>,
        /// Start a new deployment (spreads tasks again).
        #[arg(long)]
        force_new_deployment: bool,
        /// maximumPercent=…,minimumHealthyPercent=…,deploymentCircuitBreaker={enable=…,rollback=…}
        #[arg(long)]
        deployment_configuration: Option<String>,
        /// Seconds to ignore failing health checks after a task starts.
        #[arg(long)]
        health_check_grace_period_seconds: Option<u32>,
    },
    /// Delete a service (scale it to 0 first, or pass --force).
    DeleteService {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// The service.
        #[arg(long)]
        service: String,
        /// Delete even while it runs tasks.
        #[arg(long)]
        force: bool,
    },
    /// Describe services: counts, deployments, newest events.
    DescribeServices {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Service names or ARNs.
        #[arg(long, num_args = 1.., required = true)]
        services: Vec<String>,
    },
    /// List service ARNs.
    ListServices {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Set container instances ACTIVE or DRAINING.
    UpdateContainerInstancesState {
        /// The cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Instance ids or ARNs.
        #[arg(long, num_args = 1.., required = true)]
        container_instances: Vec<String>,
        /// ACTIVE or DRAINING.
        #[arg(long)]
        status: String,
    },
}

/// `orc run-task`.
#[derive(Args, Debug)]
pub struct RunTaskArgs {
    /// The cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// family, family:revision or ARN.
    #[arg(long)]
    pub task_definition: String,
    /// How many tasks (1 to 10).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// A tag saying who started them.
    #[arg(long)]
    pub started_by: Option<String>,
    /// The task group (default family:NAME).
    #[arg(long)]
    pub group: Option<String>,
    /// ECS overrides JSON, or file://PATH.
    #[arg(long)]
    pub overrides: Option<String>,
    /// Constraints: JSON or `type=distinctInstance type=memberOf,expression=...`.
    #[arg(long)]
    pub placement_constraints: Option<String>,
    /// Strategies: JSON or `type=binpack,field=memory type=spread,field=instanceId`.
    #[arg(long)]
    pub placement_strategy: Option<String>,
    /// Print, per instance, why it was chosen or rejected.
    #[arg(long)]
    pub explain: bool,
}

/// `orc create-service`.
#[derive(Args, Debug)]
pub struct CreateServiceArgs {
    /// The cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// The service's name.
    #[arg(long)]
    pub service_name: String,
    /// family, family:revision or ARN.
    #[arg(long)]
    pub task_definition: String,
    /// How many tasks to keep running.
    #[arg(long)]
    pub desired_count: Option<u32>,
    /// maximumPercent=…,minimumHealthyPercent=…,deploymentCircuitBreaker={enable=…,rollback=…}
    #[arg(long)]
    pub deployment_configuration: Option<String>,
    /// Strategies: JSON or `type=spread,field=instanceId`.
    #[arg(long)]
    pub placement_strategy: Option<String>,
    /// Constraints: JSON or `type=distinctInstance`.
    #[arg(long)]
    pub placement_constraints: Option<String>,
    /// targetGroupArn=…,containerName=…,containerPort=… (space-separated for several).
    #[arg(long)]
    pub load_balancers: Option<String>,
    /// Seconds to ignore failing health checks after a task starts.
    #[arg(long)]
    pub health_check_grace_period_seconds: Option<u32>,
    /// REPLICA (default) or DAEMON.
    #[arg(long)]
    pub scheduling_strategy: Option<String>,
}

/// `orc wait ...`.
#[derive(Subcommand, Debug)]
pub enum WaitCommand {
    /// Until every task is RUNNING (fails if one stops).
    TasksRunning(WaitTasks),
    /// Until every task is STOPPED.
    TasksStopped(WaitTasks),
    /// Until services run their desired count with one deployment.
    ServicesStable(WaitServices),
}

/// The services to wait for.
#[derive(Args, Debug)]
pub struct WaitServices {
    /// The cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Service names or ARNs.
    #[arg(long, num_args = 1.., required = true)]
    pub services: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// The tasks to wait for.
#[derive(Args, Debug)]
pub struct WaitTasks {
    /// The cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Task ids or ARNs.
    #[arg(long, num_args = 1.., required = true)]
    pub tasks: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let body = text.strip_prefix("key=").unwrap_or(text);
    match body.split_once([',', '=']) {
        Some((key, value)) => Ok((
            key.to_string(),
            value.trim_start_matches("value=").to_string(),
        )),
        None => Err(format!("tag {text:?} must look like key=value")),
    }
}

/// `orc up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where orc keeps its state.
    #[arg(long, env = "ORC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The API address.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    pub listen: String,
    /// Run only the control plane, no agent (no Docker needed).
    #[arg(long)]
    pub no_agent: bool,
}

/// `orc server` and its membership subcommands.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerCommand {
    #[command(subcommand)]
    pub action: Option<ServerAction>,
    #[command(flatten)]
    pub run: ServerArgs,
}

/// Membership changes.
#[derive(Subcommand, Debug)]
pub enum ServerAction {
    /// Add a server by id and address (`orc server --join` does this for you).
    Add {
        /// The new member's raft id.
        #[arg(long)]
        node_id: u64,
        /// Where it listens.
        #[arg(long)]
        address: String,
    },
    /// Remove a server from the control plane.
    Remove {
        /// The member's raft id (see `orc cluster status`).
        #[arg(long)]
        node_id: u64,
    },
}

/// Flags of a running server.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where this server keeps its raft log and state.
    #[arg(long, env = "ORC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    pub listen: String,
    /// The address peers and clients use to reach this server.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Create a new control plane with this server as its first member.
    #[arg(long, conflicts_with = "join")]
    pub bootstrap: bool,
    /// Join the control plane of the server at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election time-out in milliseconds, randomized per election up to
    /// 1.3 times this (raise it for slow SD cards).
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Compact the raft log after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// sled page cache in MiB.
    #[arg(long, default_value_t = 8)]
    pub cache_mib: u64,
    /// How many changes to keep for watchers to resume from (lowered by tests).
    #[arg(long, default_value_t = crate::store::history::CAPACITY, hide = true)]
    pub watch_history: usize,
}

/// `orc cluster ...`.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index, each member's health.
    Status {
        /// Read the local view instead of a linearizable one.
        #[arg(long)]
        local: bool,
    },
}

fn default_data_dir(role: &str) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("orc").join(role)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let output = Output::new(cli.output);
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Agent(args) => {
            let config = crate::agent::config::AgentConfig::try_from(args)?;
            let runtime = crate::agent::docker::DockerRuntime::connect()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "orc agent: registering with {} in cluster {}",
                config.server, config.cluster
            );
            crate::agent::worker::run(config, std::sync::Arc::new(runtime), shutdown_signal())
                .await?;
            Ok(())
        }
        Command::Logs {
            cluster,
            task,
            container,
            follow,
            since,
        } => {
            logs(
                &cli.endpoint,
                cluster,
                &task,
                container.as_deref(),
                follow,
                since,
            )
            .await
        }
        Command::Server(ServerCommand {
            action: Some(action),
            ..
        }) => {
            let client = Client::new(&cli.endpoint)?;
            let answer = match action {
                ServerAction::Add { node_id, address } => {
                    client.add_server(node_id, &address, "").await?
                }
                ServerAction::Remove { node_id } => client.remove_server(node_id).await?,
            };
            output.members(&answer.cluster_id, &answer.members);
            Ok(())
        }
        Command::Server(ServerCommand { action: None, run }) => run_server(run).await,
        Command::Cluster(ClusterCommand::Status { local }) => {
            let client = Client::new(&cli.endpoint)?;
            let status = client.cluster_status(!local).await?;
            output.cluster_status(&status);
            Ok(())
        }
        Command::Watch { after_revision } => {
            watch::run(&cli.endpoint, &output, after_revision).await
        }
        Command::CreateCluster { cluster_name, tags } => {
            let tags: Vec<_> = tags
                .into_iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect();
            let body = json!({"clusterName": cluster_name, "tags": tags});
            ecs(&cli.endpoint, &output, "CreateCluster", body).await
        }
        Command::ListClusters => ecs(&cli.endpoint, &output, "ListClusters", json!({})).await,
        Command::DescribeClusters { clusters } => {
            ecs(
                &cli.endpoint,
                &output,
                "DescribeClusters",
                json!({"clusters": clusters}),
            )
            .await
        }
        Command::DeleteCluster { cluster } => {
            ecs(
                &cli.endpoint,
                &output,
                "DeleteCluster",
                json!({"cluster": cluster}),
            )
            .await
        }
        Command::RegisterTaskDefinition {
            cli_input_json,
            family,
            container_definitions,
        } => {
            let body = match (cli_input_json, family, container_definitions) {
                (Some(input), _, _) => read_json_argument("--cli-input-json", &input)?,
                (None, Some(family), Some(definitions)) => {
                    let definitions = read_json_argument("--container-definitions", &definitions)?;
                    json!({"family": family, "containerDefinitions": definitions})
                }
                _ => {
                    anyhow::bail!("pass --cli-input-json, or --family with --container-definitions")
                }
            };
            ecs(&cli.endpoint, &output, "RegisterTaskDefinition", body).await
        }
        Command::DescribeTaskDefinition { task_definition } => {
            ecs(
                &cli.endpoint,
                &output,
                "DescribeTaskDefinition",
                json!({"taskDefinition": task_definition}),
            )
            .await
        }
        Command::ListTaskDefinitions {
            family_prefix,
            status,
        } => {
            let body = json!({"familyPrefix": family_prefix, "status": status});
            ecs(&cli.endpoint, &output, "ListTaskDefinitions", body).await
        }
        Command::DeregisterTaskDefinition { task_definition } => {
            ecs(
                &cli.endpoint,
                &output,
                "DeregisterTaskDefinition",
                json!({"taskDefinition": task_definition}),
            )
            .await
        }
        Command::DeleteTaskDefinitions { task_definitions } => {
            ecs(
                &cli.endpoint,
                &output,
                "DeleteTaskDefinitions",
                json!({"taskDefinitions": task_definitions}),
            )
            .await
        }
        Command::RunTask(args) => {
            let body = run_task_body(&args)?;
            ecs(&cli.endpoint, &output, "RunTask", body).await
        }
        Command::StopTask {
            cluster,
            task,
            reason,
        } => {
            let body = json!({"cluster": cluster, "task": task, "reason": reason});
            ecs(&cli.endpoint, &output, "StopTask", body).await
        }
        Command::ExplainTask { cluster, task } => {
            ecs(
                &cli.endpoint,
                &output,
                "ExplainTask",
                json!({"cluster": cluster, "task": task}),
            )
            .await
        }
        Command::DescribeTasks { cluster, tasks } => {
            ecs(
                &cli.endpoint,
                &output,
                "DescribeTasks",
                json!({"cluster": cluster, "tasks": tasks}),
            )
            .await
        }
        Command::ListTasks {
            cluster,
            container_instance,
            family,
            service_name,
            desired_status,
            started_by,
        } => {
            let body = json!({
                "cluster": cluster, "containerInstance": container_instance, "family": family,
                "serviceName": service_name, "desiredStatus": desired_status, "startedBy": started_by,
            });
            ecs(&cli.endpoint, &output, "ListTasks", body).await
        }
        Command::Wait(wait) => wait::run(&cli.endpoint, wait).await,
        Command::CreateService(args) => {
            let body = create_service_body(&args)?;
            ecs(&cli.endpoint, &output, "CreateService", body).await
        }
        Command::UpdateService {
            cluster,
            service,
            desired_count,
            task_definition,
            force_new_deployment,
            deployment_configuration,
            health_check_grace_period_seconds,
        } => {
            let configuration = deployment_configuration
                .map(|c| shorthand::parse_structure("--deployment-configuration", &c))
                .transpose()?;
            let body = json!({
                "cluster": cluster, "service": service, "desiredCount": desired_count,
                "taskDefinition": task_definition, "forceNewDeployment": force_new_deployment,
                "deploymentConfiguration": configuration,
                "healthCheckGracePeriodSeconds": health_check_grace_period_seconds,
            });
            ecs(&cli.endpoint, &output, "UpdateService", body).await
        }
        Command::DeleteService {
            cluster,
            service,
            force,
        } => {
            ecs(
                &cli.endpoint,
                &output,
                "DeleteService",
                json!({"cluster": cluster, "service": service, "force": force}),
            )
            .await
        }
        Command::DescribeServices { cluster, services } => {
            ecs(
                &cli.endpoint,
                &output,
                "DescribeServices",
                json!({"cluster": cluster, "services": services}),
            )
            .await
        }
        Command::ListServices { cluster } => {
            ecs(
                &cli.endpoint,
                &output,
                "ListServices",
                json!({"cluster": cluster}),
            )
            .await
        }
        Command::ListContainerInstances { cluster, status } => {
            ecs(
                &cli.endpoint,
                &output,
                "ListContainerInstances",
                json!({"cluster": cluster, "status": status}),
            )
            .await
        }
        Command::DescribeContainerInstances {
            cluster,
            container_instances,
        } => {
            let body = json!({"cluster": cluster, "containerInstances": container_instances});
            ecs(&cli.endpoint, &output, "DescribeContainerInstances", body).await
        }
        Command::UpdateContainerInstancesState {
            cluster,
            container_instances,
            status,
        } => {
            let body = json!({"cluster": cluster, "containerInstances": container_instances, "status": status});
            ecs(
                &cli.endpoint,
                &output,
                "UpdateContainerInstancesState",
                body,
            )
            .await
        }
    }
}

/// Reads a JSON argument given inline or as `file://PATH`, as the aws CLI does.
pub fn read_json_argument(flag: &str, value: &str) -> anyhow::Result<serde_json::Value> {
    let text = match value.strip_prefix("file://") {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?
        }
        None => value.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{flag}: invalid json: {e}"))
}

/// `--placement-constraints` and `--placement-strategy` (JSON or shorthand),
/// parsed the same way for run-task and create-service.
fn placement_flags(
    constraints: &Option<String>,
    strategies: &Option<String>,
) -> anyhow::Result<(
    Vec<crate::scheduler::placement::PlacementConstraint>,
    Vec<crate::scheduler::placement::PlacementStrategy>,
)> {
    use crate::scheduler::placement;
    let constraints = match constraints {
        Some(text) => placement::parse_constraints(text)
            .map_err(|e| anyhow::anyhow!("--placement-constraints: {e}"))?,
        None => vec![],
    };
    let strategies = match strategies {
        Some(text) => placement::parse_strategies(text)
            .map_err(|e| anyhow::anyhow!("--placement-strategy: {e}"))?,
        None => vec![],
    };
    Ok((constraints, strategies))
}

fn create_service_body(args: &CreateServiceArgs) -> anyhow::Result<serde_json::Value> {
    let configuration = args
        .deployment_configuration
        .as_deref()
        .map(|c| shorthand::parse_structure("--deployment-configuration", c))
        .transpose()?;
    let load_balancers = args
        .load_balancers
        .as_deref()
        .map(|l| shorthand::parse_list("--load-balancers", l))
        .transpose()?
        .unwrap_or_else(|| json!([]));
    let (constraints, strategies) =
        placement_flags(&args.placement_constraints, &args.placement_strategy)?;
    Ok(json!({
        "cluster": args.cluster, "serviceName": args.service_name, "taskDefinition": args.task_definition,
        "desiredCount": args.desired_count, "deploymentConfiguration": configuration,
        "placementStrategy": strategies, "placementConstraints": constraints, "loadBalancers": load_balancers,
        "healthCheckGracePeriodSeconds": args.health_check_grace_period_seconds,
        "schedulingStrategy": args.scheduling_strategy,
    }))
}

fn run_task_body(args: &RunTaskArgs) -> anyhow::Result<serde_json::Value> {
    let overrides = args
        .overrides
        .as_deref()
        .map(|o| read_json_argument("--overrides", o))
        .transpose()?;
    let (constraints, strategies) =
        placement_flags(&args.placement_constraints, &args.placement_strategy)?;
    Ok(json!({
        "cluster": args.cluster, "taskDefinition": args.task_definition, "count": args.count,
        "startedBy": args.started_by, "group": args.group, "overrides": overrides,
        "placementConstraints": constraints, "placementStrategy": strategies, "explain": args.explain,
    }))
}

async fn ecs(
    endpoint: &str,
    output: &Output,
    action: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let client = Client::new(endpoint)?;
    let (answer, warnings) = client.call(action, body).await?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    output.action(action, &answer);
    Ok(())
}

fn server_options(args: &ServerArgs, data_dir: PathBuf) -> ServerOptions {
    let mut options = ServerOptions::new(data_dir, args.listen.clone());
    options.advertise = args.advertise.clone();
    options.bootstrap = args.bootstrap;
    options.join = args.join.clone();
    options.heartbeat = Duration::from_millis(args.heartbeat_ms.max(1));
    options.election_timeout =
        Duration::from_millis(args.election_timeout_ms.max(3 * args.heartbeat_ms.max(1)));
    options.snapshot_threshold = args.snapshot_threshold.max(2);
    options.cache_mib = args.cache_mib.max(1);
    options.watch_history = args.watch_history.max(1);
    options
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir("server"));
    let server = server::start(server_options(&args, data_dir)).await?;
    eprintln!(
        "orc server {} listening on {} (control plane API and /metrics)",
        server.node_id, server.advertise
    );
    tokio::select! {
        _ = shutdown_signal() => eprintln!("shutting down"),
        _ = server.removed() => eprintln!("this server was removed from the control plane; exiting"),
    }
    server.stop();
    Ok(())
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| default_data_dir("up"));
    let server_dir = data_dir.join("server");
    let fresh = matches!(
        crate::datadir::DataDir::inspect(&server_dir)?,
        crate::datadir::DataDir::Fresh(_)
    );
    let mut options = ServerOptions::new(server_dir, args.listen.clone());
    options.bootstrap = fresh;
    let server = server::start(options)
        .await
        .with_context(|| format!("cannot start orc up with data dir {}", data_dir.display()))?;
    let mut status = server.raft.watch_status();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.applied_index > 1 && s.leader_id != 0),
    )
    .await;
    let (stop_agent, agent_stopped) = tokio::sync::watch::channel(false);
    let agent = if args.no_agent {
        None
    } else {
        let runtime = crate::agent::docker::DockerRuntime::connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}; start Docker, or run `orc up --no-agent` for the control plane alone"
                )
            })?;
        let config = crate::agent::config::AgentConfig::new(
            server.advertise.clone(),
            crate::model::DEFAULT_CLUSTER,
            data_dir.join("agent"),
        );
        let mut agent_stopped = agent_stopped.clone();
        Some(tokio::spawn(crate::agent::worker::run(
            config,
            std::sync::Arc::new(runtime),
            async move {
                let _ = agent_stopped.wait_for(|stop| *stop).await;
            },
        )))
    };
    eprintln!("orc is up (data in {})", data_dir.display());
    eprintln!(
        "  control plane API   {}   (try: orc cluster status)",
        server.advertise
    );
    if agent.is_some() {
        eprintln!("  container instance  this machine's Docker Engine, cluster default   (try: orc list-container-instances)");
    }
    eprintln!("  metrics             http://{}/metrics", server.advertise);
    eprintln!(
        "press ctrl-c to stop (running tasks keep running and are adopted on the next start)"
    );
    shutdown_signal().await;
    eprintln!("shutting down");
    let _ = stop_agent.send(true);
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    }
    server.stop();
    Ok(())
}

async fn logs(
    endpoint: &str,
    cluster: Option<String>,
    task: &str,
    container: Option<&str>,
    follow: bool,
    since: Option<i64>,
) -> anyhow::Result<()> {
    use crate::agent::runtime::Runtime as _;
    use futures::StreamExt as _;
    let client = Client::new(endpoint)?;
    let (answer, _) = client
        .call(
            "DescribeTasks",
            json!({"cluster": cluster, "tasks": [task]}),
        )
        .await?;
    let Some(described) = answer["tasks"].as_array().and_then(|t| t.first()).cloned() else {
        anyhow::bail!("task {task} was not found: check the id and --cluster");
    };
    let runtime = crate::agent::docker::DockerRuntime::connect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let since = since.map(|seconds| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|now| now.as_secs() as i64 - seconds)
            .unwrap_or(0)
    });
    let containers: Vec<serde_json::Value> = described["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| container.is_none_or(|name| c["name"] == name))
        .cloned()
        .collect();
    if containers.is_empty() {
        anyhow::bail!(
            "task {task} has no container named {:?}",
            container.unwrap_or("")
        );
    }
    let many = containers.len() > 1;
    let mut streams = Vec::new();
    for c in &containers {
        let name = c["name"].as_str().unwrap_or("?").to_string();
        let Some(id) = c["runtimeId"].as_str() else {
            eprintln!(
                "{name}: no container yet (the task is {})",
                described["lastStatus"].as_str().unwrap_or("?")
            );
            continue;
        };
        let prefix = if many {
            format!("{name} | ")
        } else {
            String::new()
        };
        streams.push(
            runtime
                .logs(id, follow, since, None)
                .map(move |line| (prefix.clone(), line))
                .boxed(),
        );
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some((prefix, line)) = merged.next().await {
        match line {
            Ok(line) => println!("{prefix}{}", line.text.trim_end_matches('\n')),
            Err(error) => anyhow::bail!(
                "cannot read the logs from the local Docker Engine ({error}); `orc logs` reads the Docker of the machine it runs on, so run it on the task's instance"
            ),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
