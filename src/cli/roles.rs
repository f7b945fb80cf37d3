//! Starting the long-running roles: `orc server`, `orc agent` and `orc up`
//! (a one-server control plane and an agent in one process), each until a
//! shutdown signal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::args::{ServerArgs, UpArgs};
use crate::server::{self, ServerOptions};

fn default_data_dir(role: &str) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("orc").join(role)
}

fn server_options(args: &ServerArgs, data_dir: PathBuf) -> ServerOptions {
    let mut options = ServerOptions::new(data_dir, args.listen.clone());
    options.advertise = args.advertise.clone();
    options.bootstrap = args.bootstrap;
    options.join = args.join.clone();
    options.token = args.token.clone();
    options.insecure = args.insecure;
    let (heartbeat_ms, election_timeout_ms) = if args.slow_disk {
        (
            args.heartbeat_ms.max(500),
            args.election_timeout_ms.max(5000),
        )
    } else {
        (args.heartbeat_ms.max(1), args.election_timeout_ms)
    };
    options.heartbeat = Duration::from_millis(heartbeat_ms);
    options.election_timeout = Duration::from_millis(election_timeout_ms.max(3 * heartbeat_ms));
    options.snapshot_threshold = args.snapshot_threshold.max(2);
    options.cache_mib = args.cache_mib.max(1);
    options.watch_history = args.watch_history.max(1);
    options.service_limits.max_desired_count = args.max_service_desired_count;
    options.listener = crate::api::listener::ListenerOptions::with_idle_timeout(
        Duration::from_secs(args.idle_timeout.max(1)),
    );
    options
}

/// `orc server`: runs one member of the control plane until a shutdown
/// signal or until it is removed; exits non-zero when its storage fails.
pub(super) async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir("server"));
    let server = server::start(server_options(&args, data_dir)).await?;
    eprintln!(
        "orc server {} listening on {} (control plane API and /metrics{})",
        server.node_id,
        server.advertise,
        if server.security.is_some() {
            ", TLS"
        } else {
            ", plain text: --insecure"
        }
    );
    if let Some(path) = &server.admin_credential {
        eprintln!(
            "admin credential written to {} (keep it secret; use it with: export ORC_CREDENTIALS={})",
            path.display(),
            path.display()
        );
    }
    tokio::select! {
        _ = shutdown => eprintln!("shutting down"),
        ended = server.ended() => match ended {
            server::Ended::Removed => eprintln!("this server was removed from the control plane; exiting"),
            server::Ended::Failed(reason) => {
                // Exit non-zero so systemd (Restart=on-failure) restarts it;
                // until then it refuses requests with `reason`.
                tokio::time::sleep(server::FAILED_LINGER).await;
                server.stop();
                anyhow::bail!("{reason}");
            }
        },
    }
    server.stop();
    server.checkpoint_before_exit().await;
    Ok(())
}

/// `orc up`: a one-server control plane and (unless `--no-agent`) an agent
/// in one process.
pub(super) async fn up(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let data_dir = args.data_dir.unwrap_or_else(|| default_data_dir("up"));
    let server_dir = data_dir.join("server");
    let fresh = matches!(
        crate::datadir::DataDir::inspect(&server_dir)?,
        crate::datadir::DataDir::Fresh(_)
    );
    let mut options = ServerOptions::new(server_dir.clone(), args.listen.clone());
    options.bootstrap = fresh;
    options.insecure = args.insecure;
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
        let mut config = crate::agent::config::AgentConfig::new(
            server.advertise.clone(),
            crate::model::DEFAULT_CLUSTER,
            data_dir.join("agent"),
        );
        // The agent has a certificate of its own, issued by the CA here.
        config.identity = crate::tls::SharedIdentity::new(match &server.security {
            Some(security) => Some(
                up_agent_credential(security, &config.data_dir, &server.advertise)?.client_tls()?,
            ),
            None => None,
        });
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
    match &server.security {
        Some(_) => {
            let admin = crate::tls::credential::admin_path(&server_dir);
            eprintln!("  metrics             https://{}/metrics   (with a certificate of the cluster: `orc ca issue`)", server.advertise);
            eprintln!(
                "  admin credential    {}   (the orc CLI finds it{}; `orc config` shows it)",
                admin.display(),
                if Some(&admin) == crate::tls::credential::default_up_admin_path().as_ref() {
                    " by itself".to_string()
                } else {
                    format!(" with: export ORC_CREDENTIALS={}", admin.display())
                }
            );
        }
        None => eprintln!(
            "  metrics             http://{}/metrics   (plain text: --insecure)",
            server.advertise
        ),
    }
    eprintln!(
        "press ctrl-c to stop (running tasks keep running and are adopted on the next start)"
    );
    let failed = tokio::select! {
        _ = shutdown => None,
        ended = server.ended() => match ended {
            server::Ended::Failed(reason) => Some(reason),
            server::Ended::Removed => None,
        },
    };
    eprintln!("shutting down");
    let _ = stop_agent.send(true);
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    }
    server.stop();
    match failed {
        Some(reason) => anyhow::bail!("{reason}"),
        None => {
            server.checkpoint_before_exit().await;
            Ok(())
        }
    }
}

