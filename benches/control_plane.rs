//! Control-plane benchmark: a 3-server orc cluster against a 3-member etcd
//! cluster, both on loopback on this machine, in one run.
//!
//! Run it with `bench/control-plane.sh` (which builds in release and runs
//! `cargo bench --features bench-etcd --bench control_plane`; the feature
//! brings in the `etcd-client` crate). It measures, for each system:
//!
//! 1. committed writes/s and p50/p99 commit latency at 1, 16 and 256
//!    concurrent clients. Every client has its own connection to the
//!    **leader** and issues writes back to back: after one untimed write to
//!    open the connection, 1 s of warm-up, then a 5 s window. A write counts
//!    when it completes inside the window; its latency is measured from the
//!    client's send to the client receiving the answer. An orc write is the
//!    ECS action `CreateCluster {"clusterName": "bench-<n>"}` through
//!    `orc::client::Client::call`; an etcd write is `Put bench/<n>` with a value
//!    as long as orc's raft entry for that write (the JSON proposal orc
//!    replicates), through the `etcd-client` crate. Both clusters run side
//!    by side and the windows are interleaved: per level, ORC_BENCH_ROUNDS
//!    rounds (3) of one window per system, the order alternating between
//!    rounds, and the window with the median writes/s is reported (with
//!    every round's figure). A shared 2-core machine drifts by tens of
//!    per cent within minutes; interleaving puts both systems under the
//!    same drift instead of measuring one early and the other late. Each
//!    window also reports the host's CPU steal (from /proc/stat): on a
//!    virtual machine a busy neighbour takes CPU away, and a window with
//!    steal well above the others measured the neighbour, not the system
//!    (the targets end with a warning when a reported window lost more
//!    than 10%).
//! 2. leader failover: SIGKILL the leader, then from the kill start a new write
//!    attempt every 20 ms, alternating between the two surviving members (each
//!    attempt may run up to 5 s; orc's client-side retry is off so every attempt
//!    is one RPC). The figure is the time from the kill to the first attempt
//!    that succeeds. The killed member is restarted from its data dir and the
//!    cluster is let settle before the next trial (9 trials, alternating
//!    between the systems); the median is reported.
//!
//! 2b. user-visible failover: SIGKILL the leader, then at once send ONE write
//!    to a surviving follower, as a person at the CLI would: orc's client
//!    with its default retry (sequential attempts under one request id),
//!    etcd's client doing the same single put, retried sequentially on an
//!    error (the etcd-client crate does not retry by itself; etcd's Go
//!    client does). No overlapping attempts. The figure is the time from
//!    the kill to that write's answer (median of the trials; the killed
//!    member is restarted between trials). ORC_BENCH_FAILOVER_TRIALS sets
//!    the count for both kinds of failover.
//!
//! 2c. write through a follower: one client, ORC_BENCH_FOLLOWER_WRITES (200)
//!    writes back to back through a follower, then as many through the
//!    leader (after 10 untimed writes each to open the connection); p50 and
//!    p99 of each, and the follower's p50 over the leader's.
//! 3. idle RSS (VmRSS in /proc/PID/status) of each server after 5 s idle on a
//!    freshly formed cluster, before any load.
//! 4. bytes written to disk by the idle cluster over 10 s: the sum over
//!    members of the growth of `write_bytes` in /proc/PID/io (right after the
//!    RSS reading, still before any load).
//!
//! Both systems run with their defaults (heartbeat 100 ms, election time-out
//! 1000 ms for both), data dirs in a temp dir under $TMPDIR (default /tmp;
//! it must be a disk, not tmpfs, or fsyncs and write_bytes mean nothing).
//! Server logs go to pipes read by this process (not to disk), and the last
//! lines are printed if a server fails.
//!
//! The orc binary is `env!("CARGO_BIN_EXE_orc")` (cargo builds it in the
//! bench profile before running a bench), or `$ORC_BIN` if set. etcd is
//! `etcd` on $PATH or `$ETCD_BIN` (Debian: `apt-get install etcd-server`).
//!
//! Knobs (environment): ORC_BENCH_WARMUP_SECS (1), ORC_BENCH_MEASURE_SECS (5),
//! ORC_BENCH_ROUNDS (3), ORC_BENCH_FAILOVER_TRIALS (9; 0 skips failover),
//! ORC_BENCH_SYSTEMS ("orc,etcd"), ORC_BENCH_LEVELS ("1,16,256"),
//! ORC_BENCH_FOLLOWER_WRITES (200; 0 skips the follower figure). The
//! README's figures use the defaults.
//!
//! This is a benchmark, not a test: it asserts nothing about timing.
//! Every child process is killed and every temp dir removed when the guards
//! drop, also on panic; children also get PR_SET_PDEATHSIG so they die if
//! this process is killed.

mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::{free_port, knob};

const LEVELS: [usize; 3] = [1, 16, 256];

/// The client counts to measure: `ORC_BENCH_LEVELS` (e.g. "1,16") or all of
/// `LEVELS`.
fn levels() -> Vec<usize> {
    match std::env::var("ORC_BENCH_LEVELS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .filter(|n| LEVELS.contains(n))
            .collect(),
        Err(_) => LEVELS.to_vec(),
    }
}
const ATTEMPT_EVERY: Duration = Duration::from_millis(20);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FAILOVER_GIVE_UP: Duration = Duration::from_secs(30);
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(5);
const IDLE_IO_WINDOW: Duration = Duration::from_secs(10);

macro_rules! progress {
    ($($arg:tt)*) => {{
        eprintln!("[control-plane {:>7.1}s] {}", started().elapsed().as_secs_f64(), format!($($arg)*));
    }};
}

fn started() -> &'static Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now)
}

// ---------------------------------------------------------------- processes

