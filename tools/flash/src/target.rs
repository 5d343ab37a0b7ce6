//! Targets and how files reach them: `dir:PATH` (a mounted root filesystem or a test directory,
//! through std::fs) and `ssh://[user@]host[:port]/PATH` (through the system's OpenSSH client,
//! one `ssh` per operation, POSIX sh and coreutils on the far side).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::archive::Hashing;
use crate::elf::normalize_arch;
use crate::error::{FlashError, Result};

/// Environment variable with extra arguments for every `ssh` call, split at whitespace
/// (`-i KEY -o StrictHostKeyChecking=no ...`).
pub const SSH_OPTIONS_ENV: &str = "FLASH_SSH_OPTIONS";

/// The file a deploy or rollback holds locked (flock) on the target, so that two never run at
/// once; the lock goes with the process that holds it, however that ends. While held, it names
/// the holder.
pub const LOCK_FILE: &str = "flash.lock";

/// Where a deploy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Dir(PathBuf),
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// Absolute path on the remote machine.
        path: String,
    },
}

impl TargetSpec {
    /// Parses `dir:PATH` or `ssh://[user@]host[:port]/PATH`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |message: &str| FlashError::TargetSpec {
            spec: spec.to_owned(),
            message: message.to_owned(),
        };
        if let Some(path) = spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad("empty path"));
            }
            return Ok(TargetSpec::Dir(PathBuf::from(path)));
        }
        let Some(rest) = spec.strip_prefix("ssh://") else {
            return Err(bad("unknown scheme"));
        };
        let Some(slash) = rest.find('/') else {
            return Err(bad("no /PATH after the host"));
        };
        let (authority, path) = rest.split_at(slash);
        if path.len() < 2 {
            return Err(bad("empty path"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => {
                if u.is_empty() {
                    return Err(bad("empty user name"));
                }
                (Some(u.to_owned()), h)
            }
            None => (None, authority),
        };
        let (host, port_text) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (h, None),
                _ => (
                    h,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'"))?,
                    ),
                ),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port_text {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("port is not a number from 1 to 65535"))?,
            ),
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        // The host and user go to ssh as arguments: keep them from reading as options.
        if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err(bad("host or user starts with '-'"));
        }
        Ok(TargetSpec::Ssh {
            user,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The transport for this target; `ssh_args` are extra arguments for every `ssh` call.
    pub fn connect(&self, ssh_args: &[String]) -> Box<dyn Transport> {
        match self {
            TargetSpec::Dir(root) => Box::new(DirTarget { root: root.clone() }),
            TargetSpec::Ssh {
                user,
                host,
                port,
                path,
            } => {
                let mut args = vec!["-o".to_owned(), "BatchMode=yes".to_owned()];
                if let Ok(extra) = std::env::var(SSH_OPTIONS_ENV) {
                    args.extend(extra.split_whitespace().map(str::to_owned));
                }
                args.extend(ssh_args.iter().cloned());
                // One connection for the dozen commands of a deploy (each new one costs a key
                // exchange); it lingers 10 s after the last. ssh takes the first value of each
                // option, so a user's own ControlMaster settings above win.
                let control = std::env::temp_dir().join("flash-ssh-%C");
                args.extend([
                    "-o".to_owned(),
                    "ControlMaster=auto".to_owned(),
                    "-o".to_owned(),
                    format!("ControlPath={}", control.display()),
                    "-o".to_owned(),
                    "ControlPersist=10".to_owned(),
                ]);
                if let Some(port) = port {
                    args.extend(["-p".to_owned(), port.to_string()]);
                }
                let destination = match user {
                    Some(u) => format!("{u}@{host}"),
                    None => host.clone(),
                };
                Box::new(SshTarget {
                    spec: self.to_string(),
                    args,
                    destination,
                    root: path.trim_end_matches('/').to_owned(),
                })
            }
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Dir(p) => write!(f, "dir:{}", p.display()),
            TargetSpec::Ssh {
                user,
                host,
                port,
                path,
            } => {
                write!(f, "ssh://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    write!(f, "{host}")?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                write!(f, "{path}")
            }
        }
    }
}

/// What running `lookupd selftest` on the target gave.
#[derive(Debug, Clone, Serialize)]
pub struct SelftestRun {
    pub passed: bool,
    /// Exit code, or `None` when killed by a signal or not started.
    pub exit_code: Option<i32>,
    /// The tail of its output (stdout then stderr).
    pub output: String,
}

/// The target's lock, held until dropped (see [`LOCK_FILE`]).
#[derive(Debug)]
pub struct TargetLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// The locked file (a dir target).
    File(File),
    /// The ssh session whose remote shell holds the lock while its stdin stays open.
    Session(Child),
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        match &mut self.held {
            // Emptied: a free lock names no holder. (Closing the file would release it too.)
            Held::File(file) => {
                let _ = file.set_len(0);
                let _ = file.unlock();
            }
            Held::Session(child) => {
                // The end of its input ends the remote shell, which releases the lock.
                drop(child.stdin.take());
                finish_or_kill(child, Duration::from_secs(5));
            }
        }
    }
}

