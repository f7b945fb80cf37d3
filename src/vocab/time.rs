//! Wall-clock time as orc carries it: milliseconds since the Unix epoch.
//! The proposer reads the clock and puts the value inside the command, so
//! `apply` never reads a clock itself.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, chosen by the proposer and carried in commands.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