/// A child process that is SIGKILLed and reaped when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[String]) -> Proc {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    if log.len() == 40 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let pid = child.id();
        Proc {
            name: name.to_string(),
            child: Some(child),
            pid,
            log,
        }
    }

    fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let mut out = String::new();
        for line in log.iter() {
            let _ = writeln!(out, "    {}| {line}", self.name);
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| {
            rest.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS").unwrap_or(0)
}

fn write_bytes(pid: u32) -> u64 {
    proc_field(pid, "io", "write_bytes").unwrap_or(0)
}

/// utime + stime in clock ticks.
/// The machine's (steal, total) CPU ticks from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total = values.iter().take(8).sum();
    (values.get(7).copied().unwrap_or(0), total)
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

// ---------------------------------------------------------------- writers

/// The value size of an etcd write: the length of orc's raft entry for one write.
fn orc_write_sizes() -> (usize, usize) {
    let proposal = orc::store::Proposal {
        request_id: orc::client::request_id(),
        command: orc::store::Command::CreateCluster {
            cluster_name: "bench-1000000".into(),
            tags: vec![],
            now_ms: 1_763_700_000_000,
        },
    };
    let entry = serde_json::to_vec(&proposal).unwrap().len();
    let request = orc::wire::proto::ActionRequest {
        action: "CreateCluster".into(),
        body_json: json!({"clusterName": "bench-1000000"}).to_string(),
        request_id: orc::client::request_id(),
    };
    (entry, prost::Message::encoded_len(&request))
}

#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per client task; boxing buys nothing here
enum Writer {
    Orc(orc::client::Client),
    Etcd(etcd_client::Client, Arc<Vec<u8>>),
}

impl Writer {
    async fn write(&mut self, n: u64) -> Result<(), String> {
        match self {
            Writer::Orc(client) => client
                .call(
                    "CreateCluster",
                    json!({"clusterName": format!("bench-{n}")}),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Writer::Etcd(client, value) => client
                .put(format!("bench/{n}"), value.as_slice(), None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

async fn etcd_connect(endpoint: &str) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(15));
    etcd_client::Client::connect([format!("http://{endpoint}")], Some(options))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to etcd at {endpoint}: {e}"))
}

// ---------------------------------------------------------------- clusters

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Orc,
    Etcd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Orc => "orc",
            Kind::Etcd => "etcd",
        }
    }
}

struct Member {
    /// The client (and for orc also peer and /metrics) address.
    client_address: String,
    args: Vec<String>,
    restart_args: Vec<String>,
    proc: Option<Proc>,
}

/// Three servers of one system; kills them before removing their temp dir.
struct Cluster {
    kind: Kind,
    binary: PathBuf,
    members: Vec<Member>,
    value: Arc<Vec<u8>>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.proc = None;
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Cluster {
    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref().map(|p| p.pid))
            .collect()
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref().map(Proc::log_tail))
            .collect()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{} cluster: {what}\nlast server output:\n{}",
            self.kind.name(),
            self.logs()
        );
    }

    fn start_member(&mut self, index: usize, restart: bool) {
        let member = &mut self.members[index];
        let args = if restart {
            &member.restart_args
        } else {
            &member.args
        };
        member.proc = Some(Proc::spawn(
            &format!("{}{}", self.kind.name(), index + 1),
            &self.binary,
            args,
        ));
    }

    async fn start(kind: Kind, value: Arc<Vec<u8>>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("orc-bench-{}-", kind.name()))
            .tempdir()
            .expect("create a temp dir");
        let binary = match kind {
            Kind::Orc => orc_binary(),
            Kind::Etcd => etcd_binary(),
        };
        let mut cluster = Cluster {
            kind,
            binary,
            members: Vec::new(),
            value,
            dir: Some(dir),
        };
        match kind {
            Kind::Orc => {
                let addresses: Vec<String> = (0..3)
                    .map(|_| format!("127.0.0.1:{}", free_port()))
                    .collect();
                for (i, address) in addresses.iter().enumerate() {
                    let data = cluster.dir().join(format!("s{}", i + 1));
                    // Plain text, as before TLS: bench/tls.sh measures TLS's cost.
                    let base = vec![
                        "server".to_string(),
                        "--data-dir".into(),
                        data.display().to_string(),
                        "--listen".into(),
                        address.clone(),
                        "--insecure".into(),
                    ];
                    let mut args = base.clone();
                    if i == 0 {
                        args.push("--bootstrap".into());
                    } else {
                        args.extend(["--join".to_string(), addresses[0].clone()]);
                    }
                    cluster.members.push(Member {
                        client_address: address.clone(),
                        args,
                        restart_args: base,
                        proc: None,
                    });
                }
                for i in 0..3 {
                    progress!(
                        "orc: starting server {} on {}",
                        i + 1,
                        cluster.members[i].client_address
                    );
                    cluster.start_member(i, false);
                    cluster.wait_ready(i + 1, Duration::from_secs(60)).await;
                }
            }
            Kind::Etcd => {
                let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
                let initial: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .map(|(i, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", i + 1))
                    .collect();
                let token = format!("orc-bench-{:x}", rand::random::<u32>());
                for (i, (client, peer)) in ports.iter().enumerate() {
                    let data = cluster.dir().join(format!("m{}", i + 1));
                    let args: Vec<String> = vec![
                        "--name".into(),
                        format!("m{}", i + 1),
                        "--data-dir".into(),
                        data.display().to_string(),
                        "--listen-client-urls".into(),
                        format!("http://127.0.0.1:{client}"),
                        "--advertise-client-urls".into(),
                        format!("http://127.0.0.1:{client}"),
                        "--listen-peer-urls".into(),
                        format!("http://127.0.0.1:{peer}"),
                        "--initial-advertise-peer-urls".into(),
                        format!("http://127.0.0.1:{peer}"),
                        "--initial-cluster".into(),
                        initial.join(","),
                        "--initial-cluster-token".into(),
                        token.clone(),
                        "--initial-cluster-state".into(),
                        "new".into(),
                    ];
                    cluster.members.push(Member {
                        client_address: format!("127.0.0.1:{client}"),
                        restart_args: args.clone(),
                        args,
                        proc: None,
                    });
                }
                progress!(
                    "etcd: starting 3 members on {}",
                    cluster
                        .members
                        .iter()
                        .map(|m| m.client_address.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for i in 0..3 {
                    cluster.start_member(i, false);
                }
                cluster.wait_ready(3, Duration::from_secs(60)).await;
            }
        }
        cluster
    }

    fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for member in &mut self.members {
            if let Some(proc) = &mut member.proc {
                if !proc.alive() {
                    dead.push(proc.name.clone());
                }
            }
        }
        if !dead.is_empty() {
            self.fail(&format!("server(s) {} exited", dead.join(", ")));
        }
    }

    /// The index of the leader if `voters` voters are settled: a leader,
    /// every voter healthy and caught up with the commit index.
    async fn settled(&self, voters: usize) -> Option<usize> {
        match self.kind {
            Kind::Orc => {
                // Ask any running member for the leader.
                let mut status = None;
                for member in self.members.iter().filter(|m| m.proc.is_some()) {
                    let mut c = orc::client::Client::new(&member.client_address).ok()?;
                    c.retry_for = Duration::ZERO;
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(2), c.cluster_status(false)).await
                    {
                        status = Some(s);
                        break;
                    }
                }
                let mut status = status?;
                // Only the leader knows every member's progress and health.
                if status.answering_node_id != status.leader_id {
                    if status.leader_address.is_empty() {
                        return None;
                    }
                    let mut c = orc::client::Client::new(&status.leader_address).ok()?;
                    c.retry_for = Duration::ZERO;
                    status = tokio::time::timeout(Duration::from_secs(2), c.cluster_status(false))
                        .await
                        .ok()?
                        .ok()?;
                    if status.answering_node_id != status.leader_id {
                        return None;
                    }
                }
                let members: Vec<_> = status.members.iter().filter(|m| m.voter).collect();
                if status.leader_id == 0
                    || members.len() != voters
                    || status.members.len() != voters
                    || !members
                        .iter()
                        .all(|m| m.healthy && m.matched_index >= status.commit_index)
                    || status.applied_index < status.commit_index
                {
                    return None;
                }
                self.members
                    .iter()
                    .position(|m| m.client_address == status.leader_address)
            }
            Kind::Etcd => {
                let mut leader = None;
                let mut ids = Vec::new();
                let mut raft_indexes = Vec::new();
                for member in self.members.iter().filter(|m| m.proc.is_some()) {
                    let options = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_secs(2));
                    let mut client = etcd_client::Client::connect(
                        [format!("http://{}", member.client_address)],
                        Some(options),
                    )
                    .await
                    .ok()?;
                    let status = client.status().await.ok()?;
                    if status.leader() == 0 || leader.is_some_and(|l| l != status.leader()) {
                        return None;
                    }
                    leader = Some(status.leader());
                    ids.push(status.header()?.member_id());
                    raft_indexes.push(status.raft_index());
                }
                if ids.len() != voters || raft_indexes.iter().min() != raft_indexes.iter().max() {
                    return None;
                }
                let leader = leader?;
                let position = ids.iter().position(|id| *id == leader)?;
                // `ids` follows the running members in order.
                let running: Vec<usize> = self
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.proc.is_some())
                    .map(|(i, _)| i)
                    .collect();
                Some(running[position])
            }
        }
    }

    /// Each running member's own view, for failure messages.
    async fn describe(&self) -> String {
        let mut out = String::new();
        for (i, member) in self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.proc.is_some())
        {
            let view = match self.kind {
                Kind::Orc => {
                    let mut client =
                        orc::client::Client::new(&member.client_address).expect("an orc client");
                    client.retry_for = Duration::ZERO;
                    match tokio::time::timeout(Duration::from_secs(2), client.cluster_status(false))
                        .await
                    {
                        Ok(Ok(s)) => format!(
                            "answering {} leader {} term {} commit {} applied {} members {:?}",
                            s.answering_node_id,
                            s.leader_id,
                            s.term,
                            s.commit_index,
                            s.applied_index,
                            s.members
                                .iter()
                                .map(|m| format!(
                                    "{}:{}:voter={}:healthy={}:matched={}",
                                    m.id, m.role, m.voter, m.healthy, m.matched_index
                                ))
                                .collect::<Vec<_>>()
                        ),
                        other => format!("no answer: {:?}", other.map(|r| r.err())),
                    }
                }
                Kind::Etcd => match etcd_connect(&member.client_address).await.status().await {
                    Ok(s) => format!(
                        "leader {:x} raft index {} term {}",
                        s.leader(),
                        s.raft_index(),
                        s.raft_term()
                    ),
                    Err(e) => format!("no answer: {e}"),
                },
            };
            let _ = writeln!(out, "    server {}: {view}", i + 1);
        }
        out
    }

    async fn wait_ready(&mut self, voters: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive();
            if let Some(leader) = self.settled(voters).await {
                progress!(
                    "{}: {voters} voter(s) settled, leader is server {}",
                    self.kind.name(),
                    leader + 1
                );
                return leader;
            }
            if Instant::now() > deadline {
                let views = self.describe().await;
                self.fail(&format!(
                    "not settled with {voters} voters after {limit:?}; members' views:\n{views}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn writer(&self, index: usize, retry: bool) -> Writer {
        let address = &self.members[index].client_address;
        match self.kind {
            Kind::Orc => {
                let mut client = orc::client::Client::new(address).expect("an orc client");
                if !retry {
                    client.retry_for = Duration::ZERO;
                }
                Writer::Orc(client)
            }
            Kind::Etcd => Writer::Etcd(etcd_connect(address).await, self.value.clone()),
        }
    }
}

fn orc_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ORC_BIN") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_orc"))
}

fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("etcd");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("etcd is not on PATH: apt-get install -y etcd-server (or set ETCD_BIN)");
}

// ---------------------------------------------------------------- /metrics

async fn scrape(address: &str) -> String {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[derive(Default, Clone)]
struct OrcCounters {
    fsyncs: f64,
    fsync_entries: f64,
    fsync_seconds: f64,
    proposals: f64,
    proposal_seconds: f64,
    compactions: f64,
    compaction_seconds: f64,
}

async fn orc_counters(address: &str) -> OrcCounters {
    let text = scrape(address).await;
    OrcCounters {
        fsyncs: metric(&text, "orc_raft_fsyncs_total"),
        fsync_entries: metric(&text, "orc_raft_fsync_entries_total"),
        fsync_seconds: metric(&text, "orc_raft_fsync_seconds_sum"),
        proposals: metric(&text, "orc_proposal_seconds_count"),
        proposal_seconds: metric(&text, "orc_proposal_seconds_sum"),
        compactions: metric(&text, "orc_raft_compaction_seconds_count"),
        compaction_seconds: metric(&text, "orc_raft_compaction_seconds_sum"),
    }
}

// ---------------------------------------------------------------- measurements

#[derive(Default, Clone)]
struct Load {
    clients: usize,
    writes_per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    first_error: Option<String>,
    /// Server CPU (all members) per committed write.
    cpu_per_write: Duration,
    /// Share of the machine's CPU time the hypervisor took away (steal)
    /// during the window, in per cent: a noisy neighbour shows up here.
    steal_percent: f64,
    note: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_load(
    cluster: &Cluster,
    leader: usize,
    clients: usize,
    counter: &Arc<AtomicU64>,
) -> Load {
    let warmup = Duration::from_secs(knob("ORC_BENCH_WARMUP_SECS", 1_u64));
    let measure = Duration::from_secs(knob("ORC_BENCH_MEASURE_SECS", 5_u64));
    // One connection per client, opened by one untimed write.
    let mut writers = Vec::with_capacity(clients);
    for _ in 0..clients {
        writers.push(cluster.writer(leader, true).await);
    }
    let mut opening = tokio::task::JoinSet::new();
    for mut writer in writers {
        let counter = counter.clone();
        opening.spawn(async move {
            let result = writer.write(counter.fetch_add(1, Ordering::Relaxed)).await;
            (writer, result)
        });
    }
    let mut writers = Vec::with_capacity(clients);
    while let Some(joined) = opening.join_next().await {
        let (writer, result) = joined.expect("a client task");
        if let Err(error) = result {
            cluster.fail(&format!("the connection-opening write failed: {error}"));
        }
        writers.push(writer);
    }

    let pids = cluster.pids();
    let leader_address = cluster.members[leader].client_address.clone();
    let start = Instant::now();
    let window_start = start + warmup;
    let end = window_start + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for mut writer in writers {
        let counter = counter.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = writer.write(counter.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                if done < window_start || done > end {
                    continue;
                }
                match result {
                    Ok(()) => latencies.push(done - sent),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    tokio::time::sleep_until(window_start.into()).await;
    let cpu_before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let machine_before = machine_ticks();
    let metrics_before = match cluster.kind {
        Kind::Orc => Some(orc_counters(&leader_address).await),
        Kind::Etcd => None,
    };
    tokio::time::sleep_until(end.into()).await;
    let cpu_after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let machine_after = machine_ticks();
    let metrics_after = match cluster.kind {
        Kind::Orc => Some(orc_counters(&leader_address).await),
        Kind::Etcd => None,
    };
    let mut latencies = Vec::new();
    let mut load = Load {
        clients,
        ..Default::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let (l, errors, first_error) = joined.expect("a client task");
        latencies.extend(l);
        load.errors += errors;
        if load.first_error.is_none() {
            load.first_error = first_error;
        }
    }
    let total = machine_after.1.saturating_sub(machine_before.1);
    if total > 0 {
        load.steal_percent =
            machine_after.0.saturating_sub(machine_before.0) as f64 * 100.0 / total as f64;
    }
    latencies.sort_unstable();
    load.writes_per_second = latencies.len() as f64 / measure.as_secs_f64();
    load.p50 = percentile(&latencies, 50.0);
    load.p99 = percentile(&latencies, 99.0);
    if !latencies.is_empty() {
        let cpu = (cpu_after - cpu_before) as f64 / ticks_per_second();
        load.cpu_per_write = Duration::from_secs_f64(cpu / latencies.len() as f64);
    }
    if let (Some(before), Some(after)) = (metrics_before, metrics_after) {
        let fsyncs = after.fsyncs - before.fsyncs;
        let entries = after.fsync_entries - before.fsync_entries;
        let proposals = after.proposals - before.proposals;
        let compactions = after.compactions - before.compactions;
        load.note = format!(
            "leader: {fsyncs:.0} fsyncs, {:.1} entries/fsync, mean fsync {:.2} ms, mean orc_proposal_seconds {:.2} ms, {compactions:.0} compactions{}",
            if fsyncs > 0.0 { entries / fsyncs } else { 0.0 },
            if fsyncs > 0.0 { (after.fsync_seconds - before.fsync_seconds) * 1e3 / fsyncs } else { 0.0 },
            if proposals > 0.0 { (after.proposal_seconds - before.proposal_seconds) * 1e3 / proposals } else { 0.0 },
            if compactions > 0.0 {
                format!(", mean {:.1} ms", (after.compaction_seconds - before.compaction_seconds) * 1e3 / compactions)
            } else {
                String::new()
            },
        );
    }
    load
}

/// Kills the leader and times the first successful write through a survivor.
async fn failover_trial(cluster: &mut Cluster, counter: &Arc<AtomicU64>) -> Option<Duration> {
    let leader = cluster.wait_ready(3, Duration::from_secs(60)).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut writers = Vec::new();
    for &i in &survivors {
        let mut writer = cluster.writer(i, false).await;
        // Open the connection (a write through a follower) before the kill.
        if let Err(error) = writer.write(counter.fetch_add(1, Ordering::Relaxed)).await {
            cluster.fail(&format!(
                "a write through server {} failed before the kill: {error}",
                i + 1
            ));
        }
        writers.push(writer);
    }
    let killed_at = Instant::now();
    cluster.members[leader]
        .proc
        .as_mut()
        .expect("the leader runs")
        .kill();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut ticker = tokio::time::interval(ATTEMPT_EVERY);
    let first = loop {
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => break Some(done),
            _ = ticker.tick() => {
                if killed_at.elapsed() > FAILOVER_GIVE_UP {
                    break None;
                }
                let mut writer = writers[next % writers.len()].clone();
                next += 1;
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let done_tx = done_tx.clone();
                attempts.spawn(async move {
                    if let Ok(Ok(())) = tokio::time::timeout(ATTEMPT_TIMEOUT, writer.write(n)).await {
                        let _ = done_tx.send(Instant::now());
                    }
                });
            }
        }
    };
    attempts.abort_all();
    let took = first.map(|done| done - killed_at);
    progress!(
        "{}: killed leader server {}; first write after {} ({} attempts)",
        cluster.kind.name(),
        leader + 1,
        took.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "never".into()),
        next
    );
    // Bring the killed member back from its data dir.
    cluster.start_member(leader, true);
    cluster.wait_ready(3, Duration::from_secs(60)).await;
    took
}

/// Kills the leader and times ONE write sent at once to a follower, as a
/// user sends it: orc's client with its default retry, etcd's put retried
/// sequentially on an error; never two attempts at a time.
async fn user_failover_trial(cluster: &mut Cluster, counter: &Arc<AtomicU64>) -> Option<Duration> {
    let leader = cluster.wait_ready(3, Duration::from_secs(60)).await;
    let follower = (leader + 1) % 3;
    let mut writer = cluster.writer(follower, true).await;
    if let Err(error) = writer.write(counter.fetch_add(1, Ordering::Relaxed)).await {
        cluster.fail(&format!(
            "a write through server {} failed before the kill: {error}",
            follower + 1
        ));
    }
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let killed_at = Instant::now();
    cluster.members[leader]
        .proc
        .as_mut()
        .expect("the leader runs")
        .kill();
    let mut attempts = 0;
    let took = loop {
        attempts += 1;
        match tokio::time::timeout(FAILOVER_GIVE_UP, writer.write(n)).await {
            Ok(Ok(())) => break Some(killed_at.elapsed()),
            Ok(Err(_)) if killed_at.elapsed() < FAILOVER_GIVE_UP => {}
            _ => break None,
        }
    };
    progress!(
        "{}: killed leader server {}; the one write through server {} answered after {} ({attempts} sequential attempt(s))",
        cluster.kind.name(),
        leader + 1,
        follower + 1,
        took.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "never".into()),
    );
    cluster.start_member(leader, true);
    cluster.wait_ready(3, Duration::from_secs(60)).await;
    took
}

/// p50 and p99 of `count` sequential writes through server `index`.
async fn sequential_latency(
    cluster: &Cluster,
    index: usize,
    count: u64,
    counter: &Arc<AtomicU64>,
) -> (Duration, Duration) {
    let mut writer = cluster.writer(index, true).await;
    for _ in 0..10 {
        if let Err(error) = writer.write(counter.fetch_add(1, Ordering::Relaxed)).await {
            cluster.fail(&format!(
                "a warm-up write through server {} failed: {error}",
                index + 1
            ));
        }
    }
    let mut latencies = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        if let Err(error) = writer.write(n).await {
            cluster.fail(&format!(
                "a write through server {} failed: {error}",
                index + 1
            ));
        }
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
}

/// Writes through a follower, then through the leader, one client.
async fn follower_writes(
    cluster: &mut Cluster,
    count: u64,
    counter: &Arc<AtomicU64>,
) -> ((Duration, Duration), (Duration, Duration)) {
    let leader = cluster.wait_ready(3, Duration::from_secs(60)).await;
    let follower = (leader + 1) % 3;
    let through_follower = sequential_latency(cluster, follower, count, counter).await;
    let through_leader = sequential_latency(cluster, leader, count, counter).await;
    progress!(
        "{}: {count} writes through follower server {}: p50 {:.2} ms, p99 {:.2} ms; through the leader: p50 {:.2} ms, p99 {:.2} ms",
        cluster.kind.name(),
        follower + 1,
        ms(through_follower.0),
        ms(through_follower.1),
        ms(through_leader.0),
        ms(through_leader.1),
    );
    (through_follower, through_leader)
}

#[derive(Default)]
struct Report {
    write_size: String,
    rss_kib: Vec<u64>,
    idle_write_bytes: u64,
    idle_write_bytes_each: Vec<u64>,
    /// CPU used by the idle cluster (all members), in % of one core.
    idle_cpu_percent: Option<f64>,
    loads: Vec<Load>,
    /// Per level: writes/s of every round.
    rounds: Vec<(usize, Vec<f64>)>,
    failovers: Vec<Option<Duration>>,
    /// User-visible failover: kill → the one write's answer, per trial.
    user_failovers: Vec<Option<Duration>>,
    /// Through a follower and through the leader: (p50, p99).
    follower_latency: Option<(Duration, Duration)>,
    leader_latency: Option<(Duration, Duration)>,
}

impl Report {
    fn user_failover_median(&self) -> Option<Duration> {
        median_of(&self.user_failovers)
    }

    fn failover_median(&self) -> Option<Duration> {
        median_of(&self.failovers)
    }
}

/// The median of trials that all succeeded; `None` if any never did.
fn median_of(trials: &[Option<Duration>]) -> Option<Duration> {
    let mut ok: Vec<Duration> = trials.iter().flatten().copied().collect();
    if ok.is_empty() || ok.len() != trials.len() {
        return None;
    }
    ok.sort_unstable();
    Some(ok[ok.len() / 2])
}

/// Starts `kind`'s cluster and measures it idle: RSS, disk writes, CPU.
async fn start_idle(kind: Kind, value: Arc<Vec<u8>>) -> (Cluster, Report) {
    let mut report = Report {
        write_size: match kind {
            Kind::Orc => {
                let (entry, request) = orc_write_sizes();
                format!(
                    "CreateCluster: {entry} B raft entry (JSON proposal), {request} B gRPC request"
                )
            }
            Kind::Etcd => format!("Put bench/<n> with a {} B value", value.len()),
        },
        ..Report::default()
    };
    let mut cluster = Cluster::start(kind, value).await;

    progress!(
        "{}: idle {:?} before reading RSS",
        kind.name(),
        IDLE_BEFORE_RSS
    );
    tokio::time::sleep(IDLE_BEFORE_RSS).await;
    cluster.check_alive();
    let pids = cluster.pids();
    report.rss_kib = pids.iter().map(|p| rss_kib(*p)).collect();
    progress!("{}: idle RSS (KiB) {:?}", kind.name(), report.rss_kib);
    let before: Vec<u64> = pids.iter().map(|p| write_bytes(*p)).collect();
    let cpu_before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    tokio::time::sleep(IDLE_IO_WINDOW).await;
    let cpu_after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    report.idle_cpu_percent = Some(
        (cpu_after - cpu_before) as f64 / ticks_per_second() / IDLE_IO_WINDOW.as_secs_f64() * 100.0,
    );
    cluster.check_alive();
    report.idle_write_bytes_each = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| write_bytes(*p).saturating_sub(*b))
        .collect();
    report.idle_write_bytes = report.idle_write_bytes_each.iter().sum();
    progress!(
        "{}: idle write_bytes over {:?}: {:?}; idle CPU {:.1}% of a core (3 servers)",
        kind.name(),
        IDLE_IO_WINDOW,
        report.idle_write_bytes_each,
        report.idle_cpu_percent.unwrap_or(0.0)
    );
    (cluster, report)
}

/// One load window of `clients` on `kind`'s leader.
async fn one_load(
    kind: Kind,
    cluster: &mut Cluster,
    clients: usize,
    round: usize,
    counter: &Arc<AtomicU64>,
) -> Load {
    let leader = cluster.wait_ready(3, Duration::from_secs(30)).await;
    progress!(
        "{}: round {round}, {clients} client(s) on the leader (server {})",
        kind.name(),
        leader + 1
    );
    let load = run_load(cluster, leader, clients, counter).await;
    cluster.check_alive();
    progress!(
        "{}: {clients} client(s): {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, CPU steal {:.1}%{}{}",
        kind.name(),
        load.writes_per_second,
        ms(load.p50),
        ms(load.p99),
        load.errors,
        load.steal_percent,
        load.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        if load.note.is_empty() {
            String::new()
        } else {
            format!("; {}", load.note)
        }
    );
    load
}

/// Runs every system's load windows interleaved: per round and level, each
/// system in turn (the order alternates between rounds), so a machine that
/// speeds up or slows down during the run affects both alike. Per level, a
/// report keeps the window with the median writes/s and every round's figure.
async fn bench_all(kinds: &[Kind], value: Arc<Vec<u8>>, counter: Arc<AtomicU64>) -> Vec<Report> {
    let mut clusters = Vec::new();
    let mut reports = Vec::new();
    for kind in kinds {
        let (cluster, report) = start_idle(*kind, value.clone()).await;
        clusters.push(cluster);
        reports.push(report);
    }
    let rounds = knob("ORC_BENCH_ROUNDS", 3_u64).max(1) as usize;
    for clients in levels() {
        let mut windows: Vec<Vec<Load>> = vec![Vec::new(); kinds.len()];
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let load = one_load(kinds[i], &mut clusters[i], clients, round + 1, &counter).await;
                windows[i].push(load);
            }
        }
        for (i, mut loads) in windows.into_iter().enumerate() {
            reports[i]
                .rounds
                .push((clients, loads.iter().map(|l| l.writes_per_second).collect()));
            loads.sort_by(|a, b| a.writes_per_second.total_cmp(&b.writes_per_second));
            let median = loads.swap_remove(loads.len() / 2);
            reports[i].loads.push(median);
        }
    }

    let follower_writes_count = knob("ORC_BENCH_FOLLOWER_WRITES", 200_u64);
    if follower_writes_count > 0 {
        for (i, _) in kinds.iter().enumerate() {
            let (follower, leader) =
                follower_writes(&mut clusters[i], follower_writes_count, &counter).await;
            reports[i].follower_latency = Some(follower);
            reports[i].leader_latency = Some(leader);
        }
    }

    let trials = knob("ORC_BENCH_FAILOVER_TRIALS", 9_u64);
    for trial in 1..=trials {
        for (i, kind) in kinds.iter().enumerate() {
            progress!("{}: failover trial {trial}/{trials}", kind.name());
            let took = failover_trial(&mut clusters[i], &counter).await;
            reports[i].failovers.push(took);
            progress!(
                "{}: user-visible failover trial {trial}/{trials}",
                kind.name()
            );
            let took = user_failover_trial(&mut clusters[i], &counter).await;
            reports[i].user_failovers.push(took);
        }
    }
    for kind in kinds {
        progress!("{}: stopping", kind.name());
    }
    drop(clusters);
    reports
}

