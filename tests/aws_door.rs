//! The AWS door with the real clients: the `aws` CLI (v1) and boto3 from
//! PyPI (`.ci/run` installs them) against a real orc server, through
//! `AWS_ENDPOINT_URL` with dummy keys and region `orc`. The scripts a user
//! would write live in `tests/aws/`; this file starts orc, runs them, and
//! checks what the clients saw. Hostile HTTP goes over a raw socket.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::TestServer;
use common::images::{busybox_image, docker_in, DockerTags};
use common::orc::TestOrc;
use common::state_size::{run_and_stop_tasks, FakeAgent};
use serde_json::{json, Value};

const IMAGE: &str = "orc-test/busybox:1";

/// The scripts' directory.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws")
}

/// A command with the AWS environment for the orc at `address`, isolated
/// from any AWS configuration of the machine.
fn aws_command(program: &str, address: &str, workdir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(workdir)
        .env("AWS_ENDPOINT_URL", format!("http://{address}"))
        .env("AWS_ACCESS_KEY_ID", "orc-test")
        .env("AWS_SECRET_ACCESS_KEY", "orc-test-secret")
        .env("AWS_DEFAULT_REGION", "orc")
        .env("AWS_CONFIG_FILE", workdir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            workdir.join("no-aws-credentials"),
        )
        .env("AWS_PAGER", "")
        // The scripts import tests/aws/expect.py: no __pycache__ beside them.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("IMAGE", IMAGE);
    command
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `aws ARGS...`; panics with instructions when the CLI is missing.
fn aws(address: &str, workdir: &Path, args: &[&str]) -> Output {
    aws_command("aws", address, workdir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `aws` ({e}): install the clients with `pip install awscli boto3` (.ci/run does)")
        })
}

/// Runs one of `tests/aws/`'s scripts with `interpreter`; panics with its
/// output unless it succeeds.
fn script(interpreter: &str, name: &str, address: &str, workdir: &Path) -> String {
    script_with(interpreter, name, address, workdir, &[])
}

