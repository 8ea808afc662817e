//! The `portcullis` command: a thin shell over the library.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.global, &cli.command);
    match commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line, no backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
