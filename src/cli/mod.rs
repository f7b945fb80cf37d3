//! The `orc` command line: one binary for every role (`server`, `up`, later
//! `agent`) and the client verbs, named and flagged like `aws ecs`. Only
//! this module and `main` use `anyhow`; output goes through `output`.

pub mod output;

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
    /// Control-plane commands.
    #[command(subcommand)]
    Cluster(ClusterCommand),
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
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let body = text.strip_prefix("key=").unwrap_or(text);
    match body.split_once([',', '=']) {
        Some((key, value)) => Ok((key.to_string(), value.trim_start_matches("value=").to_string())),
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
    /// Election time-out in milliseconds (raise it for slow SD cards).
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Compact the raft log after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// sled page cache in MiB.
    #[arg(long, default_value_t = 8)]
    pub cache_mib: u64,
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
        Command::Server(ServerCommand { action: Some(action), .. }) => {
            let client = Client::new(&cli.endpoint)?;
            let answer = match action {
                ServerAction::Add { node_id, address } => client.add_server(node_id, &address, "").await?,
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
        Command::CreateCluster { cluster_name, tags } => {
            let tags: Vec<_> = tags.into_iter().map(|(key, value)| json!({"key": key, "value": value})).collect();
            let body = json!({"clusterName": cluster_name, "tags": tags});
            ecs(&cli.endpoint, &output, "CreateCluster", body).await
        }
        Command::ListClusters => ecs(&cli.endpoint, &output, "ListClusters", json!({})).await,
        Command::DescribeClusters { clusters } => {
            ecs(&cli.endpoint, &output, "DescribeClusters", json!({"clusters": clusters})).await
        }
        Command::DeleteCluster { cluster } => {
            ecs(&cli.endpoint, &output, "DeleteCluster", json!({"cluster": cluster})).await
        }
    }
}

async fn ecs(endpoint: &str, output: &Output, action: &str, body: serde_json::Value) -> anyhow::Result<()> {
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
    options.election_timeout = Duration::from_millis(args.election_timeout_ms.max(3 * args.heartbeat_ms.max(1)));
    options.snapshot_threshold = args.snapshot_threshold.max(2);
    options.cache_mib = args.cache_mib.max(1);
    options
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| default_data_dir("server"));
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
    let fresh = matches!(crate::datadir::DataDir::inspect(&data_dir)?, crate::datadir::DataDir::Fresh(_));
    let mut options = ServerOptions::new(data_dir.clone(), args.listen.clone());
    options.bootstrap = fresh;
    let server = server::start(options)
        .await
        .with_context(|| format!("cannot start orc up with data dir {}", data_dir.display()))?;
    let mut status = server.raft.watch_status();
    let _ = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.applied_index > 0 && s.leader_id != 0)).await;
    eprintln!("orc is up (data in {})", data_dir.display());
    eprintln!("  control plane API   {}   (try: orc cluster status)", server.advertise);
    eprintln!("  metrics             http://{}/metrics", server.advertise);
    eprintln!("press ctrl-c to stop");
    shutdown_signal().await;
    eprintln!("shutting down");
    server.stop();
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
