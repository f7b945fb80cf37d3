//! What a server accepts is bounded, and every refusal names its limit:
//! task definitions over ECS's 64 KiB, gRPC requests over 1 MiB, describe
//! lists over ECS's counts, tasks larger than any instance. And the CLI's
//! small manners: quiet on a closed pipe, plain logs in a file, a hint
//! about `file://`, the input flags of register-task-definition.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::TestServer;
use common::state_size::{realistic_definition, FakeAgent};
use serde_json::json;

async fn server() -> (tempfile::TempDir, TestServer) {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    (root, server)
}

/// Runs the orc CLI against `server`; returns (success, stdout, stderr).
fn cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("--endpoint")
        .arg(&server.address)
        .args(args)
        .output()
        .expect("run orc");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A definition whose JSON is about `bytes` long, all in environment variables.
fn definition_of_size(bytes: usize) -> serde_json::Value {
    let environment: Vec<_> = (0..bytes / 130)
        .map(|i| json!({"name": format!("VAR_{i:06}"), "value": "x".repeat(100)}))
        .collect();
    json!({"family": "big", "containerDefinitions": [
        {"name": "c", "image": "busybox", "memory": 64, "environment": environment}]})
}

#[tokio::test]
async fn oversized_task_definitions_and_requests_are_refused_naming_the_limit() {
    let (_root, server) = server().await;
    let client = server.client();

    // Over ECS's 64 KiB but under the request cap: the server refuses it.
    let error = client
        .call("RegisterTaskDefinition", definition_of_size(100_000))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("64 KiB") && error.contains("task definition"),
        "{error}"
    );

    // 24 MB (the issue's 180,000 variables): refused before it is sent...
    let error = client
        .call("RegisterTaskDefinition", definition_of_size(24_000_000))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("limit of 1.0 MiB per request"), "{error}");

    // ...and by the server too, from a client that does not check.
    let mut raw =
        orc::wire::proto::orc_client::OrcClient::new(orc::wire::channel(&server.address).unwrap())
            .max_encoding_message_size(64 << 20);
    let status = raw
        .call(orc::wire::proto::ActionRequest {
            action: "RegisterTaskDefinition".into(),
            body_json: definition_of_size(3_000_000).to_string(),
            request_id: "raw-big".into(),
        })
        .await
        .unwrap_err();
    let error = orc::wire::status::from_status(status).to_string();
    assert!(
        error.contains("over the server's limit of 1.0 MiB"),
        "{error}"
    );

    // Nothing of it was stored, and a definition at the limit's side works.
    let (answer, _) = client.call("ListTaskDefinitions", json!({})).await.unwrap();
    assert_eq!(answer["taskDefinitionArns"], json!([]), "{answer}");
    client
        .call("RegisterTaskDefinition", definition_of_size(60_000))
        .await
        .unwrap();
}

