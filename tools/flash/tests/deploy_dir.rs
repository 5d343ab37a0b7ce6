//! Deploys to a `dir:` target with the real lookupd: the first deploy, an update into the other
//! slot, a resumed deploy, dry-run, status, rollback, and a failing self-test rolled back.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

struct Fixture {
    dir: tempfile::TempDir,
    public: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
    broken: PathBuf,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keys(dir.path(), "main");
        let lookupd = real_lookupd();
        let mut archives = Vec::new();
        for (name, broken) in [("v1", false), ("v2", false), ("broken", true)] {
            let bundle = dir.path().join(format!("bundle-{name}"));
            bundle_fixture::build_bundle(&bundle, name);
            if broken {
                bundle_fixture::break_selftest(&bundle);
            }
            let archive = dir.path().join(format!("{name}.flash"));
            pack(&bundle, &private, &lookupd, name, &archive);
            archives.push(archive);
        }
        let root = dir.path().join("device");
        fs::create_dir_all(&root).unwrap();
        let [v1, v2, broken] = archives.try_into().unwrap();
        Fixture {
            dir,
            public,
            v1,
            v2,
            broken,
            root,
        }
    }
    fn target(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

fn deploy(archive: &Path, target: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "deploy",
        archive.to_str().unwrap(),
        "--to",
        target,
        "--json",
    ];
    args.extend(extra);
    flash_json(&args)
}

fn status(target: &str) -> serde_json::Value {
    flash_json(&["status", "--to", target, "--json"])
}

