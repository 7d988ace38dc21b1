//! Compiles workspace crates to `wasm32-wasip2` components from a build script, the way
//! spin's `tests/test-components/build.rs` does: one nested `cargo build` for all of them,
//! into `<target>/wasm` inside the workspace's one target directory, with the `plugin`
//! profile (small, optimised, symbol names kept for guest backtraces).

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

/// One built component.
pub struct Built {
    /// Package name, e.g. `canopy-plugin-template`.
    pub package: String,
    /// Path of the `.wasm` component.
    pub path: PathBuf,
}

/// Builds `packages` (workspace package names whose crates live in `dirs`, relative to the
/// workspace root) and returns where each component is. Tells cargo to rerun the calling
/// build script when any input changes. Panics with a clear message on failure, which is
/// how a build script reports errors.
pub fn build(workspace_root: &Path, packages: &[(&str, &str)]) -> Vec<Built> {
    for input in [
        "wit",
        "plugins/sdk",
        "crates/events",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .into_iter()
    .chain(packages.iter().map(|(_, dir)| *dir))
    {
        println!(
            "cargo:rerun-if-changed={}",
            workspace_root.join(input).display()
        );
    }
    ensure_target_installed();

    let target_dir = target_dir(workspace_root).join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root)
        .args(["build", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in packages {
        command.args(["-p", package]);
    }
    // The outer build's flags and wrappers (e.g. clippy's) are for the host target.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_LLVM_COV",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build wasm components: {e}"));
    assert!(
        status.success(),
        "building the wasm components {:?} failed (see the cargo output above)",
        packages.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    packages
        .iter()
        .map(|(package, _)| {
            let out = target_dir.join(TARGET).join(PROFILE);
            // A library component is named after its crate (`_`), a command after its package.
            let library = out.join(format!("{}.wasm", package.replace('-', "_")));
            let command = out.join(format!("{package}.wasm"));
            let path = if library.exists() { library } else { command };
            assert!(path.exists(), "{} was not produced", path.display());
            Built {
                package: (*package).to_owned(),
                path,
            }
        })
        .collect()
}

/// The workspace's target directory, honouring `CARGO_TARGET_DIR`.
fn target_dir(workspace_root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace_root.join(dir)
            }
        })
        .unwrap_or_else(|| workspace_root.join("target"))
}

fn ensure_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot
        && !sysroot.join("lib/rustlib").join(TARGET).exists()
    {
        panic!(
            "the Rust target {TARGET} is not installed; run `rustup target add {TARGET}` \
             (scripts/serve and scripts/test do it for you)"
        );
    }
}
