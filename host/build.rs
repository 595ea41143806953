//! Generates the flyteidl2 protobuf types, the tonic services and their
//! proto3-JSON (serde) implementations from `../proto`, with the pure-Rust
//! `protox` compiler: no system `protoc` is needed.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let entry_points = ["flyteidl2/connector/connector.proto"];
    let descriptors = protox::compile(entry_points, [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Served by gRPC reflection and used to generate the serde impls.
    let descriptor_bytes = descriptors.encode_to_vec();
    fs::write(out_dir.join("flyteidl2_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Well-known types come from pbjson-types, which carry proto3-JSON serde.
        .compile_well_known_types(true)
        .btree_map(".")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .btree_map(["."])
        .build(&[".flyteidl2"])?;
    Ok(())
}
