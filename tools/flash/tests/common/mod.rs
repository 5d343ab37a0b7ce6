//! Helpers of flash's tests: a real bundle (as lookupd's tests build it), keys, archives, the
//! `flash` and `lookupd` binaries and dir targets. The real sshd on loopback is system-tests'
//! [`system_tests::sshd`].

#![allow(dead_code)]

/// The real bundle of these tests (the `test-bundle` crate's, as lookupd's tests use it).
pub mod bundle_fixture {
    use std::path::Path;

    #[allow(unused_imports)]
    pub use test_bundle::break_selftest;

    /// Writes a valid bundle of 4 items into `dir` (its images beside it); bundles of different
    /// `run`s differ in their manifest only.
    pub fn build_bundle(dir: &Path, run: &str) {
        test_bundle::write_bundle(dir, &dir.with_extension("images"), 4, run);
    }
}

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

/// The `flash` binary cargo built for these tests.
pub fn flash_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flash"))
}

/// Runs `flash` with `args` and extra environment.
pub fn flash(args: &[&str], env: &[(&str, &str)]) -> Output {
    let (mut cmd, _tmp) = flash_command(args, env);
    cmd.output().expect("run flash")
}

/// The command of [`flash`], to start it: it needs the temporary folder until it has exited (a
/// run killed by a fault leaves its staging folder behind: each run gets a folder of its own).
pub fn flash_command(args: &[&str], env: &[(&str, &str)]) -> (Command, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let mut cmd = Command::new(flash_bin());
    cmd.args(args)
        .env_remove("FLASH_FAULT_AT")
        .env("TMPDIR", tmp.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd, tmp)
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `flash` and asserts success.
pub fn flash_ok(args: &[&str]) -> Output {
    let out = flash(args, &[]);
    assert!(
        out.status.success(),
        "flash {args:?} failed:\n{}",
        text(&out)
    );
    out
}

/// Runs `flash` and asserts it fails with an error containing every one of `needles`.
pub fn flash_fails(args: &[&str], needles: &[&str]) -> String {
    let out = flash(args, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "flash {args:?} succeeded:\n{all}");
    assert!(
        out.status.code().is_some(),
        "flash {args:?} was killed (a panic or abort?):\n{all}"
    );
    assert!(!all.contains("panicked"), "flash {args:?} panicked:\n{all}");
    for n in needles {
        assert!(all.contains(n), "flash {args:?}: no {n:?} in\n{all}");
    }
    all
}

/// The stdout of a successful `flash ... --json` as JSON.
pub fn flash_json(args: &[&str]) -> Value {
    let out = flash_ok(args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("flash {args:?}: not JSON ({e}):\n{}", text(&out)))
}

/// A key pair in `dir/keys-<name>`: (private, public).
pub fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let kd = dir.join(format!("keys-{name}"));
    flash_ok(&["keygen", "--out", kd.to_str().unwrap()]);
    (kd.join("private"), kd.join("public"))
}

/// A small ELF of this machine standing in for lookupd where the self-test does not matter:
/// `true selftest ...` passes, `false selftest ...` fails.
pub fn stub_lookupd(passes: bool) -> PathBuf {
    system_binary(if passes { "true" } else { "false" })
}

/// The command line of the child that [`endless_lookupd`] leaves running.
pub const ENDLESS_CHILD: &str = "sleep 987";

/// An ELF of this machine standing in for a lookupd whose self-test never ends: it starts a
/// child ([`ENDLESS_CHILD`]) and floods its output meanwhile. Compiled into `dir` by rustc.
pub fn endless_lookupd(dir: &Path) -> PathBuf {
    let source = dir.join("endless.rs");
    fs::write(
        &source,
        r#"fn main() {
    let (program, arg) = ("sleep", "987");
    let _child = std::process::Command::new(program).arg(arg).spawn().unwrap();
    loop {
        println!("self-test still running: {:?}", std::env::args().collect::<Vec<_>>());
    }
}
"#,
    )
    .unwrap();
    let binary = dir.join("endless");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("run rustc");
    assert!(
        out.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// Holds `root`'s deploy lock as another flash would (flock on flash.lock, naming `holder`)
/// until the file is dropped.
pub fn hold_lock(root: &Path, holder: &str) -> fs::File {
    use std::io::Write;
    let mut file = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(root.join("flash.lock"))
        .unwrap();
    file.try_lock().unwrap();
    file.set_len(0).unwrap();
    file.write_all(holder.as_bytes()).unwrap();
    file
}

/// No process's command line holds `needle` (a killed self-test left nothing behind).
pub fn assert_not_running(needle: &str) {
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(needle),
            "still running: {cmdline} (pid {:?})",
            entry.file_name()
        );
    }
}

