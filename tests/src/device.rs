//! The device a whole-system test deploys to and runs on, in `flash`'s target layout
//! (`ROOT/current` is the active slot: `bin/lookupd` and `bundle/`): a directory of this machine
//! (`dir:PATH`; lookupd runs here) or a machine reached with the system's OpenSSH client
//! (`ssh://[user@]host[:port]/PATH`; lookupd runs there, `-o BatchMode=yes` and the options of
//! `FLASH_SSH_OPTIONS`, as `flash` does; files go with `scp`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::pipeline::run_command;

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Where the appliance is deployed and runs.
#[derive(Debug)]
pub enum Device {
    /// A directory of this machine (`dir:PATH`).
    Local(PathBuf),
    /// A machine reached with ssh.
    Ssh(SshDevice),
}

impl Device {
    /// The device of a `flash` target: `dir:PATH` or `ssh://[user@]host[:port]/PATH`;
    /// `ssh_options` (split at whitespace) go to every `ssh` and `scp` call.
    pub fn from_target(target: &str, ssh_options: &str) -> Result<Device> {
        if let Some(path) = target.strip_prefix("dir:") {
            return Ok(Device::Local(PathBuf::from(path)));
        }
        Ok(Device::Ssh(SshDevice::parse(target, ssh_options)?))
    }

    /// The path, on the device, of `rel` in the active slot (`ROOT/current/rel`).
    pub fn current(&self, rel: &str) -> String {
        match self {
            Device::Local(root) => root.join("current").join(rel).display().to_string(),
            Device::Ssh(ssh) => format!("{}/current/{rel}", ssh.root),
        }
    }

    /// A command that runs the active slot's `lookupd` with `args` on the device (logging
    /// warnings only); over ssh its stdin, stdout and exit status are the remote process's.
    pub fn lookupd(&self, args: &[String]) -> Command {
        let binary = self.current("bin/lookupd");
        match self {
            Device::Local(_) => {
                let mut command = Command::new(binary);
                command.args(args).env("LOOKUPD_LOG", "warn");
                command
            }
            Device::Ssh(ssh) => {
                let mut script = format!("exec env LOOKUPD_LOG=warn {}", sh_quote(&binary));
                for arg in args {
                    script.push(' ');
                    script.push_str(&sh_quote(arg));
                }
                ssh.command(&script)
            }
        }
    }

    /// The device's machine architecture, as `uname -m` names it (`aarch64`, `x86_64`).
    pub fn arch(&self) -> Result<String> {
        let arch = match self {
            Device::Local(_) => std::env::consts::ARCH.to_string(),
            Device::Ssh(ssh) => ssh.run("uname -m")?.trim().to_string(),
        };
        Ok(match arch.as_str() {
            "arm64" => "aarch64".into(),
            "amd64" => "x86_64".into(),
            _ => arch,
        })
    }

    /// Makes the local directory `dir` available on the device: over ssh, copied into a new
    /// temporary directory there (removed by [`Staged::remove`], or on drop); a local device
    /// reads it where it is.
    pub fn stage(&self, dir: &Path) -> Result<Staged> {
        match self {
            Device::Local(_) => Ok(Staged {
                path: dir.display().to_string(),
                remote: None,
            }),
            Device::Ssh(ssh) => {
                let temp = ssh.run("mktemp -d \"${TMPDIR:-/tmp}/lookup-hil.XXXXXX\"")?;
                let temp = temp.trim().to_string();
                if !temp.starts_with('/') {
                    bail!("mktemp on {} printed {temp:?}", ssh.url);
                }
                let staged = Staged {
                    path: format!("{temp}/{}", file_name(dir)?),
                    remote: Some((ssh.clone(), temp.clone())),
                };
                ssh.copy_dir(dir, &temp)?;
                Ok(staged)
            }
        }
    }

    /// Whether `path` exists on the device.
    pub fn exists(&self, path: &str) -> Result<bool> {
        match self {
            Device::Local(_) => Ok(Path::new(path).exists()),
            Device::Ssh(ssh) => {
                let out = ssh.run(&format!(
                    "if test -e {0}; then echo yes; else echo no; fi",
                    sh_quote(path)
                ))?;
                Ok(out.trim() == "yes")
            }
        }
    }
}

fn file_name(dir: &Path) -> Result<&str> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: no UTF-8 file name", dir.display()))
}

/// A directory made available on the device by [`Device::stage`].
#[derive(Debug)]
pub struct Staged {
    /// Where the device sees it.
    path: String,
    /// The ssh device and its temporary directory (which holds `path`) to remove.
    remote: Option<(SshDevice, String)>,
}

