//! The appliance loop (`lookupd::run`) on a real bundle (CPU runtime) with the replay camera
//! and scripted stdin triggers: the right items, enrolment, and the faults.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::{TestBundle, build_bundle};
use lookupd::config::RunConfig;
use serde_json::Value;

/// Settings for a replay of `frames` (one image per trigger) driven by stdin, on the CPU.
fn config(frames: &Path, step: bool) -> RunConfig {
    let mut c = RunConfig::default();
    c.camera.uri = format!(
        "file://{}{}",
        frames.display(),
        if step { "?step" } else { "" }
    );
    c.camera.timeout_ms = 400;
    c.trigger.specs = vec!["stdin".into()];
    c.lookup.runtime = "cpu".into();
    c.lookup.k = 3;
    c
}

fn run(b: &TestBundle, config: &RunConfig, stdin: impl BufRead + Send + 'static) -> Vec<Value> {
    let mut out = Vec::new();
    let summary = lookupd::run(
        &b.dir(),
        config,
        Box::new(stdin),
        &mut out,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["event"], "started");
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "stopped");
    assert_eq!(last["lookups"], summary.lookups);
    lines
}

fn events<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

/// Copies the catalogue images into a frames folder, named so they replay in `order`.
fn frames_of(b: &TestBundle, order: &[usize]) -> std::path::PathBuf {
    let dir = b.root.path().join("frames");
    std::fs::create_dir_all(&dir).unwrap();
    for (n, &i) in order.iter().enumerate() {
        std::fs::copy(&b.items[i].png, dir.join(format!("{n:03}-item{i}.png"))).unwrap();
    }
    dir
}

#[test]
fn replayed_frames_with_scripted_triggers_name_the_right_items() {
    let b = build_bundle();
    let order = [3, 0, 5, 1, 1, 4, 2];
    let frames = frames_of(&b, &order);
    let stdin = "\n".repeat(order.len()) + "lookup\n";
    let lines = run(&b, &config(&frames, true), std::io::Cursor::new(stdin));
    let lookups = events(&lines, "lookup");
    // One more trigger than frames: the replay loops back to the first.
    assert_eq!(lookups.len(), order.len() + 1);
    for (n, report) in lookups.iter().enumerate() {
        let item = &b.items[order[n % order.len()]];
        assert_eq!(report["seq"], n as u64 + 1);
        assert_eq!(report["trigger"], "stdin");
        assert_eq!(report["verdict"], "known");
        assert_eq!(report["hits"][0]["sku"], item.sku.as_str(), "lookup {n}");
        assert_eq!(report["hits"][0]["id"], item.id);
        assert_eq!(report["hits"][0]["distance"], 0);
        assert_eq!(report["hits"].as_array().unwrap().len(), 3);
        assert!(report["frame"].as_str().unwrap().ends_with(".png"));
        let t = &report["timings_us"];
        for stage in ["capture_age", "preprocess", "infer", "search", "total"] {
            assert!(t[stage].is_u64(), "{stage}: {t}");
        }
        assert!(t["total"].as_u64() >= t["infer"].as_u64());
    }
    assert_eq!(lines.last().unwrap()["reason"], "end of input");
    assert!(events(&lines, "fault").is_empty(), "{lines:?}");
}

#[test]
fn an_item_enrolled_in_the_loop_is_found_next_and_after_a_restart() {
    let b = build_bundle();
    let frames = b.root.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let (_, png) = b.new_image(77);
    // The same new product shown twice: enrolled from the first frame, looked up in the second.
    std::fs::copy(&png, frames.join("a.png")).unwrap();
    std::fs::copy(&png, frames.join("b.png")).unwrap();
    let config = config(&frames, true);
    let lines = run(
        &b,
        &config,
        std::io::Cursor::new("enroll NEW-SKU 1\nlookup\n"),
    );
    let enrolled = events(&lines, "enrolled");
    assert_eq!(enrolled.len(), 1, "{lines:?}");
    assert_eq!(enrolled[0]["sku"], "NEW-SKU 1");
    let id = enrolled[0]["id"].as_u64().unwrap();
    let lookup = events(&lines, "lookup")[0];
    assert_eq!(lookup["hits"][0]["sku"], "NEW-SKU 1");
    assert_eq!(lookup["hits"][0]["id"], id);
    assert_eq!(lookup["hits"][0]["distance"], 0);

    // A new process: the enrolled item is in the bundle, which still verifies.
    let lines = run(&b, &config, std::io::Cursor::new("\n"));
    assert_eq!(events(&lines, "lookup")[0]["hits"][0]["id"], id);
    assert!(lookupd::selftest(b.dir(), infer::Backend::Cpu).passed());
}

