//! The container instance side (`orc agent`): the `Runtime` trait that is
//! the agent's only door to a container engine, its Docker implementation
//! (`docker`, through bollard) and an in-memory fake for simulations
//! (`fake`). The agent talks to the control plane only through the gRPC API.
//!
//! The agent itself, an ECS container instance in bridge mode:
//! * `worker`: the main loop: register, heartbeat, watch assignments, report
//!   task state changes; [`worker::run`] is `orc agent`;
//! * `reconcile`: a pure function from assignments and observed containers
//!   to actions (pull, network, create, start in `dependsOn` order, stop,
//!   remove) and reports;
//! * `executor`: carries those actions out through the `Runtime`;
//! * `logs`: the log session the agent keeps open to its server, which
//!   serves `orc logs` from any machine;
//! * `ports`: dynamic host ports (32768–60999) recovered from labels;
//! * `network`: the /28 subnet pool for multi-container task networks;
//! * `config`: `orc agent` flags (`AgentArgs`) and `AgentConfig`;
//! * `identity`: the agent's certificate (joined with a token once, kept
//!   in the data dir, renewed in place).

pub mod config;
pub mod docker;
pub mod executor;
pub mod fake;
pub mod identity;
pub mod logs;
pub mod network;
pub mod ports;
pub mod reconcile;
pub mod runtime;
pub mod worker;
