//! `orc agent` options ([`AgentArgs`], parsed by clap) and the checked
//! configuration the worker runs with ([`AgentConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::agent::network::SubnetPool;
use crate::agent::runtime::PullBehavior;
use crate::{Error, Result};

/// ECS's default task cleanup wait: three hours in ECS, an hour here, as
/// long as the control plane keeps a stopped task.
pub const DEFAULT_TASK_CLEANUP_WAIT: Duration = Duration::from_secs(3600);

/// Options of `orc agent`.
#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// Address (host:port) of an orc server; give several (comma-separated
    /// or the flag repeated) so the agent can start while one is down. The
    /// agent learns every member's address from the control plane and moves
    /// to another server when its own fails.
    #[arg(
        long,
        env = "ORC_SERVER",
        default_value = "127.0.0.1:7400",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub server: Vec<String>,
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
    /// Also serve the load balancers' listeners on this machine, like
    /// Swarm's routing mesh (every server serves them already).
    #[arg(long)]
    pub proxy: bool,
    /// IPv4 range cut into /28 subnets for multi-container task networks.
    #[arg(long, default_value = crate::agent::network::DEFAULT_POOL)]
    pub subnet_pool: SubnetPool,
    /// Memory (MiB) kept back for the host and not offered to tasks
    /// (ECS_RESERVED_MEMORY).
    #[arg(long, env = "ECS_RESERVED_MEMORY", default_value_t = 0)]
    pub reserved_memory_mib: u64,
    /// A join token (`orc token create --role agent`): needed the first
    /// time only; the agent keeps its certificate in its data dir.
    #[arg(long, env = "ORC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connect in plain text, to a cluster started with --insecure.
    #[arg(long)]
    pub insecure: bool,
    /// How long a stopped task's containers are kept, so `orc logs` can
    /// still read them: a duration such as 1h, 10m, 30s or 0s
    /// (ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION).
    #[arg(long, env = "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub task_cleanup_wait: Duration,
}

/// Parses a duration such as `1h`, `10m`, `30s`, `500ms`, `1h30m` or
/// plain seconds (`90`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let fail = || format!("{text:?} is not a duration: write it like 1h, 10m, 30s or 1h30m");
    if t.is_empty() {
        return Err(fail());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(fail)?;
        if digits == 0 {
            return Err(fail());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(fail()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// What the worker runs with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Control-plane addresses (`host:port`) to start from, in order; the
    /// agent adds every member's address it learns.
    pub servers: Vec<String>,
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
    /// How long one call to a server may take before the agent gives up on
    /// that server and tries the next (a paused or unreachable server).
    pub call_timeout: Duration,
    /// How many pulls, creates and starts the engine sees at once (the
    /// start lane).
    pub parallel_tasks: usize,
    /// How long a stopped task's containers are kept (for `orc logs`) after
    /// they finished, before they are removed.
    pub task_cleanup_wait: Duration,
    /// How many stops and removals the engine sees at once (the stop lane;
    /// a stop mostly waits out its timeout, so this is large).
    pub parallel_stops: usize,
    /// Ports dynamic allocation must check with a bind on 0.0.0.0 (turn off
    /// for a fake runtime, whose ports are not real).
    pub probe_ports: bool,
    /// The certificate the agent connects with (renewed in place); the
    /// process's identity unless it has its own (`orc up`'s agent).
    pub identity: crate::tls::SharedIdentity,
}

impl AgentConfig {
    /// A configuration with every default, for `cluster` at `server`.
    pub fn new(server: impl Into<String>, cluster: impl Into<String>, data_dir: PathBuf) -> Self {
        AgentConfig {
            servers: vec![server.into()],
            cluster: cluster.into(),
            data_dir,
            attributes: Vec::new(),
            image_pull_behavior: PullBehavior::Default,
            heartbeat_interval: Duration::from_secs(2),
            subnet_pool: SubnetPool::default(),
            reserved_memory_mib: 0,
            reconcile_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            call_timeout: Duration::from_secs(3),
            parallel_tasks: 16,
            parallel_stops: 256,
            task_cleanup_wait: DEFAULT_TASK_CLEANUP_WAIT,
            probe_ports: true,
            identity: crate::tls::SharedIdentity::process(),
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
        let mut servers = Vec::new();
        for server in args.server.iter().map(|s| s.trim()) {
            if server.is_empty() {
                continue;
            }
            crate::wire::channel::check_endpoint(server)
                .map_err(|e| Error::InvalidInput(format!("--server: {e}")))?;
            if !servers.iter().any(|s| s == server) {
                servers.push(server.to_string());
            }
        }
        if servers.is_empty() {
            return Err(Error::InvalidInput(
                "--server is empty: give the address of an orc server, e.g. --server pi1:7400"
                    .into(),
            ));
        }
        let mut config = AgentConfig::new(
            servers[0].clone(),
            args.cluster,
            args.data_dir.unwrap_or_else(default_data_dir),
        );
        config.servers = servers;
        config.attributes = args
            .attributes
            .iter()
            .map(|a| parse_attribute(a))
            .collect::<Result<_>>()?;
        config.image_pull_behavior = args.image_pull_behavior;
        config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
        config.subnet_pool = args.subnet_pool;
        config.reserved_memory_mib = args.reserved_memory_mib;
        config.task_cleanup_wait = args.task_cleanup_wait;
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
            "--task-cleanup-wait",
            "10m",
        ])
        .unwrap();
        let c = AgentConfig::try_from(cli.agent).unwrap();
        assert_eq!(c.servers, vec!["10.0.0.2:7400".to_string()]);
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
        assert_eq!(c.task_cleanup_wait, Duration::from_secs(600));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "h", "1x", "-1s", "1.5h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("write it like 1h"), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_and_errors() {
        let cli = Cli::try_parse_from(["orc"]).unwrap();
        assert_eq!(cli.agent.server, vec!["127.0.0.1:7400".to_string()]);
        assert_eq!(cli.agent.cluster, "default");
        let c = AgentConfig::try_from(cli.agent).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.subnet_pool, SubnetPool::default());
        assert_eq!(c.task_cleanup_wait, Duration::from_secs(3600));
        let e = parse_attribute("novalue").unwrap_err().to_string();
        assert!(e.contains("name=value"), "{e}");
        assert!(Cli::try_parse_from(["orc", "--image-pull-behavior", "sometimes"]).is_err());
    }

    #[test]
    fn several_servers_comma_separated_or_repeated() {
        let cli = Cli::try_parse_from([
            "orc",
            "--server",
            "pi1:7400,pi2:7400",
            "--server",
            "pi3:7400",
            "--server",
            "pi1:7400",
        ])
        .unwrap();
        let c = AgentConfig::try_from(cli.agent).unwrap();
        assert_eq!(c.servers, vec!["pi1:7400", "pi2:7400", "pi3:7400"]);
        for bad in ["pi1", "pi1:99999", ":7400", ","] {
            let cli = Cli::try_parse_from(["orc", "--server", bad]).unwrap();
            let e = AgentConfig::try_from(cli.agent).unwrap_err().to_string();
            assert!(e.contains("--server"), "{bad}: {e}");
        }
    }
}
