//! The one owner of protobuf: the generated gRPC code (`proto`), the
//! conversions between its messages and domain types (`convert`), the
//! mapping of `crate::Error` to `tonic::Status` and back (`status`), and the
//! gRPC channel helpers (`channel`).
//!
//! It sits below every module that speaks gRPC (`raft::transport`, `api`,
//! `client`, `agent`) and above the domain types it converts.

pub mod channel;
pub mod convert;
pub mod proto;
pub mod status;

pub use channel::channel;
