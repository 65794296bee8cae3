//! Compiles the .proto files with protox (pure Rust, no system protoc) and
//! generates prost messages and tonic clients and servers.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/grompi/v1/common.proto",
        "proto/grompi/v1/order.proto",
        "proto/grompi/v1/router.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for gRPC reflection in the servers.
    std::fs::write(
        out_dir.join("grompi_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
