//! Kill the deploy at every step in turn (FLASH_FAULT_AT makes the real `flash` process abort
//! there): after each kill `current` points at a slot whose every hash verifies, `status`
//! works and reports an unconfirmed switch, and a new deploy completes.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;

struct Fixture {
    dir: tempfile::TempDir,
    public: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
    /// v2's bundle with a lookupd whose self-test always fails.
    v2_failing: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keys(dir.path(), "main");
        let b1 = dir.path().join("b1");
        let b2 = dir.path().join("b2");
        bundle_fixture::build_bundle(&b1, "v1");
        bundle_fixture::build_bundle(&b2, "v2");
        let v1 = dir.path().join("v1.flash");
        let v2 = dir.path().join("v2.flash");
        let v2_failing = dir.path().join("v2f.flash");
        // The fault loop deploys dozens of times: a small stand-in lookupd keeps it fast (the
        // real one is deployed and self-tested in deploy_dir.rs and ssh.rs).
        pack(&b1, &private, &stub_lookupd(true), "v1", &v1);
        pack(&b2, &private, &stub_lookupd(true), "v2", &v2);
        pack(
            &b2,
            &private,
            &stub_lookupd(false),
            "v2-failing",
            &v2_failing,
        );
        Fixture {
            dir,
            public,
            v1,
            v2,
            v2_failing,
        }
    }

    /// A fresh target; with `v1_first`, v1 deployed into slot a.
    fn target(&self, name: &str, v1_first: bool) -> PathBuf {
        let root = self.dir.path().join(name);
        fs::create_dir_all(&root).unwrap();
        if v1_first {
            self.deploy(&self.v1, &root, None).unwrap();
            assert_eq!(assert_current_verifies(&root), "a");
        }
        root
    }

    /// Deploys `archive`, aborting at `fault`; `Err(())` when the process was killed.
    fn deploy(
        &self,
        archive: &Path,
        root: &Path,
        fault: Option<&str>,
    ) -> Result<serde_json::Value, ()> {
        let target = format!("dir:{}", root.display());
        let args = [
            "deploy",
            archive.to_str().unwrap(),
            "--to",
            &target,
            "--trust-key",
            self.public.to_str().unwrap(),
            "--json",
        ];
        let env: Vec<(&str, &str)> = fault.map(|f| ("FLASH_FAULT_AT", f)).into_iter().collect();
        let out = flash(&args, &env);
        if out.status.signal() == Some(libc_sigabrt()) {
            assert!(fault.is_some(), "killed without a fault:\n{}", text(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("aborting at"),
                "{}",
                text(&out)
            );
            return Err(());
        }
        assert!(
            out.status.code().is_some(),
            "flash died otherwise:\n{}",
            text(&out)
        );
        Ok(serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out))))
    }
}

fn libc_sigabrt() -> i32 {
    6
}

fn status(root: &Path) -> serde_json::Value {
    flash_json(&[
        "status",
        "--to",
        &format!("dir:{}", root.display()),
        "--json",
    ])
}

/// Kills the deploy of v2 over v1 at `step:1`, `step:2`, ... until a run passes the step's
/// last point without dying; checks the target after each kill and that a new deploy
/// completes. Returns how many kills there were.
fn kill_at_every(f: &Fixture, step: &str, archive: &Path, first_deploy: bool) -> u32 {
    let mut kills = 0;
    for n in 1.. {
        let root = f.target(&format!("{step}-{n}-{first_deploy}"), !first_deploy);
        let fault = format!("{step}:{n}");
        match f.deploy(archive, &root, Some(&fault)) {
            Ok(report) => {
                // The step has fewer than n points: the deploy ran to its end.
                assert!(n > 1, "{fault}: never reached:\n{report:#}");
                break;
            }
            Err(()) => kills += 1,
        }
        // After the kill: current is absent only if no deploy ever completed, and otherwise
        // points at a slot that verifies completely.
        if first_deploy && !root.join("current").exists() {
            assert!(fs::symlink_metadata(root.join("current")).is_err());
        } else {
            let slot = assert_current_verifies(&root);
            let s = status(&root);
            assert_eq!(s["active"], slot.as_str(), "{fault}: {s:#}");
            if !first_deploy && slot == "b" {
                // Switched but never confirmed: status says so.
                assert_eq!(s["unconfirmed"], "b", "{fault}: {s:#}");
            }
        }
        // A new deploy (of the good v2) completes and ends in the slot it wrote.
        let r = f
            .deploy(&f.v2, &root, None)
            .unwrap_or_else(|()| panic!("{fault}: the redeploy was killed"));
        assert_eq!(r["ok"], true, "{fault}: {r:#}");
        let slot = assert_current_verifies(&root);
        assert_eq!(r["slot"], slot.as_str());
        assert_eq!(slot_version(&root, &slot), "v2");
        let s = status(&root);
        assert_eq!(s["unconfirmed"], serde_json::Value::Null, "{fault}: {s:#}");
        assert_eq!(s["good"], slot.as_str());
        if step == "write" && !first_deploy {
            // Resume: the files written before the kill are kept.
            let kept = r["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["action"] == "keep")
                .count();
            assert!(kept >= n as usize - 1, "{fault}: kept {kept}: {r:#}");
        }
    }
    kills
}

#[test]
fn killed_at_every_step_of_an_update() {
    let f = Fixture::new();
    let mut total = 0;
    for (step, points) in [
        ("write", 5),
        ("readback", 1),
        ("seal", 1),
        ("switch", 3),
        ("selftest", 2),
    ] {
        let kills = kill_at_every(&f, step, &f.v2, false);
        assert_eq!(kills, points, "{step}");
        total += kills;
    }
    assert_eq!(total, 12);
}

#[test]
fn killed_while_switching_back_after_a_failed_selftest() {
    let f = Fixture::new();
    assert_eq!(kill_at_every(&f, "rollback", &f.v2_failing, false), 1);
    // And a failing self-test without a kill ends where it started.
    let root = f.target("failing", true);
    let r = f.deploy(&f.v2_failing, &root, None).unwrap();
    assert_eq!(r["ok"], false);
    assert_eq!(r["rolled_back"], true);
    assert_eq!(assert_current_verifies(&root), "a");
}

#[test]
fn killed_at_every_step_of_a_first_deploy() {
    let f = Fixture::new();
    for step in ["write", "readback", "seal", "switch", "selftest"] {
        assert!(kill_at_every(&f, step, &f.v2, true) >= 1, "{step}");
    }
}
