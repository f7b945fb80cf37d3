//! The clap definitions of the `orc` command line: every verb, its flags and
//! their defaults, named like `aws ecs`. Parsing only; running a verb is
//! `dispatch`, starting a role is `roles`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Give up after this many seconds: on each call (default 30), or on
    /// the whole wait for `orc wait` (default 600). An address that cannot
    /// be reached, or that is not an orc server, fails within a few seconds.
    #[arg(long, global = true, env = "ORC_TIMEOUT", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// The credential file to connect with (`none`: plain text, for a
    /// cluster started --insecure). Default: ~/.config/orc/credentials.json,
    /// else the admin credential `orc up` wrote; `orc config` shows which.
    #[arg(long, global = true, env = "ORC_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<PathBuf>,
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
    /// Print a task's container output, running or recently stopped, from
    /// any machine (the task's agent reads it and any server passes it on).
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
        /// Only lines since then: a duration back from now (10m, 1h, 30s)
        /// or a time (2026-11-29T17:35:00Z).
        #[arg(long)]
        since: Option<String>,
    },
    /// Control-plane commands.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Show the endpoint and the credential this command line uses (never
    /// the key).
    Config,
    /// Join tokens for new agents and servers (admins only).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The cluster's certificate authority: rotate it, watch a rotation
    /// (admins only).
    #[command(subcommand)]
    Ca(CaCommand),
    /// The built-in load balancer, with `aws elbv2`'s verbs and flags.
    #[command(subcommand)]
    Elbv2(super::elbv2::Elbv2Command),
    /// The built-in image registry, with ECR's verbs.
    #[command(subcommand)]
    Ecr(EcrCommand),
    /// The cluster's users and access keys, with IAM's verbs (admins only).
    #[command(subcommand)]
    Iam(IamCommand),
    /// Secrets for tasks, with Secrets Manager's verbs (values are never shown).
    #[command(subcommand)]
    Secretsmanager(SecretsCommand),
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
    /// Pass --cli-input-json, or --family with --container-definitions.
    #[command(group(clap::ArgGroup::new("input").required(true).args(["cli_input_json", "family"])))]
    RegisterTaskDefinition {
        /// The whole request as JSON, or file://PATH.
        #[arg(long, conflicts_with = "family")]
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
    /// Change a service: desired count, task definition, deployment configuration, load balancers.
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
        /// New load balancers, replacing the service's (starts a deployment
        /// whose tasks register in them): targetGroupArn=…,containerName=…,containerPort=…
        /// (space-separated for several; `[]` for none).
        #[arg(long)]
        load_balancers: Option<String>,
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

/// `orc token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a join token; it is printed once and never shown again.
    Create {
        /// What the token's holder may join as: agent or server.
        #[arg(long)]
        role: String,
        /// How long the token works (1h, 30m, 7d; default: until revoked).
        #[arg(long, value_parser = crate::agent::config::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List the join tokens (ids, roles, status; never the secrets).
    List,
    /// Revoke a join token (by id, or the whole token).
    Revoke {
        /// The token's id (`orc token list`) or the token itself.
        id: String,
    },
}

/// `orc ca ...`.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Replace the cluster CA (the day its key leaks): every server, agent
    /// and this credential move to a new CA without a restart, then the old
    /// one is refused. Re-running it while a rotation is under way follows
    /// that one.
    Rotate {
        /// Start the rotation (or follow the one under way) and return at
        /// once; `orc ca status` shows the progress.
        #[arg(long)]
        detach: bool,
    },
    /// The CA's fingerprint and the progress of a rotation under way.
    Status,
    /// Issue a certificate for a user (e.g. Prometheus scraping /metrics),
    /// valid a year: writes DIR/credential.json (for `orc --credentials`)
    /// and DIR/cert.pem, DIR/key.pem, DIR/ca.pem (for Prometheus's
    /// tls_config, curl).
    Issue {
        /// The holder's name (letters, digits, -_.@).
        #[arg(long)]
        name: String,
        /// Its role: admin, operator or readonly.
        #[arg(long, default_value = "readonly")]
        role: String,
        /// Where to write the files (made 0700 when new).
        #[arg(long)]
        out: std::path::PathBuf,
    },
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
    /// Serve plain text, without TLS or credentials (allowed only when
    /// listening on loopback).
    #[arg(long)]
    pub insecure: bool,
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
    /// Disaster recovery when a quorum is lost for good: rewrite this
    /// stopped server's data dir so it restarts as a one-member control
    /// plane, keeping every write it holds (like etcd --force-new-cluster).
    /// Prints what it discarded.
    Recover {
        /// The stopped server's data dir (for `orc up`, its server/ subdirectory).
        #[arg(long)]
        data_dir: std::path::PathBuf,
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
    /// The join token for --join (`orc token create --role server`).
    #[arg(long, env = "ORC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve plain text, without TLS or credentials (allowed only when
    /// listening on loopback).
    #[arg(long)]
    pub insecure: bool,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election time-out in milliseconds, randomized per election up to
    /// 1.3 times this (raise it for slow SD cards).
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Tuning for slow disks (a Pi 3 on a cheap SD card, whose fsyncs can
    /// stall for a second): heartbeats at least 500 ms apart and an election
    /// time-out of at least 5 s, so a stalled write does not start an
    /// election. Failover after a real crash takes about 5 s longer.
    #[arg(long)]
    pub slow_disk: bool,
    /// Compact the raft log after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// sled page cache in MiB.
    #[arg(long, default_value_t = 8)]
    pub cache_mib: u64,
    /// How many changes to keep for watchers to resume from (lowered by tests).
    #[arg(long, default_value_t = crate::store::history::CAPACITY, hide = true)]
    pub watch_history: usize,
    /// The largest desired count a service may ask for (ECS's quota is
    /// 5,000 tasks per service; a Pi lab needs far fewer).
    #[arg(long, default_value_t = crate::api::services::DEFAULT_MAX_SERVICE_DESIRED_COUNT)]
    pub max_service_desired_count: u32,
    /// Close a connection that has had no request in flight for this many
    /// seconds (open streams keep it busy); a connection must send its first
    /// request within 10 s, or within this time-out when it is shorter.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub idle_timeout: u64,
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

/// `orc ecr ...`: the built-in image registry, as `aws ecr` names its verbs.
#[derive(Subcommand, Debug)]
pub enum EcrCommand {
    /// Create a repository (a push also creates its repository).
    CreateRepository {
        /// The repository's name, e.g. lab/web.
        #[arg(long)]
        repository_name: String,
    },
    /// Describe repositories (default: all).
    DescribeRepositories {
        /// Repository names.
        #[arg(long, num_args = 1..)]
        repository_names: Vec<String>,
    },
    /// Delete a repository.
    DeleteRepository {
        /// The repository's name.
        #[arg(long)]
        repository_name: String,
        /// Delete it with the images it holds.
        #[arg(long)]
        force: bool,
    },
    /// List a repository's images (digest and tag).
    ListImages {
        /// The repository's name.
        #[arg(long)]
        repository_name: String,
    },
    /// Describe a repository's images: digest, tags, size, push time, platforms.
    DescribeImages {
        /// The repository's name.
        #[arg(long)]
        repository_name: String,
        /// Only these images: imageTag=TAG or imageDigest=DIGEST (repeatable).
        #[arg(long, num_args = 1.., value_parser = parse_image_id)]
        image_ids: Vec<(String, String)>,
    },
    /// Delete images by tag or digest.
    BatchDeleteImage {
        /// The repository's name.
        #[arg(long)]
        repository_name: String,
        /// imageTag=TAG or imageDigest=DIGEST (repeatable).
        #[arg(long, num_args = 1.., required = true, value_parser = parse_image_id)]
        image_ids: Vec<(String, String)>,
    },
    /// Print a password for `docker login --username AWS --password-stdin HOST:PORT`
    /// (good for 12 hours).
    GetLoginPassword,
    /// Fetch repositories named PREFIX/... from an upstream registry on their
    /// first pull, then serve them from the cluster.
    CreatePullThroughCacheRule {
        /// The first segment of the cached repositories' names, e.g. hub.
        #[arg(long)]
        ecr_repository_prefix: String,
        /// The upstream, e.g. http://192.168.1.5:5000.
        #[arg(long)]
        upstream_registry_url: String,
    },
    /// List the pull-through cache rules.
    DescribePullThroughCacheRules {
        /// Only these prefixes.
        #[arg(long, num_args = 1..)]
        ecr_repository_prefixes: Vec<String>,
    },
    /// Delete a pull-through cache rule (what was cached stays).
    DeletePullThroughCacheRule {
        /// The rule's prefix.
        #[arg(long)]
        ecr_repository_prefix: String,
    },
    /// Remove blobs no image references (orc's own verb): their links now,
    /// their files on every server within a minute. Safe while pushes run:
    /// links younger than the grace period are kept.
    Gc {
        /// Keep links made less than this long ago (default: an hour).
        #[arg(long, value_name = "SECONDS")]
        grace_seconds: Option<u64>,
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `orc iam ...`: users and access keys, as `aws iam` names its verbs.
#[derive(Subcommand, Debug)]
pub enum IamCommand {
    /// Create a user with a role: admin (everything), operator (every ECS,
    /// ELB and ECR action) or readonly (describe, list, get).
    #[command(group(clap::ArgGroup::new("user").required(true).args(["name", "user_name"])))]
    CreateUser {
        /// The user's name (or --user-name).
        name: Option<String>,
        /// The user's name.
        #[arg(long, conflicts_with = "name")]
        user_name: Option<String>,
        /// admin, operator or readonly.
        #[arg(long)]
        role: String,
        /// Limit the user's ECS actions to these clusters (comma-separated
        /// or repeated; default: every cluster).
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        clusters: Vec<String>,
    },
    /// List the users with their roles.
    ListUsers,
    /// Delete a user (delete its access keys first).
    DeleteUser {
        /// The user's name.
        #[arg(long)]
        user_name: String,
    },
    /// Issue an access key for a user: prints its AccessKeyId and its
    /// SecretAccessKey, which is shown this once only.
    CreateAccessKey {
        /// The user's name.
        #[arg(long)]
        user_name: String,
    },
    /// List access key ids (default: every user's); never their secrets.
    ListAccessKeys {
        /// Only this user's keys.
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Delete an access key.
    DeleteAccessKey {
        /// The key's id.
        #[arg(long)]
        access_key_id: String,
        /// Its user (checked when given).
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Make an access key Inactive (refused, as if it did not exist, until
    /// made Active again) or Active.
    UpdateAccessKey {
        /// The key's id.
        #[arg(long)]
        access_key_id: String,
        /// Active or Inactive.
        #[arg(long, value_parser = ["Active", "Inactive"])]
        status: String,
        /// Its user (checked when given).
        #[arg(long)]
        user_name: Option<String>,
    },
}

/// `orc secretsmanager ...`: secrets for tasks, as `aws secretsmanager`
/// names its verbs. No verb prints a value.
#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Create a secret; a task definition references it in
    /// `containerDefinitions[].secrets: [{name, valueFrom}]`.
    CreateSecret {
        /// The secret's name.
        #[arg(long)]
        name: String,
        /// The value (or file://PATH).
        #[arg(long)]
        secret_string: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Replace a secret's value (tasks started afterwards receive it).
    PutSecretValue {
        /// The secret's name or ARN.
        #[arg(long)]
        secret_id: String,
        /// The new value (or file://PATH).
        #[arg(long)]
        secret_string: String,
    },
    /// Describe a secret (never its value).
    DescribeSecret {
        /// The secret's name or ARN.
        #[arg(long)]
        secret_id: String,
    },
    /// List the secrets (never their values).
    ListSecrets,
    /// Delete a secret at once.
    DeleteSecret {
        /// The secret's name or ARN.
        #[arg(long)]
        secret_id: String,
        /// Accepted for aws compatibility: orc always deletes at once.
        #[arg(long)]
        force_delete_without_recovery: bool,
    },
}

/// `imageTag=v1` or `imageDigest=sha256:...`.
fn parse_image_id(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key @ ("imageTag" | "imageDigest"), value)) if !value.is_empty() => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!(
            "invalid image id {text:?}: write imageTag=TAG or imageDigest=sha256:..."
        )),
    }
}
