//! The `canopy` binary: everything lives in the library (`canopy::cli`).

/// mimalloc instead of the system allocator: sled and the delivery path allocate and free many
/// short-lived buffers from several threads, where glibc's arenas contend (docs/PERFORMANCE.md
/// has the figures: +44% deliveries/s, ingest p99 from 29 to 7 ms).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    canopy::cli::main()
}

/// mimalloc asks the kernel for transparent huge pages, so each touched 4 KiB of its arena can
/// become 2 MiB resident (100 MB at start-up, measured). A queue server wants a small, steady
/// footprint more than fewer TLB misses; the process opts out.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
