//! The generated gRPC code (`proto/orc.proto`). Only `wire` and the tonic
//! glue named in ARCHITECTURE.md use these types.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("orc.v1");
