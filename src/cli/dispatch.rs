//! Running one parsed command line: each client verb becomes one `Orc.Call`
//! (or a watch, a wait, a log stream) and its answer goes through `output`.

use anyhow::Context as _;
use serde_json::json;

use super::args::*;
use super::output::Output;
use super::{roles, shorthand, wait, watch};
use crate::client::Client;

/// How long one call may take when `--timeout` is not given.
pub const DEFAULT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `--timeout` for one call, set once when the command line is run.
static CALL_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// A client for the server at `endpoint` whose calls end within `--timeout`
/// and name an unreachable (or non-orc) address within a few seconds. The
/// address is checked before anything connects.
pub(super) fn client(endpoint: &str) -> anyhow::Result<Client> {
    let timeout = *CALL_TIMEOUT.get().unwrap_or(&DEFAULT_CALL_TIMEOUT);
    Client::for_people(endpoint, timeout).map_err(|error| match error {
        crate::Error::InvalidInput(message) => {
            anyhow::anyhow!("{message} (given with --endpoint or ORC_ENDPOINT)")
        }
        other => other.into(),
    })
}

/// Connects this command line's calls with the credential found (plain
/// text without one).
fn use_credential(found: &crate::tls::credential::Found) -> anyhow::Result<()> {
    let tls = match found.path() {
        Some(path) => Some(
            crate::tls::credential::Credential::load(path)
                .map_err(|e| anyhow::anyhow!("{e} (see `orc config`)"))?
                .client_tls()?,
        ),
        None => None,
    };
    crate::tls::set_process_identity(tls);
    Ok(())
}

/// `orc config`: the endpoint and the credential in use, never the key.
fn config(endpoint: &str, found: &crate::tls::credential::Found) {
    println!("endpoint     {endpoint}");
    match found.path() {
        None => {
            println!("credential   none ({})", found.why());
            println!("             a TLS cluster needs one: set ORC_CREDENTIALS to the file `orc up` or `orc server --bootstrap` printed");
        }
        Some(path) => {
            println!("credential   {} ({})", path.display(), found.why());
            match crate::tls::credential::Credential::load(path) {
                Ok(credential) => {
                    println!("identity     {}", credential.holder());
                    println!("ca           sha256 {}", credential.ca_fingerprint());
                    let left = credential
                        .not_after_ms()
                        .saturating_sub(crate::vocab::time::now_ms())
                        / 1000;
                    println!(
                        "expires in   {} days {} h",
                        left / 86_400,
                        (left % 86_400) / 3600
                    );
                    if !credential.endpoint.is_empty() && credential.endpoint != endpoint {
                        println!(
                            "made for     {} (use --endpoint or ORC_ENDPOINT to talk to it)",
                            credential.endpoint
                        );
                    }
                }
                Err(error) => println!("problem      {error}"),
            }
        }
    }
}

