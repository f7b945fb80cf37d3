//! Secrets for tasks on the real Docker Engine: a secret made with
//! `orc secretsmanager create-secret` reaches its container's environment
//! (read back with `docker exec`) and appears nowhere else: not in the
//! server's or the agent's log, not in describe-tasks,
//! describe-task-definition, describe-secret or list-secrets, not in the
//! watch stream, and not in any file of the server's or the agent's data
//! dir (the store keeps it sealed). A task definition naming a missing
//! secret is refused with the field's path, and an agent asking for the
//! secrets of a task placed elsewhere is refused.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::eventually;
use common::images::busybox_image;
use common::orc::TestOrc;
use futures::StreamExt as _;
use serde_json::{json, Value};

const IMAGE: &str = "orc-test/busybox:1";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_its_container_and_nothing_else() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let client = orc.client();
    let value = format!("s3cr3t-{:016x}", rand::random::<u64>());
    let second_value = format!("s3cr3t-{:016x}", rand::random::<u64>());

    // Everything the watch stream says from now on.
    let mut changes = client.watch(0).await.unwrap();
    let watched = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let watcher = tokio::spawn({
        let watched = watched.clone();
        async move {
            while let Some(Ok(change)) = changes.next().await {
                let line = serde_json::to_string(&change).unwrap();
                watched.lock().unwrap().push_str(&(line + "\n"));
            }
        }
    });

    let (ok, created, stderr) = orc.cli(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "lab/db",
        "--secret-string",
        &value,
    ]);
    assert!(ok, "{stderr}");
    assert!(created.contains("secret:lab/db") && !created.contains(&value));

    // A definition naming a secret that does not exist is refused by path.
    let missing = client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "app", "containerDefinitions": [{
                "name": "app", "image": image, "memory": 32,
                "secrets": [{"name": "DB_PASSWORD", "valueFrom": "lab/nope"}]
            }]}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("containerDefinitions[0].secrets[0].valueFrom")
            && missing.contains("lab/nope"),
        "{missing}"
    );

    let definition = orc
        .register(json!({"family": "app", "containerDefinitions": [{
            "name": "app", "image": image, "memory": 32,
            "command": ["sh", "-c", "echo started; sleep 600"],
            "environment": [{"name": "MODE", "value": "lab"}],
            "secrets": [{"name": "DB_PASSWORD",
                         "valueFrom": "arn:aws:secretsmanager:orc:000000000000:secret:lab/db"}]
        }]}))
        .await;
    let id = orc.run_task(&definition).await;
    orc.wait_task(&id, "RUNNING").await;
    let container = docker(&["ps", "-q", "--filter", &format!("label=orc.task-id={id}")]);
    let container = container.trim();
    assert!(!container.is_empty(), "no container for task {id}");
    let seen = docker(&["exec", container, "sh", "-c", "echo \"$MODE:$DB_PASSWORD\""]);
    assert_eq!(seen.trim(), format!("lab:{value}"));

    // A new value reaches tasks started afterwards.
    let (ok, _, stderr) = orc.cli(&[
        "secretsmanager",
        "put-secret-value",
        "--secret-id",
        "lab/db",
        "--secret-string",
        &second_value,
    ]);
    assert!(ok, "{stderr}");
    let second = orc.run_task(&definition).await;
    orc.wait_task(&second, "RUNNING").await;
    let container = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=orc.task-id={second}"),
    ]);
    let seen = docker(&[
        "exec",
        container.trim(),
        "sh",
        "-c",
        "echo \"$DB_PASSWORD\"",
    ]);
    assert_eq!(seen.trim(), second_value);

    // An agent asking for a task placed on another instance is refused.
    let (as_agent, _) = common::cluster::join_as_agent(&orc.server.address).await;
    let mut agent_api = orc::wire::proto::agent_api_client::AgentApiClient::new(
        orc::wire::channel_with(&orc.server.address, Some(as_agent)).unwrap(),
    );
    let refused = agent_api
        .get_task_secrets(orc::wire::proto::TaskSecretsRequest {
            cluster: "default".into(),
            container_instance_id: "another-instance".into(),
            task_arn: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Nowhere else: describe output, the watch stream, the logs, the files.
    let mut shown = String::new();
    for (action, body) in [
        ("DescribeTasks", json!({"tasks": [id, second]})),
        (
            "DescribeTaskDefinition",
            json!({"taskDefinition": definition}),
        ),
        (
            "secretsmanager:DescribeSecret",
            json!({"SecretId": "lab/db"}),
        ),
        ("secretsmanager:ListSecrets", json!({})),
        ("ListTasks", json!({})),
    ] {
        let answer: Value = orc.call(action, body).await;
        shown.push_str(&answer.to_string());
    }
    assert!(shown.contains("DB_PASSWORD") && shown.contains("lab/db"));
    let (ok, cli_shown, _) = orc.cli(&["--output", "json", "describe-tasks", "--tasks", &id]);
    assert!(ok);
    shown.push_str(&cli_shown);
    orc.call("StopTask", json!({"task": id})).await;
    orc.call("StopTask", json!({"task": second})).await;
    orc.wait_task(&id, "STOPPED").await;
    eventually(
        Duration::from_secs(60),
        "the watch to see the stops",
        || {
            let watched = watched.clone();
            async move {
                let text = watched.lock().unwrap().clone();
                (text.contains("CreateSecret")
                    && text.contains("PutSecretValue")
                    && text.contains("StopTask"))
                .then_some(())
            }
        },
    )
    .await;
    watcher.abort();
    shown.push_str(&watched.lock().unwrap());
    // The server's data dir (state, raft log, seal key) is its owner's only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&orc.server.data_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the server data dir is mode {mode:o}");
    }
    let logs = format!("{}\n{}", orc.server.log_text(), orc.agent_log());
    assert!(
        logs.contains("task secrets delivered"),
        "the agent never asked"
    );
    for secret in [&value, &second_value] {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret is in describe output or the watch stream"
        );
        assert!(!logs.contains(secret.as_str()), "a secret is in a log");
        for dir in [&orc.server.data_dir, &orc.agent_dir] {
            let found = common::files::files_containing(dir, secret.as_bytes());
            assert!(found.is_empty(), "a secret is in {found:?}");
        }
    }
}

