//! The product's whole flow through its real binaries, shared by the demo (`cargo demo`) and the
//! whole-system tests: synthesise a catalogue, fine-tune, export the bundle, enrol the catalogue,
//! then name camera shots with `lookupd run` on the replay camera with a scripted trigger.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Runs `program args...`; returns its stdout, or an error with its stderr.
pub fn run_tool(program: &Path, args: &[&str]) -> Result<String> {
    run_tool_env(program, args, &[])
}

/// [`run_tool`] with more environment variables.
pub fn run_tool_env(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    run_command(&mut command)
}

/// Runs a prepared command; returns its stdout, or an error with its stderr.
pub fn run_command(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} {} failed ({}):\n{}",
            command.get_program(),
            command
                .get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// A few NormSoftmax steps on the catalogue `data` (`KIND:PATH`) into `run`, small enough for a
/// test: 64x64 images (resized to 72), a 128-d embedding, 2 epochs of `steps_per_epoch` batches
/// of 6 (2 images per item), the first epoch a warm-up; no evaluation. Returns trainer's stdout.
pub fn train_briefly(
    trainer: &Path,
    data: &str,
    run: &Path,
    steps_per_epoch: u32,
) -> Result<String> {
    let run = run.to_str().context("a non-UTF-8 run path")?;
    let steps = steps_per_epoch.to_string();
    run_tool(
        trainer,
        &[
            "train",
            "--data",
            data,
            "--out",
            run,
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--steps-per-epoch",
            &steps,
            "--batch",
            "6",
            "--images-per-class",
            "2",
            "--image-size",
            "64",
            "--resize",
            "72",
            "--embedding-dim",
            "128",
            "--no-eval",
        ],
    )
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
    /// The trigger that started it, as lookupd names it (`stdin`, `gpio:gpiochip0:17`, ...).
    pub trigger: String,
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

    fn of(value: &Value) -> Reported {
        let top = &value["hits"][0];
        let known = value["verdict"] == "known";
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Reported {
            frame: text(&value["frame"]),
            trigger: text(&value["trigger"]),
            sku: known.then(|| text(&top["sku"])),
            distance: top["distance"].as_u64(),
            hits: value["hits"]
                .as_array()
                .map(|hits| {
                    hits.iter()
                        .map(|h| (text(&h["sku"]), h["distance"].as_u64().unwrap_or(u64::MAX)))
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
        }
    }
}

/// The flags of `lookupd run` after `run`: the bundle, three hits per report, and `flags` (the
/// camera, the triggers, ...).
pub fn run_args(bundle: &str, flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--bundle", bundle, "--k", "3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(flags.iter().map(|s| s.to_string()));
    args
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
    let bundle = bundle.to_str().context("a non-UTF-8 bundle path")?;
    let mut command = Command::new(lookupd);
    command.args(run_args(
        bundle,
        &[
            "--camera",
            &camera,
            "--trigger",
            "stdin",
            "--runtime",
            runtime,
        ],
    ));
    command.env("LOOKUPD_LOG", "warn");
    lookup_session(command, triggers, &mut StdinPresses, on_line)
}

/// What presses the button in a [`lookup_session`]: a script on lookupd's stdin, a person at
/// the rig, or a simulated GPIO line.
pub trait Button {
    /// Makes (or asks for) the press of lookup `n` (from 0) of `count`; `stdin` is lookupd's.
    fn press(&mut self, n: usize, count: usize, stdin: &mut dyn Write) -> Result<()>;
    /// Called once that press's lookup is reported: a held button is let go here.
    fn release(&mut self) -> Result<()> {
        Ok(())
    }
    /// The longest wait for the report of one press.
    fn timeout(&self) -> Duration;
    /// The error when press `n` got no report within [`Button::timeout`].
    fn no_report(&self, n: usize) -> String {
        format!(
            "no lookup report within {} s of press {}",
            self.timeout().as_secs(),
            n + 1
        )
    }
    /// Whether the presses arrive on a GPIO line: a fault of lookupd's trigger (it cannot open
    /// the line) then ends the session at once.
    fn is_gpio(&self) -> bool {
        false
    }
}

/// The scripted button: an empty line on lookupd's stdin per press.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdinPresses;

impl Button for StdinPresses {
    fn press(&mut self, _: usize, _: usize, stdin: &mut dyn Write) -> Result<()> {
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }
    fn timeout(&self) -> Duration {
        // Generous: the first lookup of a cold start on a busy machine, or over ssh.
        Duration::from_secs(300)
    }
}

/// How long lookupd may take to open its bundle and start, and to stop once its input ends.
const START_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills the child unless the session ended normally (an error or a panic on the way).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a `lookupd run` session: `command` starts it (here, or on a device through `ssh`; its
/// stdin and stdout are piped to this process), `button` makes `presses` lookups happen like a
/// person would, each only once the previous one is reported (so each report's total is trigger
/// to report, not time in a queue), then lookupd's input is closed, which stops it (its
/// trigger list must hold `stdin`). `on_line` sees every line lookupd prints, as it comes.
/// Returns every lookup reported, including any beyond `presses` (a bouncing real button).
pub fn lookup_session(
    mut command: Command,
    presses: usize,
    button: &mut dyn Button,
    mut on_line: impl FnMut(&Value),
) -> Result<Vec<Reported>> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let mut stdin = child.stdin.take().context("lookupd's stdin")?;
    let stdout = child.stdout.take().context("lookupd's stdout")?;
    let mut running = Running(Some(child));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The next line as JSON: `Ok(None)` at the end of lookupd's output, `Err(None)` when
    // nothing came within `timeout`, `Err(Some(error))` for a line that is not JSON.
    let next = |timeout: Duration| -> std::result::Result<Option<Value>, Option<anyhow::Error>> {
        match lines.recv_timeout(timeout) {
            Ok(Ok(line)) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| Some(anyhow::anyhow!("lookupd printed {line:?}: {e}"))),
            Ok(Err(e)) => Err(Some(anyhow::anyhow!("reading lookupd's output: {e}"))),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(None),
        }
    };
    let or_timeout = |error: Option<anyhow::Error>, message: String| match error {
        Some(error) => error,
        None => anyhow::anyhow!(message),
    };

    // Pressing before lookupd watches its triggers would lose a real press.
    loop {
        let value = next(START_TIMEOUT).map_err(|e| {
            or_timeout(e, format!("lookupd did not start within {START_TIMEOUT:?}"))
        })?;
        let Some(value) = value else {
            bail!("lookupd ended before starting: {}", ended(&mut running));
        };
        on_line(&value);
        if value["event"] == "started" {
            break;
        }
    }
    let mut reports = Vec::new();
    for n in 0..presses {
        button.press(n, presses, &mut stdin)?;
        loop {
            let value = next(button.timeout()).map_err(|e| or_timeout(e, button.no_report(n)))?;
            let Some(value) = value else {
                bail!(
                    "lookupd ended after {n} of {presses} lookups: {}",
                    ended(&mut running)
                );
            };
            on_line(&value);
            if value["event"] == "lookup" {
                reports.push(Reported::of(&value));
                break;
            }
            if value["event"] == "fault" {
                if value["source"] == "lookup" {
                    // A lookup that failed still answers its press.
                    break;
                }
                if value["source"] == "trigger" && button.is_gpio() {
                    bail!("lookupd cannot watch the button: {}", value["message"]);
                }
            }
        }
        button.release()?;
    }
    // The end of input stops the loop.
    drop(stdin);
    loop {
        let value = next(STOP_TIMEOUT).map_err(|e| {
            let why = format!("lookupd did not stop within {STOP_TIMEOUT:?} of its input ending");
            or_timeout(e, why)
        })?;
        let Some(value) = value else { break };
        on_line(&value);
        if value["event"] == "lookup" {
            reports.push(Reported::of(&value));
        }
    }
    let mut child = running.0.take().context("lookupd's process")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("lookupd run exited with {status}");
    }
    Ok(reports)
}

/// How the process of a session that ended early ended.
fn ended(running: &mut Running) -> String {
    match running.0.take().map(|mut c| c.wait()) {
        Some(Ok(status)) => format!("it exited with {status}"),
        Some(Err(e)) => format!("waiting for it failed: {e}"),
        None => "it is gone".into(),
    }
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
