//! Generates the gRPC code from `proto/*.proto` with a vendored `protoc`,
//! so a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/orc.proto");
    tonic_prost_build::configure().compile_protos(&["proto/orc.proto"], &["proto"])?;
    Ok(())
}
