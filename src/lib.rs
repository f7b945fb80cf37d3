//! orc: a self-hosted mini container orchestrator for Raspberry Pi clusters,
//! shaped like AWS ECS. See ARCHITECTURE.md for the tour; this file only
//! lists the modules.

pub mod agent;
pub mod api;
pub mod balancer;
pub mod blobstore;
pub mod cli;
pub mod client;
pub mod controller;
pub mod crypto;
pub mod datadir;
pub mod error;
pub mod metrics;
pub mod model;
pub mod oci;
pub mod proxy;
pub mod raft;
pub mod scheduler;
pub mod seal;
pub mod server;
pub mod store;
pub mod taskdef;
pub mod tls;
pub mod vocab;
pub mod wire;

pub use error::{Error, Result};
