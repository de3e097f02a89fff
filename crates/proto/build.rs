//! Compiles `proto/` with protox (pure Rust, so no `protoc` is needed on the build machine)
//! and writes one descriptor set covering every package, which servers use for reflection.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "cqrs/identity/v1/identity.proto",
    "cqrs/directory/v1/directory.proto",
    "cqrs/access/v1/access.proto",
    "cqrs/notifications/v1/notifications.proto",
    "cqrs/testing/v1/echo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let files = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("cqrs_descriptor.bin"), files.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(files)?;
    Ok(())
}
