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
    /// Serve the admission webhook (TLS) and its admin endpoints.
    Webhook(hotnic::webhook::WebhookArgs),
    /// Generate a CA and a serving certificate signed by it; print the caBundle.
    Certs(hotnic::certs::CertsArgs),
    /// Run the admission policy offline on manifests (exit 0 allowed, 1 denied, 2 bad input).
    Check(hotnic::check::CheckArgs),
    /// Run the node agent: plug and unplug pod NICs with CNI plugins.
    Agent(hotnic::agent::AgentArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => hotnic::check::run(&args),
        Command::Certs(args) => report(hotnic::certs::run(&args)),
        Command::Agent(args) => {
            report(runtime().and_then(|rt| rt.block_on(hotnic::agent::run(args))))
        }
        Command::Webhook(args) => {
            report(runtime().and_then(|rt| rt.block_on(hotnic::webhook::run(args))))
        }
    };
    std::process::exit(code);
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hotnic: {e:#}");
            1
        }
    }
}
