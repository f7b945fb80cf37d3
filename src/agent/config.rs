//! `orc agent` options ([`AgentArgs`], parsed by clap) and the checked
//! configuration the worker runs with ([`AgentConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::agent::network::SubnetPool;
use crate::agent::runtime::PullBehavior;
use crate::{Error, Result};

/// Options of `orc agent`.
#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// Address (host:port) of any orc server.
    #[arg(long, env = "ORC_SERVER", default_value = "127.0.0.1:7400")]
    pub server: String,
    /// Cluster to register this container instance in.
    #[arg(long, env = "ECS_CLUSTER", default_value = crate::model::DEFAULT_CLUSTER)]
    pub cluster: String,
    /// Where the agent keeps its container instance id
    /// [default: ~/.local/share/orc/agent].
    #[arg(long, env = "ORC_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A custom attribute `name=value` (repeatable), e.g.
    /// `--attribute ecs.availability-zone=shelf-1`.
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    pub attributes: Vec<String>,
    /// default, always, once or prefer-cached (ECS_IMAGE_PULL_BEHAVIOR).
    #[arg(long, env = "ECS_IMAGE_PULL_BEHAVIOR", default_value = "default")]
    pub image_pull_behavior: PullBehavior,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// IPv4 range cut into /28 subnets for multi-container task networks.
    #[arg(long, default_value = crate::agent::network::DEFAULT_POOL)]
    pub subnet_pool: SubnetPool,
    /// Memory (MiB) kept back for the host and not offered to tasks
    /// (ECS_RESERVED_MEMORY).
    #[arg(long, env = "ECS_RESERVED_MEMORY", default_value_t = 0)]
    pub reserved_memory_mib: u64,
}

/// What the worker runs with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Control plane address, `host:port`.
    pub server: String,
    /// Cluster name.
    pub cluster: String,
    /// Holds `agent.json` (the container instance id).
    pub data_dir: PathBuf,
    /// Custom attributes, in the order given; they override built-in ones of
    /// the same name (e.g. `ecs.instance-type`).
    pub attributes: Vec<(String, String)>,
    pub image_pull_behavior: PullBehavior,
    pub heartbeat_interval: Duration,
    pub subnet_pool: SubnetPool,
    pub reserved_memory_mib: u64,
    /// How often the agent looks at its containers when nothing happens
    /// (health checks, missed events).
    pub reconcile_interval: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// How many tasks are worked on at once (pulls, creates, stops).
    pub parallel_tasks: usize,
    /// Ports dynamic allocation must check with a bind on 0.0.0.0 (turn off
    /// for a fake runtime, whose ports are not real).
    pub probe_ports: bool,
}

impl AgentConfig {
    /// A configuration with every default, for `cluster` at `server`.
    pub fn new(server: impl Into<String>, cluster: impl Into<String>, data_dir: PathBuf) -> Self {
        AgentConfig {
            server: server.into(),
            cluster: cluster.into(),
            data_dir,
            attributes: Vec::new(),
            image_pull_behavior: PullBehavior::Default,
            heartbeat_interval: Duration::from_secs(2),
            subnet_pool: SubnetPool::default(),
            reserved_memory_mib: 0,
            reconcile_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            parallel_tasks: 16,
            probe_ports: true,
        }
    }
}

/// `~/.local/share/orc/agent` (or `./orc-agent` without a home).
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("orc/agent"),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/share/orc/agent"),
            None => PathBuf::from("orc-agent"),
        },
    }
}

/// Parses `name=value`.
pub fn parse_attribute(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(Error::InvalidInput(format!(
            "--attribute {text:?} is not name=value: write it like --attribute ecs.availability-zone=shelf-1"
        ))),
    }
}

impl TryFrom<AgentArgs> for AgentConfig {
    type Error = Error;

    fn try_from(args: AgentArgs) -> Result<Self> {
        crate::model::validate_cluster_name(&args.cluster)?;
        if args.heartbeat_interval_ms == 0 {
            return Err(Error::InvalidInput(
                "--heartbeat-interval-ms must be more than 0: the default is 2000".into(),
            ));
        }
        let mut config = AgentConfig::new(
            args.server,
            args.cluster,
            args.data_dir.unwrap_or_else(default_data_dir),
        );
        config.attributes = args
            .attributes
            .iter()
            .map(|a| parse_attribute(a))
            .collect::<Result<_>>()?;
        config.image_pull_behavior = args.image_pull_behavior;
        config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
        config.subnet_pool = args.subnet_pool;
        config.reserved_memory_mib = args.reserved_memory_mib;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn parses_flags_into_a_config() {
        let cli = Cli::try_parse_from([
            "orc",
            "--server",
            "10.0.0.2:7400",
            "--cluster",
            "lab",
            "--data-dir",
            "/tmp/x",
            "--attribute",
            "ecs.availability-zone=shelf-1",
            "--attribute",
            "disk=ssd",
            "--image-pull-behavior",
            "prefer-cached",
            "--heartbeat-interval-ms",
            "500",
            "--subnet-pool",
            "10.50.0.0/20",
            "--reserved-memory-mib",
            "128",
        ])
        .unwrap();
        let c = AgentConfig::try_from(cli.agent).unwrap();
        assert_eq!(c.server, "10.0.0.2:7400");
        assert_eq!(c.cluster, "lab");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            c.attributes,
            vec![
                ("ecs.availability-zone".into(), "shelf-1".into()),
                ("disk".into(), "ssd".into())
            ]
        );
        assert_eq!(c.image_pull_behavior, PullBehavior::PreferCached);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.subnet_pool.len(), 256);
        assert_eq!(c.reserved_memory_mib, 128);
    }

    #[test]
    fn defaults_and_errors() {
        let cli = Cli::try_parse_from(["orc"]).unwrap();
        assert_eq!(cli.agent.server, "127.0.0.1:7400");
        assert_eq!(cli.agent.cluster, "default");
        let c = AgentConfig::try_from(cli.agent).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.subnet_pool, SubnetPool::default());
        let e = parse_attribute("novalue").unwrap_err().to_string();
        assert!(e.contains("name=value"), "{e}");
        assert!(Cli::try_parse_from(["orc", "--image-pull-behavior", "sometimes"]).is_err());
    }
}