/// The certificate of `orc up`'s own agent: the one in its data dir, or a
/// new one the local CA issues (for the instance id it registered before,
/// if any).
fn up_agent_credential(
    security: &crate::api::trust::Security,
    agent_dir: &std::path::Path,
    endpoint: &str,
) -> anyhow::Result<crate::tls::credential::Credential> {
    use crate::tls::credential::{agent_path, Credential};
    let path = agent_path(agent_dir);
    if let Ok(credential) = Credential::load(&path) {
        let authority = security.authority();
        if credential.ca_fingerprint() == authority.fingerprint()
            && !credential.due_for_renewal(crate::vocab::time::now_ms())
        {
            return Ok(credential);
        }
    }
    let instance = crate::agent::worker::load_instance(agent_dir)
        .ok()
        .flatten()
        .map(|saved| saved.container_instance_id)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let authority = security.authority();
    let (certificate, key) = authority.issue(
        &crate::vocab::principal::Principal::Agent { instance },
        crate::tls::ca::cert_lifetime(),
    )?;
    let credential = Credential {
        endpoint: endpoint.to_string(),
        ca: authority.cert_pem.clone(),
        certificate,
        key,
    };
    credential.save(&path)?;
    Ok(credential)
}

/// `orc agent`: registers this machine as a container instance and drives
/// its Docker Engine until a shutdown signal.
pub(super) async fn agent(args: crate::agent::config::AgentArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let proxy = args.proxy;
    let (token, insecure) = (args.token.clone(), args.insecure);
    let config = crate::agent::config::AgentConfig::try_from(args)?;
    if insecure {
        crate::tls::set_process_identity(None);
    } else {
        let credential =
            crate::agent::identity::obtain(&config.data_dir, &config.servers, token.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        // The process identity: the worker's connections and the proxy's.
        crate::tls::set_process_identity(Some(credential.client_tls()?));
    }
    let runtime = crate::agent::docker::DockerRuntime::connect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "orc agent: registering with {} in cluster {}",
        config.servers.join(","),
        config.cluster
    );
    let (stop_proxy, proxy_stopped) = tokio::sync::watch::channel(false);
    let proxy = proxy.then(|| {
        eprintln!("orc agent: serving the load balancers' listeners on this machine (--proxy)");
        tokio::spawn(crate::balancer::run(
            config.servers.clone(),
            crate::proxy::ProxyOptions::default(),
            proxy_stopped,
        ))
    });
    let ended = crate::agent::worker::run(config, std::sync::Arc::new(runtime), shutdown).await;
    let _ = stop_proxy.send(true);
    if let Some(proxy) = proxy {
        let _ = tokio::time::timeout(Duration::from_secs(5), proxy).await;
    }
    ended?;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// while the role is still starting is not fatal (the default action) but
/// stops it cleanly once it gets there.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(interrupt) => {}
            _ = wait(terminate) => {}
        }
    }
}
