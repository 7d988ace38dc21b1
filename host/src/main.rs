//! The `canopy` binary: everything lives in the library (`canopy::cli`).

fn main() -> std::process::ExitCode {
    canopy::cli::main()
}
