//! The `quiver` binary: parse arguments, run, exit. Everything else is in the library.

/// mimalloc instead of the system allocator: `quiver serve` allocates small buffers per
/// request from several threads, where glibc's malloc spent a fifth of the server's CPU
/// (benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The workspace denies unsafe code; this declaration and its one call are the exception.
#[allow(unsafe_code)]
unsafe extern "C" {
    /// mimalloc's `mi_option_set` (linked in with the allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// A batch command (`materialize`, `export`, …) runs once and exits: freed memory stays
/// with the process for its next allocation instead of going back to the kernel 10 ms
/// later, to come back as fresh pages the kernel must zero again — that zeroing was about
/// 40 % of an export's CPU (benches/README.md). `quiver serve` keeps the default, so a
/// long-running server gives memory back.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option before any other thread exists.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> std::process::ExitCode {
    quiver_cli::main(keep_freed_memory)
}
