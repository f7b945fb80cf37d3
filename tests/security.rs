//! Transport security (issue 16) on real `orc server` processes: plain text
//! is refused, `--insecure` only on loopback, each refused join says why on
//! the node and leaves a line in the server's log, an agent's certificate
//! serves only its own instance, and certificates renew without a restart.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{eventually, free_port, join_as_agent, wait_instance_connected, TestServer};
use orc::client::{join_cluster, Client};
use orc::tls::ClientTls;
use orc::wire::proto::agent_api_client::AgentApiClient;
use orc::wire::proto::orc_client::OrcClient;
use orc::wire::proto::peer_client::PeerClient;
use orc::wire::proto::{
    ActionRequest, HeartbeatRequest, RaftBatch, RegisterInstanceRequest, TaskStateReport,
    WatchAssignmentsRequest,
};
use serde_json::json;

/// The CLI with `args` and the given credential file; (success, stdout, stderr).
fn cli(credential: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("--credentials")
        .arg(credential)
        .args(args)
        .output()
        .expect("run orc");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// Polls the server's log until it holds `needle` (30 s).
async fn wait_log(server: &TestServer, needle: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{needle:?} in the server's log"),
        || async { server.log_text().contains(needle).then_some(()) },
    )
    .await;
}

/// How many times the server's log says `needle`.
fn log_count(server: &TestServer, needle: &str) -> usize {
    server.log_text().matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_the_api_port_fails() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;

    // gRPC in plain text.
    let mut plain = Client::with_tls(&server.address, None).unwrap();
    plain.retry_for = Duration::from_millis(500);
    assert!(plain.cluster_status(false).await.is_err());

    // HTTP/1.1 in plain text: no HTTP answer, only a TLS alert.
    let mut tcp = std::net::TcpStream::connect(&server.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read as _, Write as _};
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: orc\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "a plain-text request was answered: {answer:?}"
    );
    // The same over TLS is answered.
    let metrics = common::cluster::http_request(
        &server.address,
        "GET /metrics HTTP/1.1\r\nHost: orc\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");

    // The CLI without a credential is told what to do.
    let (ok, _, stderr) = cli(
        std::path::Path::new("none"),
        &[
            "--endpoint",
            &server.address,
            "--timeout",
            "10",
            "list-clusters",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("speaks TLS") && stderr.contains("ORC_CREDENTIALS"),
        "{stderr}"
    );
    wait_log(&server, "refused a plain-text (non-TLS) connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_serves_plain_text_only_on_loopback() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["server", "--bootstrap", "--insecure"])
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .args(["--advertise", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(root.path().join("everywhere"))
        .output()
        .expect("run orc server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("allowed only on loopback") && stderr.contains("drop --insecure"),
        "{stderr}"
    );

    let server = TestServer::start(root.path(), "loopback", &["--bootstrap"], &["--insecure"]);
    let plain = Client::with_tls(&server.address, None).unwrap();
    eventually(Duration::from_secs(30), "a plain-text answer", || async {
        plain.cluster_status(false).await.ok()
    })
    .await;
    assert!(
        !server.data_dir.join("tls").exists(),
        "an insecure server makes no CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_say_why_on_the_node_and_in_the_server_log() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "a", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let admin = server.credential.clone().expect("the admin credential");
    let address = server.address.clone();
    let token = |args: &[&str]| {
        let mut all = vec!["--endpoint", address.as_str(), "token"];
        all.extend_from_slice(args);
        let (ok, out, err) = cli(&admin, &all);
        assert!(ok, "orc token {args:?}: {err}");
        out
    };
    let refused = |error: orc::Error| error.to_string();

    // No token: the node asks anyway (sending nothing secret) and is told.
    let error = join_cluster(&address, None, "agent", 0).await.unwrap_err();
    assert!(refused(error).contains("joining needs a join token"));
    let refusals = log_count(&server, "refused a join");
    assert!(refusals >= 1, "{}", server.log_text());

    // A wrong secret.
    let good = token(&["create", "--role", "agent"]);
    let mut wrong = good.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let error = join_cluster(&address, Some(&wrong), "agent", 0)
        .await
        .unwrap_err();
    assert!(refused(error).contains("wrong secret"));

    // A token for another role.
    let error = join_cluster(&address, Some(&good), "server", 7)
        .await
        .unwrap_err();
    assert!(refused(error).contains("not as server"));

    // A revoked token.
    let revoked = token(&["create", "--role", "agent"]);
    let id = revoked.split('-').nth(2).unwrap().to_string();
    token(&["revoke", &id]);
    let error = join_cluster(&address, Some(&revoked), "agent", 0)
        .await
        .unwrap_err();
    assert!(refused(error).contains("was revoked"));
    let (_, listed, _) = cli(&admin, &["--endpoint", &address, "token", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("REVOKED"),
        "{listed}"
    );
    assert!(
        !listed.contains(good.split('-').nth(3).unwrap()),
        "a secret is listed: {listed}"
    );

    // An expired token.
    let expiring = token(&["create", "--role", "agent", "--ttl", "1s"]);
    let message = eventually(Duration::from_secs(30), "the token to expire", || async {
        match join_cluster(&address, Some(&expiring), "agent", 0).await {
            Err(error) if error.to_string().contains("expired") => Some(error.to_string()),
            _ => None,
        }
    })
    .await;
    assert!(message.contains("ask an admin for a new one"), "{message}");
    assert!(
        log_count(&server, "refused a join") >= refusals + 4,
        "{}",
        server.log_text()
    );

    // The good token works, once per node.
    let (issued, _key) = join_cluster(&address, Some(&good), "agent", 0)
        .await
        .expect("a join with a good token");
    assert_eq!(issued.container_instance_id.len(), 32);
    assert!(issued.ca_key.is_empty(), "an agent never gets the CA key");

    // Another cluster: its token names another CA, which this server does
    // not present; and a node holding that cluster's certificate is refused
    // in the handshake, with a line in this server's log.
    let other = TestServer::start(root.path(), "b", &["--bootstrap"], &[]);
    other.wait_ready().await;
    let foreign_token = common::cluster::create_token(&other.address, "agent");
    let error = join_cluster(&address, Some(&foreign_token), "agent", 0)
        .await
        .unwrap_err();
    assert!(
        refused(error).contains("not the one the join token names"),
        "a token of another cluster"
    );
    let (foreign, _) = join_as_agent(&other.address).await;
    let foreign_credential = {
        let (issued, key) = join_cluster(&other.address, Some(&foreign_token), "agent", 0)
            .await
            .unwrap();
        (issued.certificate, key)
    };
    let ours = orc::tls::credential::Credential::load(&admin).unwrap();
    // It trusts this cluster's CA (as a copied config would) but holds a
    // certificate of the other one.
    let mixed = ClientTls::new(
        &ours.ca,
        Some((&foreign_credential.0, &foreign_credential.1)),
    )
    .unwrap();
    let mut client = Client::with_tls(&address, Some(Arc::new(mixed))).unwrap();
    client.retry_for = Duration::from_secs(2);
    // TLS 1.3 tells the client only after its handshake, as the connection
    // breaks: the node sees a failure, the server's log says why.
    assert!(client.cluster_status(false).await.is_err());
    wait_log(
        &server,
        "its client certificate was not issued by this cluster's CA",
    )
    .await;
    // And a node of the other cluster, trusting only its own CA, refuses
    // this server, which logs it.
    let mut client = Client::with_tls(&address, Some(foreign)).unwrap();
    client.retry_for = Duration::from_secs(2);
    let error = client.cluster_status(false).await.unwrap_err().to_string();
    assert!(error.contains("another cluster"), "{error}");
    wait_log(
        &server,
        "the client did not accept this server's certificate",
    )
    .await;

    // A real `orc agent` without a token says what to do.
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["agent", "--server", &address])
        .arg("--data-dir")
        .arg(root.path().join("agent-without-token"))
        .env_remove("ORC_TOKEN")
        .output()
        .expect("run orc agent");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused this agent") && stderr.contains("orc token create --role agent"),
        "{stderr}"
    );
}

/// An agent's gRPC clients with its own certificate.
fn as_agent(
    address: &str,
    tls: Arc<ClientTls>,
) -> (
    AgentApiClient<tonic::transport::Channel>,
    OrcClient<tonic::transport::Channel>,
    PeerClient<tonic::transport::Channel>,
) {
    let channel = orc::wire::channel_with(address, Some(tls)).unwrap();
    (
        AgentApiClient::new(channel.clone()),
        OrcClient::new(channel.clone()),
        PeerClient::new(channel),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_serves_only_its_own_instance() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let (mine_tls, mine) = join_as_agent(&server.address).await;
    let (theirs_tls, theirs) = join_as_agent(&server.address).await;
    let registration = json!({
        "hostname": "fake-pi", "cpu": 4096, "memoryMib": 4096,
        "agentVersion": "test", "dockerVersion": "none",
    })
    .to_string();
    for (tls, id) in [(&theirs_tls, &theirs), (&mine_tls, &mine)] {
        let (mut agent, _, _) = as_agent(&server.address, tls.clone());
        let answer = agent
            .register_container_instance(RegisterInstanceRequest {
                cluster: "default".into(),
                container_instance_id: String::new(),
                instance_json: registration.clone(),
                agent_session: String::new(),
            })
            .await
            .expect("an agent registers its own instance")
            .into_inner();
        assert_eq!(
            &answer.container_instance_id, id,
            "the id its certificate names"
        );
    }
    let (mut agent, mut orc, mut peer) = as_agent(&server.address, mine_tls.clone());
    let denied = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        status.message().to_string()
    };

    // Its own assignments: yes. Another node's: no.
    let mut own = agent
        .watch_assignments(WatchAssignmentsRequest {
            cluster: "default".into(),
            container_instance_id: mine.clone(),
            after_revision: 0,
        })
        .await
        .expect("its own assignments")
        .into_inner();
    assert!(own.message().await.unwrap().is_some());
    let message = denied(
        agent
            .watch_assignments(WatchAssignmentsRequest {
                cluster: "default".into(),
                container_instance_id: theirs.clone(),
                after_revision: 0,
            })
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("only act for its own container instance"),
        "{message}"
    );
    denied(
        agent
            .heartbeat(HeartbeatRequest {
                cluster: "default".into(),
                container_instance_id: theirs.clone(),
                running_task_ids: vec![],
                agent_session: String::new(),
            })
            .await
            .unwrap_err(),
    );
    denied(
        agent
            .report_task_state(TaskStateReport {
                cluster: "default".into(),
                container_instance_id: theirs.clone(),
                report_json: json!({"taskArn": "x", "status": "STOPPED"}).to_string(),
            })
            .await
            .unwrap_err(),
    );
    // No admin or ECS method: not even reading another node's tasks.
    for action in ["RunTask", "DescribeTasks", "ListTasks", "CreateCluster"] {
        let status = orc
            .call(ActionRequest {
                action: action.into(),
                body_json: "{}".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        let message = denied(status);
        assert!(message.contains("agent"), "{action}: {message}");
    }
    denied(
        orc.admin(ActionRequest {
            action: "CreateJoinToken".into(),
            body_json: json!({"role": "server"}).to_string(),
            request_id: String::new(),
        })
        .await
        .unwrap_err(),
    );
    // Raft between servers: servers only.
    denied(
        peer.raft(RaftBatch {
            cluster_id: String::new(),
            from_id: 1,
            from_address: String::new(),
            messages: vec![],
        })
        .await
        .unwrap_err(),
    );

    // Without a certificate: unauthenticated, except to join.
    let ours = orc::tls::credential::Credential::load(server.credential.as_ref().unwrap()).unwrap();
    let anonymous = Arc::new(ClientTls::new(&ours.ca, None).unwrap());
    let (_, mut orc, _) = as_agent(&server.address, anonymous);
    let status = orc
        .call(ActionRequest {
            action: "ListClusters".into(),
            body_json: "{}".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    wait_log(
        &server,
        "refused an agent acting for another node's instance",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_without_a_restart() {
    // Every certificate this test's processes issue lives 15 s.
    std::env::set_var("ORC_CERT_LIFETIME_SECS", "15");
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let mut agent = common::agent::TestAgent::start(root.path(), "agent", &[&server.address]);
    let credential = agent.data_dir.join("credential.json");
    let first = eventually(
        Duration::from_secs(60),
        "the agent's certificate",
        || async { orc::tls::credential::Credential::load(&credential).ok() },
    )
    .await;
    let server_credential = server.data_dir.join("tls").join("server.json");
    let server_first = orc::tls::credential::Credential::load(&server_credential).unwrap();
    let started = Instant::now();
    eventually(
        Duration::from_secs(60),
        "both certificates to be renewed",
        || async {
            let agent_now = orc::tls::credential::Credential::load(&credential).ok()?;
            let server_now = orc::tls::credential::Credential::load(&server_credential).ok()?;
            (agent_now.certificate != first.certificate
                && server_now.certificate != server_first.certificate)
                .then_some(())
        },
    )
    .await;
    eprintln!("renewed after {:.1}s", started.elapsed().as_secs_f64());
    // Past the first certificates' expiry, the same processes still work:
    // the agent heartbeats (reconnecting with its new certificate) and the
    // server answers new connections.
    eventually(
        Duration::from_secs(60),
        "the first certificates to expire",
        || async { (orc::vocab::time::now_ms() > first.not_after_ms() + 1_000).then_some(()) },
    )
    .await;
    assert!(
        agent.exited().is_none(),
        "the agent restarted:\n{}",
        agent.log_text()
    );
    let control = server.client();
    wait_instance_connected(&control).await;
    assert!(server
        .log_text()
        .contains("renewed this server's certificate"));
    assert!(agent
        .log_text()
        .contains("renewed this agent's certificate"));
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_server_receives_the_ca_and_the_seal_key_and_nothing_else_does() {
    let root = tempfile::tempdir().unwrap();
    let servers = common::cluster::three_servers(root.path(), &[]).await;
    let read = |server: &TestServer, file: &str| std::fs::read(server.data_dir.join(file)).unwrap();
    for joined in &servers[1..] {
        for file in ["tls/ca.pem", "tls/ca.key", "keys/seal.key"] {
            assert_eq!(read(&servers[0], file), read(joined, file), "{file}");
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(joined.data_dir.join("tls/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let own = orc::tls::credential::Credential::load(&joined.data_dir.join("tls/server.json"))
            .unwrap();
        assert!(
            matches!(
                own.holder(),
                orc::vocab::principal::Principal::Server { .. }
            ),
            "{:?}",
            own.holder()
        );
    }
    // An agent's join answer carries neither.
    let (issued, _) = join_cluster(
        &servers[0].address,
        Some(&std::env::var("ORC_TOKEN").unwrap()),
        "agent",
        0,
    )
    .await
    .unwrap();
    assert!(issued.ca_key.is_empty() && issued.seal_key.is_empty());
}

/// The CLI with `args` against `endpoint` and the given credential file.
fn cli_at(credential: &std::path::Path, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--endpoint", endpoint, "--timeout", "120"];
    all.extend_from_slice(args);
    cli(credential, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_moves_every_node_without_a_restart_and_refuses_the_old_ca() {
    use orc::tls::credential::Credential;
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let mut agent = common::agent::TestAgent::start(root.path(), "agent", &[&server.address]);
    let agent_credential = agent.data_dir.join("credential.json");
    // A new client each time: the admin credential file is renewed too.
    let (address, admin) = (server.address.clone(), server.credential.clone().unwrap());
    let connected = || async {
        let tls = orc::tls::credential::Credential::load(&admin)
            .ok()?
            .client_tls()
            .ok()?;
        let (answer, _) = Client::with_tls(&address, Some(Arc::new(tls)))
            .ok()?
            .call("DescribeContainerInstances", json!({}))
            .await
            .ok()?;
        let instance = &answer["containerInstances"][0];
        (instance["agentConnected"] == true && instance["status"] == "ACTIVE").then_some(())
    };
    eventually(Duration::from_secs(60), "the agent connected", connected).await;

    let old_admin = root.path().join("old-admin.json");
    let mine = root.path().join("mine.json");
    std::fs::copy(&admin, &old_admin).unwrap();
    std::fs::copy(&admin, &mine).unwrap();
    let old_ca = Credential::load(&admin).unwrap().ca_fingerprint();
    let old_agent = Credential::load(&agent_credential).unwrap();
    let old_server = Credential::load(&server.data_dir.join("tls/server.json")).unwrap();
    assert!(orc::tls::issued_by(&old_agent.ca, &old_agent.certificate));

    let (ok, out, err) = cli_at(&mine, &server.address, &["ca", "rotate"]);
    assert!(
        ok,
        "orc ca rotate failed:\n{out}\n{err}\n{}",
        server.log_text()
    );
    let new_ca = out
        .strip_prefix("the cluster CA is now sha256 ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_ne!(new_ca, old_ca);
    assert!(err.contains("agents moved"), "no progress shown: {err}");
    assert!(err.contains("orc token create"), "{err}");
    assert!(err.contains("refused"), "{err}");

    // Every node moved without a restart: the server's own certificate,
    // the admin credentials, the agent's; each trusts the new CA only.
    let only_new = |credential: &Credential| {
        credential.ca_fingerprint() == new_ca
            && orc::tls::certificates(&credential.ca).unwrap().len() == 1
            && orc::tls::issued_by(&credential.ca, &credential.certificate)
    };
    let server_now = Credential::load(&server.data_dir.join("tls/server.json")).unwrap();
    assert!(only_new(&server_now));
    assert_ne!(server_now.certificate, old_server.certificate);
    assert!(only_new(&Credential::load(&mine).unwrap()));
    eventually(
        Duration::from_secs(30),
        "the agent to trust the new CA only",
        || async { only_new(&Credential::load(&agent_credential).ok()?).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the bootstrap admin credential renewed",
        || async { only_new(&Credential::load(&admin).ok()?).then_some(()) },
    )
    .await;
    let ca_pem = std::fs::read_to_string(server.data_dir.join("tls/ca.pem")).unwrap();
    assert_eq!(
        orc::tls::fingerprint(&orc::tls::certificates(&ca_pem).unwrap()[0]),
        new_ca
    );
    assert!(
        agent.exited().is_none(),
        "the agent restarted:\n{}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("the cluster's CA changed"),
        "{}",
        agent.log_text()
    );
    eventually(
        Duration::from_secs(30),
        "the agent still connected",
        connected,
    )
    .await;

    // A write with the rotated credential succeeds; `orc ca status` says so.
    let (ok, out, err) = cli_at(
        &mine,
        &server.address,
        &["create-cluster", "--cluster-name", "after"],
    );
    assert!(ok, "{out}\n{err}");
    let (ok, out, _) = cli_at(&mine, &server.address, &["ca", "status"]);
    assert!(
        ok && out.contains(&new_ca) && out.contains("none under way"),
        "{out}"
    );

    // The old CA's certificate is refused; so is a join token made before.
    let (ok, out, err) = cli_at(&old_admin, &server.address, &["list-clusters"]);
    assert!(!ok, "an old-CA credential still works: {out}");
    assert!(err.contains("certificate"), "{err}");
    // Even by a client that trusts the new CA: the server refuses the
    // old CA's certificate itself.
    let mut mixed = Credential::load(&old_admin).unwrap();
    mixed.ca = Credential::load(&mine).unwrap().ca;
    let mixed_path = root.path().join("mixed.json");
    mixed.save(&mixed_path).unwrap();
    let before = log_count(
        &server,
        "its client certificate was not issued by this cluster's CA",
    );
    let (ok, out, _) = cli_at(&mixed_path, &server.address, &["list-clusters"]);
    assert!(!ok, "the server accepted an old-CA certificate: {out}");
    assert!(
        log_count(
            &server,
            "its client certificate was not issued by this cluster's CA"
        ) > before,
        "{}",
        server.log_text()
    );
    let refused = join_cluster(
        &server.address,
        Some(&std::env::var("ORC_TOKEN").unwrap()),
        "agent",
        0,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("CA"), "{refused}");

    // The server stopped and started again after the rotation: the same
    // agent process reconnects, with its renewed certificate.
    let mut server = server;
    let failed = agent.log_text().matches("heartbeat failed").count();
    let back = agent.log_text().matches("answers heartbeats again").count();
    server.kill();
    eventually(
        Duration::from_secs(30),
        "the agent to miss the server",
        || async { (agent.log_text().matches("heartbeat failed").count() > failed).then_some(()) },
    )
    .await;
    server.restart();
    server.wait_ready().await;
    eventually(
        Duration::from_secs(60),
        "the agent back after the server's restart",
        || async {
            (agent.log_text().matches("answers heartbeats again").count() > back).then_some(())
        },
    )
    .await;
    assert!(
        agent.exited().is_none(),
        "the agent stopped:\n{}",
        agent.log_text()
    );

    // The agent restarted after the rotation connects with what it holds.
    agent.kill();
    agent.spawn();
    eventually(
        Duration::from_secs(60),
        "the restarted agent connected",
        || async {
            let log = agent.log_text();
            (log.matches("registered").count() >= 2).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the agent connected again",
        connected,
    )
    .await;
    agent.kill();
}

/// `curl` against `url` with `args`; (HTTP status line and body).
fn curl(url: &str, args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_certificate_of_the_cluster() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let admin = server.credential.clone().unwrap();
    let url = format!("https://{}/metrics", server.address);
    let ca = server.data_dir.join("tls/ca.pem");
    let ca = ca.to_str().unwrap();

    // Anonymous TLS (the CA trusted, no certificate) is refused.
    let anonymous = curl(&url, &["--cacert", ca]);
    assert!(
        anonymous.starts_with("HTTP/2 401") || anonymous.starts_with("HTTP/1.1 401"),
        "{anonymous}"
    );
    assert!(
        anonymous.contains("needs a certificate of this cluster"),
        "{anonymous}"
    );

    // A readonly certificate issued for Prometheus scrapes it, as
    // Prometheus's tls_config (ca_file, cert_file, key_file) would.
    let dir = root.path().join("prometheus");
    let (ok, out, err) = cli_at(
        &admin,
        &server.address,
        &[
            "ca",
            "issue",
            "--name",
            "prometheus",
            "--role",
            "readonly",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let scraped = curl(
        &url,
        &[
            "--cacert",
            &file("ca.pem"),
            "--cert",
            &file("cert.pem"),
            "--key",
            &file("key.pem"),
        ],
    );
    assert!(scraped.contains(" 200"), "{scraped}");
    assert!(scraped.contains("orc_"), "{scraped}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Its credential is a readonly user's: it reads, and may not write.
    let readonly = dir.join("credential.json");
    let (ok, _, err) = cli_at(&readonly, &server.address, &["list-clusters"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli_at(
        &readonly,
        &server.address,
        &["create-cluster", "--cluster-name", "x"],
    );
    assert!(!ok && err.contains("readonly"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_moves_three_servers_and_they_keep_replicating() {
    use orc::tls::credential::Credential;
    let root = tempfile::tempdir().unwrap();
    let mut servers = common::cluster::three_servers(root.path(), &[]).await;
    let admin = servers[0].credential.clone().unwrap();
    let mine = root.path().join("mine.json");
    std::fs::copy(&admin, &mine).unwrap();
    // Rotated through a server that need not be the leader.
    let (ok, out, err) = cli_at(&mine, &servers[1].address, &["ca", "rotate"]);
    assert!(ok, "orc ca rotate failed:\n{out}\n{err}");
    let new_ca = out
        .strip_prefix("the cluster CA is now sha256 ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    // Each server follows the state as it applies it: a moment apart.
    for server in &servers {
        eventually(
            Duration::from_secs(30),
            "every server on the new CA only",
            || async {
                let own = Credential::load(&server.data_dir.join("tls/server.json")).ok()?;
                let ca_pem = std::fs::read_to_string(server.data_dir.join("tls/ca.pem")).ok()?;
                (own.ca_fingerprint() == new_ca
                    && orc::tls::certificates(&own.ca).ok()?.len() == 1
                    && orc::tls::issued_by(&own.ca, &own.certificate)
                    && orc::tls::fingerprint(&orc::tls::certificates(&ca_pem).ok()?[0]) == new_ca)
                    .then_some(())
            },
        )
        .await;
    }
    // Writes go through every server, and a server restarted after the
    // rotation rejoins its peers with its new certificate and catches up.
    for (i, server) in servers.iter().enumerate() {
        let name = format!("after-{i}");
        let (ok, out, err) = cli_at(
            &mine,
            &server.address,
            &["create-cluster", "--cluster-name", &name],
        );
        assert!(ok, "{out}\n{err}");
    }
    servers[2].restart();
    servers[2].wait_ready().await;
    let (ok, out, err) = cli_at(
        &mine,
        &servers[0].address,
        &["create-cluster", "--cluster-name", "after-restart"],
    );
    assert!(ok, "{out}\n{err}");
    let restarted = Client::with_tls(
        &servers[2].address,
        Some(Arc::new(
            Credential::load(&mine).unwrap().client_tls().unwrap(),
        )),
    )
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the restarted server to catch up",
        || async {
            let answer = restarted
                .call("DescribeClusters", json!({"clusters": ["after-restart"]}))
                .await;
            if answer.is_err() {
                eprintln!(
                    "{answer:?}\n{}",
                    servers[2]
                        .log_text()
                        .lines()
                        .filter(|l| l.contains("orc::") && !l.contains("refused a conn"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            let (answer, _) = answer.ok()?;
            (answer["clusters"][0]["status"] == "ACTIVE").then_some(())
        },
    )
    .await;
}