/// Every run of exactly 64 lowercase hex characters in the files under `dir`.
fn hex_runs(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut runs = std::collections::BTreeSet::new();
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    common::files::each_file(dir, |_, bytes| {
        let mut start = None;
        for (i, b) in bytes.iter().chain([&0u8]).enumerate() {
            match (hex(b), start) {
                (true, None) => start = Some(i),
                (false, Some(from)) => {
                    if i - from == 64 {
                        runs.insert(String::from_utf8_lossy(&bytes[from..i]).to_string());
                    }
                    start = None;
                }
                _ => {}
            }
        }
    });
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_token_secret_is_sealed_in_the_data_dirs() {
    let root = tempfile::tempdir().unwrap();
    let servers = common::cluster::three_servers(root.path(), &[]).await;
    // The first login makes the secret (through Raft) and signs with it.
    let (answer, _) = servers[0]
        .client()
        .call("ecr:GetAuthorizationToken", json!({}))
        .await
        .unwrap();
    use base64::Engine as _;
    let token = answer["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .unwrap();
    let password = String::from_utf8(decoded).unwrap();
    let password = password.strip_prefix("AWS:").unwrap().to_string();
    let expires: u64 = password.split('.').nth(1).unwrap().parse().unwrap();
    // Every server holds it (a login through each server signs, so each
    // applied it)…
    for server in &servers {
        let (other, _) = server
            .client()
            .call("ecr:GetAuthorizationToken", json!({}))
            .await
            .unwrap();
        assert!(other["authorizationData"][0]["authorizationToken"].is_string());
    }
    // …and no 64-hex-character text in any file of any data dir (raft log,
    // checkpoint) is the secret that signed it.
    for server in &servers {
        for candidate in hex_runs(&server.data_dir) {
            assert_ne!(
                orc::api::ecr::sign_token(&candidate, expires),
                password,
                "the registry's token secret is in clear in {}",
                server.data_dir.display()
            );
        }
    }
}
