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
pub async fn run(endpoint: &str, command: WaitCommand) -> anyhow::Result<()> {
    match command {
        WaitCommand::TasksRunning(args) => wait_tasks(endpoint, &args, true).await,
        WaitCommand::TasksStopped(args) => wait_tasks(endpoint, &args, false).await,
        WaitCommand::ServicesStable(args) => wait_services(endpoint, &args).await,
    }
}

/// Whether an ECS service description is stable: one deployment, running = desired.
pub fn is_stable(service: &Value) -> bool {
    service["deployments"].as_array().map(Vec::len) == Some(1)
        && service["runningCount"] == service["desiredCount"]
        && service["pendingCount"] == 0
}

async fn wait_services(endpoint: &str, args: &WaitServices) -> anyhow::Result<()> {
    let client = Client::new(endpoint)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
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
        if services.iter().all(is_stable) {
            progress.finish();
            eprintln!("{} stable", args.services.join(", "));
            return Ok(());
        }
        if Instant::now() > deadline {
            progress.finish();
            bail!("timed out after {} s waiting for services to be stable: see the events in `orc describe-services`", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_tasks(endpoint: &str, args: &WaitTasks, want_running: bool) -> anyhow::Result<()> {
    let client = Client::new(endpoint)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
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
            bail!("timed out after {} s waiting for tasks to be {goal}: raise --timeout or check `orc describe-tasks`", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
