//! The `quiver` command line: a thin layer over the [`quiver::FeatureStore`] facade.
//! It parses arguments (clap), runs one command, and prints either human-readable text
//! or, with `--json`, JSON for scripts. Errors go to stderr with exit code 1; usage errors
//! (unknown flags, missing arguments) exit with 2.

mod args;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Runs the command line with the process arguments. `batch` runs first when the
/// command is a batch job (anything but `serve`), which runs once and exits: the binary
/// tunes its allocator there.
pub fn main(batch: impl FnOnce()) -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, args::Command::Serve { .. }) {
        batch();
    }
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if render::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            render::error(&error, json);
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        args::LogFormat::Text => builder.init(),
        args::LogFormat::Json => builder.json().init(),
    }
}
