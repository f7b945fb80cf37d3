//! The built-in load balancer's control plane end to end, through the real
//! `orc elbv2` command line: elbv2's JSON shapes and defaults, and bad input
//! refused with a sentence naming the field, nothing half-created.

mod common;

use std::process::Command;

use std::time::Duration;

use common::cluster::{eventually, free_port, TestServer};
use serde_json::Value;

/// Runs `orc --output json elbv2 ARGS` against `address`.
fn elbv2(address: &str, args: &[&str]) -> Result<Value, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["--output", "json", "elbv2"])
        .args(args)
        .env("ORC_ENDPOINT", address)
        .output()
        .expect("run orc");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("json on stdout"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

/// A one-page HTTP server on a free port, answering `body` to every
/// request, until the process ends.
fn page_server(body: &'static str) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// GET / on 127.0.0.1:`port`: the body, or `None` when nothing answers.
fn get(port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

fn ok(address: &str, args: &[&str]) -> Value {
    elbv2(address, args).unwrap_or_else(|e| panic!("orc elbv2 {args:?} failed: {e}"))
}

fn refused(address: &str, args: &[&str]) -> String {
    match elbv2(address, args) {
        Ok(answer) => panic!("orc elbv2 {args:?} was accepted: {answer}"),
        Err(error) => error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elbv2_shapes_defaults_and_bad_input() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let at = server.address.as_str();

    let lb = ok(at, &["create-load-balancer", "--name", "web"]);
    let lb = &lb["LoadBalancers"][0];
    let lb_arn = lb["LoadBalancerArn"].as_str().unwrap().to_string();
    assert!(
        lb_arn.starts_with("arn:aws:elasticloadbalancing:orc:000000000000:loadbalancer/app/web/"),
        "{lb_arn}"
    );
    assert_eq!(lb["State"]["Code"], "active");
    assert_eq!(lb["Type"], "application");
    assert_eq!(lb["DNSName"], "127.0.0.1");

    let tg = ok(
        at,
        &[
            "create-target-group",
            "--name",
            "web-tg",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "ip",
            "--health-check-path",
            "/",
            "--matcher",
            "HttpCode=200-399",
        ],
    );
    let tg = &tg["TargetGroups"][0];
    let tg_arn = tg["TargetGroupArn"].as_str().unwrap().to_string();
    assert_eq!(tg["HealthCheckIntervalSeconds"], 5);
    assert_eq!(tg["HealthyThresholdCount"], 2);
    assert_eq!(tg["UnhealthyThresholdCount"], 2);
    assert_eq!(tg["Matcher"]["HttpCode"], "200-399");
    let attributes = ok(
        at,
        &[
            "describe-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
        ],
    );
    let delay = attributes["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Key"] == "deregistration_delay.timeout_seconds")
        .unwrap();
    assert_eq!(delay["Value"], "10");

    let port = free_port().to_string();
    let forward = format!("Type=forward,TargetGroupArn={tg_arn}");
    let listener = ok(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &forward,
        ],
    );
    let listener_arn = listener["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();
    // The server's proxy serves the listener as soon as it exists, and a
    // registered target answers through it.
    let page = page_server("hello through orc").to_string();
    ok(
        at,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id=127.0.0.1,Port={page}"),
        ],
    );
    let listener_port: u16 = port.parse().unwrap();
    eventually(
        Duration::from_secs(30),
        "the listener to serve the target",
        || async { (get(listener_port).as_deref() == Some("hello through orc")).then_some(()) },
    )
    .await;
    let listeners = |at: &str| {
        ok(at, &["describe-listeners", "--load-balancer-arn", &lb_arn])["Listeners"]
            .as_array()
            .unwrap()
            .len()
    };

    // A port another listener holds.
    let error = refused(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--port",
            &port,
            "--default-actions",
            &forward,
        ],
    );
    assert!(
        error.contains(&format!("Port: {port} is already taken by listener")),
        "{error}"
    );
    // A port some other process holds on this server.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held_port = held.local_addr().unwrap().port().to_string();
    let error = refused(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--port",
            &held_port,
            "--default-actions",
            &forward,
        ],
    );
    assert!(
        error.contains(&format!("Port: {held_port} cannot be bound on this server")),
        "{error}"
    );
    assert_eq!(listeners(at), 1, "a refused listener must not be created");

    // A bad matcher: refused, and no target group of that name appears.
    let error = refused(
        at,
        &[
            "create-target-group",
            "--name",
            "bad",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--matcher",
            "HttpCode=2xx",
        ],
    );
    assert!(error.contains("Matcher.HttpCode"), "{error}");
    let error = refused(at, &["describe-target-groups", "--names", "bad"]);
    assert!(error.contains("TargetGroupNotFound"), "{error}");

    // Duplicate names with other settings.
    let error = refused(
        at,
        &["create-load-balancer", "--name", "web", "--type", "network"],
    );
    assert!(error.contains("DuplicateLoadBalancerName"), "{error}");
    let error = refused(
        at,
        &[
            "create-target-group",
            "--name",
            "web-tg",
            "--protocol",
            "HTTP",
            "--port",
            "81",
        ],
    );
    assert!(error.contains("DuplicateTargetGroupName"), "{error}");

    // Rules: a priority clash names the field and the rule holding it.
    let rule = ok(
        at,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "10",
            "--conditions",
            "Field=path-pattern,Values=/api/*",
            "--actions",
            &forward,
        ],
    );
    assert_eq!(rule["Rules"][0]["Priority"], "10");
    assert_eq!(
        rule["Rules"][0]["Conditions"][0]["PathPatternConfig"]["Values"][0],
        "/api/*"
    );
    let error = refused(
        at,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "10",
            "--conditions",
            "Field=host-header,Values=example.com",
            "--actions",
            &forward,
        ],
    );
    assert!(
        error.contains("Priority: 10 is currently in use"),
        "{error}"
    );
    let rules = ok(at, &["describe-rules", "--listener-arn", &listener_arn]);
    let rules = rules["Rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[1]["IsDefault"], true);

    // Deleting a target group a listener uses.
    let error = refused(at, &["delete-target-group", "--target-group-arn", &tg_arn]);
    assert!(error.contains("ResourceInUse"), "{error}");

    // Targets, their health, attributes.
    ok(
        at,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=127.0.0.1,Port=9",
        ],
    );
    let health = ok(
        at,
        &["describe-target-health", "--target-group-arn", &tg_arn],
    );
    let descriptions = health["TargetHealthDescriptions"].as_array().unwrap();
    assert_eq!(descriptions.len(), 2, "{health}");
    assert!(
        descriptions
            .iter()
            .all(|d| d["Target"]["Id"] == "127.0.0.1"),
        "{health}"
    );
    let error = refused(
        at,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=forever",
        ],
    );
    assert!(
        error.contains("deregistration_delay.timeout_seconds must be 0 to 3600"),
        "{error}"
    );
    let changed = ok(
        at,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=0",
        ],
    );
    assert!(
        changed["Attributes"]
            .to_string()
            .contains("\"Value\":\"0\""),
        "{changed}"
    );
    ok(
        at,
        &[
            "deregister-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id=127.0.0.1,Port=9 Id=127.0.0.1,Port={page}"),
        ],
    );
    let health = ok(
        at,
        &["describe-target-health", "--target-group-arn", &tg_arn],
    );
    assert_eq!(health["TargetHealthDescriptions"], serde_json::json!([]));

    // Clean-up: the load balancer takes its listener and rules along; then
    // the target group can go.
    ok(
        at,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
    );
    let error = refused(
        at,
        &["describe-listeners", "--listener-arns", &listener_arn],
    );
    assert!(error.contains("ListenerNotFound"), "{error}");
    ok(at, &["delete-target-group", "--target-group-arn", &tg_arn]);
    assert_eq!(
        ok(at, &["describe-target-groups"])["TargetGroups"],
        serde_json::json!([])
    );
    assert_eq!(
        ok(at, &["describe-load-balancers"])["LoadBalancers"],
        serde_json::json!([])
    );
    drop(held);
}
