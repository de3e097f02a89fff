//! Compiles `proto/` with protox (pure Rust, so no `protoc` is needed on the build machine)
//! and writes one descriptor set covering every package, which servers use for reflection.
//! Imports resolve against `proto/` itself (our `google/api/field_behavior.proto` lives there)
//! and protox's built-in well-known types (`google/protobuf/*`).

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "cqrs/common/v1/audit.proto",
    "cqrs/common/v1/role.proto",
    "cqrs/audit/v1/audit.proto",
    "cqrs/identity/v1/identity.proto",
    "cqrs/directory/v1/directory.proto",
    "cqrs/access/v1/access.proto",
    "cqrs/notifications/v1/notifications.proto",
    "cqrs/testing/v1/echo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox rather than through prost_types, which would drop custom options such
    // as `google.api.field_behavior` and hide them from reflection clients.
    std::fs::write(
        out.join("cqrs_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
