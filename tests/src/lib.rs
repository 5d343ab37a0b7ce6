//! Helpers of the whole-system tests in `tests/` and of the demo (`cargo demo`): finding the
//! workspace's binaries, the product's whole flow through them ([`pipeline`]), the device it is
//! deployed to and run on, here or over ssh ([`device`]), the rig of a hardware-in-the-loop run
//! ([`rig`], [`button`]) and a real OpenSSH server on loopback standing in for a device
//! ([`sshd`], also used by flash's tests).

pub mod button;
pub mod device;
pub mod pipeline;
pub mod rig;
pub mod sshd;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Serialises the fallback builds of [`binary`].
static BUILD: Mutex<()> = Mutex::new(());

/// Path of a binary of this workspace (`trainer`, `lookupd`, ...) built with the same profile
/// as the running test. `cargo test --workspace` builds them before any test runs; when a
/// test runs alone (`cargo test -p system-tests`) the binary is built here first.
pub fn binary(package: &str, name: &str) -> PathBuf {
    // The test runs from target/<profile>/deps/; the binaries live in target/<profile>/.
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    let path = dir.join(name);
    let _guard = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !path.exists() {
        let release = dir.file_name().is_some_and(|profile| profile == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "-q", "-p", package, "--bin", name]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
    }
    path
}
