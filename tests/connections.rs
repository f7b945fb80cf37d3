//! Connections to a server from people who are not orc (issue 11, item 7):
//! a server with few file descriptors, held open by strangers that never
//! speak, raises its soft limit to its hard one, still answers
//! `orc cluster status`, logs that it ran out of descriptors, and closes the
//! silent and idle connections after its idle time-out.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::free_port;

/// An `orc server` started under `prlimit` (so its descriptor limits are
/// what the test says), killed on drop.
struct LimitedServer {
    address: String,
    log: std::path::PathBuf,
    child: Child,
}

impl LimitedServer {
    fn start(root: &std::path::Path, soft: u64, hard: u64, idle_timeout_secs: u64) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let log = root.join("server.log");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_orc"))
            .args(["server", "--bootstrap", "--listen", &address])
            .arg("--data-dir")
            .arg(root.join("server"))
            .args(["--idle-timeout", &idle_timeout_secs.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start orc server under prlimit");
        LimitedServer {
            address,
            log,
            child,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `orc cluster status` as a user runs it: (success, stderr, seconds).
    fn cluster_status(&self) -> (bool, String, f64) {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_orc"))
            .args(["cluster", "status", "--endpoint", &self.address])
            .output()
            .expect("run orc");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).to_string(),
            started.elapsed().as_secs_f64(),
        )
    }

    /// The soft and hard "Max open files" of the server process.
    fn open_file_limits(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[3].to_string(), fields[4].to_string())
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server closed this connection (end of file or reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // The server may have sent HTTP/2 frames first: read on.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_sockets_neither_starve_the_admin_nor_stay_forever() {
    let root = tempfile::tempdir().unwrap();
    let server = LimitedServer::start(root.path(), 64, 128, 3);
    let ready = Instant::now();
    loop {
        let (ok, _, _) = server.cluster_status();
        if ok {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "the server never answered:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.open_file_limits(),
        ("128".to_string(), "128".to_string()),
        "the soft limit is raised to the hard one"
    );

    // A client that made one request and then idles.
    let mut idle_client = TcpStream::connect(&server.address).unwrap();
    idle_client
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: orc\r\n\r\n")
        .unwrap();
    // Three hundred strangers that connect and never say a word: more than
    // the server has descriptors.
    let mut strangers: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&server.address).expect("connect a stranger"))
        .collect();

    let (ok, stderr, seconds) = server.cluster_status();
    assert!(
        ok,
        "cluster status failed while strangers held sockets ({seconds:.1}s): {stderr}\n{}",
        server.log_text()
    );
    eprintln!("orc cluster status answered in {seconds:.2}s while 300 strangers held sockets");

    // After the time-out (3 s here) every stranger and the idle client
    // are closed by the server.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        strangers.retain_mut(|s| !closed_by_server(s));
        let idle_closed = closed_by_server(&mut idle_client);
        if strangers.is_empty() && idle_closed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} strangers (and the idle client: closed {idle_closed}) are still connected:\n{}",
            strangers.len(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.log_text();
    assert!(
        log.contains("out of file descriptors"),
        "running out of descriptors is logged:\n{log}"
    );
    let (ok, stderr, _) = server.cluster_status();
    assert!(ok, "{stderr}");
}
