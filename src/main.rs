//! The `hotnic` binary: a thin dispatcher over the library.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// NIC hot-plug for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "hotnic", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the admission policy offline on manifests (exit 0 allowed, 1 denied, 2 bad input).
    Check(hotnic::check::CheckArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => hotnic::check::run(&args),
    };
    std::process::exit(code);
}