fn system_binary(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("no {name} binary in /usr/bin or /bin");
}

static BUILD: Mutex<()> = Mutex::new(());

/// The real `lookupd`, built by cargo (test profile) into this workspace's target directory;
/// `FLASH_TEST_LOOKUPD=PATH` names a prebuilt one instead (while lookupd is being changed).
pub fn real_lookupd() -> PathBuf {
    if let Some(path) = std::env::var_os("FLASH_TEST_LOOKUPD") {
        return PathBuf::from(path);
    }
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args([
            "build",
            "-q",
            // The profile `cargo test` builds the workspace's binaries with: after
            // `cargo test --workspace` this build is a no-op.
            "--profile",
            "test",
            "-p",
            "lookupd",
            "--bin",
            "lookupd",
            "--message-format=json",
        ])
        .output()
        .expect("run cargo build -p lookupd");
    assert!(
        out.status.success(),
        "cargo build -p lookupd failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "lookupd"
            && let Some(exe) = v["executable"].as_str()
        {
            return PathBuf::from(exe);
        }
    }
    panic!("cargo reported no lookupd executable");
}

/// Packs `bundle` with `lookupd` for the host into `out`.
pub fn pack(bundle: &Path, private: &Path, lookupd: &Path, version: &str, out: &Path) {
    flash_ok(&[
        "pack",
        "--bundle",
        bundle.to_str().unwrap(),
        "--key",
        private.to_str().unwrap(),
        "--target",
        "host",
        "--lookupd",
        lookupd.to_str().unwrap(),
        "--version",
        version,
        "--out",
        out.to_str().unwrap(),
    ]);
}

/// sha256 of a file (hex).
pub fn sha256(path: &Path) -> String {
    bundle::sha256_file(path).unwrap().0
}

/// Checks, independently of flash's own code, that `root/current` points at a slot whose
/// signed manifest lists files that are all present with their hashes. Returns the slot name.
pub fn assert_current_verifies(root: &Path) -> String {
    let link = fs::read_link(root.join("current"))
        .unwrap_or_else(|e| panic!("{}/current: {e}", root.display()));
    let link = link.to_str().unwrap().to_owned();
    let slot = link
        .strip_prefix("slots/")
        .unwrap_or_else(|| panic!("current -> {link}"))
        .to_owned();
    assert_slot_verifies(root, &slot);
    slot
}

/// Every file the slot's manifest lists has its hash, and the signature verifies against
/// trusted.pub (checked with ed25519-dalek here, not with flash's code).
pub fn assert_slot_verifies(root: &Path, slot: &str) {
    let dir = root.join("slots").join(slot);
    let manifest_bytes = fs::read(dir.join("flash-manifest.toml"))
        .unwrap_or_else(|e| panic!("slot {slot}: no manifest: {e}"));
    let sig_hex = fs::read_to_string(dir.join("flash-manifest.sig")).unwrap();
    let key_hex = fs::read_to_string(root.join("trusted.pub")).unwrap();
    let key: [u8; 32] = bundle::from_hex(key_hex.trim())
        .unwrap()
        .try_into()
        .unwrap();
    let sig: [u8; 64] = bundle::from_hex(sig_hex.trim())
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .unwrap()
        .verify_strict(&manifest_bytes, &ed25519_dalek::Signature::from_bytes(&sig))
        .unwrap_or_else(|e| panic!("slot {slot}: signature: {e}"));
    let manifest: toml::Table =
        toml::from_str(std::str::from_utf8(&manifest_bytes).unwrap()).unwrap();
    let files = manifest["files"].as_table().unwrap();
    assert!(files.len() >= 5, "slot {slot}: {} files", files.len());
    for (name, entry) in files {
        let expected = entry["sha256"].as_str().unwrap();
        assert_eq!(
            sha256(&dir.join(name)),
            expected,
            "slot {slot}: {name} does not match its hash"
        );
    }
}

/// The version the slot's manifest names.
pub fn slot_version(root: &Path, slot: &str) -> String {
    let text =
        fs::read_to_string(root.join("slots").join(slot).join("flash-manifest.toml")).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    t["version"].as_str().unwrap().to_owned()
}
