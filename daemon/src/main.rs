//! The `pithead` binary: everything lives in the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    pithead::cli::run(pithead::cli::Cli::parse())
}
