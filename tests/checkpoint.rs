//! The state checkpoint's durability. A server killed (SIGKILL) at any
//! point of a state checkpoint loses no
//! acknowledged write and comes back up: halfway through writing the
//! checkpoint's file, after its rename but before sled names it, after sled
//! names it but before the flush, and after the flush but before the file it
//! replaced is deleted. The crash is injected in the checkpoint code
//! (`ORC_TEST_CHECKPOINT_CRASH_FILE`, read at each of those points); a small
//! `--snapshot-threshold` makes checkpoints frequent. After every restart
//! each acknowledged write is read back, and in the end the checkpoint
//! directory holds one file and no temporary one. A graceful stop
//! (SIGTERM) writes a checkpoint of everything applied, so the next start
//! replays no log.

mod common;

use std::time::{Duration, Instant};

use common::cluster::TestServer;
use serde_json::json;

/// The clusters the server lists.
async fn cluster_names(server: &TestServer) -> Vec<String> {
    let mut client = server.client();
    client.retry_for = Duration::from_secs(10);
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = json!({"maxResults": 100});
        if let Some(token) = &token {
            request["nextToken"] = json!(token);
        }
        let (answer, _) = client
            .call("ListClusters", request)
            .await
            .expect("list clusters");
        for arn in answer["clusterArns"].as_array().unwrap() {
            names.push(
                arn.as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        match answer["nextToken"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => return names,
        }
    }
}

fn checkpoint_files(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.data_dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_crash_at_any_point_of_a_checkpoint_loses_no_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let crash = root.path().join("crash-point");
    // Read by the server at each crash point of a checkpoint.
    std::env::set_var("ORC_TEST_CHECKPOINT_CRASH_FILE", &crash);
    let mut server = TestServer::start(
        root.path(),
        "server",
        &["--bootstrap"],
        &["--insecure", "--snapshot-threshold", "8"],
    );
    server.wait_ready().await;

    let mut acknowledged: Vec<String> = Vec::new();
    let mut next = 0;
    let mut crashed = 0;
    for point in ["write", "rename", "pointer", "flushed"] {
        std::fs::write(&crash, point).unwrap();
        let mut client = server.client();
        client.retry_for = Duration::from_millis(0);
        let deadline = Instant::now() + Duration::from_secs(120);
        // Writes until a checkpoint kills the server at `point`.
        while server.is_running() {
            assert!(
                Instant::now() < deadline,
                "no checkpoint reached {point}:\n{}",
                server.log_text()
            );
            let name = format!("shelf-{next}");
            next += 1;
            if client
                .call("CreateCluster", json!({"clusterName": name}))
                .await
                .is_ok()
            {
                acknowledged.push(name);
            }
        }
        std::fs::write(&crash, "").unwrap();
        let crashes = server.log_text().matches("crashing on purpose").count();
        assert_eq!(
            crashes,
            crashed + 1,
            "the server died, but not at {point}:\n{}",
            server.log_text()
        );
        crashed = crashes;
        server.restart();
        server.wait_ready().await;
        let names = cluster_names(&server).await;
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|name| !names.contains(name))
            .collect();
        assert!(
            lost.is_empty(),
            "after a crash at {point}, acknowledged writes are gone: {lost:?}\n{}",
            server.log_text()
        );
    }
    assert!(acknowledged.len() > 20, "{acknowledged:?}");

    // The files a crash left go after the next flush: one write.
    let mut client = server.client();
    client.retry_for = Duration::from_secs(10);
    client
        .call(
            "CreateCluster",
            json!({"clusterName": format!("shelf-{next}")}),
        )
        .await
        .expect("a write after the crashes");
    let files = checkpoint_files(&server);
    assert!(
        files.len() == 1 && files[0].starts_with("checkpoint-") && files[0].ends_with(".json"),
        "{files:?}"
    );
}

/// The raft index the data dir's newest checkpoint reflects (the server stopped).
fn checkpoint_index(data_dir: &std::path::Path) -> u64 {
    let db = orc::datadir::open_db(data_dir, 1).expect("open the stopped server's db");
    let file = orc::store::checkpoint::newest_file(&db, &orc::datadir::checkpoint_dir(data_dir))
        .expect("read the checkpoint pointer")
        .expect("a checkpoint file");
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file).expect("read the checkpoint")).unwrap();
    data["applied_index"].as_u64().unwrap()
}

#[tokio::test]
async fn a_graceful_stop_writes_a_checkpoint_so_a_restart_replays_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(root.path(), "server", &["--bootstrap"], &["--insecure"]);
    server.wait_ready().await;
    let client = server.client();
    for name in ["north", "south", "east"] {
        client
            .call("CreateCluster", json!({"clusterName": name}))
            .await
            .unwrap();
    }
    let applied = client.cluster_status(true).await.unwrap().applied_index;
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    // Far below the compaction threshold: only the stop wrote it.
    assert!(
        checkpoint_index(&server.data_dir) >= applied,
        "the checkpoint does not reflect index {applied}\n{}",
        server.log_text()
    );
    server.restart();
    server.wait_ready().await;
    let names = cluster_names(&server).await;
    for name in ["north", "south", "east"] {
        assert!(names.contains(&name.to_string()), "{names:?}");
    }
}
