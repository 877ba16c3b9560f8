//! The libvirt tier: a real libvirtd with QEMU (TCG: `type='qemu'`, no KVM needed), started by
//! hand (no systemd) with its own pid files, and small q35 test domains.
//!
//! Needs root and Debian's libvirt-daemon-system, libvirt-clients and qemu-system-x86 (`.ci/run`
//! installs them from bookworm-backports). Without them the tests print `SKIPPED` with the reason;
//! with `HOTNIC_TEST_REQUIRE_LIBVIRT=1` (set by `.ci/run`) they fail instead. The guest tests also
//! need the tiny guest (`examples/vm/build-guest.sh`: a Debian kernel and a busybox initramfs),
//! looked for in `HOTNIC_TEST_VM_GUEST` or `target/vm-guest`.
//!
//! When a libvirtd already answers on `qemu:///system` it is used and left running. Otherwise one
//! is started for this test process; a watcher (`sh`) destroys the test domains (`hntest-…`) and
//! stops libvirtd and virtlogd as soon as the test process is gone, however it ended. All libvirt
//! tests live in one test binary so that two binaries never share a daemon.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set to `1` to make a missing libvirt a failure instead of a skip.
pub const REQUIRE_VAR: &str = "HOTNIC_TEST_REQUIRE_LIBVIRT";
/// The directory holding the test guest's `vmlinuz` and `initrd.gz`.
pub const GUEST_VAR: &str = "HOTNIC_TEST_VM_GUEST";
/// The URI the tests use.
pub const URI: &str = "qemu:///system";
/// Prefix of every test domain's name.
pub const DOMAIN_PREFIX: &str = "hntest-";

/// A usable libvirtd.
pub struct Libvirt {
    /// Where this process's daemon keeps its pid files and the test domains their serial logs.
    pub dir: PathBuf,
}

static SHARED: OnceLock<Result<Libvirt, String>> = OnceLock::new();

fn skip(test: &str, tier: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: {test} ({tier}): {reason}"
    );
}

fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// The shared libvirtd, or `None` after printing `SKIPPED: <test>: <reason>`.
pub fn libvirt_or_skip(test: &str) -> Option<&'static Libvirt> {
    match SHARED.get_or_init(start) {
        Ok(l) => Some(l),
        Err(reason) if required() => panic!("{REQUIRE_VAR}=1 but libvirt is unusable: {reason}"),
        Err(reason) => {
            skip(test, "libvirt tier", reason);
            None
        }
    }
}

/// The test guest's (kernel, initrd), or `None` after printing `SKIPPED`.
pub fn guest_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os(GUEST_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm-guest"));
    let (k, i) = (dir.join("vmlinuz"), dir.join("initrd.gz"));
    if k.is_file() && i.is_file() {
        return Some((k, i));
    }
    let reason = format!(
        "no test guest in {} (build it with examples/vm/build-guest.sh)",
        dir.display()
    );
    if required() {
        panic!("{REQUIRE_VAR}=1 but {reason}");
    }
    skip(test, "libvirt guest tier", &reason);
    None
}

fn answers() -> bool {
    Command::new("virsh")
        .args(["-q", "-c", URI, "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| d.join(bin).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(bin).is_file())
    })
}

