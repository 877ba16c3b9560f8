//! The `hotnic` binary: a thin dispatcher over the library.
#![deny(unsafe_code)]

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
    /// Add, remove and list NICs of pods and KubeVirt VMs (what `kubectl hotnic` does).
    Nic(hotnic::nic::NicArgs),
    /// Add the PCIe root ports a q35 libvirt domain needs for its interface capacity
    /// (`< domain.xml > domain.xml`).
    DomainSlots(hotnic::libvirt::DomainSlotsArgs),
}

/// mimalloc: a review allocates many small, short-lived blocks, and mimalloc takes about a
/// fifth fewer instructions per review than glibc's malloc (README, "callgrind instruction
/// counts"). The only unsafe code of the binary.
mod global_alloc;

#[global_allocator]
static ALLOCATOR: global_alloc::Mimalloc = global_alloc::Mimalloc;

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => hotnic::check::run(&args),
        Command::Nic(args) => hotnic::nic::run(args),
        Command::Certs(args) => report(hotnic::certs::run(&args)),
        Command::DomainSlots(args) => hotnic::libvirt::domain_slots(
            &args,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Agent(args) => {
            report(runtime().and_then(|rt| Ok(rt.block_on(hotnic::agent::run(args))?)))
        }
        Command::Webhook(args) => {
            report(runtime().and_then(|rt| Ok(rt.block_on(hotnic::webhook::run(args))?)))
        }
    };
    hotnic::cli::flush_logs();
    std::process::exit(code);
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The edge: the library's typed errors become an `anyhow::Error`, printed with every cause.
fn report<E: Into<anyhow::Error>>(r: Result<(), E>) -> i32 {
    match r.map_err(Into::into) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hotnic: {e:#}");
            1
        }
    }
}