/// Lines that arrive one at a time, `gap` apart (a person at the button).
struct SlowLines {
    lines: Vec<&'static str>,
    gap: Duration,
}

impl Read for SlowLines {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.lines.is_empty() {
            return Ok(0);
        }
        std::thread::sleep(self.gap);
        let line = self.lines.remove(0);
        buf[..line.len()].copy_from_slice(line.as_bytes());
        Ok(line.len())
    }
}

#[test]
fn a_missing_camera_is_a_fault_and_it_is_picked_up_when_it_appears() {
    let b = build_bundle();
    let frames = b.root.path().join("late-camera");
    let config = config(&frames, false);
    // The "camera" appears after 1.2 s; triggers come every 0.5 s and wait 0.4 s for a frame:
    // the first two find none, the capture thread's retries (backoff 0.1, 0.2, 0.4, 0.8 s)
    // find the camera by 1.6 s.
    let appear = {
        let (frames, png) = (frames.clone(), b.items[2].png.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            let tmp = frames.with_extension("tmp");
            std::fs::create_dir_all(&tmp).unwrap();
            std::fs::copy(png, tmp.join("f.png")).unwrap();
            std::fs::rename(tmp, frames).unwrap();
        })
    };
    let stdin = BufReader::new(SlowLines {
        lines: vec!["\n"; 6],
        gap: Duration::from_millis(500),
    });
    let lines = run(&b, &config, stdin);
    appear.join().unwrap();
    let faults = events(&lines, "fault");
    assert!(
        faults
            .iter()
            .any(|f| f["source"] == "camera"
                && f["message"].as_str().unwrap().contains("late-camera")),
        "{lines:#?}"
    );
    assert!(
        faults
            .iter()
            .any(|f| f["source"] == "lookup" && f["message"].as_str().unwrap().contains("no frame")),
        "{lines:#?}"
    );
    assert_eq!(events(&lines, "recovered").len(), 1, "{lines:#?}");
    let lookups = events(&lines, "lookup");
    assert!(!lookups.is_empty(), "{lines:#?}");
    for l in lookups {
        assert_eq!(l["hits"][0]["sku"], b.items[2].sku.as_str());
    }
}

#[test]
fn a_bad_bundle_or_bad_settings_refuse_to_start() {
    let b = build_bundle();
    let frames = frames_of(&b, &[0]);
    let mut out = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut bad = config(&frames, true);
    bad.lookup.k = 0;
    let err = lookupd::run(
        &b.dir(),
        &bad,
        Box::new(std::io::empty()),
        &mut out,
        stop.clone(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("lookup.k"), "{err}");

    b.flip_byte(bundle::GALLERY_FILE, -3);
    let err = lookupd::run(
        &b.dir(),
        &config(&frames, true),
        Box::new(std::io::empty()),
        &mut out,
        stop,
    )
    .unwrap_err();
    assert!(err.to_string().contains("gallery.gal"), "{err}");
    assert!(
        out.is_empty(),
        "nothing is reported before the bundle checks out"
    );
}

#[test]
fn unknown_stdin_commands_are_faults_and_the_loop_goes_on() {
    let b = build_bundle();
    let frames = frames_of(&b, &[4]);
    let lines = run(
        &b,
        &config(&frames, true),
        std::io::Cursor::new("look up\nenroll\n\nquit\n\n"),
    );
    let faults = events(&lines, "fault");
    assert_eq!(faults.len(), 2, "{lines:#?}");
    assert!(
        faults[0]["message"]
            .as_str()
            .unwrap()
            .contains("not a command")
    );
    assert_eq!(events(&lines, "lookup").len(), 1, "quit ends the loop");
    assert_eq!(lines.last().unwrap()["reason"], "quit");
}
