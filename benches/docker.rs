//! orc on the real Docker Engine of this machine: how fast tasks start, how
//! many run at once, what the agent costs, and how fast orc heals.
//!
//! Run: `bench/docker.sh` (or `cargo bench --bench docker`). Needs a running
//! Docker Engine and Debian's busybox-static (the image is made locally with
//! `docker import`, as the tests do; nothing is pulled).
//!
//! What is measured (one `orc server --bootstrap` and `orc agent` processes,
//! the release binary cargo builds for the bench, default flags; the
//! heartbeat interval of the agents is the default 2 s):
//!
//! 1. run-task → RUNNING against `docker run -d`: the clock starts when the
//!    `orc run-task --output json` process is spawned; after it prints the
//!    task ARN, the bench polls `DescribeTasks` (gRPC, `orc::client::Client`)
//!    every 10 ms until lastStatus is RUNNING. For Docker the clock starts
//!    when `docker run -d` is spawned and stops when the Engine API's inspect
//!    (bollard, polled every 10 ms) says the container is running. Same image,
//!    command and memory limit. One warm-up of each, then N trials, order
//!    alternating; median and ratio.
//! 2. 100 tasks at once on one instance: 10 `RunTask` calls of count 10
//!    back to back, until all 100 are RUNNING; then 100 `StopTask` calls,
//!    until all are STOPPED and until every container (and, for the
//!    two-container tasks, every task network) is gone from the Engine.
//! 3. The agent's VmRSS after 5 s idle with no task (fresh start), the
//!    server's for reference, and the agent's (and server's) CPU
//!    (utime+stime from /proc/PID/stat) over 10 s while 20 tasks run.
//! 4. A service of 2: `docker kill` (the Engine API's kill, SIGKILL) of one
//!    of its containers → the service has 2 RUNNING tasks again, one new.
//!    A fresh service per trial (a service's restart back-off grows with
//!    consecutive failures; this measures one kill).
//! 5. Two agents on the same Engine (different --data-dir), a service of 4
//!    spread over both; SIGKILL one agent and `docker rm -f` its containers
//!    (the Pi lost power) → 4 RUNNING tasks, all on the survivor.
//!
//! Knobs: ORC_BENCH_START_TRIALS (10), ORC_BENCH_HEAL_TRIALS (5),
//! ORC_BENCH_LOSS_TRIALS (3), ORC_BENCH_SKIP (comma list of 1..5).
//! Logs of every orc process (RUST_LOG=info) and the server's /metrics at
//! the end are kept in $CARGO_TARGET_DIR/docker-bench/.
//!
//! Everything started here is removed when the guards drop, also on panic
//! or ctrl-c: orc processes are SIGKILLed (and get PR_SET_PDEATHSIG), then
//! containers and networks are removed by their `orc.instance-id` label, and
//! the `docker run` containers by the `orc.bench` label.
//!
//! This is a benchmark, not a test: it asserts nothing about timing.

#[path = "../tests/common/images.rs"]
mod images;

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bollard::Docker;
use common::knob;
use orc::client::Client;
use serde_json::{json, Value};

const IMAGE: &str = "orc-test/busybox:1";
/// A well-behaved long-running container: exits at once on SIGTERM.
const SLEEPER: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

fn orc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_orc")
}

fn skipped(part: u32) -> bool {
    std::env::var("ORC_BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|p| p.trim() == part.to_string())
}

fn log_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("docker-bench")
}

fn bench_label() -> String {
    format!("orc.bench=docker-{}", std::process::id())
}

// ---------------------------------------------------------------- processes

/// A child process, SIGKILLed on drop.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, args: &[String], log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("create a log file");
        let mut command = Command::new(orc_bin());
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Agent {
    proc: Proc,
    data_dir: PathBuf,
}

impl Agent {
    fn instance_id(&self) -> Option<String> {
        instance_id_in(&self.data_dir)
    }
}

fn instance_id_in(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("agent.json")).ok()?;
    let saved: Value = serde_json::from_str(&text).ok()?;
    saved["container_instance_id"]
        .as_str()
        .or(saved["containerInstanceId"].as_str())
        .map(str::to_string)
}

