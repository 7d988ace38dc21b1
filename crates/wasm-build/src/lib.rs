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

/// Builds a TypeScript plugin project (`dir`, relative to the workspace root) with its own
/// npm scripts — `npm ci` when its `node_modules` is older than its lock file, then
/// `npm run build` unless the component is newer than every input — and returns the
/// component `dist/<name>.wasm`. `None`, with a loud warning, when npm is not installed
/// (`scripts/setup --tests` installs it), and the calling build script then runs again on the
/// next build to look for npm; under CI (`CI` set) that is a failure instead, so CI never
/// skips these plugins.
pub fn build_npm(workspace_root: &Path, dir: &str, name: &str) -> Option<PathBuf> {
    let project = workspace_root.join(dir);
    let inputs = inputs(
        workspace_root,
        &project,
        &["src", "package.json", "package-lock.json", "tsconfig.json"],
        &[
            "wit/0.2",
            "plugins/sdk-ts/src",
            "plugins/sdk-ts/package.json",
            "plugins/sdk-ts/bundle.config.js",
        ],
    );
    let npm_found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !npm_found {
        return missing_toolchain(
            &project,
            &format!(
                "npm is not installed: the TypeScript plugin {dir} is not built and its tests \
                 are SKIPPED (scripts/setup --tests installs Node.js and npm)"
            ),
        );
    }
    let installed = modified(&project.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&project.join("package-lock.json")) {
        run(&project, "npm", &["ci", "--no-audit", "--no-fund"]);
    }
    let component = project.join("dist").join(format!("{name}.wasm"));
    if stale(&component, &inputs) {
        run(&project, "npm", &["run", "build"]);
    }
    assert!(
        component.exists(),
        "{} was not produced",
        component.display()
    );
    Some(component)
}

/// Builds a Python plugin project (`dir`, relative to the workspace root) with its own
/// `build.sh` — which keeps a virtual environment `.venv` with componentize-py and the SDK,
/// and runs componentize-py — unless the component `dist/<name>.wasm` is newer than every
/// input. `None`, with a loud warning, when `python3` cannot make a virtual environment
/// (`scripts/setup --tests` installs it); under CI that is a failure instead.
pub fn build_python(workspace_root: &Path, dir: &str, name: &str) -> Option<PathBuf> {
    let project = workspace_root.join(dir);
    let sources: Vec<String> = std::fs::read_dir(&project)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".py"))
                .collect()
        })
        .unwrap_or_default();
    let own: Vec<&str> = ["requirements.txt", "build.sh"]
        .into_iter()
        .chain(sources.iter().map(String::as_str))
        .collect();
    let inputs = inputs(
        workspace_root,
        &project,
        &own,
        &[
            "wit/0.2",
            "plugins/sdk-py/canopy_plugin_sdk",
            "plugins/sdk-py/pyproject.toml",
        ],
    );
    let venv_found = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !venv_found {
        return missing_toolchain(
            &project,
            &format!(
                "python3 with venv is not installed: the Python plugin {dir} is not built and \
                 its tests are SKIPPED (scripts/setup --tests installs python3-venv)"
            ),
        );
    }
    let component = project.join("dist").join(format!("{name}.wasm"));
    if stale(&component, &inputs) {
        run(&project, "sh", &["build.sh"]);
    }
    assert!(
        component.exists(),
        "{} was not produced",
        component.display()
    );
    Some(component)
}

/// A project's inputs — its own files and the workspace's shared ones — each announced to
/// cargo, so the calling build script reruns when one changes.
fn inputs(workspace_root: &Path, project: &Path, own: &[&str], shared: &[&str]) -> Vec<PathBuf> {
    let inputs: Vec<PathBuf> = own
        .iter()
        .map(|input| project.join(input))
        .chain(shared.iter().map(|input| workspace_root.join(input)))
        .collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=CI");
    inputs
}

/// A language toolchain that is not installed: a failure under CI (`CI` set), so CI never
/// skips a plugin; elsewhere a loud warning, and cargo runs the build script again next time
/// to look for it.
fn missing_toolchain(project: &Path, message: &str) -> Option<PathBuf> {
    assert!(std::env::var_os("CI").is_none(), "{message}");
    println!("cargo:warning={message}");
    // A path that never exists.
    println!(
        "cargo:rerun-if-changed={}",
        project.join("dist/.toolchain-was-missing").display()
    );
    None
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `component` is missing or older than the newest of `inputs`.
fn stale(component: &Path, inputs: &[PathBuf]) -> bool {
    let built = modified(component);
    built.is_none() || built < inputs.iter().filter_map(|input| newest(input)).max()
}

/// When the file at `path`, or the newest file under it, was last modified (Python's
/// bytecode caches aside: running a module writes them, and they are not sources).
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    if path.file_name().is_some_and(|name| name == "__pycache__") {
        return None;
    }
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_dir() {
        return metadata.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|entry| newest(&entry.path()))
        .max()
}

fn run(project: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .current_dir(project)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("could not run {program} in {}: {e}", project.display()));
    assert!(
        status.success(),
        "`{program} {}` failed in {} (see its output above)",
        args.join(" "),
        project.display()
    );
}