/// `orc token create|list|revoke`.
async fn token(endpoint: &str, output: &Output, command: TokenCommand) -> anyhow::Result<()> {
    let client = client(endpoint)?;
    match command {
        TokenCommand::Create { role, ttl } => {
            let role: crate::tls::token::NodeRole = role.parse()?;
            let body =
                json!({"role": role.as_str(), "ttlSeconds": ttl.map(|t| t.as_secs().max(1))});
            let answer = client.admin("CreateJoinToken", body).await?;
            if output.is_json() {
                output.json(&answer);
            } else {
                println!("{}", answer["token"].as_str().unwrap_or_default());
                eprintln!(
                    "join token {} for role {} (shown once; `orc token revoke {}` to revoke it); use it with: {}",
                    answer["id"].as_str().unwrap_or_default(),
                    role.as_str(),
                    answer["id"].as_str().unwrap_or_default(),
                    match role {
                        crate::tls::token::NodeRole::Agent => format!("orc agent --server {endpoint} --token TOKEN"),
                        crate::tls::token::NodeRole::Server => format!("orc server --join {endpoint} --token TOKEN --data-dir DIR"),
                    }
                );
            }
        }
        TokenCommand::List => {
            let answer = client.admin("ListJoinTokens", json!({})).await?;
            if output.is_json() {
                output.json(&answer);
            } else {
                println!("{:<14} {:<8} {:<8} EXPIRES", "ID", "ROLE", "STATUS");
                for token in answer["joinTokens"].as_array().into_iter().flatten() {
                    let expires = match token["expiresAt"].as_f64() {
                        Some(at) => {
                            let left = at - crate::vocab::time::now_ms() as f64 / 1000.0;
                            if left > 0.0 {
                                format!("in {} s", left as u64)
                            } else {
                                "passed".into()
                            }
                        }
                        None => "never".into(),
                    };
                    println!(
                        "{:<14} {:<8} {:<8} {expires}",
                        token["id"].as_str().unwrap_or_default(),
                        token["role"].as_str().unwrap_or_default(),
                        token["status"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let answer = client.admin("RevokeJoinToken", json!({"id": id})).await?;
            if output.is_json() {
                output.json(&answer);
            } else {
                println!(
                    "revoked join token {}",
                    answer["id"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// Renews the credential at `path` (the one this command line uses) from
/// the CA that signs now, keeps it there and connects with it from now on.
async fn renew_credential(endpoint: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let (signing_request, key) = crate::tls::ca::signing_request()?;
    let issued = client(endpoint)?.renew_certificate(signing_request).await?;
    replace_credential(path, issued.ca, issued.certificate, key)
}

/// Saves the credential at `path` with a new certificate (keeping its
/// endpoint) and makes it this process's identity.
fn replace_credential(
    path: &std::path::Path,
    ca: String,
    certificate: String,
    key: String,
) -> anyhow::Result<()> {
    use crate::tls::credential::Credential;
    let current = Credential::load(path)?;
    let renewed = Credential {
        endpoint: current.endpoint,
        ca,
        certificate,
        key,
    };
    let tls = renewed.client_tls()?;
    renewed.save(path)?;
    crate::tls::set_process_identity(Some(tls));
    Ok(())
}

/// One line of a rotation's progress.
fn rotation_line(rotation: &serde_json::Value) -> String {
    let count = |what: &str| {
        format!(
            "{} of {}",
            rotation[what]["moved"].as_u64().unwrap_or(0),
            rotation[what]["total"].as_u64().unwrap_or(0)
        )
    };
    let waiting: Vec<&str> = rotation["waitingFor"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    let mut line = format!(
        "phase {:<8} agents moved {}, servers moved {}",
        rotation["phase"].as_str().unwrap_or_default(),
        count("agents"),
        count("servers"),
    );
    if !waiting.is_empty() {
        let shown: Vec<&str> = waiting.iter().take(5).copied().collect();
        line.push_str(&format!("; waiting for {}", shown.join(", ")));
        if waiting.len() > shown.len() {
            line.push_str(&format!(" and {} more", waiting.len() - shown.len()));
        }
    }
    line
}

/// `orc ca rotate|status`.
async fn ca(
    endpoint: &str,
    output: &Output,
    found: &crate::tls::credential::Found,
    wait_timeout: Option<u64>,
    command: CaCommand,
) -> anyhow::Result<()> {
    let short = |fingerprint: &str| fingerprint.chars().take(16).collect::<String>();
    match command {
        CaCommand::Status => {
            let answer = client(endpoint)?.admin("DescribeCA", json!({})).await?;
            if output.is_json() {
                output.json(&answer);
                return Ok(());
            }
            println!(
                "ca           sha256 {}",
                answer["fingerprint"].as_str().unwrap_or_default()
            );
            match answer["rotation"].as_object() {
                None => println!("rotation     none under way"),
                Some(_) => {
                    let rotation = &answer["rotation"];
                    println!(
                        "rotating to  sha256 {}",
                        rotation["newFingerprint"].as_str().unwrap_or_default()
                    );
                    println!("progress     {}", rotation_line(rotation));
                }
            }
            Ok(())
        }
        CaCommand::Issue { name, role, out } => {
            use base64::Engine as _;
            let (signing_request, key) = crate::tls::ca::signing_request()?;
            let answer = client(endpoint)?
                .admin(
                    "IssueCertificate",
                    json!({
                        "name": name,
                        "role": role,
                        "signingRequest": base64::engine::general_purpose::STANDARD.encode(signing_request),
                    }),
                )
                .await?;
            let credential = crate::tls::credential::Credential {
                endpoint: endpoint.to_string(),
                ca: answer["ca"].as_str().unwrap_or_default().to_string(),
                certificate: answer["certificate"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                key,
            };
            if !out.exists() {
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))?;
            }
            credential.save(&out.join("credential.json"))?;
            use crate::tls::credential::write_private;
            write_private(&out.join("cert.pem"), credential.certificate.as_bytes())?;
            write_private(&out.join("key.pem"), credential.key.as_bytes())?;
            write_private(&out.join("ca.pem"), credential.ca.as_bytes())?;
            if output.is_json() {
                output.json(&json!({"holder": credential.holder().to_string(), "directory": out}));
            } else {
                println!("{}", out.display());
                eprintln!(
                    "issued a certificate for {} (valid a year): {}/credential.json for orc, cert.pem, key.pem and ca.pem for Prometheus or curl",
                    credential.holder(),
                    out.display(),
                );
            }
            Ok(())
        }
        CaCommand::Rotate { detach } => {
            // This command line's own credential moves in the answer: with
            // no agent to wait for, the servers may present new-CA
            // certificates before its next call.
            let (signing_request, key) = crate::tls::ca::signing_request()?;
            let signing_request =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signing_request);
            let answer = client(endpoint)?
                .admin("RotateCA", json!({ "signingRequest": signing_request }))
                .await?;
            let Some(new) = answer["rotation"]["newFingerprint"]
                .as_str()
                .map(String::from)
            else {
                anyhow::bail!("the server answered without a rotation: run `orc ca status`");
            };
            let old = answer["fingerprint"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if answer["started"] == true {
                eprintln!(
                    "rotating the cluster CA from sha256 {}… to sha256 {}…",
                    short(&old),
                    short(&new)
                );
            } else {
                eprintln!(
                    "a rotation to sha256 {}… is under way already: following it",
                    short(&new)
                );
            }
            if let Some(path) = found.path() {
                let issued = &answer["credential"];
                match (issued["ca"].as_str(), issued["certificate"].as_str()) {
                    (Some(ca), Some(certificate)) => {
                        replace_credential(path, ca.to_string(), certificate.to_string(), key)?
                    }
                    // A server from before the answer carried one.
                    _ => renew_credential(endpoint, path).await?,
                }
                eprintln!(
                    "renewed this credential ({}) from the new CA",
                    path.display()
                );
            }
            if detach {
                if output.is_json() {
                    output.json(&answer);
                }
                eprintln!("follow it with `orc ca status`");
                return Ok(());
            }
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_secs(wait_timeout.unwrap_or(600));
            let mut last = String::new();
            let answer = loop {
                let answer = client(endpoint)?.admin("DescribeCA", json!({})).await?;
                if answer["rotation"].is_null() {
                    if answer["fingerprint"].as_str() != Some(new.as_str()) {
                        anyhow::bail!(
                            "the cluster's CA is sha256 {}, not the one this rotation made: another rotation ran meanwhile (`orc ca status`)",
                            answer["fingerprint"].as_str().unwrap_or_default()
                        );
                    }
                    break answer;
                }
                let line = rotation_line(&answer["rotation"]);
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
                if std::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "the rotation is still under way ({last}): it goes on without this command; `orc ca status` shows it, and `orc ca rotate` follows it again. An agent that stays away must be stopped or deregistered for it to finish"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            };
            // The old CA is gone: trust the new one only.
            if let Some(path) = found.path() {
                renew_credential(endpoint, path).await?;
            }
            if output.is_json() {
                output.json(&answer);
            } else {
                println!("the cluster CA is now sha256 {new}");
                eprintln!(
                    "every server and agent holds a certificate of the new CA; certificates of the old CA (sha256 {}…) are refused from now on, so copies of the old admin credential no longer work (each server's DATA_DIR/tls/admin.json was renewed). Join tokens made before the rotation no longer work: make new ones with `orc token create --role agent` or `--role server`",
                    short(&old)
                );
            }
            Ok(())
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let output = Output::new(cli.output);
    let wait_timeout = cli.timeout;
    if let Some(seconds) = cli.timeout {
        let _ = CALL_TIMEOUT.set(std::time::Duration::from_secs(seconds));
    }
    let serving = matches!(
        cli.command,
        Command::Up(_) | Command::Agent(_) | Command::Server(ServerCommand { action: None, .. })
    );
    let found = crate::tls::credential::discover(cli.credentials.as_deref());
    if !serving {
        use_credential(&found)?;
    }
    match cli.command {
        Command::Config => {
            config(&cli.endpoint, &found);
            Ok(())
        }
        Command::Token(command) => token(&cli.endpoint, &output, command).await,
        Command::Ca(command) => ca(&cli.endpoint, &output, &found, wait_timeout, command).await,
        Command::Up(args) => roles::up(args).await,
        Command::Agent(args) => roles::agent(args).await,
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
                since.as_deref(),
            )
            .await
        }
        Command::Server(ServerCommand {
            action: Some(action),
            ..
        }) => {
            let answer = match action {
                ServerAction::Recover { data_dir } => {
                    println!("{}", crate::server::recover(&data_dir)?);
                    return Ok(());
                }
                ServerAction::Add { node_id, address } => {
                    client(&cli.endpoint)?
                        .add_server(node_id, &address, "")
                        .await?
                }
                ServerAction::Remove { node_id } => {
                    client(&cli.endpoint)?.remove_server(node_id).await?
                }
            };
            output.members(&answer.cluster_id, &answer.members);
            Ok(())
        }
        Command::Server(ServerCommand { action: None, run }) => roles::server(run).await,
        Command::Cluster(ClusterCommand::Status { local }) => {
            let client = client(&cli.endpoint)?;
            let status = client.cluster_status(!local).await?;
            output.cluster_status(&status);
            Ok(())
        }
        Command::Elbv2(verb) => {
            let (action, body) = verb.request()?;
            ecs(&cli.endpoint, &output, &format!("elbv2:{action}"), body).await
        }
        Command::Ecr(command) => ecr(&cli.endpoint, &output, command).await,
        Command::Secretsmanager(command) => {
            let (action, body) = secrets_request(command)?;
            let (answer, _) = client(&cli.endpoint)?
                .call(&format!("secretsmanager:{action}"), body)
                .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Iam(command) => {
            let (action, body) = iam_request(command);
            let (answer, _) = client(&cli.endpoint)?
                .call(&format!("iam:{action}"), body)
                .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
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
        Command::Wait(wait) => wait::run(&cli.endpoint, wait, wait_timeout).await,
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
            load_balancers,
        } => {
            let configuration = deployment_configuration
                .map(|c| shorthand::parse_structure("--deployment-configuration", &c))
                .transpose()?;
            let load_balancers = load_balancers
                .map(|l| shorthand::parse_list("--load-balancers", &l))
                .transpose()?;
            let body = json!({
                "cluster": cluster, "service": service, "desiredCount": desired_count,
                "taskDefinition": task_definition, "forceNewDeployment": force_new_deployment,
                "deploymentConfiguration": configuration,
                "healthCheckGracePeriodSeconds": health_check_grace_period_seconds,
                "loadBalancers": load_balancers,
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
    serde_json::from_str(&text).map_err(|e| {
        let inline = !value.starts_with("file://");
        let looks_like_json = value.trim_start().starts_with(['{', '[', '"']);
        if inline && !looks_like_json {
            anyhow::anyhow!(
                "{flag}: {value:?} is not JSON; to read a file, write file://{value} (as the aws CLI does)"
            )
        } else {
            anyhow::anyhow!("{flag}: invalid json: {e}")
        }
    })
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
    let client = client(endpoint)?;
    let (answer, warnings) = if action.starts_with("List") {
        client.call_all_pages(action, body).await?
    } else {
        client.call(action, body).await?
    };
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    output.action(action, &answer);
    Ok(())
}

/// `orc secretsmanager ...`: the action and its request (Secrets Manager's
/// PascalCase members); a `file://PATH` value is read from the file.
fn secrets_request(command: SecretsCommand) -> anyhow::Result<(&'static str, serde_json::Value)> {
    let value = |text: String| -> anyhow::Result<String> {
        match text.strip_prefix("file://") {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the secret from {path}: {e}")),
            None => Ok(text),
        }
    };
    Ok(match command {
        SecretsCommand::CreateSecret {
            name,
            secret_string,
            description,
        } => (
            "CreateSecret",
            json!({"Name": name, "SecretString": value(secret_string)?, "Description": description}),
        ),
        SecretsCommand::PutSecretValue {
            secret_id,
            secret_string,
        } => (
            "PutSecretValue",
            json!({"SecretId": secret_id, "SecretString": value(secret_string)?}),
        ),
        SecretsCommand::DescribeSecret { secret_id } => {
            ("DescribeSecret", json!({"SecretId": secret_id}))
        }
        SecretsCommand::ListSecrets => ("ListSecrets", json!({})),
        SecretsCommand::DeleteSecret { secret_id, .. } => {
            ("DeleteSecret", json!({"SecretId": secret_id}))
        }
    })
}

/// `orc iam ...`: the IAM action and its request (IAM's PascalCase members).
fn iam_request(command: IamCommand) -> (&'static str, serde_json::Value) {
    match command {
        IamCommand::CreateUser {
            name,
            user_name,
            role,
            clusters,
        } => (
            "CreateUser",
            json!({"UserName": user_name.or(name), "Role": role, "Clusters": clusters}),
        ),
        IamCommand::ListUsers => ("ListUsers", json!({})),
        IamCommand::DeleteUser { user_name } => ("DeleteUser", json!({"UserName": user_name})),
        IamCommand::CreateAccessKey { user_name } => {
            ("CreateAccessKey", json!({"UserName": user_name}))
        }
        IamCommand::ListAccessKeys { user_name } => {
            ("ListAccessKeys", json!({"UserName": user_name}))
        }
        IamCommand::DeleteAccessKey {
            access_key_id,
            user_name,
        } => (
            "DeleteAccessKey",
            json!({"AccessKeyId": access_key_id, "UserName": user_name}),
        ),
        IamCommand::UpdateAccessKey {
            access_key_id,
            status,
            user_name,
        } => (
            "UpdateAccessKey",
            json!({"AccessKeyId": access_key_id, "Status": status, "UserName": user_name}),
        ),
    }
}

/// `orc ecr ...`: one `ecr:` action each.
async fn ecr(endpoint: &str, output: &Output, command: EcrCommand) -> anyhow::Result<()> {
    let ids = |ids: Vec<(String, String)>| -> Vec<serde_json::Value> {
        ids.into_iter()
            .map(|(key, value)| json!({ key: value }))
            .collect()
    };
    let (action, body) = match command {
        EcrCommand::CreateRepository { repository_name } => (
            "CreateRepository",
            json!({"repositoryName": repository_name}),
        ),
        EcrCommand::DescribeRepositories { repository_names } => (
            "DescribeRepositories",
            json!({"repositoryNames": repository_names}),
        ),
        EcrCommand::DeleteRepository {
            repository_name,
            force,
        } => (
            "DeleteRepository",
            json!({"repositoryName": repository_name, "force": force}),
        ),
        EcrCommand::ListImages { repository_name } => {
            ("ListImages", json!({"repositoryName": repository_name}))
        }
        EcrCommand::DescribeImages {
            repository_name,
            image_ids,
        } => (
            "DescribeImages",
            json!({"repositoryName": repository_name, "imageIds": ids(image_ids)}),
        ),
        EcrCommand::BatchDeleteImage {
            repository_name,
            image_ids,
        } => (
            "BatchDeleteImage",
            json!({"repositoryName": repository_name, "imageIds": ids(image_ids)}),
        ),
        EcrCommand::CreatePullThroughCacheRule {
            ecr_repository_prefix,
            upstream_registry_url,
        } => (
            "CreatePullThroughCacheRule",
            json!({"ecrRepositoryPrefix": ecr_repository_prefix, "upstreamRegistryUrl": upstream_registry_url}),
        ),
        EcrCommand::DescribePullThroughCacheRules {
            ecr_repository_prefixes,
        } => (
            "DescribePullThroughCacheRules",
            json!({"ecrRepositoryPrefixes": ecr_repository_prefixes}),
        ),
        EcrCommand::DeletePullThroughCacheRule {
            ecr_repository_prefix,
        } => (
            "DeletePullThroughCacheRule",
            json!({"ecrRepositoryPrefix": ecr_repository_prefix}),
        ),
        EcrCommand::Gc {
            grace_seconds,
            dry_run,
        } => (
            "GarbageCollect",
            json!({"graceSeconds": grace_seconds, "dryRun": dry_run}),
        ),
        EcrCommand::GetLoginPassword => {
            use base64::Engine as _;
            let (answer, _) = client(endpoint)?
                .call("ecr:GetAuthorizationToken", json!({}))
                .await?;
            let token = answer["authorizationData"][0]["authorizationToken"]
                .as_str()
                .unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_default();
            let password = decoded
                .strip_prefix("AWS:")
                .ok_or_else(|| anyhow::anyhow!("the server answered no usable login token"))?;
            println!("{password}");
            return Ok(());
        }
    };
    let (answer, warnings) = client(endpoint)?
        .call(&format!("ecr:{action}"), body)
        .await?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    output.ecr(action, &answer);
    Ok(())
}

async fn logs(
    endpoint: &str,
    cluster: Option<String>,
    task: &str,
    container: Option<&str>,
    follow: bool,
    since: Option<&str>,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use std::io::Write as _;
    let now = crate::vocab::time::now_ms() / 1000;
    let since_unix_seconds = match since {
        None => 0,
        Some(text) => parse_since(text, now).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let client = Client::new(endpoint)?;
    // Lines carry their container's name when the task has several and
    // all of them are read.
    let prefixed = container.is_none() && {
        let (answer, _) = client
            .call(
                "DescribeTasks",
                json!({"cluster": cluster, "tasks": [task]}),
            )
            .await?;
        answer["tasks"][0]["containers"]
            .as_array()
            .is_some_and(|c| c.len() > 1)
    };
    let mut chunks = client
        .task_logs(
            cluster.as_deref().unwrap_or_default(),
            task,
            container.unwrap_or_default(),
            follow,
            since_unix_seconds,
        )
        .await?;
    let stdout = std::io::stdout();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let prefix = if prefixed {
            format!("{} | ", chunk.container)
        } else {
            String::new()
        };
        let mut out = stdout.lock();
        let mut written = Ok(());
        for line in &chunk.lines {
            written = written.and_then(|()| writeln!(out, "{prefix}{line}"));
        }
        match written.and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`orc logs TASK | head`): stop quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `--since`: a duration back from `now` (10m, 1h, 30s, 1h30m, or plain
/// seconds) or an RFC 3339 time (2026-11-29T17:35:00Z); epoch seconds.
pub fn parse_since(text: &str, now: u64) -> Result<i64, String> {
    if let Some(ms) = crate::agent::runtime::parse_rfc3339_ms(text) {
        return Ok(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
    }
    match crate::agent::config::parse_duration(text) {
        Ok(ago) => Ok(i64::try_from(now.saturating_sub(ago.as_secs()))
            .unwrap_or(i64::MAX)
            .max(1)),
        Err(_) => Err(format!(
            "--since {text:?} is neither a duration nor a time: write it like 10m, 1h, 30s or 2026-11-29T17:35:00Z"
        )),
    }
}
