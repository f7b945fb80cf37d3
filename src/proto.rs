//! The generated gRPC code (`proto/orc.proto`). Only `api` and the
//! transports use these types; `api::convert` turns them into domain types.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("orc.v1");
