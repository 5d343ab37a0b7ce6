//! The ssh transport against a real OpenSSH server started on loopback by the test (never a
//! mock): deploy with the real lookupd and its self-test run over ssh, an update, status,
//! a kill in the middle of a transfer and one after the switch, rollback, and a clear error
//! when the server cannot be reached. sshd missing is a failure that says how to install it.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::*;
use system_tests::sshd::Sshd;

fn run(args: &[&str], sshd: &Sshd, fault: Option<&str>) -> std::process::Output {
    let options = sshd.ssh_options();
    let mut env = vec![("FLASH_SSH_OPTIONS", options.as_str())];
    if let Some(f) = fault {
        env.push(("FLASH_FAULT_AT", f));
    }
    flash(args, &env)
}

fn json(args: &[&str], sshd: &Sshd) -> serde_json::Value {
    let out = run(args, sshd, None);
    assert!(out.status.success(), "flash {args:?}:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", text(&out)))
}

#[test]
fn deploy_status_kill_and_rollback_over_ssh() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keys(dir.path(), "main");
    let lookupd = real_lookupd();
    let mut archives = Vec::new();
    for name in ["v1", "v2", "v3"] {
        let bundle = dir.path().join(format!("bundle-{name}"));
        bundle_fixture::build_bundle(&bundle, name);
        let archive = dir.path().join(format!("{name}.flash"));
        pack(&bundle, &private, &lookupd, name, &archive);
        archives.push(archive);
    }
    let root = dir.path().join("device");
    fs::create_dir_all(&root).unwrap();
    let url = sshd.url(&root);
    let deploy = |archive: &Path, extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "deploy".to_owned(),
            archive.display().to_string(),
            "--to".into(),
            url.clone(),
            "--json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let strs = |v: &[String]| v.iter().map(String::clone).collect::<Vec<_>>();

    // Without a key on the device and without --trust-key: refused, nothing written.
    let a = strs(&deploy(&archives[0], &[]));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run(&a, &sshd, None);
    assert!(!out.status.success());
    assert!(text(&out).contains("no trusted.pub"), "{}", text(&out));
    assert!(fs::read_dir(&root).unwrap().next().is_none());

    // First deploy, with the real lookupd's self-test run over ssh.
    let a = strs(&deploy(
        &archives[0],
        &["--trust-key", public.to_str().unwrap()],
    ));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = json(&a, &sshd);
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(
        r["selftest"]["output"]
            .as_str()
            .unwrap()
            .contains("\"ok\":true"),
        "{r:#}"
    );
    assert_eq!(assert_current_verifies(&root), "a");

    // Killed halfway through sending the third file: the half-sent temporary never replaces
    // anything, current stays on a, and the next deploy resumes.
    let a = strs(&deploy(&archives[1], &[]));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run(&a, &sshd, Some("write:3"));
    assert_eq!(out.status.signal(), Some(6), "{}", text(&out));
    assert_eq!(assert_current_verifies(&root), "a");
    // A file the archive does not list (an earlier release's) is removed from the slot.
    let stray = root.join("slots/b/bundle/old-gallery.gal");
    fs::write(&stray, "left over").unwrap();
    let r = json(&a, &sshd);
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(!stray.exists());
    assert!(
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"] == "remove" && f["path"] == "bundle/old-gallery.gal"),
        "{r:#}"
    );
    let kept = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["action"] == "keep")
        .count();
    assert!(kept >= 2, "{r:#}");
    assert_eq!(assert_current_verifies(&root), "b");

    // Killed after the switch, before the outcome is recorded: status reports it, the next
    // deploy moves current back before writing.
    let a = strs(&deploy(&archives[2], &[]));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run(&a, &sshd, Some("selftest:1"));
    assert_eq!(out.status.signal(), Some(6), "{}", text(&out));
    assert_eq!(assert_current_verifies(&root), "a");
    let s = json(&["status", "--to", &url, "--json"], &sshd);
    assert_eq!(s["unconfirmed"], "a", "{s:#}");
    assert_eq!(s["active"], "a");
    let r = json(&a, &sshd);
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(r["recovered"].is_string(), "{r:#}");
    assert_eq!(assert_current_verifies(&root), "a");
    assert_eq!(slot_version(&root, "a"), "v3");

    let s = json(&["status", "--to", &url, "--json"], &sshd);
    assert_eq!(s["active"], "a");
    assert_eq!(s["arch"], std::env::consts::ARCH);
    assert_eq!(s["slots"][0]["version"], "v3");
    assert_eq!(s["slots"][1]["version"], "v2");
    assert_eq!(s["slots"][1]["verified"], true);
    assert_eq!(
        s["slots"][0]["files"]["bundle/model.onnx"]
            .as_str()
            .unwrap(),
        sha256(&root.join("slots/a/bundle/model.onnx"))
    );

    // Rollback over ssh.
    let r = json(&["rollback", "--to", &url, "--json"], &sshd);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(assert_current_verifies(&root), "b");

    // Dry run: nothing changes.
    let before = fs::read_to_string(root.join("state.toml")).unwrap();
    let a = strs(&deploy(&archives[2], &["--dry-run"]));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = json(&a, &sshd);
    assert_eq!(r["result"], "planned");
    assert_eq!(fs::read_to_string(root.join("state.toml")).unwrap(), before);
    assert_eq!(assert_current_verifies(&root), "b");

    // Another deploy holds the lock (this test, on the same machine): a deploy over ssh waits
    // --lock-wait seconds, then fails naming the holder, and changes nothing.
    let state = fs::read_to_string(root.join("state.toml")).unwrap();
    {
        let _held = hold_lock(&root, "flash deploy, pid 1 of test@bench");
        let a = strs(&deploy(
            &archives[0],
            &["--lock-wait", "1", "--selftest-timeout", "2"],
        ));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = run(&a, &sshd, None);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("holds its lock (flash deploy, pid 1 of test@bench)"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(fs::read_to_string(root.join("state.toml")).unwrap(), state);
    assert_eq!(assert_current_verifies(&root), "b");

    // A self-test that never ends: timeout(1) ends it and what it started on the target; it
    // fails and is rolled back, and only the tail of its flood of output comes back.
    let endless = dir.path().join("endless.flash");
    pack(
        &dir.path().join("bundle-v1"),
        &private,
        &endless_lookupd(dir.path()),
        "endless",
        &endless,
    );
    // Meanwhile it holds the lock: a second deploy is refused, naming it.
    let a = strs(&deploy(&endless, &["--selftest-timeout", "5"]));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let options = sshd.ssh_options();
    let (mut first, _tmp) = flash_command(&a, &[("FLASH_SSH_OPTIONS", options.as_str())]);
    let first = first
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while fs::read_to_string(root.join("flash.lock"))
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = json(&["status", "--to", &url, "--json"], &sshd);
    let running = format!("flash deploy, pid {} of ", first.id());
    assert!(
        s["locked_by"]
            .as_str()
            .is_some_and(|h| h.starts_with(&running)),
        "{s:#}"
    );
    let second = strs(&deploy(&archives[0], &["--lock-wait", "0"]));
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let refused = run(&second, &sshd, None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let holder = format!("holds its lock (flash deploy, pid {} of ", first.id());
    assert!(text(&refused).contains(&holder), "{}", text(&refused));
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rolled_back"], true, "{r:#}");
    let output = r["selftest"]["output"].as_str().unwrap();
    assert!(
        output.contains("did not finish within 5 s") && output.contains("self-test still running"),
        "{output}"
    );
    assert!(output.len() < 5000, "{} bytes of output", output.len());
    assert_not_running(ENDLESS_CHILD);
    assert_eq!(fs::read_to_string(root.join("flash.lock")).unwrap(), "");
    let s = json(&["status", "--to", &url, "--json"], &sshd);
    assert_eq!(s["locked_by"], serde_json::Value::Null, "{s:#}");
    assert_eq!(assert_current_verifies(&root), "b");

    // An unreachable server: a clear error, no panic.
    let bad_url = url.replace(&format!(":{}/", sshd.port), ":1/");
    let out = run(&["status", "--to", &bad_url], &sshd, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ssh failed"), "{}", text(&out));
}