/// Waits up to `grace` for `child` to exit, then kills it.
fn finish_or_kill(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// Who holds a lock: written into [`LOCK_FILE`], shown to the next one that finds it held.
pub fn holder_description(action: &str) -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_default();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "flash {action}, pid {} of {user}@{}, since unix time {since}",
        std::process::id(),
        host.trim()
    )
}

/// The operations a deploy needs on a target; paths are relative to the target's root.
pub trait Transport: fmt::Debug {
    /// The target as the user named it.
    fn name(&self) -> String;
    /// The machine architecture, as `uname -m` names it.
    fn arch(&self) -> Result<String>;
    /// The contents of a small file, `None` when it does not exist.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>>;
    /// sha256 (hex) of each file, `None` for one that does not exist.
    fn hashes(&self, rels: &[String]) -> Result<Vec<Option<String>>>;
    /// Copies local `src` to `rel` so that a crash leaves the old file or the new one: a
    /// temporary beside it, synced, renamed over, directory synced. `halfway` is called once
    /// half the bytes are sent (the fault-injection point).
    fn put(
        &self,
        rel: &str,
        src: &Path,
        executable: bool,
        bar: &ProgressBar,
        halfway: &mut dyn FnMut(),
    ) -> Result<()>;
    /// Writes `bytes` to `rel` the same way as [`Transport::put`].
    fn put_bytes(&self, rel: &str, bytes: &[u8]) -> Result<()>;
    /// Removes a file; one that does not exist is not an error.
    fn remove(&self, rel: &str) -> Result<()>;
    /// The files and symlinks under directory `rel` (at any depth, relative to it); none when
    /// it does not exist.
    fn list_files(&self, rel: &str) -> Result<Vec<String>>;
    /// The text of symlink `rel`, `None` when it does not exist.
    fn read_link(&self, rel: &str) -> Result<Option<String>>;
    /// Points symlink `rel` at `dest` atomically: a new symlink `rel.tmp`, renamed over `rel`,
    /// directory synced. `between` is called between the two (the fault-injection point).
    fn switch_link(&self, rel: &str, dest: &str, between: &mut dyn FnMut()) -> Result<()>;
    /// Runs `<slot>/bin/lookupd selftest --bundle <slot>/bundle --json` on the target; one
    /// still running after `timeout` is killed and fails.
    fn selftest(&self, slot: &str, timeout: Duration) -> Result<SelftestRun>;
    /// Locks the target for a deploy or rollback (see [`LOCK_FILE`]), waiting up to `wait` for
    /// another holder; `holder` says who takes it.
    fn lock(&self, holder: &str, wait: Duration) -> Result<TargetLock>;
    /// The holder the lock file names while another process holds the lock; `None` when it is
    /// free. Takes nothing (a shared lock for an instant, to probe).
    fn held_by(&self) -> Result<Option<String>>;
}

/// What a self-test killed after `timeout` says, after the output it gave.
fn timed_out(output: &str, timeout: Duration) -> String {
    format!(
        "{output}\nthe self-test did not finish within {} s and was killed",
        timeout.as_secs_f64()
    )
}

