//! The `orc` command line: one binary for every role (`server`, `up`, later
//! `agent`) and the client verbs, named and flagged like `aws ecs`. Only
//! this module and `main` use `anyhow`; output goes through `output`.
//!
//! `args` holds the clap definitions, `dispatch` runs a verb, `roles` starts
//! the server, the agent or both.

mod args;
mod dispatch;
pub mod elbv2;
pub mod output;
mod roles;
pub mod shorthand;
pub mod wait;
pub mod watch;

pub use args::*;
pub use dispatch::{read_json_argument, run};
