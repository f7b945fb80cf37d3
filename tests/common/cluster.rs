//! Real `orc server` processes on loopback for end-to-end tests: each in its
//! own temporary data dir, with its log captured, killed on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orc::client::Client;

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

/// One `orc server` process.
pub struct TestServer {
    pub address: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
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
        };
        let flags = role.iter().chain(tuning).map(|f| f.to_string()).collect();
        server.spawn(flags);
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

    /// A client for this server.
    pub fn client(&self) -> Client {
        let mut client = Client::new(&self.address).expect("client");
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