/// One server and its agents; on drop kills them all and removes every
/// container and network any of its agents (even killed ones) made.
struct Stack {
    address: String,
    server: Proc,
    agents: Vec<Agent>,
    /// Every agent data dir ever used (killed agents' too).
    agent_dirs: Vec<PathBuf>,
    logs: PathBuf,
    root: tempfile::TempDir,
}

impl Stack {
    async fn start() -> anyhow::Result<Stack> {
        let root = tempfile::tempdir()?;
        let logs = log_dir();
        std::fs::create_dir_all(&logs)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let server = Proc::spawn(
            "orc server",
            &[
                "server".into(),
                "--bootstrap".into(),
                "--data-dir".into(),
                root.path().join("server").display().to_string(),
                "--listen".into(),
                address.clone(),
                // Plain text, as when these figures were taken.
                "--insecure".into(),
            ],
            logs.join("server.log"),
        );
        let mut stack = Stack {
            address,
            server,
            agents: vec![],
            agent_dirs: vec![],
            logs,
            root,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            stack.server.check_alive()?;
            let ready = stack
                .client()
                .call("DescribeClusters", json!({}))
                .await
                .map(|(a, _)| a["clusters"].as_array().is_some_and(|c| !c.is_empty()))
                .unwrap_or(false);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("the server never became ready; see server.log");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(stack)
    }

    fn client(&self) -> Client {
        let mut client = Client::new(&self.address).expect("client");
        client.retry_for = Duration::from_secs(10);
        client
    }

    async fn call(&self, action: &str, body: Value) -> anyhow::Result<Value> {
        self.client()
            .call(action, body.clone())
            .await
            .map(|(answer, _)| answer)
            .map_err(|e| anyhow!("{action} {body} failed: {e}"))
    }

    /// Starts an agent with its own data dir; waits until its instance is
    /// registered and connected; returns its index.
    async fn start_agent(&mut self, name: &str) -> anyhow::Result<usize> {
        let data_dir = self.root.path().join(name);
        self.agent_dirs.push(data_dir.clone());
        let proc = Proc::spawn(
            &format!("orc agent {name}"),
            &[
                "agent".into(),
                "--server".into(),
                self.address.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--insecure".into(),
            ],
            self.logs.join(format!("{name}.log")),
        );
        self.agents.push(Agent { proc, data_dir });
        let index = self.agents.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.agents[index].proc.check_alive()?;
            if let Some(id) = self.agents[index].instance_id() {
                if self.instance_connected(&id).await? == Some(true) {
                    return Ok(index);
                }
            }
            if Instant::now() > deadline {
                bail!("agent {name} never registered");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn instance_connected(&self, id: &str) -> anyhow::Result<Option<bool>> {
        let answer = self
            .call(
                "DescribeContainerInstances",
                json!({"containerInstances": [id]}),
            )
            .await?;
        Ok(answer["containerInstances"]
            .as_array()
            .and_then(|a| a.first())
            .map(|i| i["agentConnected"] == true && i["status"] == "ACTIVE"))
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        let mut stream = std::net::TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.proc.kill();
        }
        self.server.kill();
        for dir in &self.agent_dirs {
            if let Some(id) = instance_id_in(dir) {
                remove_by_label(&format!("orc.instance-id={id}"));
            }
        }
    }
}

/// Removes (forcefully) every container, then every network, with `label`.
fn remove_by_label(label: &str) {
    let filter = format!("label={label}");
    let containers = docker_lines(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&containers)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let networks = docker_lines(&["network", "ls", "-q", "--filter", &filter]);
    if !networks.is_empty() {
        let _ = Command::new("docker")
            .args(["network", "rm"])
            .args(&networks)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the `docker run` containers of this bench on drop.
struct DockerRunGuard;

impl Drop for DockerRunGuard {
    fn drop(&mut self) {
        remove_by_label(&bench_label());
    }
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker command");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------ /proc

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

// ------------------------------------------------------------------ tasks

fn task_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

async fn run_tasks(stack: &Stack, definition: &str, count: u32) -> anyhow::Result<Vec<String>> {
    let answer = stack
        .call(
            "RunTask",
            json!({"taskDefinition": definition, "count": count}),
        )
        .await?;
    let ids: Vec<String> = answer["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(task_id))
        .collect();
    if ids.len() != count as usize {
        bail!("run-task placed {} of {count}: {answer}", ids.len());
    }
    Ok(ids)
}

async fn describe(stack: &Stack, ids: &[String]) -> anyhow::Result<Vec<Value>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let answer = stack.call("DescribeTasks", json!({"tasks": ids})).await?;
    Ok(answer["tasks"].as_array().cloned().unwrap_or_default())
}

fn count_status(tasks: &[Value], status: &str) -> usize {
    tasks.iter().filter(|t| t["lastStatus"] == status).count()
}

async fn service_task_ids(stack: &Stack, service: &str) -> anyhow::Result<Vec<String>> {
    let answer = stack
        .call("ListTasks", json!({"serviceName": service}))
        .await?;
    Ok(answer["taskArns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(task_id))
        .collect())
}

/// The service's RUNNING tasks (described).
async fn service_running(stack: &Stack, service: &str) -> anyhow::Result<Vec<Value>> {
    let ids = service_task_ids(stack, service).await?;
    Ok(describe(stack, &ids)
        .await?
        .into_iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .collect())
}

/// Creates service `name` of `count` tasks of `task_definition` and waits
/// (60 s at most) until all of them run; returns them as described.
async fn start_service(
    stack: &Stack,
    name: &str,
    task_definition: &str,
    count: usize,
) -> anyhow::Result<Vec<Value>> {
    stack
        .call(
            "CreateService",
            json!({"serviceName": name, "taskDefinition": task_definition, "desiredCount": count}),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = service_running(stack, name).await?;
        if running.len() == count {
            return Ok(running);
        }
        if Instant::now() > deadline {
            bail!("service {name} never ran {count} tasks");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_all(stack: &Stack, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        stack
            .call("StopTask", json!({"task": id, "reason": "bench"}))
            .await?;
    }
    Ok(())
}

/// Waits until `ids` are all STOPPED and the agent at `agent` has no
/// container and no network left (or `timeout`).
async fn wait_gone(
    stack: &Stack,
    ids: &[String],
    instance: &str,
    timeout: Duration,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let filter = format!("label=orc.instance-id={instance}");
    let mut stopped_at = None;
    let mut last_report = Instant::now();
    loop {
        let tasks = describe(stack, ids).await?;
        let stopped = count_status(&tasks, "STOPPED");
        if stopped == ids.len() && stopped_at.is_none() {
            stopped_at = Some(started.elapsed());
        }
        let containers = docker_lines(&["ps", "-aq", "--filter", &filter]).len();
        let networks = docker_lines(&["network", "ls", "-q", "--filter", &filter]).len();
        if let Some(stopped_at) = stopped_at {
            if containers == 0 && networks == 0 {
                return Ok((stopped_at, started.elapsed()));
            }
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "    {:>5.1}s  stopped {stopped}/{}  containers left {containers}  networks left {networks}",
                started.elapsed().as_secs_f64(),
                ids.len()
            );
        }
        if started.elapsed() > timeout {
            bail!(
                "after {timeout:?}: {stopped}/{} stopped, {containers} containers and {networks} networks left",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------- report

struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            target: "-".into(),
            met: None,
        });
    }

    fn target(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            target: target.into(),
            met: Some(met),
        });
    }

    fn print(&self) {
        let w = self
            .rows
            .iter()
            .map(|r| r.figure.len())
            .max()
            .unwrap_or(10)
            .max(6);
        let v = self
            .rows
            .iter()
            .map(|r| r.value.len())
            .max()
            .unwrap_or(5)
            .max(5);
        println!(
            "| {:<w$} | {:>v$} | {:<8} | {:<6} |",
            "figure", "value", "target", "result"
        );
        println!(
            "|{}|{}:|{}|{}|",
            "-".repeat(w + 2),
            "-".repeat(v + 1),
            "-".repeat(10),
            "-".repeat(8)
        );
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            println!(
                "| {:<w$} | {:>v$} | {:<8} | {:<6} |",
                r.figure, r.value, r.target, met
            );
        }
        for note in &self.notes {
            println!("\n{note}");
        }
    }
}

// ------------------------------------------------------------------ parts

fn single_container(family: &str, image: &str) -> Value {
    json!({"family": family, "containerDefinitions": [{
        "name": "main", "image": image, "memory": 16, "stopTimeout": 2,
        "command": ["sh", "-c", SLEEPER]
    }]})
}

fn two_containers(family: &str, image: &str) -> Value {
    json!({"family": family, "containerDefinitions": [
        {"name": "main", "image": image, "memory": 16, "stopTimeout": 2,
         "command": ["sh", "-c", SLEEPER]},
        {"name": "side", "image": image, "memory": 16, "stopTimeout": 2,
         "command": ["sh", "-c", SLEEPER]}
    ]})
}

async fn wait_running(stack: &Stack, id: &str, poll: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = describe(stack, &[id.to_string()]).await?;
        match tasks
            .first()
            .map(|t| t["lastStatus"].as_str().unwrap_or(""))
        {
            Some("RUNNING") => return Ok(()),
            Some("STOPPED") => bail!("task {id} stopped: {}", tasks[0]),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("task {id} not RUNNING after 60 s");
        }
        tokio::time::sleep(poll).await;
    }
}

/// One `orc run-task` from process spawn to RUNNING; returns (ms, task id).
async fn orc_start_once(stack: &Stack) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let out = tokio::process::Command::new(orc_bin())
        .args([
            "--endpoint",
            &stack.address,
            "--output",
            "json",
            "run-task",
            "--task-definition",
            "bench-start",
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "orc run-task failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answer: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("run-task printed {}", String::from_utf8_lossy(&out.stdout)))?;
    let id = task_id(
        answer["tasks"][0]["taskArn"]
            .as_str()
            .ok_or_else(|| anyhow!("run-task placed nothing: {answer}"))?,
    );
    wait_running(stack, &id, Duration::from_millis(10)).await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, id))
}

/// One `docker run -d` from process spawn to running; returns (ms, id).
async fn docker_start_once(docker: &Docker, image: &str) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            &bench_label(),
            "--memory",
            "16m",
            image,
            "sh",
            "-c",
            SLEEPER,
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inspect = docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
        if inspect.state.and_then(|s| s.running) == Some(true) {
            break;
        }
        if Instant::now() > deadline {
            bail!("container {id} not running after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0, id))
}

async fn part1_start_latency(
    stack: &Stack,
    instance: &str,
    docker: &Docker,
    image: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let trials = knob("ORC_BENCH_START_TRIALS", 10_usize);
    eprintln!("[1] run-task → RUNNING vs docker run -d: 1 warm-up + {trials} trials each");
    stack
        .call(
            "RegisterTaskDefinition",
            single_container("bench-start", image),
        )
        .await?;
    let mut orc_ms = vec![];
    let mut docker_ms = vec![];
    for trial in 0..=trials {
        let order: [bool; 2] = if trial % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut orc_task = None;
        let mut docker_id = None;
        let (mut orc_trial, mut docker_trial) = (0.0, 0.0);
        for is_orc in order {
            if is_orc {
                let (ms, id) = orc_start_once(stack).await?;
                orc_task = Some(id);
                orc_trial = ms;
            } else {
                let (ms, id) = docker_start_once(docker, image).await?;
                docker_id = Some(id);
                docker_trial = ms;
            }
        }
        if trial > 0 {
            orc_ms.push(orc_trial);
            docker_ms.push(docker_trial);
        }
        eprintln!(
            "    trial {trial}{}: orc {orc_trial:.0} ms, docker {docker_trial:.0} ms",
            if trial == 0 {
                " (warm-up, not counted)"
            } else {
                ""
            },
        );
        // Back to an empty engine before the next trial.
        if let Some(id) = docker_id {
            docker
                .remove_container(
                    &id,
                    Some(bollard::query_parameters::RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await?;
        }
        if let Some(id) = orc_task {
            stop_all(stack, std::slice::from_ref(&id)).await?;
            wait_gone(stack, &[id], instance, Duration::from_secs(60)).await?;
        }
    }
    let orc_raw = orc_ms.clone();
    let docker_raw = docker_ms.clone();
    let orc_median = median(&mut orc_ms);
    let docker_median = median(&mut docker_ms);
    let ratio = orc_median / docker_median;
    report.add(
        format!("1. orc run-task → RUNNING, median of {trials} (ms)"),
        format!("{orc_median:.0}"),
    );
    report.add(
        format!("1. docker run -d → running, median of {trials} (ms)"),
        format!("{docker_median:.0}"),
    );
    report.target(
        "1. ratio orc / docker",
        format!("{ratio:.2}x"),
        "≤ 1.2x",
        ratio <= 1.2,
    );
    report.notes.push(format!(
        "1. trials (ms): orc [{}]; docker [{}]",
        list(&orc_raw),
        list(&docker_raw)
    ));
    Ok(())
}

async fn part2_hundred(
    stack: &Stack,
    instance: &str,
    image: &str,
    family: &str,
    multi: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let kind = if multi { "2 containers" } else { "1 container" };
    eprintln!("[2] 100 tasks of {kind} at once");
    let document = if multi {
        two_containers(family, image)
    } else {
        single_container(family, image)
    };
    stack.call("RegisterTaskDefinition", document).await?;
    let started = Instant::now();
    let mut ids = vec![];
    for _ in 0..10 {
        ids.extend(run_tasks(stack, family, 10).await?);
    }
    let placed = started.elapsed();
    eprintln!(
        "    10 run-task calls answered in {:.0} ms",
        placed.as_secs_f64() * 1000.0
    );
    let mut last_report = Instant::now();
    let all_running = loop {
        let tasks = describe(stack, &ids).await?;
        let running = count_status(&tasks, "RUNNING");
        let stopped = count_status(&tasks, "STOPPED");
        if stopped > 0 {
            let first = tasks.iter().find(|t| t["lastStatus"] == "STOPPED").unwrap();
            bail!("{stopped} tasks stopped while starting, e.g. {first}");
        }
        if running == ids.len() {
            break started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "    {:>5.1}s  running {running}/100",
                started.elapsed().as_secs_f64()
            );
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {running}/100 RUNNING after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "    all 100 RUNNING after {:.1} s",
        all_running.as_secs_f64()
    );
    let containers = docker_lines(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=orc.instance-id={instance}"),
    ])
    .len();
    let networks = docker_lines(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=orc.instance-id={instance}"),
    ])
    .len();
    eprintln!("    engine: {containers} running containers, {networks} task networks");

    let stop_started = Instant::now();
    stop_all(stack, &ids).await?;
    let stop_calls = stop_started.elapsed();
    let (stopped, removed) = wait_gone(stack, &ids, instance, Duration::from_secs(300)).await?;
    let stopped = stopped + stop_calls;
    let removed = removed + stop_calls;
    eprintln!(
        "    100 stop-task calls in {:.0} ms; all STOPPED after {:.1} s, all removed after {:.1} s",
        stop_calls.as_secs_f64() * 1000.0,
        stopped.as_secs_f64(),
        removed.as_secs_f64()
    );
    report.add(
        format!("2. 100 tasks × {kind}: run-task calls → all RUNNING (s)"),
        format!("{:.1}", all_running.as_secs_f64()),
    );
    report.add(
        format!("2. 100 tasks × {kind}: stop-task calls → all STOPPED (s)"),
        format!("{:.1}", stopped.as_secs_f64()),
    );
    report.add(
        format!(
            "2. 100 tasks × {kind}: stop-task calls → containers{} removed (s)",
            if multi { " + networks" } else { "" }
        ),
        format!("{:.1}", removed.as_secs_f64()),
    );
    report.notes.push(format!(
        "2. {kind}: 10 run-task calls answered in {:.0} ms; {containers} containers and {networks} networks while running; 100 stop-task calls took {:.0} ms",
        placed.as_secs_f64() * 1000.0,
        stop_calls.as_secs_f64() * 1000.0
    ));
    Ok(())
}

async fn part3_cpu(
    stack: &Stack,
    instance: &str,
    image: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("[3] agent CPU while 20 tasks run (10 s)");
    stack
        .call(
            "RegisterTaskDefinition",
            single_container("bench-cpu", image),
        )
        .await?;
    let mut ids = run_tasks(stack, "bench-cpu", 10).await?;
    ids.extend(run_tasks(stack, "bench-cpu", 10).await?);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running = count_status(&describe(stack, &ids).await?, "RUNNING");
        if running == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {running}/20 RUNNING after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent_pid = stack.agents[0].proc.pid();
    let server_pid = stack.server.pid();
    let ticks = clock_ticks_per_second();
    let (a0, s0, t0) = (
        cpu_ticks(agent_pid)?,
        cpu_ticks(server_pid)?,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (a1, s1, elapsed) = (cpu_ticks(agent_pid)?, cpu_ticks(server_pid)?, t0.elapsed());
    let agent_pct = (a1 - a0) as f64 / ticks / elapsed.as_secs_f64() * 100.0;
    let server_pct = (s1 - s0) as f64 / ticks / elapsed.as_secs_f64() * 100.0;
    let agent_rss = vm_rss_kib(agent_pid)? as f64 / 1024.0;
    eprintln!(
        "    agent {agent_pct:.2}% of a core ({} ticks), server {server_pct:.2}%, agent RSS {agent_rss:.1} MiB",
        a1 - a0
    );
    report.add(
        "3. agent CPU, 20 tasks running, 10 s (% of one core)",
        format!("{agent_pct:.2}"),
    );
    report.add(
        "3. server CPU, same window (% of one core)",
        format!("{server_pct:.2}"),
    );
    report.add(
        "3. agent VmRSS with 20 tasks running (MiB)",
        format!("{agent_rss:.1}"),
    );
    stop_all(stack, &ids).await?;
    wait_gone(stack, &ids, instance, Duration::from_secs(120)).await?;
    Ok(())
}

async fn part4_heal(
    stack: &Stack,
    instance: &str,
    docker: &Docker,
    image: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let trials = knob("ORC_BENCH_HEAL_TRIALS", 5_usize);
    eprintln!("[4] docker kill of a service task → 2 RUNNING again: {trials} trials");
    stack
        .call(
            "RegisterTaskDefinition",
            single_container("bench-heal", image),
        )
        .await?;
    let mut samples = vec![];
    for trial in 1..=trials {
        let name = format!("heal-{trial}");
        let before = start_service(stack, &name, "bench-heal", 2).await?;
        // Let the service settle (steady state) before the kill.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before_ids: BTreeSet<String> = before
            .iter()
            .filter_map(|t| t["taskArn"].as_str().map(task_id))
            .collect();
        let victim = before[0]["containers"][0]["runtimeId"]
            .as_str()
            .ok_or_else(|| anyhow!("no runtimeId: {}", before[0]))?
            .to_string();
        let started = Instant::now();
        docker
            .kill_container(
                &victim,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running = service_running(stack, &name).await?;
            let new = running
                .iter()
                .filter_map(|t| t["taskArn"].as_str().map(task_id))
                .filter(|id| !before_ids.contains(id))
                .count();
            if running.len() == 2 && new >= 1 {
                break;
            }
            if Instant::now() > deadline {
                bail!("service {name} did not heal in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("    trial {trial}: {ms:.0} ms");
        samples.push(ms);
        stack
            .call("DeleteService", json!({"service": name, "force": true}))
            .await?;
        let ids = service_task_ids(stack, &name).await?;
        let mut all: Vec<String> = before_ids.into_iter().collect();
        all.extend(ids);
        all.sort();
        all.dedup();
        wait_gone(stack, &all, instance, Duration::from_secs(60)).await?;
    }
    let raw = samples.clone();
    let m = median(&mut samples);
    report.target(
        format!("4. docker kill → service back to 2 RUNNING, median of {trials} (ms)"),
        format!("{m:.0}"),
        "< 2000",
        m < 2000.0,
    );
    report
        .notes
        .push(format!("4. trials (ms): [{}]", list(&raw)));
    Ok(())
}

async fn part5_instance_loss(
    stack: &mut Stack,
    image: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let trials = knob("ORC_BENCH_LOSS_TRIALS", 3_usize);
    eprintln!("[5] instance loss → its tasks running on the survivor: {trials} trials");
    let survivor = stack.agents[0]
        .instance_id()
        .ok_or_else(|| anyhow!("no instance id"))?;
    stack
        .call(
            "RegisterTaskDefinition",
            single_container("bench-loss", image),
        )
        .await?;
    let mut samples = vec![];
    let mut disconnected_samples = vec![];
    for trial in 1..=trials {
        let index = stack.start_agent(&format!("agent-b{trial}")).await?;
        let doomed = stack.agents[index]
            .instance_id()
            .ok_or_else(|| anyhow!("no instance id"))?;
        let name = format!("loss-{trial}");
        let placed = start_service(stack, &name, "bench-loss", 4).await?;
        let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
        for t in &placed {
            let arn = t["containerInstanceArn"].as_str().unwrap_or("?");
            *per_instance.entry(task_id(arn)).or_default() += 1;
        }
        let on_doomed = per_instance.get(&doomed).copied().unwrap_or(0);
        eprintln!(
            "    trial {trial}: placement {per_instance:?} ({on_doomed} on the doomed instance)"
        );
        // A heartbeat of the doomed agent is at most 2 s old here, as on a real cluster.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let started = Instant::now();
        stack.agents[index].proc.kill();
        remove_by_label(&format!("orc.instance-id={doomed}"));
        let rm_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut disconnected_at = None;
        let mut last_report = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if disconnected_at.is_none() && stack.instance_connected(&doomed).await? != Some(true) {
                disconnected_at = Some(started.elapsed());
                eprintln!(
                    "    {:>5.1}s  the instance is no longer connected",
                    started.elapsed().as_secs_f64()
                );
            }
            let running = service_running(stack, &name).await?;
            let on_survivor = running
                .iter()
                .filter(|t| {
                    t["containerInstanceArn"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(&survivor))
                })
                .count();
            if on_survivor == 4 && running.len() == 4 {
                break;
            }
            if last_report.elapsed() > Duration::from_secs(1) {
                last_report = Instant::now();
                eprintln!(
                    "    {:>5.1}s  RUNNING {} ({} on the survivor)",
                    started.elapsed().as_secs_f64(),
                    running.len(),
                    on_survivor
                );
            }
            if Instant::now() > deadline {
                bail!("service {name} not back to 4 on the survivor after 90 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "    trial {trial}: {ms:.0} ms (docker rm -f took {rm_ms:.0} ms; disconnected after {:.1} s)",
            disconnected_at.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN)
        );
        samples.push(ms);
        if let Some(d) = disconnected_at {
            disconnected_samples.push(d.as_secs_f64() * 1000.0);
        }
        stack
            .call("DeleteService", json!({"service": name, "force": true}))
            .await?;
        let ids: Vec<String> = service_task_ids(stack, &name).await?;
        // Only the survivor's tasks can stop now (the doomed ones stay with
        // their lost instance); wait for the survivor's containers to go.
        let survivor_ids: Vec<String> = describe(stack, &ids)
            .await?
            .iter()
            .filter(|t| {
                t["containerInstanceArn"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&survivor))
            })
            .filter_map(|t| t["taskArn"].as_str().map(task_id))
            .collect();
        wait_gone(stack, &survivor_ids, &survivor, Duration::from_secs(60)).await?;
    }
    let raw = samples.clone();
    let m = median(&mut samples);
    let d = median(&mut disconnected_samples.clone());
    report.target(
        format!("5. agent SIGKILL → 4 RUNNING on the survivor, median of {trials} (ms)"),
        format!("{m:.0}"),
        "< 15000",
        m < 15000.0,
    );
    report.add(
        "5.   of which: kill → instance seen disconnected, median (ms)",
        format!("{d:.0}"),
    );
    report.notes.push(format!(
        "5. trials (ms): [{}]; kill → disconnected (ms): [{}]",
        list(&raw),
        list(&disconnected_samples)
    ));
    Ok(())
}

async fn bench(report: &mut Report) -> anyhow::Result<()> {
    let _docker_run_guard = DockerRunGuard;
    eprintln!("building the image {IMAGE} (docker import of /bin/busybox) if needed");
    let image = images::busybox_image(IMAGE);
    let docker = Docker::connect_with_local_defaults()?;
    docker
        .ping()
        .await
        .context("the Docker Engine does not answer")?;

    eprintln!("starting orc server --bootstrap and orc agent");
    let mut stack = Stack::start().await?;
    stack.start_agent("agent-a").await?;
    let instance = stack.agents[0]
        .instance_id()
        .ok_or_else(|| anyhow!("no instance id"))?;

    eprintln!("[3] idle RSS: 5 s with no task");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let agent_rss = vm_rss_kib(stack.agents[0].proc.pid())? as f64 / 1024.0;
    let server_rss = vm_rss_kib(stack.server.pid())? as f64 / 1024.0;
    eprintln!("    agent {agent_rss:.1} MiB, server {server_rss:.1} MiB");
    report.target(
        "3. agent VmRSS, fresh, 5 s idle, no task (MiB)",
        format!("{agent_rss:.1}"),
        "< 15",
        agent_rss < 15.0,
    );
    report.add(
        "3. server VmRSS, same moment (MiB)",
        format!("{server_rss:.1}"),
    );

    if !skipped(1) {
        part1_start_latency(&stack, &instance, &docker, &image, report).await?;
    }
    if !skipped(3) {
        part3_cpu(&stack, &instance, &image, report).await?;
    }
    if !skipped(2) {
        part2_hundred(&stack, &instance, &image, "bench-one", false, report).await?;
        part2_hundred(&stack, &instance, &image, "bench-two", true, report).await?;
    }
    if !skipped(4) {
        part4_heal(&stack, &instance, &docker, &image, report).await?;
    }

    eprintln!("[3] idle RSS again after the runs above, 5 s with no task");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let agent_rss = vm_rss_kib(stack.agents[0].proc.pid())? as f64 / 1024.0;
    let server_rss = vm_rss_kib(stack.server.pid())? as f64 / 1024.0;
    eprintln!("    agent {agent_rss:.1} MiB, server {server_rss:.1} MiB");
    report.add(
        "3. agent VmRSS, idle after parts 1-4 (MiB)",
        format!("{agent_rss:.1}"),
    );
    report.add(
        "3. server VmRSS, idle after parts 1-4 (MiB)",
        format!("{server_rss:.1}"),
    );

    if !skipped(5) {
        part5_instance_loss(&mut stack, &image, report).await?;
    }

    match stack.metrics().await {
        Ok(text) => {
            let path = stack.logs.join("metrics.txt");
            std::fs::write(&path, text)?;
            eprintln!("server /metrics saved to {}", path.display());
        }
        Err(e) => eprintln!("cannot read /metrics: {e}"),
    }
    eprintln!("logs in {}", stack.logs.display());
    drop(stack);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = Report::default();
    let result = runtime.block_on(async {
        tokio::select! {
            result = bench(&mut report) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // The guards have dropped; say what the engine still holds.
    let leftovers_containers =
        docker_lines(&["ps", "-aq", "--filter", &format!("label={}", bench_label())]);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "orc on the local Docker Engine ({} CPUs, {}), {}",
        cpus,
        std::env::consts::ARCH,
        docker_lines(&["version", "--format", "Docker Engine {{.Server.Version}}"]).join(" ")
    );
    report.print();
    if !leftovers_containers.is_empty() {
        eprintln!("warning: docker run containers left: {leftovers_containers:?}");
    }
    result
}