/// The bytes of `reader` until its end, keeping only the last `max` of them (a self-test that
/// floods its output must not fill this machine's memory).
fn read_tail(mut reader: impl Read, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * max {
                    kept.drain(..kept.len() - max);
                }
            }
        }
    }
}

/// Keeps the last `max` bytes of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// A target directory on this machine.
#[derive(Debug)]
pub struct DirTarget {
    pub root: PathBuf,
}

impl DirTarget {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn require_root(&self) -> Result<()> {
        if self.root.is_dir() {
            return Ok(());
        }
        Err(FlashError::Target {
            target: self.name(),
            message: "not a directory (create it, or mount the device's filesystem there)".into(),
        })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FlashError::io(dir, e))
}

impl Transport for DirTarget {
    fn name(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    /// The `arch` file at the root when there is one (a mounted device filesystem says what
    /// it is for), else this machine's architecture.
    fn arch(&self) -> Result<String> {
        self.require_root()?;
        match self.read("arch")? {
            Some(bytes) => Ok(normalize_arch(&String::from_utf8_lossy(&bytes))),
            None => Ok(normalize_arch(std::env::consts::ARCH)),
        }
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(rel);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FlashError::io(path, e)),
        }
    }

    fn hashes(&self, rels: &[String]) -> Result<Vec<Option<String>>> {
        rels.iter()
            .map(|rel| {
                let path = self.path(rel);
                match File::open(&path) {
                    Ok(f) => {
                        let mut h = Hashing::new(BufReader::new(f));
                        io::copy(&mut h, &mut io::sink()).map_err(|e| FlashError::io(&path, e))?;
                        Ok(Some(h.hex()))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(FlashError::io(path, e)),
                }
            })
            .collect()
    }

    fn put(
        &self,
        rel: &str,
        src: &Path,
        executable: bool,
        bar: &ProgressBar,
        halfway: &mut dyn FnMut(),
    ) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dest = self.path(rel);
        let parent = dest.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&parent).map_err(|e| FlashError::io(&parent, e))?;
        let tmp = crate::archive::tmp_path(&dest);
        let mut input = File::open(src).map_err(|e| FlashError::io(src, e))?;
        let len = input.metadata().map_err(|e| FlashError::io(src, e))?.len();
        let mut out = File::create(&tmp).map_err(|e| FlashError::io(&tmp, e))?;
        copy_file(&mut input, src, len, &mut out, bar, halfway, |e| {
            FlashError::io(&tmp, e)
        })?;
        let mode = if executable { 0o755 } else { 0o644 };
        out.set_permissions(fs::Permissions::from_mode(mode))
            .and_then(|()| out.sync_all())
            .map_err(|e| FlashError::io(&tmp, e))?;
        drop(out);
        fs::rename(&tmp, &dest).map_err(|e| FlashError::io(&dest, e))?;
        sync_dir(&parent)
    }

    fn put_bytes(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.path(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| FlashError::io(parent, e))?;
        }
        bundle::write_atomic(&dest, bytes).map_err(|error| FlashError::Bundle {
            path: dest.clone(),
            error,
        })
    }

    fn remove(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FlashError::io(path, e)),
        }
    }

    fn list_files(&self, rel: &str) -> Result<Vec<String>> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(FlashError::io(dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| FlashError::io(dir, e))?;
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                let kind = entry
                    .file_type()
                    .map_err(|e| FlashError::io(entry.path(), e))?;
                if kind.is_dir() {
                    walk(&entry.path(), &format!("{name}/"), out)?;
                } else {
                    out.push(name);
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        walk(&self.path(rel), "", &mut files)?;
        files.sort();
        Ok(files)
    }

    fn read_link(&self, rel: &str) -> Result<Option<String>> {
        let path = self.path(rel);
        match fs::read_link(&path) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FlashError::io(path, e)),
        }
    }

    fn switch_link(&self, rel: &str, dest: &str, between: &mut dyn FnMut()) -> Result<()> {
        let link = self.path(rel);
        let tmp = crate::archive::tmp_path(&link);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FlashError::io(&tmp, e)),
        }
        std::os::unix::fs::symlink(dest, &tmp).map_err(|e| FlashError::io(&tmp, e))?;
        between();
        fs::rename(&tmp, &link).map_err(|e| FlashError::io(&link, e))?;
        sync_dir(&self.root)
    }

    /// Runs the slot's binary on this machine: a dir target of another architecture needs
    /// binfmt (QEMU) here for its self-test to pass. It runs in a process group of its own,
    /// killed whole at the timeout.
    fn selftest(&self, slot: &str, timeout: Duration) -> Result<SelftestRun> {
        use std::os::unix::process::CommandExt;
        let dir = self.path(slot);
        let binary = dir.join(crate::archive::LOOKUPD_MEMBER);
        let spawned = Command::new(&binary)
            .arg("selftest")
            .arg("--bundle")
            .arg(dir.join(crate::archive::BUNDLE_DIR))
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Ok(SelftestRun {
                    passed: false,
                    exit_code: None,
                    output: format!("cannot run {}: {e}", binary.display()),
                });
            }
        };
        let readers = [
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        ]
        .map(|r| r.map(|r| std::thread::spawn(move || read_tail(r, 4000))));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    // The whole group: a child it started must not keep running, nor hold
                    // the output pipes open.
                    // SAFETY: killpg takes plain integers; the group is the child's own
                    // (process_group(0)), which is not reaped yet, so its id is not reused.
                    unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let output: Vec<u8> = readers
            .into_iter()
            .flatten()
            .flat_map(|r| r.join().unwrap_or_default())
            .collect();
        let output = tail(&String::from_utf8_lossy(&output), 4000);
        Ok(match status {
            Some(status) => SelftestRun {
                passed: status.success(),
                exit_code: status.code(),
                output,
            },
            None => SelftestRun {
                passed: false,
                exit_code: None,
                output: timed_out(&output, timeout),
            },
        })
    }

    fn lock(&self, holder: &str, wait: Duration) -> Result<TargetLock> {
        self.require_root()?;
        let path = self.path(LOCK_FILE);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| FlashError::io(&path, e))?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let mut held_by = String::new();
                    let _ = file.read_to_string(&mut held_by);
                    return Err(FlashError::Locked {
                        target: self.name(),
                        holder: held_by.trim().to_owned(),
                        waited: wait.as_secs_f64(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(FlashError::io(&path, e)),
            }
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{holder}\n").as_bytes()))
            .map_err(|e| FlashError::io(&path, e))?;
        Ok(TargetLock {
            held: Held::File(file),
        })
    }

    fn held_by(&self) -> Result<Option<String>> {
        let path = self.path(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FlashError::io(path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(None)
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Ok(Some(holder.trim().to_owned()))
            }
            Err(fs::TryLockError::Error(e)) => Err(FlashError::io(path, e)),
        }
    }
}

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A target reached through `ssh`.
#[derive(Debug)]
pub struct SshTarget {
    spec: String,
    args: Vec<String>,
    destination: String,
    /// Absolute remote path of the target root, without a trailing slash.
    root: String,
}

