//! The `quiver` binary: parse arguments, run, exit. Everything else is in the library.

fn main() -> std::process::ExitCode {
    quiver_cli::main()
}
