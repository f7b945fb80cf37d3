//! End-to-end tests of the replicated control plane: real `orc server`
//! processes on loopback addresses, killed with SIGKILL, restarted from
//! their data dirs, grown and shrunk, with writes running throughout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{eventually, three_servers, wait_voters, TestServer};
use orc::client::{request_id, Client};
use serde_json::json;

const TUNING: &[&str] = &["--snapshot-threshold", "40"];

/// Registers one task definition family per write, round-robin over the
/// live servers, retrying a write with the SAME request id on other servers
/// until it is acknowledged.
struct Writer {
    acked: Arc<Mutex<BTreeSet<u64>>>,
    endpoints: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    fn start(endpoints: Vec<String>) -> Writer {
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let endpoints = Arc::new(Mutex::new(endpoints));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(acked.clone(), endpoints.clone(), stop.clone()));
        Writer {
            acked,
            endpoints,
            stop,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn set_endpoints(&self, endpoints: Vec<String>) {
        *self.endpoints.lock().unwrap() = endpoints;
    }

    async fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.acked() + more;
        eventually(Duration::from_secs(60), what, || async {
            (self.acked() >= target).then_some(())
        })
        .await;
    }

    async fn finish(self) -> (BTreeSet<u64>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let attempted = self.task.await.expect("the writer panicked");
        let acked = self.acked.lock().unwrap().clone();
        (acked, attempted)
    }
}

async fn write_loop(
    acked: Arc<Mutex<BTreeSet<u64>>>,
    endpoints: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut n = 0u64;
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let id = request_id();
        let body = json!({
            "family": format!("w-{n}"),
            "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 16}],
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let endpoint = {
                let endpoints = endpoints.lock().unwrap();
                turn += 1;
                endpoints[turn % endpoints.len()].clone()
            };
            let mut client = Client::new(&endpoint).unwrap();
            client.retry_for = Duration::from_millis(500);
            match client
                .call_with_id("RegisterTaskDefinition", body.clone(), &id)
                .await
            {
                Ok(_) => {
                    acked.lock().unwrap().insert(n);
                    break;
                }
                Err(error) if error.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("write {n} failed for good: {error}"),
            }
        }
    }
    n
}

/// Every acknowledged write is on `server`, and no write was applied twice.
async fn verify(server: &TestServer, acked: &BTreeSet<u64>, attempted: u64) {
    let (answer, _) = server
        .client()
        .call_all_pages("ListTaskDefinitions", json!({"familyPrefix": "w-"}))
        .await
        .unwrap_or_else(|e| panic!("list on {} failed: {e}", server.address));
    let mut revisions: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for arn in answer["taskDefinitionArns"].as_array().unwrap() {
        let tail = arn.as_str().unwrap().rsplit('/').next().unwrap();
        let (family, revision) = tail.split_once(':').unwrap();
        let n: u64 = family.trim_start_matches("w-").parse().unwrap();
        revisions
            .entry(n)
            .or_default()
            .push(revision.parse().unwrap());
    }
    for n in acked {
        assert!(
            revisions.contains_key(n),
            "acknowledged write {n} is missing on {}",
            server.address
        );
    }
    for (n, revs) in &revisions {
        assert_eq!(
            revs,
            &vec![1],
            "write {n} was applied {} times on {}",
            revs.len(),
            server.address
        );
        assert!(*n <= attempted, "write {n} was never attempted");
    }
    assert!(revisions.len() >= acked.len());
}

async fn leader_address(servers: &[&TestServer]) -> String {
    eventually(Duration::from_secs(20), "a leader", || async {
        for server in servers {
            if let Ok(status) = server.client().cluster_status(false).await {
                if status.leader_id != 0 && !status.leader_address.is_empty() {
                    return Some(status.leader_address);
                }
            }
        }
        None
    })
    .await
}