impl SshTarget {
    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root)
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(&self.args)
            .arg("--")
            .arg(&self.destination)
            .arg(script);
        cmd
    }

    /// The error of an `ssh` that would not start.
    fn no_ssh(&self, what: &str, e: io::Error) -> FlashError {
        self.fail(what, format!("cannot run ssh: {e} (is OpenSSH installed?)"))
    }

    fn fail(&self, what: &str, message: impl fmt::Display) -> FlashError {
        FlashError::Target {
            target: self.spec.clone(),
            message: format!("{what}: {message}"),
        }
    }

    /// Runs `script` remotely with `input` on its stdin; its stdout, or an error with its
    /// stderr. Exit code 255 is ssh's own failure (connection, authentication).
    fn run(&self, what: &str, script: &str, input: Option<&[u8]>) -> Result<Vec<u8>> {
        tracing::trace!(target_ = %self.spec, %script, "ssh");
        let mut child = self
            .command(script)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.no_ssh(what, e))?;
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("piped");
            stdin
                .write_all(bytes)
                .map_err(|e| self.fail(what, format!("sending data: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| self.fail(what, e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(self.fail(
            what,
            match out.status.code() {
                Some(255) => format!("ssh failed: {}", stderr.trim()),
                Some(c) => format!("remote command exited with {c}: {}", stderr.trim()),
                None => "ssh was killed".to_owned(),
            },
        ))
    }

    /// The script that receives `size` bytes on stdin into `dest` atomically: a short
    /// transfer (the sender died) never reaches the rename.
    fn receive_script(&self, dest: &str, size: u64, mode: &str) -> String {
        let d = sh_quote(dest);
        let t = sh_quote(&format!("{dest}.tmp"));
        format!(
            "set -e; mkdir -p \"$(dirname {d})\"; cat > {t}; \
             n=$(wc -c < {t}); if [ \"$n\" -ne {size} ]; then rm -f {t}; \
             echo \"short transfer: $n of {size} bytes\" >&2; exit 3; fi; \
             chmod {mode} {t}; sync {t}; mv -f {t} {d}; sync \"$(dirname {d})\""
        )
    }
}

