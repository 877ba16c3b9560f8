//! `kubectl hotnic` (the `kubectl-hotnic` binary) and `hotnic nic`: add, remove and list the NICs
//! of a pod (Multus, Arktos VM pod), a KubeVirt VirtualMachine or VirtualMachineInstance without
//! hand-editing JSON in annotations or two parallel lists.
//!
//! - [`args`] — the command line (kubectl's `--kubeconfig`, `--context`, `-n`);
//! - [`target`] — `TYPE/NAME`;
//! - [`edit`] — the patches, in each dialect's own form, guarded by JSON Patch `test`s, and judged
//!   by hotnic's policy before they are sent;
//! - [`list`] — the NICs as rows, read through [`crate::dialect`], with the agent's status;
//! - [`client`] — kubeconfig, reads, patches with retry on a concurrent edit;
//! - [`render`] — tables and API-server errors (causes one per line).
//!
//! Exit status: 0 ok, 1 denied or failed, 2 usage.

pub mod args;
pub mod client;
pub mod edit;
pub mod list;
pub mod render;
pub mod target;

pub use args::{NicArgs, PluginCli};

use args::{AddArgs, DryRun, EditFlags, ListArgs, NicCommand, Output, RemoveArgs, Shell};
use client::{Applied, NicError, Session};
use edit::{NicSpec, Plan};
use serde_json::Value;
use std::io::Write;
use target::Target;

