//! A real OpenSSH server on 127.0.0.1 standing in for a device reached with ssh: flash's ssh
//! transport tests and the whole-system test's emulated ssh target use it. A random free port,
//! a fresh host key and client key, run as the current user in the foreground (`-D -e`), with
//! the SFTP subsystem (scp), killed on drop. It never skips: sshd missing or not starting is a
//! panic that says why (and how to install it).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Sshd {
    /// Keys, config and log.
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The server binary that runs.
    pub binary: PathBuf,
    child: Child,
}

fn find_sshd() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/sbin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "sshd (OpenSSH server) is not installed, and the ssh transport's tests need a real one: \
         apt-get install -y openssh-server openssh-client (.ci/run installs it)"
    );
}

/// The current user's name (CI may not set USER).
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (package openssh-client) must be installed");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    pub fn start() -> Sshd {
        let sshd = find_sshd();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory; Debian creates it only from its service unit.
        let _ = fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = user();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin yes\nAllowUsers {user}\nLogLevel ERROR\n\
             Subsystem sftp internal-sftp\n",
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let mut server = Sshd {
            dir,
            port,
            binary: sshd,
            child,
        };
        server.wait_ready();
        server
    }

    /// The arguments `flash` passes to every ssh call (FLASH_SSH_OPTIONS).
    pub fn ssh_options(&self) -> String {
        format!(
            "-i {}/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10",
            self.dir.path().display()
        )
    }

    /// The server's version line (`OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL ...`), for saying
    /// which rig a test used.
    pub fn version(&self) -> String {
        // `sshd -V` prints the version (to stderr) and exits; older versions print it with
        // their usage after an unknown option.
        let out = Command::new(&self.binary).arg("-V").output();
        out.map(|o| {
            let text = String::from_utf8_lossy(&o.stderr).into_owned();
            text.lines()
                .find(|l| l.contains("OpenSSH"))
                .unwrap_or("version unknown")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("version unknown ({e})"))
    }

    /// `ssh://user@127.0.0.1:port` + `path`.
    pub fn url(&self, path: &Path) -> String {
        let user = user();
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, path.display())
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "sshd exited ({status}):\n{}",
                    fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            let user = user();
            let ok = Command::new("ssh")
                .args(self.ssh_options().split_whitespace())
                .args(["-o", "BatchMode=yes", "-p", &self.port.to_string()])
                .arg(format!("{user}@127.0.0.1"))
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sshd on port {} did not accept a login in 20 s:\n{}",
                self.port,
                fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
