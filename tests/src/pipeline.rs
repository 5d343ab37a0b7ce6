//! The product's whole flow through its real binaries, shared by the demo (`cargo demo`) and the
//! whole-system tests: synthesise a catalogue, fine-tune, export the bundle, enrol the catalogue,
//! then name camera shots with `lookupd run` on the replay camera with a scripted trigger.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Runs `program args...`; returns its stdout, or an error with its stderr.
pub fn run_tool(program: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}):\n{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The first JSON object printed by a tool.
pub fn json_of(stdout: &str) -> Result<Value> {
    let start = stdout.find('{').context("no JSON object in the output")?;
    Ok(serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<Value>()
        .next()
        .context("no JSON object in the output")??)
}

/// `SKU<TAB>PATH` lines of a synth list, paths made absolute.
pub fn read_list(catalogue: &Path, name: &str) -> Result<Vec<(String, PathBuf)>> {
    let path = catalogue.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (sku, file) = line
                .split_once('\t')
                .with_context(|| format!("{}: bad line {line:?}", path.display()))?;
            Ok((sku.to_string(), catalogue.join(file)))
        })
        .collect()
}

/// Copies `shots` into `frames` named `NNNN__SKU.png`, in a fixed shuffled order, so the replay
/// camera shows them one per trigger and each report's frame label names the right answer.
pub fn stage_frames(shots: &[(String, PathBuf)], frames: &Path, seed: u64) -> Result<usize> {
    if frames.exists() {
        std::fs::remove_dir_all(frames).with_context(|| frames.display().to_string())?;
    }
    std::fs::create_dir_all(frames).with_context(|| frames.display().to_string())?;
    let mut order: Vec<usize> = (0..shots.len()).collect();
    // A small LCG shuffle: deterministic, and no dependency for it.
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    for (n, &i) in order.iter().enumerate() {
        let (sku, path) = &shots[i];
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("png");
        let target = frames.join(format!("{n:04}__{sku}.{ext}"));
        std::fs::copy(path, &target)
            .with_context(|| format!("{} -> {}", path.display(), target.display()))?;
    }
    Ok(shots.len())
}

/// The SKU a staged frame shows (`NNNN__SKU.png`).
pub fn expected_sku(frame: &str) -> Option<&str> {
    let name = frame.rsplit('/').next()?;
    let (_, rest) = name.split_once("__")?;
    Some(rest.rsplit_once('.').map_or(rest, |(sku, _)| sku))
}

/// One lookup as `lookupd run` reported it.
#[derive(Clone, Debug)]
pub struct Reported {
    pub frame: String,
    pub sku: Option<String>,
    pub distance: Option<u64>,
    /// Every hit: (SKU, distance).
    pub hits: Vec<(String, u64)>,
    pub timings: BTreeMap<String, u64>,
}

impl Reported {
    pub fn correct(&self) -> bool {
        self.sku.is_some() && self.sku.as_deref() == expected_sku(&self.frame)
    }
}

/// Runs `lookupd run` on `bundle` with the replay camera in step mode over `frames` and a
/// scripted stdin trigger of `triggers` lines; `on_line` sees every report line as it comes.
pub fn lookup_run(
    lookupd: &Path,
    bundle: &Path,
    frames: &Path,
    triggers: usize,
    runtime: &str,
    on_line: impl FnMut(&Value),
) -> Result<Vec<Reported>> {
    let camera = format!("file://{}?step", frames.display());
    let args = [
        "--camera",
        &camera,
        "--trigger",
        "stdin",
        "--runtime",
        runtime,
    ];
    lookup_run_with(lookupd, bundle, &args, triggers, on_line)
}

/// [`lookup_run`] with the camera, trigger and other flags given by the caller (a real rig's);
/// `triggers` lines go to stdin (used by a `stdin` trigger, ignored otherwise).
pub fn lookup_run_with(
    lookupd: &Path,
    bundle: &Path,
    flags: &[&str],
    triggers: usize,
    mut on_line: impl FnMut(&Value),
) -> Result<Vec<Reported>> {
    let mut child = Command::new(lookupd)
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .args(["--k", "3"])
        .args(flags)
        .env("LOOKUPD_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", lookupd.display()))?;
    let mut stdin = child.stdin.take().context("lookupd's stdin")?;
    // The scripted button, pressed like a person would: the next press only once the previous
    // lookup is reported (so each report's total is trigger to report, not time in a queue);
    // the end of input then stops the loop.
    let (reported, next_press) = std::sync::mpsc::channel::<()>();
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        for press in 0..triggers {
            if press > 0 && next_press.recv().is_err() {
                break;
            }
            stdin.write_all(b"\n")?;
            stdin.flush()?;
        }
        Ok(())
    });
    let mut reports = Vec::new();
    for line in BufReader::new(child.stdout.take().context("lookupd's stdout")?).lines() {
        let line = line?;
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("lookupd printed {line:?}"))?;
        on_line(&value);
        if value["event"] == "lookup" || value["event"] == "fault" {
            let _ = reported.send(());
        }
        if value["event"] == "lookup" {
            let top = &value["hits"][0];
            let known = value["verdict"] == "known";
            reports.push(Reported {
                frame: value["frame"].as_str().unwrap_or_default().to_string(),
                sku: known.then(|| top["sku"].as_str().unwrap_or_default().to_string()),
                distance: top["distance"].as_u64(),
                hits: value["hits"]
                    .as_array()
                    .map(|hits| {
                        hits.iter()
                            .map(|h| {
                                let sku = h["sku"].as_str().unwrap_or_default().to_string();
                                (sku, h["distance"].as_u64().unwrap_or(u64::MAX))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                timings: value["timings_us"]
                    .as_object()
                    .map(|t| {
                        t.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    drop(reported);
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the trigger script panicked"))?
        .context("writing triggers to lookupd")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("lookupd run exited with {status}");
    }
    Ok(reports)
}

/// Mean and percentiles of one stage over the reports, in microseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StageStats {
    pub mean: u64,
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

pub fn stage_stats(reports: &[Reported], stage: &str) -> StageStats {
    let mut v: Vec<u64> = reports
        .iter()
        .filter_map(|r| r.timings.get(stage).copied())
        .collect();
    if v.is_empty() {
        return StageStats::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    StageStats {
        mean: v.iter().sum::<u64>() / v.len() as u64,
        p50: at(0.5),
        p95: at(0.95),
        max: *v.last().unwrap_or(&0),
    }
}

/// The stages of a lookup report, in order.
pub const STAGES: [&str; 5] = ["capture_age", "preprocess", "infer", "search", "total"];