// ---------------------------------------------------------------- output

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib = proc_meminfo("MemTotal");
    let tmp = std::env::temp_dir();
    let (mount, fs, device) = mount_of(&tmp);
    format!(
        "nproc {nproc}, kernel {kernel}, {cpu}, {:.1} GiB RAM; data dirs in {} ({fs} on {device}, mounted at {mount})",
        mem_kib as f64 / 1024.0 / 1024.0,
        tmp.display()
    )
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn proc_meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key).and_then(|r| {
                r.trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn mount_of(path: &Path) -> (String, String, String) {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best = ("?".to_string(), "?".to_string(), "?".to_string());
    let mut best_len = 0;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        if path.starts_with(fields[1]) && fields[1].len() >= best_len {
            best_len = fields[1].len();
            best = (
                fields[1].to_string(),
                fields[2].to_string(),
                fields[0].to_string(),
            );
        }
    }
    best
}

fn ratio(orc: f64, etcd: f64) -> String {
    if etcd == 0.0 {
        if orc == 0.0 {
            "= (both 0)".into()
        } else {
            "∞ (etcd 0)".into()
        }
    } else {
        format!("{:.2}", orc / etcd)
    }
}

fn table(orc: &Report, etcd: &Report) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let row = |rows: &mut Vec<[String; 4]>,
               name: String,
               o: Option<f64>,
               e: Option<f64>,
               fmt: &dyn Fn(f64) -> String| {
        let cell = |v: Option<f64>| v.map(fmt).unwrap_or_else(|| "n/a".into());
        let r = match (o, e) {
            (Some(o), Some(e)) => ratio(o, e),
            _ => "n/a".into(),
        };
        rows.push([name, cell(o), cell(e), r]);
    };
    let find = |report: &Report, clients: usize| {
        report.loads.iter().find(|l| l.clients == clients).cloned()
    };
    for clients in levels() {
        let (o, e) = (find(orc, clients), find(etcd, clients));
        let label = if clients == 1 {
            "client".to_string()
        } else {
            "clients".to_string()
        };
        row(
            &mut rows,
            format!("writes/s, {clients} {label}"),
            o.as_ref().map(|l| l.writes_per_second),
            e.as_ref().map(|l| l.writes_per_second),
            &|v| format!("{v:.0}"),
        );
        let per_round = |report: &Report| {
            report
                .rounds
                .iter()
                .find(|(c, _)| *c == clients)
                .map(|(_, figures)| {
                    figures
                        .iter()
                        .map(|f| format!("{f:.0}"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default()
        };
        rows.push([
            "  writes/s in each round (median above)".into(),
            per_round(orc),
            per_round(etcd),
            String::new(),
        ]);
        row(
            &mut rows,
            format!("p50 commit latency, {clients} {label} (ms)"),
            o.as_ref().map(|l| ms(l.p50)),
            e.as_ref().map(|l| ms(l.p50)),
            &|v| format!("{v:.2}"),
        );
        row(
            &mut rows,
            format!("p99 commit latency, {clients} {label} (ms)"),
            o.as_ref().map(|l| ms(l.p99)),
            e.as_ref().map(|l| ms(l.p99)),
            &|v| format!("{v:.2}"),
        );
        row(
            &mut rows,
            format!("failed writes, {clients} {label}"),
            o.as_ref().map(|l| l.errors as f64),
            e.as_ref().map(|l| l.errors as f64),
            &|v| format!("{v:.0}"),
        );
        row(
            &mut rows,
            format!("server CPU per write, {clients} {label} (µs, 3 servers)"),
            o.as_ref().map(|l| l.cpu_per_write.as_secs_f64() * 1e6),
            e.as_ref().map(|l| l.cpu_per_write.as_secs_f64() * 1e6),
            &|v| format!("{v:.0}"),
        );
        // Steal is the host's, not the system's: no ratio.
        let steal = |l: &Option<Load>| {
            l.as_ref()
                .map(|l| format!("{:.1}", l.steal_percent))
                .unwrap_or_else(|| "n/a".into())
        };
        rows.push([
            format!("host CPU steal in that window, {clients} {label} (%)"),
            steal(&o),
            steal(&e),
            String::new(),
        ]);
    }
    // A failover measure: the median of its trials, then each trial (or
    // "never" for one that did not end).
    let failover_rows = |rows: &mut Vec<[String; 4]>,
                         measure: &str,
                         trials_label: &str,
                         trials: fn(&Report) -> &[Option<Duration>]| {
        row(
            rows,
            format!(
                "{measure} (ms, median of {})",
                trials(orc).len().max(trials(etcd).len())
            ),
            median_of(trials(orc)).map(ms),
            median_of(trials(etcd)).map(ms),
            &|v| format!("{v:.0}"),
        );
        let samples = |r: &Report| {
            trials(r)
                .iter()
                .map(|d| {
                    d.map(|d| format!("{:.0}", ms(d)))
                        .unwrap_or_else(|| "never".into())
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        rows.push([
            format!("  {trials_label} trials (ms)"),
            samples(orc),
            samples(etcd),
            String::new(),
        ]);
    };
    failover_rows(
        &mut rows,
        "leader failover, kill → first write",
        "failover",
        |r| &r.failovers,
    );
    failover_rows(
        &mut rows,
        "user-visible failover, kill → one write to a follower answered",
        "user-visible failover",
        |r| &r.user_failovers,
    );
    let count = knob("ORC_BENCH_FOLLOWER_WRITES", 200_u64);
    row(
        &mut rows,
        format!("write through a follower, p50 (ms, {count} writes, 1 client)"),
        orc.follower_latency.map(|l| ms(l.0)),
        etcd.follower_latency.map(|l| ms(l.0)),
        &|v| format!("{v:.2}"),
    );
    row(
        &mut rows,
        format!("write through a follower, p99 (ms, {count} writes, 1 client)"),
        orc.follower_latency.map(|l| ms(l.1)),
        etcd.follower_latency.map(|l| ms(l.1)),
        &|v| format!("{v:.2}"),
    );
    row(
        &mut rows,
        format!("  same client through the leader, p50 (ms, {count} writes)"),
        orc.leader_latency.map(|l| ms(l.0)),
        etcd.leader_latency.map(|l| ms(l.0)),
        &|v| format!("{v:.2}"),
    );
    let through = |r: &Report| match (r.follower_latency, r.leader_latency) {
        (Some(f), Some(l)) if !l.0.is_zero() => {
            format!("{:.2}", f.0.as_secs_f64() / l.0.as_secs_f64())
        }
        _ => "n/a".into(),
    };
    rows.push([
        "  follower p50 / leader p50".into(),
        through(orc),
        through(etcd),
        String::new(),
    ]);
    let max_rss = |r: &Report| r.rss_kib.iter().max().map(|k| *k as f64 / 1024.0);
    row(
        &mut rows,
        "idle RSS, largest server (MiB)".into(),
        max_rss(orc),
        max_rss(etcd),
        &|v| format!("{v:.1}"),
    );
    let each_rss = |r: &Report| {
        r.rss_kib
            .iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    rows.push([
        "  idle RSS per server (MiB)".into(),
        each_rss(orc),
        each_rss(etcd),
        String::new(),
    ]);
    row(
        &mut rows,
        format!(
            "idle cluster disk writes in {} s (bytes, 3 servers)",
            IDLE_IO_WINDOW.as_secs()
        ),
        Some(orc.idle_write_bytes as f64),
        Some(etcd.idle_write_bytes as f64),
        &|v| format!("{v:.0}"),
    );
    let each_io = |r: &Report| {
        r.idle_write_bytes_each
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / ")
    };
    rows.push([
        "  idle disk writes per server (bytes)".into(),
        each_io(orc),
        each_io(etcd),
        String::new(),
    ]);
    row(
        &mut rows,
        format!(
            "idle cluster CPU over {} s (% of one core, 3 servers)",
            IDLE_IO_WINDOW.as_secs()
        ),
        orc.idle_cpu_percent,
        etcd.idle_cpu_percent,
        &|v| format!("{v:.1}"),
    );

    let header = [
        "figure".to_string(),
        "orc".into(),
        "etcd".into(),
        "orc/etcd".into(),
    ];
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, r: &[String; 4]| {
        let _ = writeln!(
            out,
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} |",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    };
    line(&mut out, &header);
    let _ = writeln!(
        out,
        "|{}|{}:|{}:|{}:|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 1),
        "-".repeat(widths[2] + 1),
        "-".repeat(widths[3] + 1)
    );
    for r in &rows {
        line(&mut out, r);
    }
    out
}

fn targets(orc: &Report, etcd: &Report) -> String {
    let mut out = String::new();
    let verdict = |met: Option<bool>| match met {
        Some(true) => "MET",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let failover = match (orc.failover_median(), etcd.failover_median()) {
        (Some(o), Some(e)) => Some(o <= e),
        (None, Some(_)) => Some(false),
        _ => None,
    };
    let _ = writeln!(
        out,
        "- failover no slower than etcd's (median): {}",
        verdict(failover)
    );
    let user_failover = match (orc.user_failover_median(), etcd.user_failover_median()) {
        (Some(o), Some(e)) => Some(o <= e),
        (None, Some(_)) => Some(false),
        _ => None,
    };
    let _ = writeln!(
        out,
        "- user-visible failover (one write to a follower) no slower than etcd's (median): {}",
        verdict(user_failover)
    );
    let follower = match (orc.follower_latency, orc.leader_latency) {
        (Some(f), Some(l)) => Some(f.0 <= l.0 * 2),
        _ => None,
    };
    let _ = writeln!(
        out,
        "- orc write through a follower at most 2x the leader's (p50): {}",
        verdict(follower)
    );
    for clients in levels() {
        let o = orc.loads.iter().find(|l| l.clients == clients);
        let e = etcd.loads.iter().find(|l| l.clients == clients);
        let met = match (o, e) {
            (Some(o), Some(e)) => Some(o.writes_per_second >= e.writes_per_second),
            _ => None,
        };
        let _ = writeln!(
            out,
            "- writes/s at {clients} client(s) at least etcd's: {}",
            verdict(met)
        );
    }
    let rss = orc.rss_kib.iter().max().map(|k| *k < 20 * 1024);
    let _ = writeln!(
        out,
        "- idle orc server RSS under 20 MiB (every server): {}",
        verdict(rss)
    );
    let _ = writeln!(
        out,
        "- zero bytes written by an idle orc cluster: {}",
        verdict(Some(orc.idle_write_bytes == 0))
    );
    // A reported window in which the hypervisor took much of the CPU
    // measured the neighbours as much as the systems.
    let stolen: Vec<String> = orc
        .loads
        .iter()
        .map(|l| ("orc", l))
        .chain(etcd.loads.iter().map(|l| ("etcd", l)))
        .filter(|(_, l)| l.steal_percent > STEAL_WARNING_PERCENT)
        .map(|(name, l)| format!("{name} at {} client(s): {:.1}%", l.clients, l.steal_percent))
        .collect();
    if !stolen.is_empty() {
        let _ = writeln!(
            out,
            "warning: host CPU steal above {STEAL_WARNING_PERCENT}% in reported windows ({}); run again when the host is quieter",
            stolen.join(", ")
        );
    }
    out
}

/// Steal above this in a reported window earns a warning under the targets.
const STEAL_WARNING_PERCENT: f64 = 10.0;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let _ = started();
    let systems = std::env::var("ORC_BENCH_SYSTEMS").unwrap_or_else(|_| "orc,etcd".into());
    let (entry, request) = orc_write_sizes();
    let value = Arc::new(vec![b'x'; entry]);
    let load_at_start = loadavg();
    progress!("machine: {}; load average {load_at_start}", machine());
    progress!("orc binary: {}", orc_binary().display());
    progress!(
        "write size: orc raft entry {entry} B (gRPC request {request} B); etcd value {entry} B"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let counter = Arc::new(AtomicU64::new(1_000_000));
    // Children are spawned from this (main) thread inside block_on, so
    // PR_SET_PDEATHSIG fires only when the bench process itself ends.
    let (orc, etcd) = runtime.block_on(async {
        let mut kinds = Vec::new();
        if systems.contains("orc") {
            kinds.push(Kind::Orc);
        }
        if systems.contains("etcd") {
            kinds.push(Kind::Etcd);
        }
        let mut reports = bench_all(&kinds, value.clone(), counter.clone()).await;
        let etcd = if systems.contains("etcd") {
            reports.pop().unwrap_or_default()
        } else {
            Report::default()
        };
        let orc = reports.pop().unwrap_or_default();
        (orc, etcd)
    });
    let etcd_version = Command::new(etcd_binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd version unknown".into());

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Control plane: orc vs etcd, 3 servers on loopback\n"
    );
    let _ = writeln!(out, "machine: {}", machine());
    let _ = writeln!(
        out,
        "load average at the start: {load_at_start}; at the end: {}",
        loadavg()
    );
    let _ = writeln!(
        out,
        "orc: {} ({})",
        env!("CARGO_PKG_VERSION"),
        orc_binary().display()
    );
    let _ = writeln!(out, "etcd: {etcd_version}");
    let _ = writeln!(
        out,
        "orc write: {}",
        if orc.write_size.is_empty() {
            "n/a"
        } else {
            &orc.write_size
        }
    );
    let _ = writeln!(
        out,
        "etcd write: {}",
        if etcd.write_size.is_empty() {
            "n/a"
        } else {
            &etcd.write_size
        }
    );
    let _ = writeln!(
        out,
        "load: every client has its own connection to the leader; writes back to back; {} s warm-up, {} s measured\n",
        knob("ORC_BENCH_WARMUP_SECS", 1_u64),
        knob("ORC_BENCH_MEASURE_SECS", 5_u64)
    );
    out.push_str(&table(&orc, &etcd));
    let _ = writeln!(out, "\norc /metrics during each load window:");
    for load in &orc.loads {
        let _ = writeln!(out, "- {} client(s): {}", load.clients, load.note);
    }
    let _ = writeln!(out, "\ntargets:");
    out.push_str(&targets(&orc, &etcd));
    println!("{out}");
}
