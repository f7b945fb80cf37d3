//! The ECS nouns every layer shares, at the bottom of the crate: the actions
//! (`action::EcsAction`), the port
//! [`Protocol`], placement specs (`placement`), the cluster query language's
//! syntax tree (`query`), ids (`ids`), the sizes orc accepts (`limits`), wall-clock time as commands carry it (`time`), and wildcard patterns (`wildcard`).
//!
//! It imports nothing from the crate but `error`, so the store, the
//! scheduler, the agent and the API can all name these types without
//! importing each other. Plain data and pure parsing: no I/O, no logging.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod action;
pub mod ids;
pub mod limits;
pub mod placement;
pub mod principal;
pub mod query;
pub mod time;
pub mod wildcard;

/// Transport protocol of a port (a task definition's port mapping, a host
/// port the placer counts, a binding the agent publishes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lowercase name ECS and Docker use: `tcp` or `udp`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    /// Case-insensitive; an empty string is TCP (Docker's default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("unknown protocol {other:?} (expected tcp or udp)")),
        }
    }
}
