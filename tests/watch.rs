//! End-to-end tests of `Orc.Watch` and `orc watch` on real `orc server`
//! processes: every write arrives once and in order, a dropped watch resumes
//! after the last revision it saw (on any server, and across a server
//! restart for the CLI), and a revision the server no longer holds is
//! refused with a sentence that says what to do.

mod common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{eventually, three_servers, TestServer};
use futures::StreamExt as _;
use orc::client::{request_id, ChangeStream, Client};
use orc::store::Change;
use orc::Error;
use serde_json::json;

/// How long one change may take to arrive.
const PATIENCE: Duration = Duration::from_secs(20);

/// Creates clusters `{prefix}-{n}` for `n` in `numbers`, one acknowledged
/// write each; returns their request ids in order.
async fn create_clusters(
    client: &Client,
    prefix: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in numbers {
        let id = request_id();
        client
            .call_with_id(
                "CreateCluster",
                json!({"clusterName": format!("{prefix}-{n}")}),
                &id,
            )
            .await
            .unwrap_or_else(|e| panic!("create-cluster {prefix}-{n} failed: {e}"));
        ids.push(id);
    }
    ids
}

/// The next `count` changes of a watch.
async fn next_changes(stream: &mut ChangeStream, count: usize) -> Vec<Change> {
    let mut changes = Vec::new();
    for _ in 0..count {
        let change = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no change within {PATIENCE:?} after {changes:?}"))
            .expect("the watch ended early")
            .unwrap_or_else(|e| panic!("the watch failed: {e}"));
        changes.push(change);
    }
    changes
}

