//! The load balancer's data path alone, for bench/proxy.sh: serves one HTTP
//! listener with `orc::proxy::Proxy` in release mode, round-robin over the
//! targets given, until killed. No control plane: the route table is built
//! here, as the feeder would build it.
//!
//!   proxy --port 18090 --targets 127.0.0.1:18081,127.0.0.1:18082 [--groups 10]
//!
//! `--workers N` sets `ProxyOptions::workers` (default: one per CPU; 0
//! serves connections on the bench's own multi-threaded runtime).
//!
//! `--groups N` loads N target groups (each with the same targets; one
//! path rule per group, `/g1/*` ... and the default rule to the first), for
//! measuring the proxy's idle CPU with that many groups' routes.

use std::net::SocketAddr;

use orc::proxy::{
    ListenerProtocol, ListenerRoutes, Proxy, ProxyOptions, RouteTable, RuleRoute,
    TargetGroupRoutes, TargetRoute, TargetState,
};

fn argument(name: &str) -> Option<String> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|a| a == name)
        .and_then(|i| arguments.get(i + 1).cloned())
}

fn main() {
    // `cargo bench` runs every bench with `--bench`; without a port this is
    // that run, and there is nothing to serve.
    let Some(port) = argument("--port").and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("proxy bench: run through bench/proxy.sh (needs --port and --targets)");
        return;
    };
    let targets: Vec<SocketAddr> = argument("--targets")
        .unwrap_or_default()
        .split(',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let groups: usize = argument("--groups")
        .and_then(|g| g.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut table = RouteTable::default();
    let mut rules = Vec::new();
    for g in 0..groups {
        let arn = format!("arn:orc:elasticloadbalancing:bench:targetgroup/g{g}");
        table.target_groups.insert(
            arn.clone(),
            TargetGroupRoutes {
                arn: arn.clone(),
                name: format!("g{g}"),
                targets: targets
                    .iter()
                    .map(|&address| TargetRoute {
                        address,
                        state: TargetState::Healthy,
                    })
                    .collect(),
            },
        );
        if g > 0 {
            rules.push(RuleRoute {
                priority: Some(g as u32),
                host_headers: vec![],
                path_patterns: vec![format!("/g{g}/*")],
                target_group_arn: arn,
            });
        }
    }
    rules.push(RuleRoute {
        priority: None,
        host_headers: vec![],
        path_patterns: vec![],
        target_group_arn: "arn:orc:elasticloadbalancing:bench:targetgroup/g0".into(),
    });
    table.listeners.push(ListenerRoutes {
        arn: "arn:orc:elasticloadbalancing:bench:listener/bench".into(),
        port,
        protocol: ListenerProtocol::Http,
        rules,
        idle_timeout: None,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let mut options = ProxyOptions {
            bind_host: [127, 0, 0, 1].into(),
            ..ProxyOptions::default()
        };
        if let Some(workers) = argument("--workers").and_then(|w| w.parse().ok()) {
            options.workers = workers;
        }
        let proxy = Proxy::new(options);
        let errors = proxy.apply(table).await;
        if let Some(error) = errors.first() {
            eprintln!("{error}");
            std::process::exit(1);
        }
        println!("ready on {port} with {groups} target groups");
        let _ = tokio::signal::ctrl_c().await;
        proxy.shutdown().await;
    });
}