/// Runs a parsed command line; returns the exit status.
pub fn run(args: NicArgs) -> i32 {
    match execute(&args) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The plugin binary's `main`: parses `kubectl-hotnic`'s command line (usage errors exit 2) and
/// runs it.
pub fn plugin_main() -> i32 {
    use clap::Parser;
    run(PluginCli::parse().args)
}

/// Runs a command and returns what it prints on success.
pub fn execute(args: &NicArgs) -> Result<String, NicError> {
    match &args.command {
        NicCommand::Completion(c) => Ok(completion(c.shell)),
        NicCommand::List(l) if l.filename.is_some() => list_file(args, l),
        NicCommand::Add(a) if a.edit.filename.is_some() => {
            let spec = spec_of(a);
            offline(args, &a.edit, |kind, obj, ns| {
                edit::plan_add(kind, obj, ns, &spec)
            })
            .map(|(t, plan)| added(&t, &spec.name, a.edit.dry_run, &plan, &plan.edited))
        }
        NicCommand::Remove(r) if r.edit.filename.is_some() => {
            offline(args, &r.edit, |kind, obj, ns| {
                edit::plan_remove(kind, obj, ns, &r.name)
            })
            .map(|(t, plan)| removed(&t, &r.name, r.edit.dry_run, &plan, &plan.edited))
        }
        _ => runtime()?.block_on(online(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, NicError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NicError::Other(format!("starting the runtime: {e}")))
}

async fn online(args: &NicArgs) -> Result<String, NicError> {
    let session = Session::connect(&args.kube).await?;
    match &args.command {
        NicCommand::Add(a) => add(&session, a, None).await,
        NicCommand::Remove(r) => remove(&session, r, None).await,
        NicCommand::List(l) => {
            let t = target_of(l.target.as_ref())?;
            let obj = session.get(t).await?;
            let l2 = list::listing(t.kind, &obj, &session.namespace)?;
            render_listing(&l2, l.output)
        }
        NicCommand::Completion(c) => Ok(completion(c.shell)),
    }
}

fn target_of(t: Option<&Target>) -> Result<&Target, NicError> {
    t.ok_or_else(|| NicError::Usage("give the object as TYPE/NAME, or -f FILE".into()))
}

fn spec_of(a: &AddArgs) -> NicSpec {
    NicSpec {
        name: a.name.clone(),
        network: a.network.clone(),
        mac: a.mac,
        ips: a.ips.clone(),
        port_id: a.port_id.clone(),
    }
}

/// `add` against the cluster (`before_patch`: a test hook run before each patch is sent).
pub async fn add(
    session: &Session,
    a: &AddArgs,
    before_patch: Option<&client::BeforePatch>,
) -> Result<String, NicError> {
    let t = target_of(a.target.as_ref())?;
    let spec = spec_of(a);
    let ns = session.namespace.clone();
    let build = |obj: &Value| edit::plan_add(t.kind, obj, &ns, &spec);
    let applied = client::apply(session, t, a.edit.dry_run, &build, before_patch).await?;
    Ok(added(
        t,
        &spec.name,
        a.edit.dry_run,
        &applied.plan,
        &applied.object,
    ))
}

/// `remove` against the cluster (`before_patch`: a test hook run before each patch is sent).
pub async fn remove(
    session: &Session,
    r: &RemoveArgs,
    before_patch: Option<&client::BeforePatch>,
) -> Result<String, NicError> {
    let t = target_of(r.target.as_ref())?;
    let ns = session.namespace.clone();
    let build = |obj: &Value| edit::plan_remove(t.kind, obj, &ns, &r.name);
    let Applied { plan, object, .. } =
        client::apply(session, t, r.edit.dry_run, &build, before_patch).await?;
    Ok(removed(t, &r.name, r.edit.dry_run, &plan, &object))
}

/// `add`/`remove -f FILE --dry-run=client`: the patch against the object in a file.
fn offline(
    args: &NicArgs,
    flags: &EditFlags,
    plan: impl Fn(crate::dialect::Kind, &Value, &str) -> Result<Plan, edit::EditError>,
) -> Result<(Target, Plan), NicError> {
    if flags.dry_run != DryRun::Client {
        return Err(NicError::Usage(
            "-f edits a file's object offline: give --dry-run=client (to change the cluster's object, name it as TYPE/NAME)".into(),
        ));
    }
    let (kind, obj) = read_file(flags.filename.as_deref().expect("checked by the caller"))?;
    let ns = args.kube.namespace.as_deref().unwrap_or("default");
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let p = plan(kind, &obj, ns)?;
    Ok((Target { kind, name }, p))
}

fn read_file(path: &std::path::Path) -> Result<(crate::dialect::Kind, Value), NicError> {
    let obj = crate::check::read_manifest(path).map_err(|e| NicError::Other(e.to_string()))?;
    let kind = edit::kind_of_object(&obj).ok_or_else(|| {
        NicError::Other(format!(
            "{}: a {} {}: hotnic lists Pods and kubevirt.io/v1 VirtualMachines and VirtualMachineInstances",
            path.display(),
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or("")
        ))
    })?;
    Ok((kind, obj))
}

fn list_file(args: &NicArgs, l: &ListArgs) -> Result<String, NicError> {
    let (kind, obj) = read_file(l.filename.as_deref().expect("matched on it"))?;
    let ns = args.kube.namespace.as_deref().unwrap_or("default");
    let listing = list::listing(kind, &obj, ns)?;
    render_listing(&listing, l.output)
}

fn render_listing(l: &list::Listing, output: Option<Output>) -> Result<String, NicError> {
    Ok(match output {
        None => list::render_table(l, false),
        Some(Output::Wide) => list::render_table(l, true),
        Some(Output::Json) => {
            let mut s =
                serde_json::to_string_pretty(l).map_err(|e| NicError::Other(e.to_string()))?;
            s.push('\n');
            s
        }
        Some(Output::Yaml) => {
            serde_yaml::to_string(l).map_err(|e| NicError::Other(e.to_string()))?
        }
    })
}

/// The listed row of NIC `name` in `obj`, if it is there.
fn nic_row(t: &Target, obj: &Value, name: &str) -> Option<list::NicRow> {
    // Objects read from the cluster name their namespace; a file's object without one shows its
    // networks relative to "default" (only the display of `ns/net` depends on it).
    let l = list::listing(t.kind, obj, "default").ok()?;
    l.nics.into_iter().find(|r| r.name.as_deref() == Some(name))
}

/// The row of NIC `name` in `obj` as a one-row table (nothing when it is not there).
fn nic_table(t: &Target, obj: &Value, name: &str) -> String {
    nic_row(t, obj, name).map_or(String::new(), |r| {
        format!("{}\n", list::rows_table(&[&r], false))
    })
}

fn patch_text(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(&plan.patch).unwrap_or_default();
    s.push('\n');
    s
}

fn added(t: &Target, name: &str, dry_run: DryRun, plan: &Plan, obj: &Value) -> String {
    let nic = nic_table(t, obj, name);
    match dry_run {
        DryRun::None => format!("{t}: added {name}\n{nic}"),
        DryRun::Server => {
            format!("{t}: {name} would be added (server dry run: admitted, not stored)\n{nic}")
        }
        DryRun::Client => {
            let mac = nic_row(t, obj, name).and_then(|r| r.mac);
            let mac_note = match mac {
                Some(_) => "",
                None => "; hotnic's webhook assigns the MAC on admission",
            };
            format!(
                "{}{t}: {name} would be added (client dry run: nothing sent{mac_note})\n{nic}",
                patch_text(plan)
            )
        }
    }
}

fn removed(t: &Target, name: &str, dry_run: DryRun, plan: &Plan, obj: &Value) -> String {
    if let Some(note) = &plan.note {
        return format!("{t}: {note}\n{}", nic_table(t, obj, name));
    }
    let how = if plan.dialect.is_kubevirt() {
        "set to state: absent (KubeVirt unplugs it)"
    } else {
        "removed"
    };
    let nic = nic_table(t, obj, name);
    match dry_run {
        DryRun::None => format!("{t}: {name} {how}\n{nic}"),
        DryRun::Server => {
            format!("{t}: {name} would be {how} (server dry run: admitted, not stored)\n{nic}")
        }
        DryRun::Client => format!(
            "{}{t}: {name} would be {how} (client dry run: nothing sent)\n{nic}",
            patch_text(plan)
        ),
    }
}

/// A completion script for `kubectl-hotnic`.
pub fn completion(shell: Shell) -> String {
    use clap::CommandFactory;
    let mut cmd = PluginCli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kubectl-hotnic", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
