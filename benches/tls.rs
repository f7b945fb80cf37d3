//! The cost of TLS (issue 16), in one run: writes/s of a 3-server orc
//! cluster on loopback at 16 clients (each its own connection, each write a
//! `CreateCluster` through the leader, as benches/control_plane.rs does),
//! with TLS and client certificates and with `--insecure`, in alternating
//! rounds so both see the same machine; then the resident memory of an idle
//! `orc agent` with its certificate (needs Docker).
//!
//!   bench/tls.sh      # or: cargo bench --bench tls
//!
//! Knobs: ORC_BENCH_ROUNDS (3), ORC_BENCH_CLIENTS (16),
//! ORC_BENCH_WARMUP_SECS (1), ORC_BENCH_MEASURE_SECS (5).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, knob};
use orc::client::Client;
use serde_json::json;

/// Three servers, killed on drop.
struct Cluster {
    children: Vec<Child>,
    addresses: Vec<String>,
    tls: Option<Arc<orc::tls::ClientTls>>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn orc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orc"))
}

fn spawn(args: &[String], log: &Path) -> Child {
    orc()
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start orc")
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(secure: bool) -> Cluster {
    let dir = tempfile::Builder::new()
        .prefix("orc-bench-tls-")
        .tempdir()
        .unwrap();
    let addresses: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut cluster = Cluster {
        children: Vec::new(),
        addresses: addresses.clone(),
        tls: None,
        _dir: dir,
    };
    let root = cluster._dir.path().to_path_buf();
    let args = |i: usize| -> Vec<String> {
        let mut args = vec![
            "server".to_string(),
            "--data-dir".into(),
            root.join(format!("s{i}")).display().to_string(),
            "--listen".into(),
            addresses[i].clone(),
        ];
        if !secure {
            args.push("--insecure".into());
        }
        args
    };
    let mut first = args(0);
    first.push("--bootstrap".into());
    cluster.children.push(spawn(&first, &root.join("s0.log")));
    if secure {
        let path = root.join("s0").join("tls").join("admin.json");
        wait_for("the admin credential", || async {
            path.exists().then_some(())
        })
        .await;
        let credential = orc::tls::credential::Credential::load(&path).unwrap();
        cluster.tls = Some(Arc::new(credential.client_tls().unwrap()));
    }
    let control = Client::with_tls(&addresses[0], cluster.tls.clone()).unwrap();
    wait_for("the first server", || async {
        control.cluster_status(true).await.ok()
    })
    .await;
    for i in 1..3 {
        let mut join = args(i);
        join.extend(["--join".to_string(), addresses[0].clone()]);
        if secure {
            let answer = control
                .admin("CreateJoinToken", json!({"role": "server"}))
                .await
                .unwrap();
            join.extend([
                "--token".to_string(),
                answer["token"].as_str().unwrap().to_string(),
            ]);
        }
        cluster
            .children
            .push(spawn(&join, &root.join(format!("s{i}.log"))));
    }
    wait_for("three voters", || async {
        let status = control.cluster_status(true).await.ok()?;
        (status.members.iter().filter(|m| m.voter).count() == 3).then_some(())
    })
    .await;
    cluster
}

/// Writes/s at `clients`, each with its own connection to the leader.
async fn load(cluster: &Cluster, clients: usize, counter: &Arc<AtomicU64>) -> f64 {
    let status = Client::with_tls(&cluster.addresses[0], cluster.tls.clone())
        .unwrap()
        .cluster_status(true)
        .await
        .unwrap();
    let leader = status.leader_address.clone();
    let warmup = Duration::from_secs(knob("ORC_BENCH_WARMUP_SECS", 1_u64));
    let measure = Duration::from_secs(knob("ORC_BENCH_MEASURE_SECS", 5_u64));
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measure);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = Client::with_tls(&leader, cluster.tls.clone()).unwrap();
        let counter = counter.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                client
                    .call(
                        "CreateCluster",
                        json!({"clusterName": format!("bench-{n}")}),
                    )
                    .await
                    .expect("a write");
                let now = Instant::now();
                if now >= until {
                    return done;
                }
                if now >= from {
                    done += 1;
                }
            }
        });
    }
    let mut writes = 0;
    while let Some(done) = tasks.join_next().await {
        writes += done.unwrap();
    }
    writes as f64 / measure.as_secs_f64()
}

/// The idle agent's resident memory (KiB): with its certificate, or
/// `--insecure` on a plain-text cluster.
async fn agent_rss(cluster: &Cluster) -> Option<u64> {
    let control = Client::with_tls(&cluster.addresses[0], cluster.tls.clone()).unwrap();
    let access = match &cluster.tls {
        Some(_) => {
            let token = control
                .admin("CreateJoinToken", json!({"role": "agent"}))
                .await
                .ok()?;
            vec!["--token".to_string(), token["token"].as_str()?.to_string()]
        }
        None => vec!["--insecure".to_string()],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = orc()
        .args(["agent", "--server", &cluster.addresses[0]])
        .args(&access)
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let connected = tokio::time::timeout(
        Duration::from_secs(60),
        wait_for("the agent", || async {
            let (answer, _) = control
                .call("DescribeContainerInstances", json!({}))
                .await
                .ok()?;
            answer["containerInstances"]
                .as_array()?
                .iter()
                .any(|i| i["agentConnected"] == true)
                .then_some(())
        }),
    )
    .await;
    // Idle for a while: heartbeats, its assignment and log streams open.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok();
    let _ = child.kill();
    let _ = child.wait();
    connected.ok()?;
    status?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = knob("ORC_BENCH_ROUNDS", 3_u64);
    let clients = knob("ORC_BENCH_CLIENTS", 16_u64) as usize;
    let counter = Arc::new(AtomicU64::new(0));
    let mut results: Vec<(bool, f64)> = Vec::new();
    for round in 1..=rounds {
        for secure in [true, false] {
            let cluster = start(secure).await;
            let rate = load(&cluster, clients, &counter).await;
            eprintln!(
                "round {round}: {} {clients} clients: {rate:.0} writes/s",
                if secure { "TLS      " } else { "plaintext" }
            );
            results.push((secure, rate));
        }
    }
    let median = |secure: bool| {
        let mut rates: Vec<f64> = results
            .iter()
            .filter(|(s, _)| *s == secure)
            .map(|(_, r)| *r)
            .collect();
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rates[rates.len() / 2]
    };
    let (tls, plain) = (median(true), median(false));
    println!(
        "| measure ({clients} clients, 3 servers, loopback, median of {rounds} rounds) | value |"
    );
    println!("|---|---|");
    println!("| writes/s, TLS 1.3 + client certificates | {tls:.0} |");
    println!("| writes/s, --insecure (plain text) | {plain:.0} |");
    println!("| TLS / plain | {:.2} |", tls / plain);
    for secure in [true, false] {
        let cluster = start(secure).await;
        let what = if secure {
            "with its certificate (TLS)"
        } else {
            "--insecure (plain text)"
        };
        match agent_rss(&cluster).await {
            Some(kib) => println!(
                "| idle `orc agent` RSS, {what} | {:.1} MiB |",
                kib as f64 / 1024.0
            ),
            None => {
                println!("| idle `orc agent` RSS, {what} | not measured (is Docker running?) |")
            }
        }
    }
}