/// [`script`] with more environment variables.
fn script_with(
    interpreter: &str,
    name: &str,
    address: &str,
    workdir: &Path,
    environment: &[(&str, &str)],
) -> String {
    let output = aws_command(interpreter, address, workdir)
        .envs(environment.iter().copied())
        .arg(scripts().join(name))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter} ({e})"));
    assert!(output.status.success(), "{name} failed:\n{}", text(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

async fn server() -> (TestServer, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    // Plain text (--insecure): these tests drive the door's and the registry's
    // own authentication with raw HTTP/1.1 clients; TLS is tests/security.rs's.
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &["--insecure"]);
    server.wait_ready().await;
    (server, root)
}

#[tokio::test]
async fn errors_reach_aws_and_boto3_with_ecs_exception_names() {
    let (server, root) = server().await;
    let address = server.address.as_str();
    let dir = root.path();

    // Before the door, this exited 0 and created nothing.
    let created = aws(
        address,
        dir,
        &["ecs", "create-cluster", "--cluster-name", "x"],
    );
    assert!(created.status.success(), "{}", text(&created));
    let answer: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(answer["cluster"]["status"], "ACTIVE", "{answer}");
    let (listed, _) = server
        .client()
        .call("ListClusters", json!({}))
        .await
        .unwrap();
    assert!(
        listed["clusterArns"].to_string().contains("cluster/x"),
        "{listed}"
    );

    for (args, code, words) in [
        (
            vec!["ecs", "list-tasks", "--cluster", "nope"],
            "ClusterNotFoundException",
            "\"nope\"",
        ),
        (
            vec![
                "ecs",
                "update-service",
                "--service",
                "ghost",
                "--desired-count",
                "1",
            ],
            "ServiceNotFoundException",
            "\"ghost\"",
        ),
        (
            vec![
                "ecs",
                "register-task-definition",
                "--family",
                "bad",
                "--container-definitions",
                r#"[{"name": "c", "image": "busybox", "memory": 1}]"#,
            ],
            "InvalidParameterException",
            "containerDefinitions[0].memory",
        ),
        (
            vec![
                "ecs",
                "create-task-set",
                "--cluster",
                "default",
                "--service",
                "s",
                "--task-definition",
                "t",
            ],
            "UnknownOperationException",
            "CreateTaskSet",
        ),
    ] {
        let output = aws(address, dir, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // awscli v1 exits 255 on a service error (v2: 254).
        assert!(
            matches!(output.status.code(), Some(254 | 255)),
            "{args:?}: {}",
            text(&output)
        );
        assert!(
            stderr.contains(&format!("An error occurred ({code})")) && stderr.contains(words),
            "{args:?} should fail with {code} naming {words}: {}",
            text(&output)
        );
    }
    let seen = script("python3", "errors.py", address, dir);
    assert!(seen.ends_with("ok\n"), "{seen}");
    // Nothing of the refused requests was applied.
    let (definitions, _) = server
        .client()
        .call("ListTaskDefinitions", json!({}))
        .await
        .unwrap();
    assert_eq!(
        definitions["taskDefinitionArns"],
        json!([]),
        "{definitions}"
    );
}

/// Runs the orc CLI against `address`; panics with its output unless it succeeds.
fn orc_cli(address: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("--endpoint")
        .arg(address)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "orc {args:?}:\n{}", text(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Creates a user with `orc iam create-user` and a key for it with
/// `orc iam create-access-key`; returns the key id and its secret.
fn user_with_key(address: &str, name: &str, role: &str, positional: bool) -> (String, String) {
    if positional {
        orc_cli(address, &["iam", "create-user", name, "--role", role]);
    } else {
        orc_cli(
            address,
            &["iam", "create-user", "--user-name", name, "--role", role],
        );
    }
    let created: Value = serde_json::from_str(&orc_cli(
        address,
        &["iam", "create-access-key", "--user-name", name],
    ))
    .unwrap();
    let key = &created["AccessKey"];
    assert_eq!(key["UserName"], name, "{created}");
    (
        key["AccessKeyId"].as_str().unwrap().to_string(),
        key["SecretAccessKey"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn sigv4_with_orc_access_keys_refuses_what_aws_refuses() {
    let (server, root) = server().await;
    let address = server.address.as_str();
    let dir = root.path();
    let (admin_key, admin_secret) = user_with_key(address, "ada", "admin", true);
    let (operator_key, operator_secret) = user_with_key(address, "olga", "operator", false);
    let (readonly_key, readonly_secret) = user_with_key(address, "rita", "readonly", false);
    orc_cli(
        address,
        &[
            "iam",
            "create-user",
            "stu",
            "--role",
            "operator",
            "--clusters",
            "lab1",
        ],
    );
    let student: Value = serde_json::from_str(&orc_cli(
        address,
        &["iam", "create-access-key", "--user-name", "stu"],
    ))
    .unwrap();
    let student_key = student["AccessKey"]["AccessKeyId"].as_str().unwrap();
    let student_secret = student["AccessKey"]["SecretAccessKey"].as_str().unwrap();
    assert!(admin_key.starts_with("AKIA") && admin_key.len() == 20);

    // The CLI lists users and keys, never a secret.
    let users = orc_cli(address, &["iam", "list-users"]);
    assert!(
        users.contains("\"orc:role\"") && users.contains("rita"),
        "{users}"
    );
    let keys = orc_cli(address, &["iam", "list-access-keys"]);
    assert!(keys.contains(&operator_key), "{keys}");
    for secret in [&admin_secret, &operator_secret, &readonly_secret] {
        assert!(!keys.contains(secret.as_str()) && !users.contains(secret.as_str()));
    }

    let output = aws_command("python3", address, dir)
        .arg(scripts().join("sigv4.py"))
        .env("ADMIN_KEY", &admin_key)
        .env("ADMIN_SECRET", &admin_secret)
        .env("OPERATOR_KEY", &operator_key)
        .env("OPERATOR_SECRET", &operator_secret)
        .env("READONLY_KEY", &readonly_key)
        .env("READONLY_SECRET", &readonly_secret)
        .env("STUDENT_KEY", student_key)
        .env("STUDENT_SECRET", student_secret)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sigv4.py failed:\n{}",
        text(&output)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    for code in [
        "InvalidSignatureException: The request signature",
        "SignatureDoesNotMatch",
        "Signature expired",
        "altered body: InvalidSignatureException",
        "AccessDeniedException",
        "AccessDenied: ",
    ] {
        assert!(printed.contains(code), "{code} missing from:\n{printed}");
    }
    assert!(printed.ends_with("ok\n"), "{printed}");

    // The aws CLI with the readonly key: reads pass, writes are refused
    // with ECS's code; with the admin key, `aws iam` works.
    let as_user = |key: &str, secret: &str, args: &[&str]| {
        aws_command("aws", address, dir)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .args(args)
            .output()
            .unwrap()
    };
    let listed = as_user(&readonly_key, &readonly_secret, &["ecs", "list-clusters"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let refused = as_user(
        &readonly_key,
        &readonly_secret,
        &["ecs", "create-cluster", "--cluster-name", "nope"],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("AccessDeniedException"),
        "{}",
        text(&refused)
    );
    let wrong = as_user(&admin_key, "wrong-secret", &["iam", "list-users"]);
    assert!(
        text(&wrong).contains("SignatureDoesNotMatch"),
        "{}",
        text(&wrong)
    );
    let users = as_user(&admin_key, &admin_secret, &["iam", "list-users"]);
    assert!(users.status.success(), "{}", text(&users));
    assert!(String::from_utf8_lossy(&users.stdout).contains("olga"));

    // The secrets are sealed in the data dir and absent from the log.
    let log = server.log_text();
    for secret in [&admin_secret, &operator_secret, &readonly_secret] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
        assert!(
            common::files::files_containing(&dir.join("server"), secret.as_bytes()).is_empty(),
            "a secret access key is in the data dir"
        );
    }
}

#[tokio::test]
async fn access_keys_survive_a_restart_with_the_seal_key() {
    let (mut server, root) = server().await;
    let dir = root.path();
    let (key, secret) = user_with_key(&server.address, "ada", "admin", true);
    let seal_key = dir.join("server/keys/seal.key");
    let before = std::fs::read(&seal_key).unwrap();
    server.kill();
    server.restart();
    server.wait_ready().await;
    assert_eq!(
        std::fs::read(&seal_key).unwrap(),
        before,
        "the seal key changed"
    );
    let listed = aws_command("aws", &server.address, dir)
        .env("AWS_ACCESS_KEY_ID", &key)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .args(["iam", "list-users"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    let wrong = aws_command("aws", &server.address, dir)
        .env("AWS_ACCESS_KEY_ID", &key)
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .args(["iam", "list-users"])
        .output()
        .unwrap();
    assert!(
        text(&wrong).contains("SignatureDoesNotMatch"),
        "{}",
        text(&wrong)
    );
}

#[tokio::test]
async fn sigv4_on_a_secure_server_refuses_unknown_keys_and_unsigned_requests() {
    let root = tempfile::tempdir().unwrap();
    // Secure (the harness's default): TLS, this process holds the admin
    // certificate for the CLI; aws and boto3 bring no certificate.
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let address = server.address.as_str();
    let (key, secret) = user_with_key(address, "ada", "admin", true);
    let output = aws_command("python3", address, root.path())
        .arg(scripts().join("secure.py"))
        // By its address: a server's certificate names the address it
        // advertises, so boto3 verifies it as dialled.
        .env("AWS_ENDPOINT_URL", format!("https://{address}"))
        .env("AWS_CA_BUNDLE", server.data_dir.join("tls/ca.pem"))
        .env("ADMIN_KEY", &key)
        .env("ADMIN_SECRET", &secret)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "secure.py failed:\n{}",
        text(&output)
    );
    assert!(String::from_utf8_lossy(&output.stdout).ends_with("ok\n"));
}

#[tokio::test]
async fn elbv2_over_the_query_protocol_with_aws_and_boto3() {
    let (server, root) = server().await;
    let address = server.address.as_str();
    let dir = root.path();
    let seen = script("python3", "elbv2.py", address, dir);
    assert!(seen.ends_with("ok\n"), "{seen}");

    let created = aws(
        address,
        dir,
        &["elbv2", "create-load-balancer", "--name", "cli"],
    );
    assert!(created.status.success(), "{}", text(&created));
    let answer: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(
        answer["LoadBalancers"][0]["LoadBalancerName"], "cli",
        "{answer}"
    );
    for (args, code) in [
        (
            vec![
                "elbv2",
                "create-load-balancer",
                "--name",
                "cli",
                "--type",
                "network",
            ],
            "DuplicateLoadBalancerName",
        ),
        (
            vec!["elbv2", "describe-load-balancers", "--names", "ghost"],
            "LoadBalancerNotFound",
        ),
    ] {
        let output = aws(address, dir, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(&format!("An error occurred ({code})")),
            "{args:?} should fail with {code}: {}",
            text(&output)
        );
    }
    // The door went through the same dispatch as Orc.Call.
    let (described, _) = server
        .client()
        .call("elbv2:DescribeLoadBalancers", json!({}))
        .await
        .unwrap();
    assert_eq!(
        described["LoadBalancers"].as_array().unwrap().len(),
        1,
        "{described}"
    );
}

#[tokio::test]
async fn the_other_ecs_verbs_through_boto3() {
    let (server, root) = server().await;
    let _agent = FakeAgent::register(&server.address, 4096, 4096).await;
    let seen = script("python3", "ecs_verbs.py", &server.address, root.path());
    assert!(seen.ends_with("ok\n"), "{seen}");
}

#[tokio::test]
async fn the_cli_paginates_list_tasks_over_250_tasks() {
    let (server, root) = server().await;
    let address = server.address.as_str();
    let client = server.client();
    // 250 tasks, reported stopped by a fake instance (stopped tasks stay
    // listed for an hour, whatever becomes of the instance).
    let agent = FakeAgent::register(address, 1_000_000, 10_000_000).await;
    client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "many", "containerDefinitions": [
                {"name": "web", "image": "x/y:1", "memory": 8},
                {"name": "sidecar", "image": "x/y:1", "memory": 8}]}),
        )
        .await
        .unwrap();
    run_and_stop_tasks(&client, &agent, "many", 250).await;

    // Orc.Call pages as ECS does: 100 at most, and a token for the rest.
    let (first, _) = client
        .call("ListTasks", json!({"desiredStatus": "STOPPED"}))
        .await
        .unwrap();
    assert_eq!(first["taskArns"].as_array().unwrap().len(), 100);
    assert!(first["nextToken"].is_string(), "{}", first["nextToken"]);

    // The CLI follows the tokens by itself (pages of 100, then of 30).
    for args in [
        vec!["ecs", "list-tasks", "--desired-status", "STOPPED"],
        vec![
            "ecs",
            "list-tasks",
            "--desired-status",
            "STOPPED",
            "--page-size",
            "30",
        ],
    ] {
        let output = aws(address, root.path(), &args);
        assert!(output.status.success(), "{}", text(&output));
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut arns: Vec<&str> = answer["taskArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(arns.len(), 250, "{args:?}");
        arns.sort();
        arns.dedup();
        assert_eq!(arns.len(), 250, "{args:?}: every task once");
    }
    // --max-items stops early and hands out the CLI's own token.
    let output = aws(
        address,
        root.path(),
        &[
            "ecs",
            "list-tasks",
            "--desired-status",
            "STOPPED",
            "--page-size",
            "40",
            "--max-items",
            "50",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["taskArns"].as_array().unwrap().len(), 50, "{answer}");
    assert!(answer["NextToken"].is_string(), "{answer}");
}

#[tokio::test]
async fn seed_002_walk_through_with_boto3() {
    busybox_image(IMAGE);
    let orc = TestOrc::start_with(&["--insecure"]).await;
    let out = script(
        "python3",
        "seed002.py",
        &orc.server.address,
        orc.root.path(),
    );
    assert!(out.ends_with("ok\n"), "{out}");
}

#[tokio::test]
async fn seed_004_lab_as_a_student_types_it_with_aws() {
    busybox_image(IMAGE);
    let orc = TestOrc::start_with(&["--insecure"]).await;
    let port = common::cluster::free_port().to_string();
    let out = script_with(
        "bash",
        "seed004.sh",
        &orc.server.address,
        orc.root.path(),
        &[("LB_PORT", &port)],
    );
    assert!(out.contains("balanced over 3"), "{out}");
    assert!(out.contains("scaled to 4"), "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    assert!(
        orc.running_containers().is_empty(),
        "containers left: {:?}",
        orc.running_containers()
    );
    let (services, _) = orc
        .client()
        .call("DescribeServices", json!({"services": ["lab"]}))
        .await
        .unwrap();
    assert_ne!(services["services"][0]["status"], "ACTIVE", "{services}");
}

/// One raw HTTP/1.1 exchange: sends `head` (request line and headers, CRLF
/// separated, without the blank line) and `body`, then reads the whole
/// answer; returns (status, headers, body).
fn raw_http(address: &str, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("{head}\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (headers, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (status, headers.to_lowercase(), body.to_string())
}

fn json_request(
    address: &str,
    target: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String, Value) {
    let mut head = format!(
        "POST / HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}",
        body.len()
    );
    if let Some(target) = target {
        head.push_str(&format!("\r\nX-Amz-Target: {target}"));
    }
    let (status, headers, body) = raw_http(address, &head, body);
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, headers, body)
}

/// A hostile awsJson1_1 request and what it must get.
type HostileCase<'a> = (Option<String>, &'a str, Vec<u8>, &'a str, &'a str);

#[tokio::test]
async fn hostile_requests_get_a_4xx_in_the_protocol_shape_and_the_server_stays_up() {
    let (server, _root) = server().await;
    let address = server.address.as_str();
    let ecs = |action: &str| format!("AmazonEC2ContainerServiceV20141113.{action}");
    let json = "application/x-amz-json-1.1";

    // (X-Amz-Target, Content-Type, body, the error's __type, words of its message)
    let cases: Vec<HostileCase> = vec![
        (
            Some(ecs("CreateCluster")),
            json,
            b"{\"clusterName\": ".to_vec(),
            "SerializationException",
            "not valid JSON",
        ),
        (
            Some(ecs("CreateCluster")),
            json,
            b"[\"x\"]".to_vec(),
            "SerializationException",
            "not a JSON object",
        ),
        (
            Some(ecs("CreateCluster")),
            json,
            b"{\"clusterName\": \"\xff\xfe\"}".to_vec(),
            "SerializationException",
            "not UTF-8",
        ),
        (
            Some(ecs("CreateCluster")),
            json,
            b"{\"clusterName\": 7}".to_vec(),
            "InvalidParameterException",
            "expected a string",
        ),
        (
            Some("DynamoDB_20120810.PutItem".into()),
            json,
            b"{}".to_vec(),
            "UnknownOperationException",
            "DynamoDB_20120810.PutItem",
        ),
        (
            Some(ecs("DeleteAttributes")),
            json,
            b"{}".to_vec(),
            "UnknownOperationException",
            "DeleteAttributes",
        ),
        (
            None,
            json,
            b"{}".to_vec(),
            "UnknownOperationException",
            "X-Amz-Target",
        ),
        (
            Some(ecs("CreateCluster")),
            "text/plain",
            b"{}".to_vec(),
            "SerializationException",
            "Content-Type",
        ),
    ];
    for (target, content_type, body, code, words) in &cases {
        let (status, headers, answer) =
            json_request(address, target.as_deref(), content_type, body);
        assert_eq!(status, 400, "{target:?}: {answer}");
        assert_eq!(answer["__type"], *code, "{target:?}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(words),
            "{target:?}: {answer}"
        );
        assert!(headers.contains("x-amzn-requestid:"), "{headers}");
    }

    // A 10 MB body is refused from its Content-Length, before it is read.
    let (status, _, answer) = raw_http_json(
        address,
        &format!(
            "POST / HTTP/1.1\r\nContent-Type: {json}\r\nX-Amz-Target: {}\r\nContent-Length: 10485760",
            ecs("CreateCluster")
        ),
        b"",
    );
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["__type"], "ClientException", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("1.0 MiB"),
        "{answer}"
    );
    // ... and so is one sent in chunks, once it passes the limit.
    let chunk = vec![b' '; 1024 * 1024 + 1];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    let (status, _, answer) = raw_http_json(
        address,
        &format!(
            "POST / HTTP/1.1\r\nContent-Type: {json}\r\nX-Amz-Target: {}\r\nTransfer-Encoding: chunked",
            ecs("CreateCluster")
        ),
        &body,
    );
    assert_eq!(status, 413, "{answer}");

    // Query-protocol (form) bodies with bad encodings get XML errors.
    for (form, code, words) in [
        (
            "Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.1=%zz",
            "MalformedQueryString",
            "hex digits",
        ),
        (
            "Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.1=%ff",
            "MalformedQueryString",
            "UTF-8",
        ),
        ("Version=2015-12-01", "MalformedQueryString", "no Action"),
        (
            "Action=CreateBucket&Version=2006-03-01",
            "InvalidAction",
            "2006-03-01",
        ),
    ] {
        let (status, headers, body) = raw_http(
            address,
            &format!(
                "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: {}",
                form.len()
            ),
            form.as_bytes(),
        );
        assert_eq!(status, 400, "{form}: {body}");
        assert!(headers.contains("content-type: text/xml"), "{headers}");
        assert!(body.contains("<ErrorResponse"), "{body}");
        assert!(body.contains("<Type>Sender</Type>"), "{body}");
        assert!(
            body.contains(&format!("<Code>{code}</Code>")),
            "{form}: {body}"
        );
        assert!(body.contains(words), "{form}: {body}");
        assert!(body.contains("<RequestId>"), "{body}");
    }

    // Any other HTTP request says what the port serves.
    for head in [
        "GET / HTTP/1.1",
        "GET /nothing HTTP/1.1",
        "DELETE /metrics HTTP/1.1",
        "POST /orc.Orc/Call HTTP/1.1\r\nContent-Length: 0",
    ] {
        let (status, _, body) = raw_http(address, head, b"");
        assert!((400..500).contains(&status), "{head}: {status} {body}");
        assert!(
            body.contains("orc's API port") && body.contains("POST /"),
            "{head}: {body}"
        );
    }

    // Nothing was created, and the server still serves.
    let (clusters, _) = server
        .client()
        .call("ListClusters", json!({}))
        .await
        .unwrap();
    // The default cluster may still be on its way (the server creates it
    // after start-up); any other cluster would have come from a hostile request.
    let arns = clusters["clusterArns"]
        .as_array()
        .expect("clusterArns is a list");
    assert!(
        arns.iter()
            .all(|arn| arn == "arn:orc:ecs:local:000000000000:cluster/default"),
        "{clusters}"
    );
}

fn raw_http_json(address: &str, head: &str, body: &[u8]) -> (u16, String, Value) {
    let (status, headers, body) = raw_http(address, head, body);
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, headers, body)
}

/// The README's table of the actions served through the door: each one
/// listed is called by a test here, through `aws` (kebab-case) or boto3
/// (snake_case), in `tests/aws/` or this file.
#[test]
fn every_action_in_the_readme_table_is_called_through_the_door() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Using the AWS CLI and SDKs")
        .nth(1)
        .expect("README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut sources = std::fs::read_to_string(root.join("tests/aws_door.rs")).unwrap();
    for entry in std::fs::read_dir(scripts()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            sources.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let words = |action: &str, sep: char| {
        let mut out = String::new();
        for (i, c) in action.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push(sep);
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    };
    let mut checked = 0;
    for row in section.lines().filter(|l| {
        l.starts_with("| ecs |")
            || l.starts_with("| elbv2 |")
            || l.starts_with("| ecr |")
            || l.starts_with("| iam |")
            || l.starts_with("| secretsmanager |")
    }) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let service = cells[1];
        for action in cells[2].split(',').map(str::trim) {
            let parsed: orc::vocab::action::Action =
                format!("{service}:{action}").parse().unwrap_or_else(|e| {
                    panic!("the README lists {service} {action}, which orc does not serve: {e}")
                });
            let cli = format!("\"{service}\", \"{}\"", words(action, '-'));
            let cli_script = format!("aws {service} {}", words(action, '-'));
            let sdk = format!(".{}(", words(action, '_'));
            assert!(
                sources.contains(&cli) || sources.contains(&cli_script) || sources.contains(&sdk),
                "{parsed}: listed in the README but no test calls it through the door"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 27,
        "only {checked} actions found in the README's table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_ecr_get_login_password_logs_docker_in_and_the_push_goes_through() {
    let (server, _root) = server().await;
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/orc-test/door-push:1", server.address);
    busybox_image(&reference);
    let _untag = DockerTags(vec![reference.clone()]);

    let output = aws(&server.address, work.path(), &["ecr", "get-login-password"]);
    assert!(output.status.success(), "{}", text(&output));
    let password = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(!password.is_empty());
    let (ok, said) = docker_in(
        work.path(),
        &[
            "login",
            "--username",
            "AWS",
            "--password-stdin",
            &server.address,
        ],
        Some(&password),
    );
    assert!(ok, "docker login: {said}");
    let (ok, said) = docker_in(work.path(), &["push", &reference], None);
    assert!(ok, "docker push: {said}");

    let output = aws(
        &server.address,
        work.path(),
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "orc-test/door-push",
            "--output",
            "json",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let images: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        images["imageDetails"][0]["imageTags"],
        json!(["1"]),
        "{images}"
    );

    // ECR's exception names reach the client (each line as a user types it).
    for (line, exception) in [
        ("aws ecr describe-repositories --repository-names orc-test/nope", "RepositoryNotFoundException"),
        ("aws ecr create-repository --repository-name orc-test/door-push", "RepositoryAlreadyExistsException"),
        ("aws ecr delete-repository --repository-name orc-test/door-push", "RepositoryNotEmptyException"),
        ("aws ecr describe-images --repository-name orc-test/door-push --image-ids imageTag=nope", "ImageNotFoundException"),
    ] {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let output = aws(&server.address, work.path(), &args);
        assert!(!output.status.success(), "{line} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(exception), "{line}: expected {exception}: {stderr}");
    }
}

#[tokio::test]
async fn an_inactive_access_key_is_refused_until_it_is_active_again() {
    let (server, root) = server().await;
    let address = server.address.as_str();
    let dir = root.path();
    let (admin_key, admin_secret) = user_with_key(address, "ada", "admin", true);
    let (key, secret) = user_with_key(address, "olga", "operator", false);
    let as_user = |key: &str, secret: &str, args: &[&str]| {
        aws_command("aws", address, dir)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .args(args)
            .output()
            .unwrap()
    };
    let login = |key: &str, secret: &str| {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        raw_http(
            address,
            &format!(
                "GET /v2/token?service=orc&scope=repository:orc-test/keyed:pull,push HTTP/1.1\r\nAuthorization: Basic {basic}"
            ),
            b"",
        )
    };
    assert!(as_user(&key, &secret, &["ecs", "list-clusters"])
        .status
        .success());
    assert_eq!(login(&key, &secret).0, 200);

    // aws iam update-access-key (the query protocol), signed by the admin.
    let updated = as_user(
        &admin_key,
        &admin_secret,
        &[
            "iam",
            "update-access-key",
            "--user-name",
            "olga",
            "--access-key-id",
            &key,
            "--status",
            "Inactive",
        ],
    );
    assert!(updated.status.success(), "{}", text(&updated));
    let listed = as_user(
        &admin_key,
        &admin_secret,
        &["iam", "list-access-keys", "--user-name", "olga"],
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed["AccessKeyMetadata"][0]["Status"], "Inactive",
        "{listed}"
    );
    let orc_listed = orc_cli(address, &["iam", "list-access-keys", "--user-name", "olga"]);
    assert!(orc_listed.contains("Inactive"), "{orc_listed}");

    // Refused as AWS refuses an unknown key, in each protocol, even on this
    // insecure server (which serves unknown keys), and at the registry.
    let ecs = as_user(&key, &secret, &["ecs", "list-clusters"]);
    assert!(!ecs.status.success());
    assert!(
        text(&ecs).contains("UnrecognizedClientException"),
        "{}",
        text(&ecs)
    );
    assert!(text(&ecs).contains("inactive"), "{}", text(&ecs));
    let elbv2 = as_user(&key, &secret, &["elbv2", "describe-load-balancers"]);
    assert!(!elbv2.status.success());
    assert!(
        text(&elbv2).contains("InvalidClientTokenId"),
        "{}",
        text(&elbv2)
    );
    let (status, _, body) = login(&key, &secret);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("inactive"), "{body}");
    // A wrong status is refused with a sentence.
    let wrong = as_user(
        &admin_key,
        &admin_secret,
        &[
            "iam",
            "update-access-key",
            "--access-key-id",
            &key,
            "--status",
            "Paused",
        ],
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("Active or Inactive"),
        "{}",
        text(&wrong)
    );

    // orc iam update-access-key makes it work again.
    orc_cli(
        address,
        &[
            "iam",
            "update-access-key",
            "--access-key-id",
            &key,
            "--status",
            "Active",
        ],
    );
    assert!(as_user(&key, &secret, &["ecs", "list-clusters"])
        .status
        .success());
    assert_eq!(login(&key, &secret).0, 200);
}
