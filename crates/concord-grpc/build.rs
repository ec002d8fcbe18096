//! Compiles Concord's `.proto` files (proto/kurrentdb) with `protox`, a protobuf compiler
//! in Rust, so that building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kurrentdb/shared.proto",
        "proto/kurrentdb/status.proto",
        "proto/kurrentdb/streams.proto",
        "proto/kurrentdb/serverfeatures.proto",
        "proto/kurrentdb/gossip.proto",
        "proto/kurrentdb/persistent.proto",
        "proto/kurrentdb/v2/streams.proto",
        "proto/kurrentdb/v2/errors.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
