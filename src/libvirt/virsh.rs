//! `virsh` as a child process: one call per operation, each with a timeout, never blocking the
//! async runtime.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The default connection URI (the system QEMU driver, where VM runtimes define their domains).
pub const DEFAULT_URI: &str = "qemu:///system";

/// Why a `virsh` call failed.
#[derive(Debug, thiserror::Error)]
pub enum VirshError {
    /// `virsh` could not be started.
    #[error("running {program}: {source} (is libvirt-clients installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// It did not answer in time (killed).
    #[error("virsh {command}: no answer within {timeout:?}")]
    Timeout {
        /// The subcommand.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// No such domain.
    #[error("libvirt has no domain {domain:?}")]
    NoDomain {
        /// The domain name.
        domain: String,
    },
    /// It failed; libvirt's message.
    #[error("virsh {command}: {message}")]
    Failed {
        /// The subcommand.
        command: String,
        /// What it printed on stderr, without the `error: ` prefixes.
        message: String,
    },
}

/// A libvirt connection, through `virsh -c URI`.
#[derive(Debug, Clone)]
pub struct Virsh {
    /// The connection URI.
    pub uri: String,
    /// The program (default `virsh`, from PATH).
    pub program: PathBuf,
    /// Limit for one call.
    pub timeout: Duration,
}

impl Default for Virsh {
    fn default() -> Self {
        Self::new(DEFAULT_URI)
    }
}

impl Virsh {
    /// A client of `uri`.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            program: "virsh".into(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Runs `virsh -c URI ARGS…` with `stdin` as its input; its stdout. `domain`: the domain the
    /// call is about, so that "no such domain" becomes [`VirshError::NoDomain`].
    pub async fn run(
        &self,
        args: &[&str],
        domain: Option<&str>,
        stdin: Option<&str>,
    ) -> Result<String, VirshError> {
        let command = args.first().copied().unwrap_or_default().to_string();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let run = async {
            let mut child = cmd.spawn()?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).await?;
            }
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| VirshError::Timeout {
                command: command.clone(),
                timeout: self.timeout,
            })?
            .map_err(|source| VirshError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("error: ").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        match domain {
            Some(d)
                if message.contains("failed to get domain")
                    || message.contains("Domain not found") =>
            {
                Err(VirshError::NoDomain {
                    domain: d.to_string(),
                })
            }
            _ => Err(VirshError::Failed { command, message }),
        }
    }

    /// The domain's state as `virsh domstate` says it (`running`, `shut off`, `paused`, …).
    pub async fn state(&self, domain: &str) -> Result<String, VirshError> {
        let out = self.run(&["domstate", domain], Some(domain), None).await?;
        Ok(out.trim().to_string())
    }

    /// The live domain XML.
    pub async fn live_xml(&self, domain: &str) -> Result<String, VirshError> {
        self.run(&["dumpxml", domain], Some(domain), None).await
    }

    /// Attaches a device to the running domain (`attach-device --live`).
    pub async fn attach_live(&self, domain: &str, device_xml: &str) -> Result<(), VirshError> {
        self.run(
            &["attach-device", domain, "/dev/stdin", "--live"],
            Some(domain),
            Some(device_xml),
        )
        .await
        .map(drop)
    }

    /// Asks the running domain to release a device (`detach-device --live`). Success means the
    /// request was made, not that the guest let the device go: see the live XML.
    pub async fn detach_live(&self, domain: &str, device_xml: &str) -> Result<(), VirshError> {
        self.run(
            &["detach-device", domain, "/dev/stdin", "--live"],
            Some(domain),
            Some(device_xml),
        )
        .await
        .map(drop)
    }
}
