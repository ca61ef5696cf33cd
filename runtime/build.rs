//! Build script: the CRI v1 client stubs (tonic-prost-build from `proto/cri.proto`, protoc from
//! `PROTOC` or `PATH`) and k8slite's static pause program (`pause/pause.c`, compiled with the C
//! compiler the `cc` crate picks for the target, so cross builds get a pause for the target).

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cri.proto");
    println!("cargo:rerun-if-changed=pause/pause.c");

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .btree_map(".")
        .compile_protos(&["proto/cri.proto"], &["proto"])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let pause = out_dir.join("pause");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level_str("s")
        .get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.args(["-static", "-Os", "-s", "-Wall", "-Wextra", "-o"])
        .arg(&pause)
        .arg("pause/pause.c");
    let status = cmd
        .status()
        .map_err(|e| format!("running the C compiler for pause/pause.c ({cmd:?}): {e}"))?;
    if !status.success() {
        return Err(format!("compiling pause/pause.c failed ({cmd:?}): {status}").into());
    }
    Ok(())
}
