//! `orc wait ...`: polls describe calls until a condition holds, showing a
//! live progress line on a terminal (quiet when piped), and fails with a
//! sentence when the condition can no longer hold or time runs out.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::{WaitCommand, WaitServices, WaitTasks};
use crate::client::Client;

/// A progress line that rewrites itself on a terminal.
pub struct Progress {
    live: bool,
    last: String,
}

impl Progress {
    /// A progress line on stderr.
    pub fn new() -> Progress {
        Progress {
            live: std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    /// Shows `line` (only when it changed).
    pub fn update(&mut self, line: &str) {
        if self.live && line != self.last {
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\r\x1b[2K{line}");
            let _ = stderr.flush();
            self.last = line.to_string();
        }
    }

    /// Ends the line.
    pub fn finish(&mut self) {
        if self.live && !self.last.is_empty() {
            eprintln!();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Runs a wait command.
/// `timeout` (`--timeout`) bounds the whole wait: 600 s unless given.
pub async fn run(endpoint: &str, command: WaitCommand, timeout: Option<u64>) -> anyhow::Result<()> {
    let timeout = timeout.unwrap_or(600);
    match command {
        WaitCommand::TasksRunning(args) => wait_tasks(endpoint, &args, true, timeout).await,
        WaitCommand::TasksStopped(args) => wait_tasks(endpoint, &args, false, timeout).await,
        WaitCommand::ServicesStable(args) => wait_services(endpoint, &args, timeout).await,
    }
}

/// A client whose every call of the wait ends within 30 s, or sooner when
/// the whole wait must end sooner.
fn wait_client(endpoint: &str, timeout: u64) -> anyhow::Result<Client> {
    let mut client = super::dispatch::client(endpoint)?;
    client.retry_for = client.retry_for.min(Duration::from_secs(timeout));
    Ok(client)
}

/// Whether an ECS service description is stable, as the `aws ecs wait
/// services-stable` waiter decides: only one deployment is left and the
/// running count equals the desired count (orc also waits for no task to be
/// pending). Like ECS's, it does not wait for the rollout state: a service
/// whose new tasks all run is stable while its deployment is still
/// IN_PROGRESS.
pub fn is_stable(service: &Value) -> bool {
    service["deployments"].as_array().map(Vec::len) == Some(1)
        && service["runningCount"] == service["desiredCount"]
        && service["pendingCount"] == 0
}

/// Why a service can never become stable (ECS's waiter fails on a DRAINING
/// or INACTIVE service), or `None` while it still may.
pub fn never_stable(service: &Value) -> Option<String> {
    let status = service["status"].as_str().unwrap_or("");
    (status == "DRAINING" || status == "INACTIVE").then(|| {
        format!(
            "service {} is {status}: it is being deleted and will never be stable",
            service["serviceName"].as_str().unwrap_or("?")
        )
    })
}

async fn wait_services(endpoint: &str, args: &WaitServices, timeout: u64) -> anyhow::Result<()> {
    let client = wait_client(endpoint, timeout)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut progress = Progress::new();
    loop {
        let (answer, _) = client
            .call(
                "DescribeServices",
                json!({"cluster": args.cluster, "services": args.services}),
            )
            .await?;
        if let Some(missing) = answer["failures"].as_array().and_then(|f| f.first()) {
            bail!(
                "service {} was not found: check the name and --cluster",
                missing["arn"].as_str().unwrap_or("?")
            );
        }
        let services: Vec<Value> = answer["services"].as_array().cloned().unwrap_or_default();
        let line: Vec<String> = services
            .iter()
            .map(|s| {
                let deployments: Vec<String> = s["deployments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "{} {}/{} {}",
                            d["status"].as_str().unwrap_or("?"),
                            d["runningCount"],
                            d["desiredCount"],
                            d["rolloutState"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                format!(
                    "{}: {}",
                    s["serviceName"].as_str().unwrap_or("?"),
                    deployments.join(", ")
                )
            })
            .collect();
        progress.update(&line.join("; "));
        if let Some(reason) = services.iter().find_map(never_stable) {
            progress.finish();
            bail!("{reason}");
        }
        if services.iter().all(is_stable) {
            progress.finish();
            eprintln!("{} stable", args.services.join(", "));
            return Ok(());
        }
        if Instant::now() > deadline {
            progress.finish();
            bail!("timed out after {} s waiting for services to be stable: see the events in `orc describe-services`", timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_tasks(
    endpoint: &str,
    args: &WaitTasks,
    want_running: bool,
    timeout: u64,
) -> anyhow::Result<()> {
    let client = wait_client(endpoint, timeout)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut progress = Progress::new();
    let goal = if want_running { "RUNNING" } else { "STOPPED" };
    loop {
        let (answer, _) = client
            .call(
                "DescribeTasks",
                json!({"cluster": args.cluster, "tasks": args.tasks}),
            )
            .await?;
        if let Some(missing) = answer["failures"].as_array().and_then(|f| f.first()) {
            bail!(
                "task {} was not found: check the id and --cluster",
                missing["arn"].as_str().unwrap_or("?")
            );
        }
        let tasks: Vec<Value> = answer["tasks"].as_array().cloned().unwrap_or_default();
        let reached = tasks.iter().filter(|t| t["lastStatus"] == goal).count();
        let statuses: Vec<String> = tasks
            .iter()
            .map(|t| t["lastStatus"].as_str().unwrap_or("?").to_string())
            .collect();
        progress.update(&format!(
            "{reached}/{} tasks {goal} ({})",
            tasks.len(),
            statuses.join(", ")
        ));
        if reached == tasks.len() {
            progress.finish();
            eprintln!("{reached}/{} tasks {goal}", tasks.len());
            return Ok(());
        }
        if want_running {
            if let Some(stopped) = tasks.iter().find(|t| t["lastStatus"] == "STOPPED") {
                progress.finish();
                bail!(
                    "task {} stopped instead of running: {} ({}); see `orc describe-tasks`",
                    stopped["taskArn"].as_str().unwrap_or("?"),
                    stopped["stoppedReason"]
                        .as_str()
                        .unwrap_or("no reason given"),
                    stopped["stopCode"].as_str().unwrap_or("-")
                );
            }
        }
        if Instant::now() > deadline {
            progress.finish();
            bail!("timed out after {} s waiting for tasks to be {goal}: raise --timeout or check `orc describe-tasks`", timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: &str, deployments: usize, running: u32, pending: u32) -> Value {
        json!({
            "serviceName": "web", "status": status, "desiredCount": 2,
            "runningCount": running, "pendingCount": pending,
            "deployments": (0..deployments)
                .map(|i| json!({"id": format!("ecs-svc/{i}"), "rolloutState": "IN_PROGRESS"}))
                .collect::<Vec<_>>(),
        })
    }

    #[test]
    fn stable_means_one_deployment_and_the_desired_count_running_as_ecs_waits() {
        // (status, deployments, running, pending, stable, never stable)
        let cases = [
            ("ACTIVE", 1, 2, 0, true, false),
            // ECS's waiter ignores the rollout state: IN_PROGRESS is stable here.
            ("ACTIVE", 2, 2, 0, false, false),
            ("ACTIVE", 1, 1, 0, false, false),
            ("ACTIVE", 1, 1, 1, false, false),
            ("ACTIVE", 1, 3, 0, false, false),
            ("DRAINING", 1, 2, 0, true, true),
            ("INACTIVE", 1, 0, 0, false, true),
        ];
        for (status, deployments, running, pending, stable, never) in cases {
            let described = service(status, deployments, running, pending);
            assert_eq!(is_stable(&described), stable, "{described}");
            assert_eq!(never_stable(&described).is_some(), never, "{described}");
        }
        assert_eq!(
            never_stable(&service("DRAINING", 1, 0, 0)).unwrap(),
            "service web is DRAINING: it is being deleted and will never be stable"
        );
    }
}