/// Checks that `changes` are exactly the create-clusters with `request_ids`
/// at the consecutive revisions after `after`.
fn assert_writes(changes: &[Change], after: u64, prefix: &str, first: u64, request_ids: &[String]) {
    assert_eq!(changes.len(), request_ids.len());
    for (offset, (change, request_id)) in changes.iter().zip(request_ids).enumerate() {
        let offset = offset as u64;
        assert_eq!(change.revision, after + 1 + offset, "{changes:#?}");
        assert_eq!(change.action, "CreateCluster");
        assert_eq!(&change.request_id, request_id);
        assert_eq!(
            change.subjects,
            vec![format!("cluster/{prefix}-{}", first + offset)]
        );
        assert_eq!(change.error, None);
        assert!(change.raft_index > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_sees_each_write_once_and_resumes_without_gap_or_repeat() {
    let root = tempfile::tempdir().unwrap();
    let servers = three_servers(root.path(), &[]).await;

    // The leader's revision once membership settled; watch two followers.
    let status = servers[0].client().cluster_status(true).await.unwrap();
    let start = status.revision;
    let leader = servers
        .iter()
        .find(|s| s.address == status.leader_address)
        .expect("the leader is one of the three");
    let followers: Vec<&TestServer> = servers
        .iter()
        .filter(|s| s.address != status.leader_address)
        .collect();
    let mut watch = followers[0].client().watch(start).await.unwrap();

    let writes = create_clusters(&leader.client(), "w", 1..=20).await;
    let seen = next_changes(&mut watch, 20).await;
    assert_writes(&seen, start, "w", 1, &writes);
    let last = seen.last().unwrap().revision;

    // Writes while nobody watches; the other follower resumes after the
    // last revision seen and sends exactly the missed ones.
    drop(watch);
    let missed = create_clusters(&followers[1].client(), "w", 21..=30).await;
    let mut resumed = followers[1].client().watch(last).await.unwrap();
    assert_writes(
        &next_changes(&mut resumed, 10).await,
        last,
        "w",
        21,
        &missed,
    );
    // ...and then the next new one, so nothing came twice in between.
    let next = create_clusters(&leader.client(), "w", 31..=31).await;
    assert_writes(
        &next_changes(&mut resumed, 1).await,
        last + 10,
        "w",
        31,
        &next,
    );

    // A refused command is a change too, with its error; a retried request
    // id applies once and makes no change.
    leader
        .client()
        .call_with_id("CreateCluster", json!({"clusterName": "w-31"}), &next[0])
        .await
        .unwrap();
    let refused = leader
        .client()
        .call("DeleteCluster", json!({"cluster": "default"}))
        .await
        .unwrap_err();
    let change = next_changes(&mut resumed, 1).await.remove(0);
    assert_eq!(change.revision, last + 12);
    assert_eq!(change.action, "DeleteCluster");
    assert_eq!(change.subjects, vec!["cluster/default".to_string()]);
    assert_eq!(change.error, Some(refused.to_string()));
}

/// `orc watch` as a child process, its stdout lines on a channel.
struct CliWatch {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::path::PathBuf,
}

impl CliWatch {
    fn start(server: &TestServer, args: &[&str]) -> CliWatch {
        let stderr = server
            .log
            .with_extension(format!("watch-{}.log", rand_suffix()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_orc"))
            .arg("watch")
            .args(args)
            .env("ORC_ENDPOINT", &server.address)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start orc watch");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        CliWatch {
            child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line it prints.
    fn next_line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!(
                "orc watch printed nothing within {PATIENCE:?}; its stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// The revision of the next JSON line, checked to be a create-cluster.
    fn next_revision(&self) -> u64 {
        let line = self.next_line();
        let change: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert_eq!(change["action"], "CreateCluster", "{line}");
        change["revision"].as_u64().unwrap()
    }
}

impl Drop for CliWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    request_id()[..8].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_resumes_across_a_restart_and_refuses_a_compacted_revision() {
    let root = tempfile::tempdir().unwrap();
    // A small history, so that old revisions are compacted.
    let mut server = TestServer::start(
        root.path(),
        "s1",
        &["--bootstrap"],
        &["--watch-history", "8"],
    );
    server.wait_ready().await;
    let mut client = server.client();
    client.retry_for = Duration::from_secs(20);
    create_clusters(&client, "c", 1..=20).await;
    let revision = client.cluster_status(false).await.unwrap().revision;

    // Through the client: a clear, non-retryable error.
    let error = match client.watch(1).await {
        Ok(_) => panic!("a watch after revision 1 should be refused"),
        Err(error) => error,
    };
    let Error::Conflict(message) = &error else {
        panic!("expected a compacted conflict, got {error:?}");
    };
    assert!(!error.is_retryable());
    assert_eq!(
        message,
        &format!(
            "the changes after revision 1 were compacted (this server holds changes from revision {} on): take the revision from `orc cluster status`, read the state again, then watch after that revision",
            revision - 7
        )
    );
    // Through the CLI: the same sentence, and a failure exit.
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["watch", "--after-revision", "1"])
        .env("ORC_ENDPOINT", &server.address)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("error: {message}")),
        "stderr: {stderr}"
    );

    // A table line per change.
    let table = CliWatch::start(&server, &["--after-revision", &(revision - 1).to_string()]);
    let line = table.next_line();
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            revision.to_string().as_str(),
            "CreateCluster",
            "cluster/c-20",
            "ok"
        ],
        "{line}"
    );
    drop(table);

    // JSON lines from the backlog on, then across a restart of the server.
    let watch = CliWatch::start(
        &server,
        &[
            "--after-revision",
            &(revision - 2).to_string(),
            "--output",
            "json",
        ],
    );
    assert_eq!(watch.next_revision(), revision - 1);
    assert_eq!(watch.next_revision(), revision);
    server.kill();
    eventually(PATIENCE, "orc watch to notice the lost server", || async {
        watch
            .stderr()
            .contains(&format!("reconnecting to resume after revision {revision}"))
            .then_some(())
    })
    .await;
    server.restart();
    server.wait_ready().await;
    create_clusters(&client, "c", 21..=23).await;
    for expected in revision + 1..=revision + 3 {
        assert_eq!(watch.next_revision(), expected, "{}", watch.stderr());
    }
    assert!(
        watch.stderr().contains(&format!(
            "reconnected to {}; resuming after revision {revision}",
            server.address
        )),
        "{}",
        watch.stderr()
    );
}
