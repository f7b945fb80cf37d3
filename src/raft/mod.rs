//! Consensus: raft-rs driven by one loop (`node`), its storage on sled
//! (`storage`), message transport over gRPC (`transport`), and the slog to
//! tracing bridge (`log`). Nothing outside this module touches raft-rs
//! types except `api`'s peer handler, which decodes inbound messages.

pub mod log;
pub mod node;
pub mod storage;
pub mod transport;
