//! Test support for Canopy: paths of the wasm components built for the tests (the template
//! plugin and the hostile components of `tests/components/`), plus shared sample data and the
//! `psql` the PostgreSQL tests and the benchmark make their databases with.
//! The integration suite itself is `host/tests/suite` (one test binary), where the real
//! `canopy` binary is reachable.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The seed document's example event (`seeds.earned.order`), the built-in sample.
pub const SAMPLE_EVENT: &str = include_str!("../../crates/events/samples/seeds.earned.order.json");

/// Reads a component built for the tests.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// psql: on the PATH, else the newest in Debian's `/usr/lib/postgresql/<major>/bin`.
pub fn psql() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("psql"))
            .find(|p| p.is_file())
    });
    let debian = || {
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|dir| dir.join("bin/psql").is_file())
            .max_by_key(|dir| major(dir))
            .map(|dir| dir.join("bin/psql"))
    };
    on_path.or_else(debian).unwrap_or_else(|| "psql".into())
}

/// The major version a directory such as `/usr/lib/postgresql/15` is named after.
fn major(dir: &std::path::Path) -> u32 {
    dir.file_name()
        .and_then(|name| name.to_str()?.split('.').next()?.parse().ok())
        .unwrap_or(0)
}
