//! What the tests that drive the Docker Engine directly share: the
//! `ORC_SKIP_DOCKER_TESTS=1` switch for machines without Docker, a random
//! suffix for the names of the containers, networks and clusters a test
//! makes, so runs in parallel (and leftovers of a killed run) never
//! collide, and a GET of a container's web page.
//!
//! Use it from a test file with `#[path = "common/docker.rs"] mod docker;`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Whether Docker tests are skipped on this machine
/// (`ORC_SKIP_DOCKER_TESTS=1`); says so on stderr when they are.
pub fn skip() -> bool {
    if std::env::var_os("ORC_SKIP_DOCKER_TESTS").is_some_and(|v| v == "1") {
        eprintln!("ORC_SKIP_DOCKER_TESTS=1: skipping a Docker test");
        return true;
    }
    false
}

/// A short random suffix, different for every call in every process.
pub fn suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // xorshift to spread the bits
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    format!("{:08x}", x as u32)
}

/// `GET /` on a host port over plain HTTP/1.0: the whole response, or None
/// on any failure (nothing listening yet, no answer within 5 s, not HTTP).
pub async fn http_get(port: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.starts_with("HTTP/").then_some(text)
}
