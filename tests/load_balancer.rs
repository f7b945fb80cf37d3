//! The built-in load balancer's control plane end to end, through the real
//! `orc elbv2` command line: elbv2's JSON shapes and defaults, bad input
//! refused with a sentence naming the field, nothing half-created; the
//! leader's health checks steering traffic; and a service behind a target
//! group on the real Docker Engine (round-robin over its tasks, a killed
//! container replaced, a rolling deployment) under a steady request loop;
//! and health checks taken over by a new leader, answered alike by every
//! server.

mod common;

use std::process::Command;

use std::time::Duration;

use common::cluster::{eventually, free_port, TestServer};
use common::images::busybox_image;
use common::orc::TestOrc;
use serde_json::{json, Value};

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
    status_server(
        std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200)),
        body,
    )
}

/// GET / on 127.0.0.1:`port`: the body, or `None` when nothing answers.
fn get(port: u16) -> Option<String> {
    get_status(port).map(|(_, body)| body)
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

    // Load balancer attributes: ALB's defaults; deletion protection refuses
    // a deletion until it is turned off; unknown keys are refused.
    let attributes = ok(
        at,
        &[
            "describe-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
        ],
    );
    let attributes = attributes["Attributes"].to_string();
    assert!(
        attributes.contains(r#"{"Key":"deletion_protection.enabled","Value":"false"}"#)
            && attributes.contains(r#"{"Key":"idle_timeout.timeout_seconds","Value":"60"}"#),
        "{attributes}"
    );
    let protect = |value: &str| {
        ok(
            at,
            &[
                "modify-load-balancer-attributes",
                "--load-balancer-arn",
                &lb_arn,
                "--attributes",
                &format!("Key=deletion_protection.enabled,Value={value}"),
            ],
        )
    };
    let changed = protect("true");
    assert!(
        changed["Attributes"]
            .to_string()
            .contains(r#"{"Key":"deletion_protection.enabled","Value":"true"}"#),
        "{changed}"
    );
    let error = refused(
        at,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
    );
    assert!(error.contains("OperationNotPermitted"), "{error}");
    let error = refused(
        at,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=waf.fail_open.enabled,Value=true",
        ],
    );
    assert!(
        error.contains("\"waf.fail_open.enabled\" is not a load balancer attribute"),
        "{error}"
    );
    protect("false");

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

/// An HTTP server on a free port answering every request with the status
/// in `status` (changeable while it runs) and `body`.
fn status_server(status: std::sync::Arc<std::sync::atomic::AtomicU16>, body: &'static str) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let code = status.load(std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// GET / on 127.0.0.1:`port`: (status, body), or `None` when nothing answers.
fn get_status(port: u16) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.trim().to_string();
    Some((code, body))
}

/// `describe-target-health` as (id:port, state, reason, description).
fn target_health(at: &str, tg_arn: &str) -> Vec<(String, String, String, String)> {
    let health = ok(
        at,
        &["describe-target-health", "--target-group-arn", tg_arn],
    );
    health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                format!("{}:{}", text(&d["Target"]["Id"]), d["Target"]["Port"]),
                text(&d["TargetHealth"]["State"]),
                text(&d["TargetHealth"]["Reason"]),
                text(&d["TargetHealth"]["Description"]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_mark_failing_targets_unhealthy_and_keep_traffic_off_them() {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let at = server.address.as_str();

    let lb = ok(at, &["create-load-balancer", "--name", "checked"]);
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg = ok(
        at,
        &[
            "create-target-group",
            "--name",
            "checked-tg",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "ip",
            "--health-check-path",
            "/health",
            "--health-check-interval-seconds",
            "2",
            "--health-check-timeout-seconds",
            "1",
            "--matcher",
            "HttpCode=200",
        ],
    );
    let tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let port = free_port();
    ok(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port.to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
    );
    let good_status = Arc::new(AtomicU16::new(200));
    let bad_status = Arc::new(AtomicU16::new(500));
    let good = status_server(good_status.clone(), "good");
    let bad = status_server(bad_status.clone(), "bad");
    ok(
        at,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id=127.0.0.1,Port={good} Id=127.0.0.1,Port={bad}"),
        ],
    );
    let good_key = format!("127.0.0.1:{good}");
    let bad_key = format!("127.0.0.1:{bad}");
    let described = eventually(
        Duration::from_secs(40),
        "the good target healthy and the bad one unhealthy",
        || async {
            let health = target_health(at, &tg_arn);
            let state = |key: &str| health.iter().find(|h| h.0 == key).cloned();
            let (good, bad) = (state(&good_key)?, state(&bad_key)?);
            (good.1 == "healthy" && bad.1 == "unhealthy").then_some(bad)
        },
    )
    .await;
    assert_eq!(described.2, "Target.ResponseCodeMismatch", "{described:?}");
    assert!(described.3.contains("[500]"), "{described:?}");

    // Only the healthy target gets traffic (once the proxy has the change).
    eventually(
        Duration::from_secs(20),
        "the proxy to route to the healthy target only",
        || async {
            let bodies: Vec<String> = (0..6)
                .filter_map(|_| get_status(port).map(|(_, b)| b))
                .collect();
            (bodies.len() == 6 && bodies.iter().all(|b| b == "good")).then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(
            get_status(port),
            Some((200, "good".to_string())),
            "an unhealthy target got a request"
        );
    }

    // Steady states write nothing: checks keep running (every 2 s), the
    // applied index stays where it is.
    let applied = |_: ()| async {
        server
            .client()
            .cluster_status(false)
            .await
            .expect("cluster status")
            .applied_index
    };
    let before = applied(()).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        applied(()).await,
        before,
        "steady health checks wrote to the log"
    );

    // The failing target recovers and joins the rotation.
    bad_status.store(200, Ordering::SeqCst);
    eventually(
        Duration::from_secs(30),
        "both targets healthy and serving",
        || async {
            let health = target_health(at, &tg_arn);
            if !health.iter().all(|h| h.1 == "healthy") {
                return None;
            }
            let bodies: Vec<String> = (0..6)
                .filter_map(|_| get_status(port).map(|(_, b)| b))
                .collect();
            (bodies.iter().any(|b| b == "bad") && bodies.iter().any(|b| b == "good")).then_some(())
        },
    )
    .await;
    // A healthy target that starts failing leaves the rotation.
    good_status.store(503, Ordering::SeqCst);
    eventually(
        Duration::from_secs(30),
        "the good target to turn unhealthy",
        || async {
            target_health(at, &tg_arn)
                .iter()
                .any(|h| h.0 == good_key && h.1 == "unhealthy")
                .then_some(())
        },
    )
    .await;
    ok(
        at,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
    );
}

const IMAGE: &str = "orc-test/busybox:1";

/// A steady loop of GETs through a listener, counting answers by body and
/// every failure (no answer, or a status other than 200).
struct RequestLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl RequestLoop {
    fn start(port: u16) -> RequestLoop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut served, mut failures) = (0u64, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                match get_status(port) {
                    Some((200, _)) => served += 1,
                    other => failures.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (served, failures)
        });
        RequestLoop {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the loop: (requests answered 200, the failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// `count` GETs through the listener: how often each body answered.
fn tally(port: u16, count: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..count {
        let body = match get_status(port) {
            Some((200, body)) => body,
            other => format!("failed: {other:?}"),
        };
        *seen.entry(body).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_behind_a_target_group_is_balanced_healed_and_rolled_out_on_docker() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let at = orc.server.address.clone();
    let at = at.as_str();
    let web = |version: &str| {
        json!({"family": "lbweb", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 16, "stopTimeout": 2,
            "portMappings": [{"containerPort": 80}],
            "command": ["sh", "-c", format!("echo \"{version} $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www")],
        }]})
    };
    assert_eq!(orc.register(web("v1")).await, "lbweb:1");

    let lb = ok(at, &["create-load-balancer", "--name", "lab"]);
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg = ok(
        at,
        &[
            "create-target-group",
            "--name",
            "lab-tg",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "instance",
            "--health-check-interval-seconds",
            "2",
            "--health-check-timeout-seconds",
            "1",
        ],
    );
    let tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        at,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=3",
        ],
    );
    let port = free_port();
    let listener = ok(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port.to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
    );
    let listener_arn = listener["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();

    // A bad container name is refused, naming the field.
    let (accepted, _, stderr) = orc.cli(&[
        "create-service",
        "--service-name",
        "lab",
        "--task-definition",
        "lbweb:1",
        "--load-balancers",
        &format!("targetGroupArn={tg_arn},containerName=nope,containerPort=80"),
    ]);
    assert!(!accepted, "a service naming no container was created");
    assert!(
        stderr.contains("loadBalancers[0].containerName"),
        "{stderr}"
    );

    let (created, _, stderr) = orc.cli(&[
        "create-service",
        "--service-name",
        "lab",
        "--task-definition",
        "lbweb:1",
        "--desired-count",
        "3",
        "--load-balancers",
        &format!("targetGroupArn={tg_arn},containerName=web,containerPort=80"),
    ]);
    assert!(created, "{stderr}");
    let service = || async {
        orc.call("DescribeServices", json!({"services": ["lab"]}))
            .await["services"][0]
            .clone()
    };
    let healthy_targets = |count: usize| {
        let tg_arn = tg_arn.clone();
        move || {
            let health = target_health(at, &tg_arn);
            let healthy = health.iter().filter(|h| h.1 == "healthy").count();
            (healthy == count && health.len() == count).then_some(health)
        }
    };
    let check = healthy_targets(3);
    eventually(Duration::from_secs(90), "three healthy targets", || async {
        check()
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the deployment to complete",
        || async {
            let service = service().await;
            (service["deployments"][0]["rolloutState"] == "COMPLETED"
                && service["runningCount"] == 3)
                .then_some(())
        },
    )
    .await;

    // Round-robin: 30 requests, each of the 3 tasks answers 10.
    let seen = eventually(
        Duration::from_secs(20),
        "30 requests spread 10/10/10",
        || async {
            let seen = tally(port, 30);
            (seen.len() == 3
                && seen.values().all(|n| *n == 10)
                && seen.keys().all(|b| b.starts_with("v1 ")))
            .then_some(seen)
        },
    )
    .await;
    eprintln!("round-robin over the service: {seen:?}");

    // Kill one container under a steady request loop: its target leaves,
    // a replacement joins once healthy.
    let requests = RequestLoop::start(port);
    let victim = orc.running_containers()[0].clone();
    let victim_name = format!("v1 {}", &victim[..12]);
    assert!(
        seen.contains_key(&victim_name),
        "{victim_name} not in {seen:?}"
    );
    let killed = std::process::Command::new("docker")
        .args(["kill", &victim])
        .output()
        .unwrap();
    assert!(killed.status.success());
    let check = healthy_targets(3);
    eventually(
        Duration::from_secs(90),
        "the replacement's target to be healthy and the killed one gone",
        || async {
            let health = check()?;
            let seen = tally(port, 9);
            (seen.len() == 3
                && !seen.contains_key(&victim_name)
                && seen.keys().all(|b| b.starts_with("v1 ")))
            .then_some(health)
        },
    )
    .await;
    let (served, failures) = requests.finish();
    eprintln!(
        "killed container: {served} requests answered, {} failed: {failures:?}",
        failures.len()
    );
    assert!(served > 0);
    // A crash cuts the request in flight to it (ALB answers 502 too); a
    // refused connection afterwards is retried on another target, and
    // health checks take the target out of rotation.
    assert!(
        failures.len() <= 1 && failures.iter().all(|f| f.contains("502")),
        "{} of {} requests failed while a killed task was replaced: {failures:?}",
        failures.len(),
        served + failures.len() as u64
    );

    // Stop a task by hand under the request loop: it is deregistered first
    // (DEACTIVATING while its target drains), so no request fails.
    let requests = RequestLoop::start(port);
    let tasks = orc.call("ListTasks", json!({"serviceName": "lab"})).await;
    let stopped_arn = tasks["taskArns"][0].as_str().unwrap().to_string();
    let answer = orc.call("StopTask", json!({"task": stopped_arn})).await;
    assert_eq!(answer["task"]["lastStatus"], "DEACTIVATING", "{answer}");
    let check = healthy_targets(3);
    eventually(
        Duration::from_secs(90),
        "the stopped task to be replaced by a healthy target",
        || async {
            let task = orc
                .call("DescribeTasks", json!({"tasks": [stopped_arn]}))
                .await["tasks"][0]
                .clone();
            (task["lastStatus"] == "STOPPED").then_some(())?;
            check()
        },
    )
    .await;
    let (served, failures) = requests.finish();
    eprintln!(
        "stop-task: {served} requests answered, {} failed: {failures:?}",
        failures.len()
    );
    assert!(served > 0);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed while a stopped task was replaced: {failures:?}",
        failures.len(),
        served + failures.len() as u64
    );

    // A rolling deployment under the request loop: traffic moves to v2.
    assert_eq!(orc.register(web("v2")).await, "lbweb:2");
    let requests = RequestLoop::start(port);
    orc.call(
        "UpdateService",
        json!({"service": "lab", "taskDefinition": "lbweb:2"}),
    )
    .await;
    eventually(
        Duration::from_secs(120),
        "the v2 deployment to complete and serve alone",
        || async {
            let service = service().await;
            let deployments = service["deployments"].as_array()?;
            let done = deployments.len() == 1
                && deployments[0]["taskDefinition"]
                    .as_str()?
                    .ends_with("lbweb:2")
                && deployments[0]["rolloutState"] == "COMPLETED";
            if !done {
                return None;
            }
            let seen = tally(port, 9);
            (seen.len() == 3 && seen.keys().all(|b| b.starts_with("v2 "))).then_some(())
        },
    )
    .await;
    let (served, failures) = requests.finish();
    eprintln!(
        "rolling deployment: {served} requests answered, {} failed: {failures:?}",
        failures.len()
    );
    let events: String = service().await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        events.contains("has begun draining connections"),
        "old tasks were not drained: {events}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rolling deployment: {failures:?}",
        failures.len(),
        served + failures.len() as u64
    );

    // The service moves to another target group (behind a second
    // listener): bad entries are refused naming the field, a good one
    // starts a deployment whose tasks register there, and the old group
    // drains empty.
    let tg2_arn = ok(
        at,
        &[
            "create-target-group",
            "--name",
            "lab-tg2",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "instance",
            "--health-check-interval-seconds",
            "2",
            "--health-check-timeout-seconds",
            "1",
        ],
    )["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let port2 = free_port();
    let listener2_arn = ok(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port2.to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg2_arn}"),
        ],
    )["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let ghost_arn = tg2_arn.replace("lab-tg2", "ghost-tg");
    for (entry, field) in [
        (
            format!("targetGroupArn={ghost_arn},containerName=web,containerPort=80"),
            "loadBalancers[0].targetGroupArn",
        ),
        (
            format!("targetGroupArn={tg2_arn},containerName=nope,containerPort=80"),
            "loadBalancers[0].containerName",
        ),
        (
            format!("targetGroupArn={tg2_arn},containerName=web,containerPort=81"),
            "loadBalancers[0].containerPort",
        ),
    ] {
        let (accepted, _, stderr) = orc.cli(&[
            "update-service",
            "--service",
            "lab",
            "--load-balancers",
            &entry,
        ]);
        assert!(
            !accepted,
            "update-service --load-balancers {entry} was accepted"
        );
        assert!(stderr.contains(field), "{field} not named: {stderr}");
    }
    assert_eq!(
        service().await["loadBalancers"][0]["targetGroupArn"],
        tg_arn.as_str(),
        "a refused update changed the service"
    );
    let (moved, _, stderr) = orc.cli(&[
        "update-service",
        "--service",
        "lab",
        "--load-balancers",
        &format!("targetGroupArn={tg2_arn},containerName=web,containerPort=80"),
    ]);
    assert!(moved, "{stderr}");
    let check = {
        let tg2_arn = tg2_arn.clone();
        move || {
            let health = target_health(at, &tg2_arn);
            (health.len() == 3 && health.iter().all(|h| h.1 == "healthy")).then_some(())
        }
    };
    eventually(
        Duration::from_secs(120),
        "three healthy targets in the new group, the old one drained empty and the deployment complete",
        || async {
            check()?;
            target_health(at, &tg_arn).is_empty().then_some(())?;
            let service = service().await;
            (service["deployments"].as_array()?.len() == 1
                && service["deployments"][0]["rolloutState"] == "COMPLETED"
                && service["loadBalancers"][0]["targetGroupArn"] == tg2_arn.as_str())
            .then_some(())?;
            let seen = tally(port2, 9);
            (seen.len() == 3 && seen.keys().all(|b| b.starts_with("v2 "))).then_some(())
        },
    )
    .await;

    // A revision without the container port behind the target group is refused.
    let mut bare = web("v3");
    bare["containerDefinitions"][0]
        .as_object_mut()
        .unwrap()
        .remove("portMappings");
    assert_eq!(orc.register(bare).await, "lbweb:3");
    let (accepted, _, stderr) = orc.cli(&[
        "update-service",
        "--service",
        "lab",
        "--task-definition",
        "lbweb:3",
    ]);
    assert!(
        !accepted,
        "a revision the target group cannot reach was deployed"
    );
    assert!(
        stderr.contains("loadBalancers[0].containerPort"),
        "{stderr}"
    );

    // Clean-up: the service (its tasks drain and stop), then the rest.
    orc.call(
        "UpdateService",
        json!({"service": "lab", "desiredCount": 0}),
    )
    .await;
    orc.call("DeleteService", json!({"service": "lab"})).await;
    eventually(
        Duration::from_secs(60),
        "every container to stop",
        || async { orc.running_containers().is_empty().then_some(()) },
    )
    .await;
    ok(at, &["delete-listener", "--listener-arn", &listener_arn]);
    ok(at, &["delete-listener", "--listener-arn", &listener2_arn]);
    eventually(
        Duration::from_secs(30),
        "the listener's port to close",
        || async { get_status(port).is_none().then_some(()) },
    )
    .await;
    ok(
        at,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
    );
    eventually(
        Duration::from_secs(30),
        "the targets to drain away",
        || async { target_health(at, &tg_arn).is_empty().then_some(()) },
    )
    .await;
    ok(at, &["delete-target-group", "--target-group-arn", &tg_arn]);
    eventually(
        Duration::from_secs(30),
        "the new group's targets to drain away",
        || async { target_health(at, &tg2_arn).is_empty().then_some(()) },
    )
    .await;
    ok(at, &["delete-target-group", "--target-group-arn", &tg2_arn]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_move_to_the_new_leader_and_every_server_answers_the_same() {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    let root = tempfile::tempdir().unwrap();
    let mut servers = common::cluster::three_servers(root.path(), &[]).await;
    let leader = eventually(Duration::from_secs(20), "a leader", || async {
        let status = servers[0].client().cluster_status(false).await.ok()?;
        servers
            .iter()
            .position(|s| !status.leader_address.is_empty() && s.address == status.leader_address)
    })
    .await;
    let at = servers[leader].address.clone();
    let lb = ok(&at, &["create-load-balancer", "--name", "ha"]);
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg = ok(
        &at,
        &[
            "create-target-group",
            "--name",
            "ha-tg",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "ip",
            "--health-check-interval-seconds",
            "2",
            "--health-check-timeout-seconds",
            "1",
        ],
    );
    let tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--port",
            &free_port().to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
    );
    let status = Arc::new(AtomicU16::new(200));
    let target = status_server(status.clone(), "ha");
    ok(
        &at,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id=127.0.0.1,Port={target}"),
        ],
    );
    let states_everywhere = |servers: Vec<String>, tg_arn: String| async move {
        servers
            .iter()
            .map(|address| {
                // A server may refuse while a new leader is elected: no state yet.
                let Ok(health) = elbv2(
                    address,
                    &["describe-target-health", "--target-group-arn", &tg_arn],
                ) else {
                    return Default::default();
                };
                let first = &health["TargetHealthDescriptions"][0]["TargetHealth"];
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (text(&first["State"]), text(&first["Reason"]))
            })
            .collect::<Vec<_>>()
    };
    let everyone: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    eventually(
        Duration::from_secs(40),
        "every server to show the target healthy",
        || async {
            let states = states_everywhere(everyone.clone(), tg_arn.clone()).await;
            states
                .iter()
                .all(|(state, _)| state == "healthy")
                .then_some(())
        },
    )
    .await;

    // The leader goes; the target starts failing; the new leader's checks
    // notice, and every live server shows the same.
    servers[leader].kill();
    status.store(500, Ordering::SeqCst);
    let live: Vec<String> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s.address.clone())
        .collect();
    let states = eventually(
        Duration::from_secs(60),
        "the surviving servers to show the target unhealthy",
        || async {
            let states = states_everywhere(live.clone(), tg_arn.clone()).await;
            states
                .iter()
                .all(|(state, _)| state == "unhealthy")
                .then_some(states)
        },
    )
    .await;
    assert!(
        states
            .iter()
            .all(|(_, reason)| reason == "Target.ResponseCodeMismatch"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancers_idle_timeout_closes_idle_clients_once_it_is_changed() {
    use std::io::{Read as _, Write as _};
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let at = server.address.as_str();
    let lb_arn = ok(at, &["create-load-balancer", "--name", "idle"])["LoadBalancers"][0]
        ["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg_arn = ok(
        at,
        &[
            "create-target-group",
            "--name",
            "idle-tg",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "ip",
        ],
    )["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let page = page_server("idle page");
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
    let port = free_port();
    ok(
        at,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port.to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
    );
    eventually(
        Duration::from_secs(30),
        "the listener to serve the page",
        || async { (get(port).as_deref() == Some("idle page")).then_some(()) },
    )
    .await;

    // A keep-alive client, served once, then idle under ALB's default 60 s.
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(client, "GET / HTTP/1.1\r\nHost: lab\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("idle page") {
        let read = client.read(&mut buffer).expect("the answer");
        assert!(read > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // One second now: the proxy closes the client (well before the 30 s
    // read deadline, and the 60 s it had).
    ok(
        at,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=idle_timeout.timeout_seconds,Value=1",
        ],
    );
    match client.read(&mut buffer) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(read) => panic!(
            "the idle client got {:?} instead of a close",
            String::from_utf8_lossy(&buffer[..read])
        ),
        Err(error) => panic!("the idle client was not closed within 30 s: {error}"),
    }
}