impl Transport for SshTarget {
    fn name(&self) -> String {
        self.spec.clone()
    }

    fn arch(&self) -> Result<String> {
        let out = self.run("uname -m", "uname -m", None)?;
        Ok(normalize_arch(&String::from_utf8_lossy(&out)))
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let p = sh_quote(&self.path(rel));
        // A marker line tells "missing" from "empty".
        let out = self.run(
            &format!("reading {rel}"),
            &format!("if [ -e {p} ]; then echo present; cat {p}; else echo missing; fi"),
            None,
        )?;
        if let Some(rest) = out.strip_prefix(b"present\n") {
            Ok(Some(rest.to_vec()))
        } else if out.starts_with(b"missing") {
            Ok(None)
        } else {
            Err(self.fail(&format!("reading {rel}"), "unexpected reply"))
        }
    }

    fn hashes(&self, rels: &[String]) -> Result<Vec<Option<String>>> {
        if rels.is_empty() {
            return Ok(Vec::new());
        }
        // One line per file, in order: its hash, or "-" when missing.
        let mut script = String::from("set -e; ");
        for rel in rels {
            let p = sh_quote(&self.path(rel));
            script.push_str(&format!(
                "if [ -f {p} ]; then sha256sum < {p} | cut -d' ' -f1; else echo -; fi; "
            ));
        }
        let out = self.run("hashing files", &script, None)?;
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() != rels.len() {
            return Err(self.fail(
                "hashing files",
                format!("{} lines for {} files", lines.len(), rels.len()),
            ));
        }
        Ok(lines
            .into_iter()
            .map(|l| (l != "-").then(|| l.trim().to_owned()))
            .collect())
    }

