//! Real `orc server` processes on loopback for end-to-end tests: each in its
//! own temporary data dir, with its log captured, killed on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orc::client::Client;
use serde_json::Value;

/// Waits up to `timeout` for `child` to exit (polling every 50 ms); `None`
/// when it is still running, for the caller to kill and report.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local address")
        .port()
}

/// The admin credential written by a bootstrapping server in `data_dir`
/// (`tls/admin.json`), once it exists (up to 30 s).
pub fn admin_credential(data_dir: &std::path::Path) -> PathBuf {
    let path = data_dir.join("tls").join("admin.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "no admin credential appeared at {} within 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Written through a rename: once it exists it is whole.
    path
}

/// Makes this test process, and every `orc` it starts from now on, use the
/// cluster whose bootstrap server has `data_dir`: its admin credential
/// (`ORC_CREDENTIALS` and this process's client identity) and a fresh agent
/// join token (`ORC_TOKEN`, so every `orc agent` a test starts joins on its
/// own). The harness is secure by default; tests of `--insecure` opt out.
pub fn trust_cluster(data_dir: &std::path::Path, endpoint: &str) {
    let path = admin_credential(data_dir);
    let credential = orc::tls::credential::Credential::load(&path).expect("the admin credential");
    orc::tls::set_process_identity(Some(credential.client_tls().expect("a usable credential")));
    std::env::set_var("ORC_CREDENTIALS", &path);
    let token = create_token(endpoint, "agent");
    std::env::set_var("ORC_TOKEN", token);
}

/// A join token for `role` from the server at `endpoint`, made with the
/// CLI and the current `ORC_CREDENTIALS`.
pub fn create_token(endpoint: &str, role: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["--endpoint", endpoint, "--timeout", "60"])
        .args(["token", "create", "--role", role])
        .output()
        .expect("run orc token create");
    assert!(
        output.status.success(),
        "orc token create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Sends one raw HTTP/1.1 request to `address` over TLS with this
/// process's identity (plain text when it has none) and reads the answer
/// until the server closes (send `Connection: close`).
pub fn http_request(address: &str, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    match orc::tls::process_identity() {
        None => {
            tcp.write_all(request.as_bytes()).unwrap();
            let _ = tcp.read_to_end(&mut answer);
        }
        Some(tls) => {
            let config = tls.rustls_config(&[b"http/1.1"]);
            let mut connection =
                rustls::ClientConnection::new(config, orc::tls::ClientTls::server_name()).unwrap();
            let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
            stream.write_all(request.as_bytes()).unwrap();
            let _ = stream.read_to_end(&mut answer);
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A new agent's certificate for the cluster at `address`, joined in this
/// process with the harness's agent token (`ORC_TOKEN`): to make AgentApi
/// calls as an agent (and be refused as one). Returns the identity and the
/// container instance id its certificate names.
pub async fn join_as_agent(address: &str) -> (std::sync::Arc<orc::tls::ClientTls>, String) {
    let token = std::env::var("ORC_TOKEN").expect("the harness's agent token");
    let (issued, key) = orc::client::join_cluster(address, Some(&token), "agent", 0)
        .await
        .expect("join as an agent");
    let credential = orc::tls::credential::Credential {
        endpoint: address.to_string(),
        ca: issued.ca,
        certificate: issued.certificate,
        key,
    };
    (
        std::sync::Arc::new(credential.client_tls().expect("agent tls")),
        issued.container_instance_id,
    )
}

/// One `orc server` process.
pub struct TestServer {
    pub address: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// Started `--insecure` (plain text, no credentials).
    pub insecure: bool,
    /// The admin credential of its cluster (when secure): `client()` uses it.
    pub credential: Option<PathBuf>,
}

impl TestServer {
    /// Starts `orc server` with `--data-dir`, `--listen`, the role flags
    /// (`--bootstrap` or `--join ADDR`, used only this time) and tuning flags
    /// (kept for restarts).
    pub fn start(root: &std::path::Path, name: &str, role: &[&str], tuning: &[&str]) -> TestServer {
        let address = format!("127.0.0.1:{}", free_port());
        let mut server = TestServer {
            address,
            data_dir: root.join(name),
            log: root.join(format!("{name}.log")),
            child: None,
            extra: tuning.iter().map(|f| f.to_string()).collect(),
            insecure: role.iter().chain(tuning).any(|f| *f == "--insecure"),
            credential: std::env::var_os("ORC_CREDENTIALS").map(PathBuf::from),
        };
        let mut flags: Vec<String> = role.iter().chain(tuning).map(|f| f.to_string()).collect();
        let insecure = flags.iter().any(|f| f == "--insecure");
        let joining = role.iter().position(|f| *f == "--join");
        if let (Some(at), false, false) = (joining, insecure, role.contains(&"--token")) {
            let token = create_token(role[at + 1], "server");
            flags.extend(["--token".to_string(), token]);
        }
        server.spawn(flags);
        if role.contains(&"--bootstrap") && !insecure {
            trust_cluster(&server.data_dir, &server.address);
            server.credential = Some(admin_credential(&server.data_dir));
        }
        if insecure {
            server.credential = None;
        }
        server
    }

    fn spawn(&mut self, flags: Vec<String>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_orc"))
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.address)
            .args(&flags)
            .env("RUST_LOG", "info,raft=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start orc server");
        self.child = Some(child);
    }

    /// Restarts a killed server from its data dir with its tuning flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(self.extra.clone());
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`) to the process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_exit(child, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .map(|status| status.is_none())
                .unwrap_or(false),
            None => false,
        }
    }

    /// A client for this server, with its cluster's admin credential.
    pub fn client(&self) -> Client {
        let tls = self.credential.as_ref().map(|path| {
            let credential = orc::tls::credential::Credential::load(path).expect("credential");
            std::sync::Arc::new(credential.client_tls().expect("client tls"))
        });
        let mut client = Client::with_tls(&self.address, tls).expect("client");
        client.retry_for = Duration::from_secs(2);
        client
    }

    /// The captured log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server answers `cluster status`.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.client().cluster_status(false).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server {} never became ready:\n{}",
                self.address,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client for the server at `address`, with this process's identity,
/// that retries for 10 s: long enough to ride out an election.
pub fn patient_client(address: &str) -> Client {
    let mut client = Client::new(address).unwrap();
    client.retry_for = Duration::from_secs(10);
    client
}

/// Calls an ECS action through `client`; panics naming the action, the
/// body and the error.
pub async fn call(client: &Client, action: &str, body: Value) -> Value {
    client
        .call(action, body.clone())
        .await
        .unwrap_or_else(|e| panic!("{action} {body} failed: {e}"))
        .0
}

/// Waits up to 30 s until the server `client` talks to lists an ACTIVE
/// container instance whose agent is connected.
pub async fn wait_instance_connected(client: &Client) {
    eventually(Duration::from_secs(30), "the agent to register", || async {
        let (answer, _) = client
            .call("DescribeContainerInstances", serde_json::json!({}))
            .await
            .ok()?;
        let connected = answer["containerInstances"]
            .as_array()?
            .iter()
            .any(|i| i["agentConnected"] == true && i["status"] == "ACTIVE");
        connected.then_some(())
    })
    .await;
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the control plane `server` belongs to has exactly `voters`
/// members, all voters (learners promoted).
pub async fn wait_voters(server: &TestServer, voters: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{voters} voters"),
        || async {
            let status = server.client().cluster_status(true).await.ok()?;
            let count = status.members.iter().filter(|m| m.voter).count();
            (count == voters && status.members.len() == voters).then_some(())
        },
    )
    .await
}

/// Starts a three-server control plane in `root` (s1 bootstraps, s2 and s3
/// join it), each with the `tuning` flags, and waits until all three vote.
pub async fn three_servers(root: &std::path::Path, tuning: &[&str]) -> [TestServer; 3] {
    let first = TestServer::start(root, "s1", &["--bootstrap"], tuning);
    first.wait_ready().await;
    let join = ["--join", first.address.as_str()];
    let second = TestServer::start(root, "s2", &join, tuning);
    let third = TestServer::start(root, "s3", &join, tuning);
    wait_voters(&first, 3).await;
    [first, second, third]
}