#[tokio::test]
async fn describe_lists_over_ecs_limits_are_refused() {
    let (_root, server) = server().await;
    let client = server.client();
    let ids: Vec<String> = (0..5000).map(|i| format!("{i:032x}")).collect();
    let error = client
        .call("DescribeTasks", json!({"tasks": ids}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("at most 100") && error.contains("got 5000"),
        "{error}"
    );
    // 100 is fine: every one is reported missing.
    let (answer, _) = client
        .call("DescribeTasks", json!({"tasks": ids[..100]}))
        .await
        .unwrap();
    assert_eq!(answer["failures"].as_array().unwrap().len(), 100);
    let error = client
        .call("DescribeServices", json!({"services": ids[..11]}))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("at most 10"), "{error}");
    let error = client
        .call(
            "DescribeContainerInstances",
            json!({"containerInstances": ids[..101]}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("at most 100"), "{error}");
}

#[tokio::test]
async fn stop_task_honours_the_cluster_of_a_task_arn() {
    let (_root, server) = server().await;
    let arn = "arn:orc:ecs:local:000000000000:task/other/0123456789abcdef0123456789abcdef";
    let (ok, _, stderr) = cli(&server, &["stop-task", "--task", arn]);
    assert!(!ok);
    assert!(
        stderr.contains("\"other\""),
        "the ARN's cluster is looked in: {stderr}"
    );
    let (ok, _, stderr) = cli(
        &server,
        &["stop-task", "--cluster", "default", "--task", arn],
    );
    assert!(!ok);
    assert!(
        stderr.contains("is in cluster \"other\" but --cluster says \"default\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn tasks_larger_than_every_instance_are_warned_then_refused() {
    let (_root, server) = server().await;
    let client = server.client();
    let _agent = FakeAgent::register(&server.address, 4096, 3900).await;
    let mut huge = realistic_definition("huge", 1);
    huge["containerDefinitions"][0]["memory"] = json!(1_000_000_000_000_000i64);
    let (_, warnings) = client.call("RegisterTaskDefinition", huge).await.unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("the largest has 3900 MiB")),
        "{warnings:?}"
    );
    let error = client
        .call("RunTask", json!({"taskDefinition": "huge"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("has 3900 MiB") && error.contains("more than any container instance"),
        "{error}"
    );
    let mut cpu = realistic_definition("cpu", 1);
    cpu["containerDefinitions"][0]["cpu"] = json!(1_000_000_000_000i64);
    client.call("RegisterTaskDefinition", cpu).await.unwrap();
    let error = client
        .call("RunTask", json!({"taskDefinition": "cpu"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("CPU units") && error.contains("4096"),
        "{error}"
    );
    // A task that fits is still run.
    let (answer, _) = client
        .call("RegisterTaskDefinition", realistic_definition("fits", 1))
        .await
        .unwrap();
    assert_eq!(answer["taskDefinition"]["revision"], 1);
    let (answer, _) = client
        .call("RunTask", json!({"taskDefinition": "fits"}))
        .await
        .unwrap();
    assert_eq!(answer["tasks"].as_array().unwrap().len(), 1, "{answer}");
}

#[tokio::test]
async fn registration_refuses_upper_case_images_and_names_misspelt_fields() {
    let (_root, server) = server().await;
    let (ok, _, stderr) = cli(
        &server,
        &[
            "register-task-definition",
            "--family",
            "f",
            "--container-definitions",
            r#"[{"name":"c","image":"My/Web:1","memory":64}]"#,
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("upper case") && stderr.contains("\"my/web:1\""),
        "{stderr}"
    );
    // The misspelling is why it is refused; the error says so.
    let (ok, _, stderr) = cli(
        &server,
        &[
            "register-task-definition",
            "--family",
            "f",
            "--container-definitions",
            r#"[{"name":"c","image":"busybox","memroy":64}]"#,
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("memroy") && stderr.contains("did you mean \"memory\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn cli_input_json_without_file_prefix_says_what_to_write() {
    let (_root, server) = server().await;
    let (ok, _, stderr) = cli(
        &server,
        &[
            "register-task-definition",
            "--cli-input-json",
            "nonexist.json",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("file://nonexist.json"), "{stderr}");
    // With no input at all, both ways of giving it are named.
    let (ok, _, stderr) = cli(&server, &["register-task-definition"]);
    assert!(!ok);
    assert!(
        stderr.contains("--cli-input-json") && stderr.contains("--family"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_a_listing_quietly() {
    let (_root, server) = server().await;
    server
        .client()
        .call("RegisterTaskDefinition", realistic_definition("web", 1))
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("--endpoint")
        .arg(&server.address)
        .arg("list-task-definitions")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written (`| head -0`).
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    assert_ne!(status.code(), Some(101), "not a panic's exit status");
}

#[tokio::test]
async fn metrics_are_prometheus_0_0_4_with_the_node_id_as_a_label_and_take_no_body() {
    let (_root, server) = server().await;
    let http = |request: String| common::cluster::http_request(&server.address, &request);
    let node_id = common::cluster::eventually(Duration::from_secs(20), "a member list", || async {
        let status = server.client().cluster_status(true).await.ok()?;
        status.members.first().map(|member| member.id)
    })
    .await;
    let answer = http("GET /metrics HTTP/1.1\r\nHost: orc\r\nConnection: close\r\n\r\n".into());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("orc_raft_node_info{{node_id=\"{node_id}\"}} 1")),
        "{answer}"
    );
    let answer = http(format!(
        "GET /metrics HTTP/1.1\r\nHost: orc\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        5, "hello"
    ));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("takes no request body"), "{answer}");
}

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let (_root, server) = server().await;
    let log = server.log_text();
    assert!(log.contains("server started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the log file: {log:?}"
    );
}
