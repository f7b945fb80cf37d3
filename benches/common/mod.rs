//! What the benchmarks share: their knobs, read from the environment, and
//! free loopback ports for the servers they start.
#![allow(dead_code)]

/// The number environment variable `name` holds, or `default` when it is
/// unset or not a number of that type.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
