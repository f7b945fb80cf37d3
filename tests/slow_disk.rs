//! `orc server --slow-disk` (issue 17): a three-server control plane whose
//! fsyncs stall for two seconds now and then (one flush in three, each
//! server on its own), as a cheap SD card's do, keeps one leader in one term
//! under a steady stream of writes; with the default tuning the same stalls
//! start elections. The stall is injected in the storage layer
//! (`ORC_TEST_FSYNC_DELAY_FILE`, read by `raft/storage.rs` at each flush)
//! once the cluster has formed.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{three_servers, TestServer};
use orc::client::Client;
use serde_json::json;

/// One flush in `ONE_IN` stalls for `STALL_MS` (each server on its own, at
/// random): above the default 1 s election time-out.
const STALL_MS: u64 = 2000;
const ONE_IN: u64 = 3;

/// (leader id, term) as each running server sees it.
async fn views(servers: &[TestServer]) -> Vec<(u64, u64)> {
    let mut views = vec![];
    for server in servers {
        let mut client = server.client();
        client.retry_for = Duration::from_secs(3);
        if let Ok(status) = client.cluster_status(false).await {
            views.push((status.leader_id, status.term));
        }
    }
    views
}

async fn leader_and_term_under_stalls(
    tuning: &[&str],
) -> (Vec<(u64, u64)>, usize, Vec<(u64, u64)>) {
    let root = tempfile::tempdir().unwrap();
    let delay = root.path().join("fsync-delay-ms");
    // Read once by each server process at its first flush.
    std::env::set_var("ORC_TEST_FSYNC_DELAY_FILE", &delay);
    let servers = three_servers(root.path(), tuning).await;
    let before = views(&servers).await;
    std::fs::write(&delay, format!("{STALL_MS} {ONE_IN}")).unwrap();

    let mut writer = Client::new(&servers[0].address).unwrap();
    writer.retry_for = Duration::from_secs(30);
    let mut seen = vec![];
    let mut writes = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let name = format!("shelf-{writes}");
        writer
            .call("CreateCluster", json!({"clusterName": name}))
            .await
            .unwrap_or_else(|e| panic!("a write failed under {STALL_MS} ms fsync stalls: {e}"));
        writes += 1;
        seen.extend(views(&servers).await);
    }
    std::fs::remove_file(&delay).unwrap();
    (before, writes, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_slow_disk_two_second_fsync_stalls_keep_one_leader_in_one_term() {
    let (before, writes, seen) = leader_and_term_under_stalls(&["--slow-disk"]).await;
    let (leader, term) = before[0];
    assert!(
        leader != 0 && before.iter().all(|v| *v == (leader, term)),
        "{before:?}"
    );
    assert!(writes >= 3, "only {writes} writes went through in 15 s");
    let changed: Vec<&(u64, u64)> = seen.iter().filter(|v| **v != (leader, term)).collect();
    eprintln!(
        "--slow-disk, {STALL_MS} ms on one fsync in {ONE_IN}: {writes} writes in 15 s, leader {leader} in term {term} throughout ({} views)",
        seen.len()
    );
    assert!(
        changed.is_empty(),
        "the leader or term changed under fsync stalls (was leader {leader} in term {term}): {changed:?}"
    );
}

/// The contrast that shows the stalls matter: with the default 1 s
/// election time-out, the same stalls on the leader's disk start elections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_default_tuning_the_same_stalls_elect_new_leaders() {
    let (before, writes, seen) = leader_and_term_under_stalls(&[]).await;
    let (leader, term) = before[0];
    let terms: std::collections::BTreeSet<u64> = seen.iter().map(|(_, t)| *t).collect();
    eprintln!(
        "default tuning, {STALL_MS} ms on one fsync in {ONE_IN}: {writes} writes in 15 s, terms seen {terms:?} (was {term})"
    );
    assert!(
        seen.iter().any(|v| *v != (leader, term)),
        "no election under {STALL_MS} ms fsync stalls with the default 1 s time-out: the injected stall did not reach the raft loop"
    );
}