async fn wait_caught_up(server: &TestServer, leader: &TestServer) {
    eventually(
        Duration::from_secs(30),
        &format!("{} to catch up", server.address),
        || async {
            let target = leader
                .client()
                .cluster_status(false)
                .await
                .ok()?
                .commit_index;
            let mine = server
                .client()
                .cluster_status(false)
                .await
                .ok()?
                .applied_index;
            (mine >= target).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_survive_leader_loss_restarts_and_compaction() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path(), TUNING).await;
    let writer = Writer::start(servers.iter().map(|s| s.address.clone()).collect());
    writer
        .wait_for_more(20, "writes through every server")
        .await;

    // Kill the leader: a new one is elected and writes go on.
    let old_leader = leader_address(&servers.iter().collect::<Vec<_>>()).await;
    let killed = servers
        .iter()
        .position(|s| s.address == old_leader)
        .unwrap();
    servers[killed].kill();
    let survivors: Vec<String> = servers
        .iter()
        .filter(|s| s.address != old_leader)
        .map(|s| s.address.clone())
        .collect();
    writer.set_endpoints(survivors);
    let new_leader = eventually(Duration::from_secs(20), "a new leader", || async {
        let live: Vec<&TestServer> = servers.iter().filter(|s| s.address != old_leader).collect();
        let leader = leader_address(&live).await;
        (leader != old_leader).then_some(leader)
    })
    .await;
    writer
        .wait_for_more(20, "writes after the leader was killed")
        .await;

    // The killed server restarts from its data dir and catches up.
    servers[killed].restart();
    servers[killed].wait_ready().await;
    let leader_index = servers
        .iter()
        .position(|s| s.address == new_leader)
        .unwrap();
    wait_caught_up(&servers[killed], &servers[leader_index]).await;
    writer.set_endpoints(servers.iter().map(|s| s.address.clone()).collect());

    // A follower that is down while the log is compacted comes back by snapshot.
    let follower = (0..3).find(|i| *i != leader_index && *i != killed).unwrap();
    servers[follower].kill();
    writer.set_endpoints(
        servers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != follower)
            .map(|(_, s)| s.address.clone())
            .collect(),
    );
    writer
        .wait_for_more(120, "writes while a follower is down")
        .await;
    servers[follower].restart();
    servers[follower].wait_ready().await;
    wait_caught_up(&servers[follower], &servers[leader_index]).await;
    assert!(
        servers[follower]
            .log_text()
            .contains("installing a snapshot"),
        "the returning follower should have been brought back by a snapshot:\n{}",
        servers[follower].log_text()
    );
    writer.set_endpoints(servers.iter().map(|s| s.address.clone()).collect());
    writer.wait_for_more(10, "writes with all three back").await;

    let (acked, attempted) = writer.finish().await;
    assert!(
        acked.len() >= 170,
        "only {} writes were acknowledged",
        acked.len()
    );
    for server in &servers {
        verify(server, &acked, attempted).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_from_one_to_five_and_shrinks_to_three_under_writes() {
    let root = tempfile::tempdir().unwrap();
    let first = TestServer::start(root.path(), "s1", &["--bootstrap"], TUNING);
    first.wait_ready().await;
    let writer = Writer::start(vec![first.address.clone()]);
    writer.wait_for_more(10, "writes on a single server").await;

    let first_address = first.address.clone();
    let join = ["--join", first_address.as_str()];
    let mut servers = vec![first];
    for name in ["s2", "s3"] {
        servers.push(TestServer::start(root.path(), name, &join, TUNING));
    }
    wait_voters(&servers[0], 3).await;
    writer.set_endpoints(servers.iter().map(|s| s.address.clone()).collect());
    writer.wait_for_more(10, "writes on three servers").await;
    for name in ["s4", "s5"] {
        servers.push(TestServer::start(root.path(), name, &join, TUNING));
    }
    wait_voters(&servers[0], 5).await;
    writer.set_endpoints(servers.iter().map(|s| s.address.clone()).collect());
    writer.wait_for_more(10, "writes on five servers").await;

    // Shrink to three: remove s4, then whoever leads (the leader hands over first).
    let status = servers[1].client().cluster_status(true).await.unwrap();
    let id_of = |address: &str| {
        status
            .members
            .iter()
            .find(|m| m.address == address)
            .unwrap()
            .id
    };
    let leader = status.leader_address.clone();
    let removed: Vec<String> = vec![
        servers[3].address.clone(),
        if leader == servers[3].address {
            servers[4].address.clone()
        } else {
            leader
        },
    ];
    let remaining: Vec<String> = servers
        .iter()
        .map(|s| s.address.clone())
        .filter(|a| !removed.contains(a))
        .collect();
    writer.set_endpoints(remaining.clone());
    for address in &removed {
        let client = {
            let mut client = Client::new(&remaining[0]).unwrap();
            client.retry_for = Duration::from_secs(15);
            client
        };
        client
            .remove_server(id_of(address))
            .await
            .unwrap_or_else(|e| panic!("removing {address} failed: {e}"));
    }
    let keeper = servers
        .iter()
        .position(|s| s.address == remaining[0])
        .unwrap();
    wait_voters(&servers[keeper], 3).await;
    for server in servers.iter_mut().filter(|s| removed.contains(&s.address)) {
        eventually(Duration::from_secs(20), "a removed server to exit", || {
            let running = server.is_running();
            async move { (!running).then_some(()) }
        })
        .await;
    }
    writer.wait_for_more(10, "writes after shrinking").await;
    let (acked, attempted) = writer.finish().await;
    for server in servers.iter().filter(|s| remaining.contains(&s.address)) {
        verify(server, &acked, attempted).await;
    }
}

/// Every server loses power at once (SIGKILL all three), long before any
/// state checkpoint beyond the bootstrap one: on restart each server replays
/// its whole raft log, including the membership changes that made it a
/// voter, and nothing acknowledged is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_killed_at_once_replays_its_log_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path(), &[]).await;
    let writer = Writer::start(servers.iter().map(|s| s.address.clone()).collect());
    writer
        .wait_for_more(30, "writes before the power cut")
        .await;
    // The writer keeps going: the write in flight at the cut is retried
    // under its request id until the servers are back.
    for server in servers.iter_mut() {
        server.kill();
    }
    let logged_before: Vec<usize> = servers.iter().map(|s| s.log_text().len()).collect();
    for server in servers.iter_mut() {
        server.restart();
    }
    for server in &servers {
        server.wait_ready().await;
    }
    wait_voters(&servers[0], 3).await;
    writer.wait_for_more(10, "writes after the restart").await;
    let (acked, attempted) = writer.finish().await;
    for (server, before) in servers.iter().zip(logged_before) {
        let since_restart = &server.log_text()[before..];
        assert!(
            !since_restart.contains("installing a snapshot"),
            "a restart after a power cut should replay the log, not need a snapshot:\n{since_restart}"
        );
    }
    let leader = leader_address(&servers.iter().collect::<Vec<_>>()).await;
    let leader = servers.iter().find(|s| s.address == leader).unwrap();
    for server in &servers {
        wait_caught_up(server, leader).await;
        verify(server, &acked, attempted).await;
    }
}