#[test]
fn deploy_update_resume_dry_run_status_rollback_and_a_failing_selftest() {
    let f = Fixture::new();
    let t = f.target();

    // Dry run on an empty target: a plan, nothing written.
    let plan = deploy(
        &f.v1,
        &t,
        &["--trust-key", f.public.to_str().unwrap(), "--dry-run"],
    );
    assert_eq!(plan["result"], "planned");
    assert_eq!(plan["install_key"], true);
    assert!(
        fs::read_dir(&f.root).unwrap().next().is_none(),
        "dry run wrote"
    );

    // First deploy: slot a, key installed, self-test passed.
    let r = deploy(&f.v1, &t, &["--trust-key", f.public.to_str().unwrap()]);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["slot"], "a");
    assert_eq!(r["selftest"]["passed"], true);
    assert_eq!(assert_current_verifies(&f.root), "a");
    assert_eq!(
        fs::read_to_string(f.root.join("trusted.pub")).unwrap(),
        fs::read_to_string(&f.public).unwrap()
    );

    // The update goes to slot b; only files that differ are counted as writes there (all, the
    // slot being empty).
    let r = deploy(&f.v2, &t, &[]);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["slot"], "b");
    assert_eq!(r["previous"], "a");
    assert_eq!(assert_current_verifies(&f.root), "b");
    assert_slot_verifies(&f.root, "a");

    let s = status(&t);
    assert_eq!(s["active"], "b");
    assert_eq!(s["good"], "b");
    assert_eq!(s["unconfirmed"], serde_json::Value::Null);
    assert_eq!(s["slots"][0]["version"], "v1");
    assert_eq!(s["slots"][1]["version"], "v2");
    assert_eq!(s["slots"][0]["verified"], true);
    assert_eq!(s["slots"][1]["verified"], true);
    assert_eq!(
        s["slots"][1]["files"]["bin/lookupd"].as_str().unwrap(),
        sha256(&f.root.join("slots/b/bin/lookupd"))
    );
    assert_eq!(s["last"]["result"], "passed");
    let human = flash_ok(&["status", "--to", &t]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("* slot b: v2 verified"), "{human}");

    // v1 again goes into slot a, which holds it already: every file kept (a resume). What else
    // the slot holds (an earlier release's file, a temporary of an interrupted write) goes.
    let strays = [
        "bundle/old-gallery.gal",
        "notes/readme.txt",
        "bin/lookupd.tmp",
    ];
    for stray in strays {
        let path = f.root.join("slots/a").join(stray);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "left over").unwrap();
    }
    let plan = deploy(&f.v1, &t, &["--dry-run"]);
    assert!(
        plan["message"]
            .as_str()
            .unwrap()
            .contains("and remove 3 it holds that the archive does not list"),
        "{plan:#}"
    );
    assert!(f.root.join("slots/a/notes/readme.txt").exists());
    let r = deploy(&f.v1, &t, &[]);
    assert_eq!(r["slot"], "a");
    let files = r["files"].as_array().unwrap();
    let removed: Vec<&str> = files
        .iter()
        .filter(|f| f["action"] == "remove")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let mut want = strays.to_vec();
    want.sort_unstable();
    assert_eq!(removed, want, "{r:#}");
    assert!(
        files
            .iter()
            .filter(|f| f["action"] != "remove")
            .all(|f| f["action"] == "keep"),
        "{r:#}"
    );
    for stray in strays {
        assert!(!f.root.join("slots/a").join(stray).exists(), "{stray}");
    }
    assert_eq!(assert_current_verifies(&f.root), "a");

    // Rollback: to b (v2), which verifies.
    let r = flash_json(&["rollback", "--to", &t, "--json"]);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["to"], "b");
    assert_eq!(assert_current_verifies(&f.root), "b");

    // A slot that does not verify is not rolled back to.
    let mut labels = fs::read(f.root.join("slots/a/bundle/labels.tsv")).unwrap();
    labels[0] ^= 1;
    fs::write(f.root.join("slots/a/bundle/labels.tsv"), &labels).unwrap();
    flash_fails(&["rollback", "--to", &t], &["slot a", "labels.tsv"]);
    assert_eq!(assert_current_verifies(&f.root), "b");
    assert_eq!(status(&t)["slots"][0]["verified"], false);

    // A bundle whose self-test fails: written into a (repairing the damaged file), switched,
    // tested, switched back to b; exit status non-zero; the outcome recorded.
    let out = flash(
        &["deploy", f.broken.to_str().unwrap(), "--to", &t, "--json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false);
    assert_eq!(r["rolled_back"], true);
    assert_eq!(r["slot"], "a");
    assert!(
        r["selftest"]["output"]
            .as_str()
            .unwrap()
            .contains("selftest"),
        "{r:#}"
    );
    assert_eq!(assert_current_verifies(&f.root), "b");
    let s = status(&t);
    assert_eq!(s["last"]["result"], "failed");
    assert_eq!(s["last"]["version"], "broken");
    assert_eq!(s["slots"][0]["record"]["outcome"], "failed");
    assert_eq!(s["good"], "b");
    let out = flash(&["deploy", f.broken.to_str().unwrap(), "--to", &t], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("rolled back to slot b"), "{all}");
    let _ = &f.dir;
}

/// A deploy or rollback while another holds the target's lock waits `--lock-wait` seconds,
/// then fails naming the holder and changes nothing; a self-test that never ends is killed at
/// `--selftest-timeout` with everything it started, fails, and is rolled back.
#[test]
fn a_held_lock_and_an_endless_selftest() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keys(dir.path(), "main");
    let bundle = dir.path().join("bundle");
    bundle_fixture::build_bundle(&bundle, "v1");
    let good = dir.path().join("good.flash");
    pack(&bundle, &private, &stub_lookupd(true), "good", &good);
    let endless = dir.path().join("endless.flash");
    pack(
        &bundle,
        &private,
        &endless_lookupd(dir.path()),
        "endless",
        &endless,
    );
    let root = dir.path().join("device");
    fs::create_dir_all(&root).unwrap();
    let target = format!("dir:{}", root.display());
    let r = deploy(&good, &target, &["--trust-key", public.to_str().unwrap()]);
    assert_eq!(r["ok"], true, "{r:#}");

    // Limits out of range are refused by name (no overflowing deadline).
    flash_fails(
        &["rollback", "--to", &target, "--lock-wait", "100000"],
        &["--lock-wait", "0..=86400"],
    );
    flash_fails(
        &[
            "deploy",
            good.to_str().unwrap(),
            "--to",
            &target,
            "--selftest-timeout",
            "0",
        ],
        &["--selftest-timeout", "1..=86400"],
    );

    let state = fs::read_to_string(root.join("state.toml")).unwrap();
    {
        let _held = hold_lock(&root, "flash deploy, pid 1 of test@bench");
        let started = std::time::Instant::now();
        for args in [
            vec!["deploy", endless.to_str().unwrap(), "--to", &target],
            vec!["rollback", "--to", &target],
        ] {
            let mut args = args;
            args.extend(["--lock-wait", "1", "--selftest-timeout", "2"]);
            flash_fails(
                &args,
                &[
                    "another deploy or rollback holds its lock (flash deploy, pid 1 of test@bench)",
                    "waited 1 s",
                ],
            );
        }
        assert!(started.elapsed().as_secs_f64() >= 2.0);
        let s = status(&target);
        assert_eq!(s["locked_by"], "flash deploy, pid 1 of test@bench", "{s:#}");
        let human = String::from_utf8(flash_ok(&["status", "--to", &target]).stdout).unwrap();
        assert!(
            human.contains("a deploy or rollback is running now: flash deploy, pid 1"),
            "{human}"
        );
        assert_eq!(fs::read_to_string(root.join("state.toml")).unwrap(), state);
        assert_eq!(assert_current_verifies(&root), "a");
    }

    let started = std::time::Instant::now();
    let out = flash(
        &[
            "deploy",
            endless.to_str().unwrap(),
            "--to",
            &target,
            "--json",
            "--selftest-timeout",
            "2",
        ],
        &[],
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["result"], "failed", "{r:#}");
    assert_eq!(r["rolled_back"], true);
    assert_eq!(r["selftest"]["exit_code"], serde_json::Value::Null);
    let output = r["selftest"]["output"].as_str().unwrap();
    assert!(
        output.contains("did not finish within 2 s") && output.contains("self-test still running"),
        "{output}"
    );
    // Only the tail of the flood is kept.
    assert!(output.len() < 5000, "{} bytes of output", output.len());
    assert!((2.0..60.0).contains(&elapsed), "{elapsed} s");
    assert_not_running(root.join("slots/b/bin/lookupd").to_str().unwrap());
    assert_not_running(ENDLESS_CHILD);
    assert_eq!(assert_current_verifies(&root), "a");
    assert_eq!(status(&target)["last"]["result"], "failed");
    // Free again: the lock holds no name, and status says none runs.
    assert_eq!(fs::read_to_string(root.join("flash.lock")).unwrap(), "");
    assert_eq!(status(&target)["locked_by"], serde_json::Value::Null);
}
