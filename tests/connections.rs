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
        common::cluster::trust_cluster(&root.join("server"), &address);
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

// ------------------------------------------------------------ the CLI's errors

/// `orc cluster status --endpoint ENDPOINT` with extra flags: (success,
/// stderr, seconds).
fn cli_status(endpoint: &str, extra: &[&str]) -> (bool, String, f64) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["cluster", "status", "--endpoint", endpoint])
        .args(extra)
        .env_remove("ORC_TIMEOUT")
        .output()
        .expect("run orc");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).to_string(),
        started.elapsed().as_secs_f64(),
    )
}

/// A listener on a free loopback port that treats every connection with
/// `answer` on its own thread, for as long as the test runs.
fn tiny_listener(answer: fn(TcpStream)) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    address
}

/// What each bad endpoint must fail with, and within how long (a loaded
/// 2-core machine: the failures take 0-5 s here).
fn assert_fails(endpoint: &str, extra: &[&str], expected: &[&str], within: f64) {
    let (ok, stderr, seconds) = cli_status(endpoint, extra);
    assert!(!ok, "{endpoint}: succeeded?");
    for words in expected {
        assert!(
            stderr.contains(words),
            "{endpoint}: the error should say {words:?}:\n{stderr}"
        );
    }
    assert!(
        seconds < within,
        "{endpoint}: took {seconds:.1}s (more than {within}s):\n{stderr}"
    );
    eprintln!(
        "{endpoint} {extra:?}: failed in {seconds:.2}s: {}",
        stderr.trim()
    );
}

#[test]
fn invalid_addresses_are_refused_before_any_connection() {
    for (endpoint, words) in [
        ("127.0.0.1:99999", "99999 is not a port number"),
        ("127.0.0.1", "it has no port"),
        (":7400", "it has no host"),
        ("127.0.0.1:", "it has no port"),
    ] {
        assert_fails(
            endpoint,
            &[],
            &[
                &format!("invalid address {endpoint:?}"),
                words,
                "--endpoint",
            ],
            2.0,
        );
    }
}

#[test]
fn unreachable_and_foreign_endpoints_are_named_within_seconds() {
    let closed = format!("127.0.0.1:{}", free_port());
    assert_fails(
        &closed,
        &[],
        &[&closed, "nothing listens", "orc server"],
        10.0,
    );
    assert_fails(
        "no-such-host.invalid:7400",
        &[],
        &["cannot resolve no-such-host.invalid:7400"],
        10.0,
    );
    let http = tiny_listener(|mut stream| {
        let mut buffer = [0u8; 256];
        let _ = stream.read(&mut buffer);
        let _ = stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    });
    assert_fails(
        &http,
        &[],
        &[&format!(
            "{http} answered HTTP/1.1, not gRPC: is this an orc server?"
        )],
        10.0,
    );
    let ssh = tiny_listener(|mut stream| {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
        std::thread::sleep(Duration::from_secs(30));
    });
    assert_fails(
        &ssh,
        &[],
        &[&format!("{ssh} answered with an SSH banner, not gRPC")],
        10.0,
    );
    let silent = tiny_listener(|stream| {
        std::thread::sleep(Duration::from_secs(60));
        drop(stream);
    });
    assert_fails(
        &silent,
        &[],
        &[&format!(
            "{silent} accepted the connection but answered nothing"
        )],
        15.0,
    );
    // --timeout bounds the call: the probe would come only after 3 s.
    assert_fails(
        &silent,
        &["--timeout", "1"],
        &[&silent, "did not answer within 1 s", "--timeout"],
        5.0,
    );
}

#[test]
fn a_paused_server_is_named_as_such() {
    let root = tempfile::tempdir().unwrap();
    let server = LimitedServer::start(root.path(), 1024, 1024, 60);
    let ready = Instant::now();
    while !server.cluster_status().0 {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = server.child.id() as i32;
    // SAFETY: signals a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let (ok, stderr, seconds) = cli_status(&server.address, &[]);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(!ok);
    assert!(
        stderr.contains(&server.address) && stderr.contains("paused (SIGSTOP)"),
        "{stderr}"
    );
    assert!(seconds < 15.0, "took {seconds:.1}s: {stderr}");
    eprintln!(
        "a paused server: failed in {seconds:.2}s: {}",
        stderr.trim()
    );
    let (ok, stderr, _) = server.cluster_status();
    assert!(ok, "answers again once continued: {stderr}");
}
