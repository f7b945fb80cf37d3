//! The container instance side (`orc agent`): the `Runtime` trait that is
//! the agent's only door to a container engine, its Docker implementation
//! (`docker`, through bollard) and an in-memory fake for simulations
//! (`fake`). The agent talks to the control plane only through the gRPC API.

pub mod docker;
pub mod fake;
pub mod runtime;