fn start() -> Result<Libvirt, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("needs root (libvirtd, taps, network namespaces)".into());
    }
    for bin in ["virsh", "libvirtd", "virtlogd", "qemu-system-x86_64"] {
        if !which(bin) {
            return Err(format!(
                "{bin} not found (install libvirt-daemon-system libvirt-clients qemu-system-x86)"
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("hotnic-libvirt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if answers() {
        eprintln!("libvirt tier: using the libvirtd already running");
        return Ok(Libvirt { dir });
    }
    let daemon = |bin: &str| -> Result<(), String> {
        let pid = dir.join(format!("{bin}.pid"));
        let bin_path = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(bin))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(bin));
        let st = Command::new(bin_path)
            .arg("-d")
            .arg("-p")
            .arg(&pid)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("starting {bin}: {e}"))?;
        st.success()
            .then_some(())
            .ok_or_else(|| format!("{bin} -d exited with {st}"))
    };
    daemon("virtlogd")?;
    daemon("libvirtd")?;
    // The watcher: once this process is gone, destroy the test domains, then stop the daemons.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(
            r#"trap '' INT TERM HUP
while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
for d in $(virsh -q -c qemu:///system list --all --name | grep "^$2"); do virsh -q -c qemu:///system destroy "$d"; virsh -q -c qemu:///system undefine "$d"; done >/dev/null 2>&1
for p in libvirtd virtlogd; do kill "$(cat "$1/$p.pid")" 2>/dev/null; done
sleep 1; rm -rf "$1""#,
        )
        .arg(std::process::id().to_string())
        .arg(&dir)
        .arg(DOMAIN_PREFIX)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the teardown watcher: {e}"))?;
    let started = Instant::now();
    while !answers() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("libvirtd started but qemu:///system does not answer after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "libvirt tier: libvirtd started in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(Libvirt { dir })
}

/// Runs `virsh -c URI ARGS…`: (success, stdout, stderr).
pub fn virsh(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("virsh")
        .arg("-q")
        .args(["-c", URI])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running virsh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A transient test domain, destroyed on drop.
pub struct TestDomain {
    /// Its name.
    pub name: String,
    /// Its serial console log (the guest's output), when it boots one.
    pub console: PathBuf,
}

impl TestDomain {
    /// A diskless q35 TCG domain named `name` (must start with [`DOMAIN_PREFIX`]), without USB
    /// controller or memory balloon, with root ports from `hotnic domain-slots` logic for
    /// `capacity` and `boot_nics` NICs at boot (`ethernet`, libvirt-made taps). With `guest`
    /// (kernel, initrd) it boots the test guest, whose console goes to [`TestDomain::console`];
    /// without, it has no OS at all (nothing ever releases a hot-plugged device).
    pub fn start(
        lv: &Libvirt,
        name: &str,
        capacity: usize,
        boot_nics: &[&str],
        guest: Option<&(PathBuf, PathBuf)>,
    ) -> Self {
        assert!(name.starts_with(DOMAIN_PREFIX));
        let console = lv.dir.join(format!("{name}.console"));
        let _ = std::fs::remove_file(&console);
        let (memory, os) = match guest {
            Some((k, i)) => (
                128,
                format!(
                    "<kernel>{}</kernel><initrd>{}</initrd><cmdline>console=ttyS0 quiet panic=-1</cmdline>",
                    k.display(),
                    i.display()
                ),
            ),
            None => (64, String::new()),
        };
        let nics: String = boot_nics
            .iter()
            .map(|m| format!("<interface type='ethernet'><mac address='{m}'/><model type='virtio'/></interface>"))
            .collect();
        let xml = format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>{memory}</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>{os}\n  </os>\n  <features><acpi/><apic/></features>\n  <on_reboot>destroy</on_reboot>\n  <devices>\n    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n    {nics}\n    <serial type='file'><source path='{}'/></serial>\n  </devices>\n</domain>\n",
            console.display()
        );
        let (xml, _) = hotnic::libvirt::domain::add_slots(&xml, capacity).expect("domain-slots");
        let file = lv.dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        let (ok, _, err) = virsh(&["create", file.to_str().unwrap()]);
        assert!(ok, "virsh create {name}: {err}");
        Self {
            name: name.to_string(),
            console,
        }
    }

    /// The MACs in `virsh domiflist`, with their model: (mac, model).
    pub fn iflist(&self) -> Vec<(String, String)> {
        let (ok, out, err) = virsh(&["domiflist", &self.name]);
        assert!(ok, "domiflist: {err}");
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5).then(|| (f[4].to_string(), f[3].to_string()))
            })
            .collect()
    }

    /// The guest's console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The guest's last `hotnic-guest: nics:` line (name=MAC pairs), if it printed one.
    pub fn guest_nics(&self) -> Option<String> {
        self.console()
            .lines()
            .rfind(|l| l.starts_with("hotnic-guest: nics:"))
            .map(|l| {
                l.trim_start_matches("hotnic-guest: nics:")
                    .trim()
                    .to_string()
            })
    }

    /// Stops it now (its devices go with it).
    pub fn destroy(&self) {
        let _ = virsh(&["destroy", &self.name]);
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        self.destroy();
    }
}
