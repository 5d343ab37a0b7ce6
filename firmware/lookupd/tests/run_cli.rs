//! `lookupd run` and `lookupd decode-serial` through the real binary: SIGTERM ends the loop
//! cleanly, and the serial frames decode back to the very reports printed on stdout.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::build_bundle;
use serde_json::Value;

fn lookupd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookupd"));
    c.env("LOOKUPD_LOG", "warn");
    c
}

#[test]
fn sigterm_finishes_the_loop_and_exits_0() {
    let b = build_bundle();
    let frames = b.root.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    std::fs::copy(&b.items[1].png, frames.join("f.png")).unwrap();
    let mut child = lookupd()
        .args(["run", "--bundle", &b.dir_arg(), "--runtime", "cpu"])
        .args(["--camera", &format!("file://{}", frames.display())])
        .args(["--fps", "50", "--trigger", "interval:30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lookups = 0;
    while lookups < 3 {
        assert!(Instant::now() < deadline, "no lookups within a minute");
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["event"] == "lookup" {
            assert_eq!(line["hits"][0]["sku"], b.items[1].sku.as_str());
            assert_eq!(line["trigger"], "interval:30");
            lookups += 1;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let last = rest.last().expect("a final line");
    assert_eq!(last["event"], "stopped");
    assert_eq!(last["reason"], "signal");
}

#[test]
fn serial_frames_decode_back_to_the_printed_reports() {
    let b = build_bundle();
    let frames = b.root.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in [0, 2, 4] {
        std::fs::copy(&b.items[i].png, frames.join(format!("f{i}.png"))).unwrap();
    }
    let serial = b.root.path().join("serial.bin");
    let out = lookupd()
        .args([
            "run",
            "--bundle",
            &b.dir_arg(),
            "--runtime",
            "cpu",
            "--k",
            "4",
        ])
        .args(["--camera", &format!("file://{}?step", frames.display())])
        .args(["--trigger", "stdin", "--serial", serial.to_str().unwrap()])
        .stdin(std::fs::File::open(write_script(&b.root, "\n\n\n\n")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event\":\"lookup\""))
        .map(String::from)
        .collect();
    assert_eq!(printed.len(), 4);
    let decoded = lookupd()
        .args(["decode-serial"])
        .arg(&serial)
        .output()
        .unwrap();
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let decoded: Vec<String> = String::from_utf8(decoded.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(decoded, printed);

    // A damaged stream: a corrupt frame first (its COBS code promises 4 bytes, 1 follows) and
    // a frame cut off at the end. They are named, the others still decode, the exit code is 1.
    let mut bytes = vec![5, 0xff, 0];
    bytes.extend_from_slice(&std::fs::read(&serial).unwrap());
    bytes.extend_from_slice(&[7, 7, 7]);
    std::fs::write(&serial, &bytes).unwrap();
    let damaged = lookupd()
        .args(["decode-serial"])
        .arg(&serial)
        .output()
        .unwrap();
    assert_eq!(damaged.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert!(stderr.contains("frame 1 skipped"), "{stderr}");
    assert!(stderr.contains("frame 6 skipped"), "{stderr}");
    assert_eq!(
        String::from_utf8(damaged.stdout).unwrap().lines().count(),
        4
    );
}

fn write_script(root: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = root.path().join("stdin.txt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn print_config_shows_flags_over_the_file() {
    let b = build_bundle();
    let file = b.root.path().join("lookupd.toml");
    std::fs::write(
        &file,
        "[camera]\nfps = 15\n[lookup]\nk = 2\n[gpu]\nsplit_sums = \"workgroup\"\n",
    )
    .unwrap();
    let out = lookupd()
        .args([
            "run",
            "--bundle",
            &b.dir_arg(),
            "--print-config",
            "--k",
            "7",
            "--fuse-depthwise",
            "true",
        ])
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: lookupd::config::RunConfig =
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(shown.camera.fps, 15);
    assert_eq!(shown.lookup.k, 7);
    assert_eq!(shown.camera.width, 640);
    assert_eq!(shown.gpu.split_sums, "workgroup");
    assert!(shown.gpu.fuse_depthwise);
    assert_eq!(shown.gpu.pointwise_tiles, "auto");
}

/// `[gpu]` reaches the GPU plan: its log line names the tuning the file and flags give, and
/// the lookup still names the item.
#[test]
fn gpu_settings_shape_the_plan() {
    let b = build_bundle();
    let frames = b.root.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    std::fs::copy(&b.items[3].png, frames.join("f.png")).unwrap();
    let file = b.root.path().join("lookupd.toml");
    std::fs::write(&file, "[gpu]\nsplit_workgroups = 64\n").unwrap();
    let out = lookupd()
        .env("LOOKUPD_LOG", "info")
        .args(["run", "--bundle", &b.dir_arg(), "--runtime", "gpu"])
        .args(["--camera", &format!("file://{}?step", frames.display())])
        .args(["--trigger", "stdin", "--split-sums", "workgroup"])
        .arg("--config")
        .arg(&file)
        .stdin(std::fs::File::open(write_script(&b.root, "\n")).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("no GPU adapter") && std::env::var_os("INFER_ALLOW_NO_GPU").is_some() {
        eprintln!("SKIPPED: no GPU adapter");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "pointwise_tiles=auto split_workgroups=64 split_sums=workgroup fuse_depthwise=false"
        ),
        "{stderr}"
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "started");
    assert_eq!(lines[0]["backend"], "gpu");
    let lookup = lines
        .iter()
        .find(|l| l["event"] == "lookup")
        .expect("a lookup");
    assert_eq!(lookup["hits"][0]["sku"], b.items[3].sku.as_str());
}

#[test]
fn bad_gpu_settings_are_refused_naming_the_key() {
    let b = build_bundle();
    let out = lookupd()
        .args(["run", "--bundle", &b.dir_arg(), "--runtime", "cpu"])
        .args(["--trigger", "stdin", "--split-sums", "warp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gpu.split_sums") && stderr.contains("expected dispatch or workgroup"),
        "{stderr}"
    );
}
