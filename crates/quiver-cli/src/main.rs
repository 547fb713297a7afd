//! The `quiver` binary: parse arguments, run, exit. Everything else is in the library.

/// mimalloc instead of the system allocator: `quiver serve` allocates small buffers per
/// request from several threads, where glibc's malloc spent a fifth of the server's CPU
/// (benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    quiver_cli::main()
}
