//! The server's memory and start-up time with a large state: 10,000
//! task-definition revisions of about 2 KB each and 10,000 stopped tasks
//! (targets: under 100 MiB resident and under 2 s to start).
//!
//! Run: `bench/state-size.sh` (or `cargo bench --bench state_size`).
//!
//! One `orc server --bootstrap` (the release binary cargo builds for the
//! bench, default flags) is filled through the real gRPC API: revisions by
//! `RegisterTaskDefinition` (16 in flight), tasks by `RunTask` (10 per call)
//! on a fake container instance registered through `AgentApi`, which
//! reports each task STOPPED (`tests/common/state_size.rs`). Then:
//! 1. VmRSS and VmHWM (peak) of the running server, from /proc/PID/status;
//! 2. the server is stopped with SIGTERM and started again from its data
//!    dir; start-up is the time from spawn until a linearizable
//!    `cluster status` and `DescribeTaskDefinition` of the newest revision
//!    answer; then its VmRSS and VmHWM (the restart's peak).
//!
//! 3. the size of each table in the newest checkpoint (JSON bytes), read
//!    from the stopped server's data dir: where the state's bytes go.
//!
//! Knobs: ORC_BENCH_REVISIONS (10000), ORC_BENCH_TASKS (10000),
//! ORC_BENCH_KEEP=DIR (build the state in DIR and keep it, e.g. to start a
//! server from it under a heap profiler).
//! This is a benchmark: it asserts nothing about time or memory.

#[path = "../tests/common/state_size.rs"]
mod state_size;

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, knob};
use orc::client::Client;

fn spawn(data_dir: &Path, address: &str, bootstrap: bool, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_orc"));
    command
        .args(["server", "--insecure", "--listen", address, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(log);
    if bootstrap {
        command.arg("--bootstrap");
    }
    command.spawn().expect("start orc server")
}

async fn wait_ready(address: &str, newest: Option<&str>) {
    let mut client = Client::new(address).expect("client");
    client.retry_for = Duration::from_millis(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client.cluster_status(true).await.is_ok()
            && match newest {
                Some(definition) => client
                    .call(
                        "DescribeTaskDefinition",
                        serde_json::json!({"taskDefinition": definition}),
                    )
                    .await
                    .is_ok(),
                None => true,
            };
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let meta = entry.metadata().ok();
            total += match meta {
                Some(m) if m.is_dir() => dir_bytes(&entry.path()),
                Some(m) => m.len(),
                None => 0,
            };
        }
    }
    total
}

/// The newest checkpoint's size per table, as a Markdown table.
fn checkpoint_tables(data_dir: &Path) -> String {
    let Ok(db) = orc::datadir::open_db(data_dir, 8) else {
        return "(the data dir could not be opened to read its checkpoint)".into();
    };
    let checkpoint_dir = orc::datadir::checkpoint_dir(data_dir);
    // Its file; an older data dir's checkpoint is a sled value.
    let checkpoint = match orc::store::checkpoint::newest_file(&db, &checkpoint_dir) {
        Ok(Some(file)) => std::fs::read(file).ok(),
        _ => db
            .open_tree("state")
            .ok()
            .and_then(|tree| tree.get(b"checkpoint").ok().flatten())
            .map(|bytes| bytes.to_vec()),
    };
    let Some(bytes) = checkpoint else {
        return "(no checkpoint in the data dir)".into();
    };
    let Ok(data) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return "(the checkpoint is not JSON)".into();
    };
    let mut out = format!(
        "checkpoint at raft index {}: {:.1} MiB\n| table | rows | JSON (MiB) |\n|---|--:|--:|\n",
        data["applied_index"],
        bytes.len() as f64 / (1024.0 * 1024.0)
    );
    if let Some(tables) = data["state"].as_object() {
        for (name, table) in tables {
            let rows = table.as_object().map_or(0, |rows| rows.len());
            let size = serde_json::to_vec(table).map_or(0, |json| json.len());
            out += &format!(
                "| {name} | {rows} | {:.2} |\n",
                size as f64 / (1024.0 * 1024.0)
            );
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let revisions = knob("ORC_BENCH_REVISIONS", 10_000_usize);
    let tasks = knob("ORC_BENCH_TASKS", 10_000_usize);
    let root = tempfile::tempdir().expect("temporary directory");
    let data_dir = match std::env::var_os("ORC_BENCH_KEEP") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => root.path().join("server"),
    };
    let log = root.path().join("server.log");
    let address = format!("127.0.0.1:{}", free_port());

    let mut server = spawn(&data_dir, &address, true, &log);
    wait_ready(&address, None).await;
    let idle = state_size::memory_kib(server.id());
    let started = Instant::now();
    state_size::build(&address, revisions, tasks).await;
    let build_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = state_size::memory_kib(server.id());
    let newest = format!("course-{:03}", (revisions - 1) % 100.min(revisions.max(1)));

    // SIGTERM, as systemd stops it.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    let disk = dir_bytes(&data_dir);
    let tables = checkpoint_tables(&data_dir);

    let spawned = Instant::now();
    let mut server = spawn(&data_dir, &address, false, &log);
    wait_ready(&address, Some(&newest)).await;
    let start_seconds = spawned.elapsed().as_secs_f64();
    let restarted_now = state_size::memory_kib(server.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = state_size::memory_kib(server.id());
    let _ = server.kill();
    let _ = server.wait();

    println!("state: {revisions} task-definition revisions (~2 KB each), {tasks} stopped tasks; built in {build_seconds:.1} s");
    println!("| figure | value |");
    println!("|---|--:|");
    println!(
        "| idle server before the state, VmRSS (MiB) | {:.1} |",
        mib(idle.0)
    );
    println!(
        "| running server with the state, VmRSS (MiB) | {:.1} |",
        mib(running.0)
    );
    println!(
        "| running server, peak VmHWM while building (MiB) | {:.1} |",
        mib(running.1)
    );
    println!(
        "| data dir on disk (MiB) | {:.1} |",
        disk as f64 / (1024.0 * 1024.0)
    );
    println!("| start-up from the data dir, spawn → state served (s) | {start_seconds:.2} |");
    println!(
        "| restarted server, VmRSS when ready (MiB) | {:.1} |",
        mib(restarted_now.0)
    );
    println!(
        "| restarted server, VmRSS 2 s later (MiB) | {:.1} |",
        mib(restarted.0)
    );
    println!(
        "| restarted server, peak VmHWM (MiB) | {:.1} |",
        mib(restarted.1)
    );
    println!();
    println!("{tables}");
    println!("targets:");
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!(
        "- running server under 100 MiB: {}",
        met(mib(running.0) < 100.0)
    );
    println!("- start-up under 2 s: {}", met(start_seconds < 2.0));
    println!(
        "- a restart's peak no higher than the running server's peak: {} ({:.1} vs {:.1} MiB)",
        met(restarted.1 <= running.1),
        mib(restarted.1),
        mib(running.1)
    );
}
