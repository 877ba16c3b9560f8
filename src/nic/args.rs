//! The command line of `kubectl hotnic` (and `hotnic nic`): kubeconfig flags like kubectl's, and
//! the `add`, `remove`, `list` and `completion` subcommands.

use super::target::Target;
use crate::model::Mac;
use std::path::PathBuf;

/// `kubectl-hotnic`: the plugin binary's whole command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kubectl-hotnic",
    version,
    about = "Add, remove and list the NICs of pods (Multus, Arktos) and KubeVirt VMs/VMIs",
    long_about = "Add, remove and list the NICs of pods (Multus, Arktos VM pods) and KubeVirt \
                  VirtualMachines/VirtualMachineInstances, in each object's own dialect, with \
                  patches that are safe under concurrent edits. hotnic's admission webhook injects \
                  the MACs and judges every change.\n\nExit status: 0 ok, 1 denied or failed, 2 usage."
)]
pub struct PluginCli {
    /// The arguments.
    #[command(flatten)]
    pub args: NicArgs,
}

/// The arguments of `hotnic nic` / `kubectl hotnic`.
#[derive(Debug, Clone, clap::Args)]
pub struct NicArgs {
    /// Kubeconfig flags (like kubectl's).
    #[command(flatten)]
    pub kube: KubeFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: NicCommand,
}

/// Which cluster, user and namespace: the same flags and defaults as kubectl.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// The subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum NicCommand {
    /// Hot-plug a NIC: (pod|vm|vmi)/NAME --name IFACE --network [NS/]NET.
    Add(AddArgs),
    /// Hot-unplug a NIC: (pod|vm)/NAME --name IFACE (KubeVirt: sets state: absent).
    #[command(alias = "rm")]
    Remove(RemoveArgs),
    /// List the NICs: name, network, MAC, primary, hot-unpluggable, state; capacity.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Print a shell completion script for kubectl-hotnic.
    Completion(CompletionArgs),
}

/// `--dry-run`: like kubectl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRun {
    /// Send the change (the default).
    #[default]
    None,
    /// Send it with dryRun=All: admitted (hotnic's webhook included) but not stored.
    Server,
    /// Do not send it: print the patch and the resulting NIC.
    Client,
}

/// Output formats of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The table with more columns (binding, IPs, port ID, field path).
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Shells `completion` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
}

/// `add`.
#[derive(Debug, Clone, clap::Args)]
pub struct AddArgs {
    /// The object: pod/NAME, vm/NAME or vmi/NAME. Not with -f.
    #[arg(value_name = "TYPE/NAME", required_unless_present = "filename")]
    pub target: Option<Target>,
    /// The NIC's name: the interface name in a pod (e.g. eth3), the interface name in KubeVirt.
    #[arg(long, value_name = "IFACE")]
    pub name: String,
    /// The network: a NetworkAttachmentDefinition [NAMESPACE/]NAME (Multus, KubeVirt) or the
    /// subnet name (Arktos).
    #[arg(long, value_name = "[NS/]NET")]
    pub network: String,
    /// A MAC of your choosing (default: hotnic's webhook assigns one).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<Mac>,
    /// Static IPs (CIDRs, comma-separated): Multus `ips`, Arktos `ipAddress` (one).
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub ips: Vec<String>,
    /// Arktos VM pods: the port ID of the NIC (`portId`).
    #[arg(long, value_name = "ID")]
    pub port_id: Option<String>,
    /// `--dry-run` and `-f`.
    #[command(flatten)]
    pub edit: EditFlags,
}

/// `remove`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoveArgs {
    /// The object: pod/NAME or vm/NAME (vmi/NAME too). Not with -f.
    #[arg(value_name = "TYPE/NAME", required_unless_present = "filename")]
    pub target: Option<Target>,
    /// The NIC to unplug.
    #[arg(long, value_name = "IFACE")]
    pub name: String,
    /// `--dry-run` and `-f`.
    #[command(flatten)]
    pub edit: EditFlags,
}

/// The flags `add` and `remove` share: how the change is sent, and where the object is read.
#[derive(Debug, Clone, clap::Args)]
pub struct EditFlags {
    /// none (default), server (admitted, not stored) or client (print the patch, send nothing).
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Edit the object in this file instead of the cluster's (needs --dry-run=client).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        conflicts_with = "target"
    )]
    pub filename: Option<PathBuf>,
}

/// `list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// The object: pod/NAME, vm/NAME or vmi/NAME.
    #[arg(value_name = "TYPE/NAME", required_unless_present = "filename")]
    pub target: Option<Target>,
    /// List the NICs of the object in this YAML or JSON file (offline; no cluster needed).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        conflicts_with = "target"
    )]
    pub filename: Option<PathBuf>,
    /// Output format: wide, json or yaml (default: the table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// `completion`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}