    fn put(
        &self,
        rel: &str,
        src: &Path,
        executable: bool,
        bar: &ProgressBar,
        halfway: &mut dyn FnMut(),
    ) -> Result<()> {
        let what = format!("writing {rel}");
        let mut input = File::open(src).map_err(|e| FlashError::io(src, e))?;
        let len = input.metadata().map_err(|e| FlashError::io(src, e))?.len();
        let mode = if executable { "755" } else { "644" };
        let mut child = self
            .command(&self.receive_script(&self.path(rel), len, mode))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.no_ssh(&what, e))?;
        let mut stdin = child.stdin.take().expect("piped");
        let send = copy_file(&mut input, src, len, &mut stdin, bar, halfway, |e| {
            self.fail(&what, format!("sending data: {e}"))
        });
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| self.fail(&what, e))?;
        if !out.status.success() {
            return Err(self.fail(
                &what,
                format!(
                    "exit {:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        send
    }

    fn put_bytes(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.run(
            &format!("writing {rel}"),
            &self.receive_script(&self.path(rel), bytes.len() as u64, "644"),
            Some(bytes),
        )
        .map(drop)
    }

    fn remove(&self, rel: &str) -> Result<()> {
        let p = self.path(rel);
        self.run(
            &format!("removing {rel}"),
            &format!(
                "if [ -e {q} ] || [ -L {q} ]; then rm -f {q}; sync \"$(dirname {q})\"; fi",
                q = sh_quote(&p)
            ),
            None,
        )
        .map(drop)
    }

    fn list_files(&self, rel: &str) -> Result<Vec<String>> {
        let out = self.run(
            &format!("listing {rel}"),
            &format!(
                "if [ -d {d} ]; then cd {d} && find . \\( -type f -o -type l \\) -print; fi",
                d = sh_quote(&self.path(rel))
            ),
            None,
        )?;
        let mut files: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.strip_prefix("./"))
            .map(str::to_owned)
            .collect();
        files.sort();
        Ok(files)
    }

    fn read_link(&self, rel: &str) -> Result<Option<String>> {
        let p = sh_quote(&self.path(rel));
        let out = self.run(
            &format!("reading link {rel}"),
            &format!("if [ -L {p} ]; then echo link; readlink {p}; else echo none; fi"),
            None,
        )?;
        let text = String::from_utf8_lossy(&out);
        let mut lines = text.lines();
        match lines.next() {
            Some("link") => Ok(Some(lines.next().unwrap_or("").to_owned())),
            Some("none") => Ok(None),
            _ => Err(self.fail(&format!("reading link {rel}"), "unexpected reply")),
        }
    }

    fn switch_link(&self, rel: &str, dest: &str, between: &mut dyn FnMut()) -> Result<()> {
        let link = self.path(rel);
        let tmp = sh_quote(&format!("{link}.tmp"));
        self.run(
            &format!("linking {rel}.tmp"),
            &format!("rm -f {tmp}; ln -s {} {tmp}", sh_quote(dest)),
            None,
        )?;
        between();
        // mv -T: rename the link itself over `link`, never into the directory it points at.
        self.run(
            &format!("switching {rel}"),
            &format!(
                "mv -T -f {tmp} {}; sync {}",
                sh_quote(&link),
                sh_quote(&self.root)
            ),
            None,
        )
        .map(drop)
    }

    /// coreutils' timeout(1) ends the self-test (TERM, then KILL 5 s later); only the tail of
    /// its output comes back, its exit code through a temporary file (POSIX sh has no
    /// pipefail).
    fn selftest(&self, slot: &str, timeout: Duration) -> Result<SelftestRun> {
        let dir = self.path(slot);
        let script = format!(
            "st=$(mktemp) || exit 1; \
             {{ timeout -k 5 {} {} selftest --bundle {} --json 2>&1; echo $? > \"$st\"; }} \
             | tail -c 4000; code=$(cat \"$st\"); rm -f \"$st\"; exit \"$code\"",
            timeout.as_secs().max(1),
            sh_quote(&format!("{dir}/{}", crate::archive::LOOKUPD_MEMBER)),
            sh_quote(&format!("{dir}/{}", crate::archive::BUNDLE_DIR))
        );
        let started = Instant::now();
        let out = self
            .command(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.no_ssh("selftest", e))?;
        let code = out.status.code();
        if code == Some(255) {
            return Err(self.fail(
                "selftest",
                format!(
                    "ssh failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let output = tail(&String::from_utf8_lossy(&out.stdout), 4000);
        // timeout(1) exits 124 when it ended the self-test, 137 when that took a KILL.
        if matches!(code, Some(124 | 137)) && started.elapsed() >= timeout {
            return Ok(SelftestRun {
                passed: false,
                exit_code: None,
                output: timed_out(&output, timeout),
            });
        }
        Ok(SelftestRun {
            passed: out.status.success(),
            exit_code: code,
            output,
        })
    }

    /// flock(1) of util-linux takes the lock on a descriptor of the remote shell, which then
    /// waits for the end of this session's input: when this process ends, however it ends,
    /// the session and the lock end with it.
    fn lock(&self, holder: &str, wait: Duration) -> Result<TargetLock> {
        let lock = sh_quote(&self.path(LOCK_FILE));
        let wait_flag = match wait.as_secs() {
            0 => "-n".to_owned(),
            s => format!("-w {s}"),
        };
        let script = format!(
            "command -v flock >/dev/null 2>&1 || {{ echo no-flock; exit 0; }}; \
             mkdir -p {} && exec 9>>{lock} || exit 3; \
             if flock {wait_flag} 9; then printf '%s\\n' {} > {lock}; echo locked; cat >/dev/null; : > {lock}; \
             else echo busy; cat {lock}; fi",
            sh_quote(&self.root),
            sh_quote(holder)
        );
        let mut child = self
            .command(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.no_ssh("lock", e))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        match first.trim() {
            "locked" => Ok(TargetLock {
                held: Held::Session(child),
            }),
            "busy" => {
                let mut held_by = String::new();
                let _ = stdout.read_to_string(&mut held_by);
                let _ = child.wait();
                Err(FlashError::Locked {
                    target: self.spec.clone(),
                    holder: held_by.trim().to_owned(),
                    waited: wait.as_secs_f64(),
                })
            }
            "no-flock" => {
                let _ = child.wait();
                Err(self.fail(
                    "lock",
                    "no flock(1) there (util-linux), which keeps two deploys from running at once",
                ))
            }
            _ => {
                drop(child.stdin.take());
                let stderr = child
                    .wait_with_output()
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                    .unwrap_or_default();
                Err(self.fail("lock", format!("ssh or the remote shell failed: {stderr}")))
            }
        }
    }

    fn held_by(&self) -> Result<Option<String>> {
        let lock = sh_quote(&self.path(LOCK_FILE));
        let out = self.run(
            "probing the lock",
            &format!(
                "[ -e {lock} ] && command -v flock >/dev/null 2>&1 || exit 0; exec 9<{lock}; \
                 flock -s -n 9 || {{ echo busy; cat {lock}; }}"
            ),
            None,
        )?;
        let out = String::from_utf8_lossy(&out);
        Ok(out
            .strip_prefix("busy\n")
            .map(|holder| holder.trim().to_owned()))
    }
}

/// Copies `len` bytes of `input` (the file at `src`) to `out`, advancing `bar`; calls `halfway`
/// once half the bytes are written (the fault-injection point of a file write), or at the end.
fn copy_file(
    input: &mut File,
    src: &Path,
    len: u64,
    out: &mut dyn Write,
    bar: &ProgressBar,
    halfway: &mut dyn FnMut(),
    write_error: impl Fn(std::io::Error) -> FlashError,
) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut sent, mut called) = (0u64, false);
    loop {
        let n = input.read(&mut buf).map_err(|e| FlashError::io(src, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(&write_error)?;
        sent += n as u64;
        bar.inc(n as u64);
        if !called && sent * 2 >= len {
            called = true;
            halfway();
        }
    }
    if !called {
        halfway();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs() {
        assert_eq!(
            TargetSpec::parse("dir:/mnt/root").unwrap(),
            TargetSpec::Dir("/mnt/root".into())
        );
        assert_eq!(
            TargetSpec::parse("ssh://root@10.0.0.2:2222/srv/lookup").unwrap(),
            TargetSpec::Ssh {
                user: Some("root".into()),
                host: "10.0.0.2".into(),
                port: Some(2222),
                path: "/srv/lookup".into()
            }
        );
        assert_eq!(
            TargetSpec::parse("ssh://dev/x").unwrap(),
            TargetSpec::Ssh {
                user: None,
                host: "dev".into(),
                port: None,
                path: "/x".into()
            }
        );
        let s = "ssh://u@[::1]:22/x";
        let t = TargetSpec::parse(s).unwrap();
        assert_eq!(t.to_string(), s);
        for bad in [
            "",
            "dir:",
            "/mnt/root",
            "ftp://h/x",
            "ssh://host",
            "ssh://host/",
            "ssh://host:0/x",
            "ssh://host:99999/x",
            "ssh://host:port/x",
            "ssh://@host/x",
            "ssh://-oProxyCommand=x/y",
        ] {
            let err = TargetSpec::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("bad target"), "{err}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