impl Staged {
    /// Where the device sees the directory.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Removes the temporary directory from the device (nothing for a local device).
    pub fn remove(mut self) -> Result<()> {
        match self.remote.take() {
            Some((ssh, temp)) => ssh
                .run(&format!("rm -rf -- {}", sh_quote(&temp)))
                .map(drop)
                .with_context(|| format!("removing {temp} from {}", ssh.url)),
            None => Ok(()),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some((ssh, temp)) = self.remote.take()
            && let Err(e) = ssh.run(&format!("rm -rf -- {}", sh_quote(&temp)))
        {
            eprintln!("could not remove {temp} from {}: {e:#}", ssh.url);
        }
    }
}

/// A device reached with `ssh` and `scp`.
#[derive(Clone, Debug)]
pub struct SshDevice {
    /// The target as given.
    pub url: String,
    /// `[user@]host`, for ssh, and for scp (an IPv6 host in brackets).
    destination: String,
    scp_destination: String,
    port: Option<u16>,
    /// The target root on the device, without a trailing slash.
    pub root: String,
    /// `-o BatchMode=yes` and the caller's options: arguments both `ssh` and `scp` take.
    options: Vec<String>,
}

impl SshDevice {
    /// Parses `ssh://[user@]host[:port]/PATH` (an IPv6 host in brackets).
    pub fn parse(url: &str, ssh_options: &str) -> Result<SshDevice> {
        let bad = |why: &str| {
            anyhow::anyhow!(
                "target {url:?}: {why} (expected dir:PATH or ssh://[user@]host[:port]/PATH)"
            )
        };
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("unknown scheme"))?;
        let slash = rest
            .find('/')
            .ok_or_else(|| bad("no /PATH after the host"))?;
        let (authority, root) = rest.split_at(slash);
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return Err(bad("the path is /"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, authority),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed '['"))?;
                (host, after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            },
        };
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
            .map(|p| p.ok_or_else(|| bad("the port is not a number from 1 to 65535")))
            .transpose()?;
        if host.is_empty()
            || host.starts_with('-')
            || user.is_some_and(|u| u.is_empty() || u.starts_with('-'))
        {
            return Err(bad("empty host or user, or one starting with '-'"));
        }
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        let destination = format!("{user}{host}");
        // scp reads `host:path`: an IPv6 host goes in brackets there.
        let scp_destination = if host.contains(':') {
            format!("{user}[{host}]")
        } else {
            destination.clone()
        };
        let mut options = vec!["-o".to_string(), "BatchMode=yes".to_string()];
        options.extend(ssh_options.split_whitespace().map(str::to_string));
        Ok(SshDevice {
            url: url.to_string(),
            destination,
            scp_destination,
            port,
            root: root.to_string(),
            options,
        })
    }

    /// `ssh` running `script` (a POSIX sh command line) on the device.
    pub fn command(&self, script: &str) -> Command {
        let mut command = Command::new("ssh");
        command.args(&self.options);
        if let Some(port) = self.port {
            command.args(["-p", &port.to_string()]);
        }
        command.arg("--").arg(&self.destination).arg(script);
        command
    }

    /// Runs `script` on the device; its stdout, or an error with its stderr.
    pub fn run(&self, script: &str) -> Result<String> {
        run_command(&mut self.command(script))
            .with_context(|| format!("ssh {}: {script}", self.url))
    }

    /// Copies the local directory `dir` into the existing directory `into` on the device.
    pub fn copy_dir(&self, dir: &Path, into: &str) -> Result<()> {
        let mut scp = Command::new("scp");
        scp.arg("-q").arg("-r").args(&self.options);
        if let Some(port) = self.port {
            scp.args(["-P", &port.to_string()]);
        }
        scp.arg("--")
            .arg(dir)
            .arg(format!("{}:{into}/", self.scp_destination))
            .stdout(Stdio::null());
        run_command(&mut scp)
            .map(drop)
            .with_context(|| format!("scp {} to {}:{into}", dir.display(), self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_args(device: &Device) -> Vec<String> {
        let Device::Ssh(ssh) = device else {
            panic!("not an ssh device: {device:?}")
        };
        ssh.command("true")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn targets_and_the_ssh_command_they_give() {
        let d = Device::from_target("ssh://root@10.0.0.2:2222/opt/lookup/", "-i k").unwrap();
        assert_eq!(
            ssh_args(&d),
            [
                "-o",
                "BatchMode=yes",
                "-i",
                "k",
                "-p",
                "2222",
                "--",
                "root@10.0.0.2",
                "true"
            ]
        );
        assert_eq!(d.current("bundle"), "/opt/lookup/current/bundle");
        let d = Device::from_target("ssh://jetson/srv/x", "").unwrap();
        assert_eq!(
            ssh_args(&d),
            ["-o", "BatchMode=yes", "--", "jetson", "true"]
        );
        let Device::Ssh(v6) = Device::from_target("ssh://u@[::1]:22/x", "").unwrap() else {
            unreachable!()
        };
        assert_eq!(
            (v6.destination.as_str(), v6.scp_destination.as_str()),
            ("u@::1", "u@[::1]")
        );
        let d = Device::from_target("dir:/mnt/card", "").unwrap();
        assert_eq!(d.current("bin/lookupd"), "/mnt/card/current/bin/lookupd");
        for bad in [
            "ssh://host",
            "ssh://host/",
            "ssh://host:0/x",
            "ssh://host:port/x",
            "ssh://@host/x",
            "ssh://-oProxyCommand=x/y",
            "ftp://host/x",
        ] {
            let e = Device::from_target(bad, "").unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn remote_lookupd_arguments_are_quoted() {
        let d = Device::from_target("ssh://dev/opt/it's", "").unwrap();
        let command = d.lookupd(&["run".into(), "--camera".into(), "file:///a b?step".into()]);
        let script = command
            .get_args()
            .last()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            script,
            r"exec env LOOKUPD_LOG=warn '/opt/it'\''s/current/bin/lookupd' 'run' '--camera' 'file:///a b?step'"
        );
    }
}
