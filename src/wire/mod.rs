//! The one owner of protobuf: the generated gRPC code (`proto`), the
//! conversions between its messages and domain types (`convert`), the
//! mapping of `crate::Error` to `tonic::Status` and back (`status`), and the
//! gRPC channel helpers (`channel`, and `probe`, which names what answers at
//! an address when gRPC fails there), and the client side of the registry's
//! blob copies between servers (`blobs`).
//!
//! It sits below every module that speaks gRPC (`raft::transport`, `api`,
//! `client`, `agent`) and above the domain types it converts.

pub mod blobs;
pub mod channel;
pub mod convert;
pub mod probe;
pub mod proto;
pub mod status;

pub use channel::{channel, channel_with};

/// How long an agent session counts as live after its last heartbeat or
/// registration: while it is, another agent process registering the same
/// container instance id (a copied data dir) is refused. Short, so an agent
/// restarted after a crash waits at most this long for its old session to
/// lapse.
pub const AGENT_SESSION_LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// The words in the refusal of a second live agent for one container
/// instance; the agent recognises them to wait out a crashed predecessor's
/// lease before it explains the refusal.
pub const LIVE_AGENT_REFUSAL: &str = "already has a live agent";
