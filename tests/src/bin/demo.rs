//! `cargo demo`: the product on built-in defaults, no camera, GPU or dataset needed.
//!
//! Fetches the pretrained weights if missing, synthesises a retail catalogue, measures the
//! ImageNet-only backbone on the unseen half, fine-tunes on the other half, exports the bundle,
//! enrols the catalogue shots of every item (the unseen half included), then runs `lookupd run`
//! with the replay camera over camera shots of unseen items and a scripted trigger, printing
//! each lookup as it happens and a summary. `--bigger` makes it larger.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use system_tests::pipeline::{
    Reported, STAGES, expected_sku, json_of, lookup_run, read_list, run_tool, stage_frames,
    stage_stats,
};

#[derive(Debug, Parser)]
#[command(
    name = "demo",
    about = "The product-lookup appliance, end to end, on built-in defaults"
)]
struct Args {
    /// Work directory (catalogue, run, bundle, frames); replaced parts are regenerated.
    #[arg(long, default_value = "target/demo")]
    out: PathBuf,
    /// Products in the synthetic catalogue (half train, half unseen).
    #[arg(long)]
    items: Option<usize>,
    /// Camera shots per product.
    #[arg(long)]
    views: Option<usize>,
    /// Training epochs, the first a warm-up (head and proxies only).
    #[arg(long)]
    epochs: Option<usize>,
    /// Steps per epoch.
    #[arg(long)]
    steps_per_epoch: Option<usize>,
    /// A larger catalogue and longer training (about four times the default's work).
    #[arg(long)]
    bigger: bool,
    /// Where lookupd runs the model: auto (GPU if present, else CPU), gpu or cpu.
    #[arg(long, default_value = "auto")]
    runtime: String,
    /// Print the summary as one JSON object too.
    #[arg(long)]
    json: bool,
}

/// Sizes of the default demo (under 10 minutes on a 2-core CPU once built) and of `--bigger`.
struct Scale {
    items: usize,
    views: usize,
    epochs: usize,
    steps_per_epoch: usize,
    /// Epochs between learning-rate drops (x0.1).
    lr_step: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = if args.bigger {
        Scale {
            items: 100,
            views: 8,
            epochs: 10,
            steps_per_epoch: 30,
            lr_step: 8,
        }
    } else {
        Scale {
            items: 40,
            views: 6,
            epochs: 8,
            steps_per_epoch: 12,
            lr_step: 6,
        }
    };
    let epochs = args.epochs.unwrap_or(base.epochs).max(2);
    let scale = Scale {
        items: args.items.unwrap_or(base.items),
        views: args.views.unwrap_or(base.views),
        epochs,
        steps_per_epoch: args.steps_per_epoch.unwrap_or(base.steps_per_epoch),
        lr_step: base.lr_step.min(epochs - 1),
    };
    let (trainer, lookupd) = binaries()?;
    // The demo's own time, the build excluded.
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let out = args.out.canonicalize()?;
    let (catalogue, run_dir, bundle, frames) = (
        out.join("catalogue"),
        out.join("run"),
        out.join("bundle"),
        out.join("frames"),
    );
    let data = format!("folder:{}", catalogue.display());
    let path = |p: &Path| p.to_str().map(str::to_owned).context("a non-UTF-8 path");

    step(&format!(
        "1/6 synthesising {} products, {} camera shots each",
        scale.items, scale.views
    ));
    run_tool(
        &trainer,
        &[
            "synth",
            "--out",
            &path(&catalogue)?,
            "--items",
            &scale.items.to_string(),
            "--views",
            &scale.views.to_string(),
            "--seed",
            "7",
            "--size",
            "160",
            "--json",
        ],
    )?;

    step("2/6 the ImageNet-only backbone on the unseen half (the baseline)");
    let image = ["--image-size", "128", "--resize", "146"];
    let mut eval_args = vec![
        "eval",
        "--pretrained",
        "efficientnet-lite0",
        "--data",
        &data,
    ];
    eval_args.extend(image);
    eval_args.push("--json");
    let pretrained = json_of(&run_tool(&trainer, &eval_args)?)?;
    println!("   {}", recall_line(&pretrained));

    step(&format!(
        "3/6 fine-tuning EfficientNet-Lite0 with NormSoftmax on the seen half ({} epochs x {} steps of 40 images, the first a warm-up)",
        scale.epochs, scale.steps_per_epoch
    ));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    let (epochs, steps, lr_step) = (
        scale.epochs.to_string(),
        scale.steps_per_epoch.to_string(),
        scale.lr_step.to_string(),
    );
    let mut train_args = vec![
        "train",
        "--data",
        &data,
        "--out",
        run_dir.to_str().context("run dir")?,
        "--epochs",
        &epochs,
        "--warmup-epochs",
        "1",
        "--steps-per-epoch",
        &steps,
        "--lr-step",
        &lr_step,
        "--batch",
        "40",
        "--images-per-class",
        "5",
        "--no-eval",
    ];
    train_args.extend(image);
    run_streaming(&trainer, &train_args)?;
    let tuned = json_of(&run_tool(
        &trainer,
        &["eval", run_dir.to_str().context("run dir")?, "--json"],
    )?)?;
    println!("   {}", recall_line(&tuned));

    step("4/6 exporting the bundle (model.onnx checked against the trained model)");
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)?;
    }
    run_tool(
        &trainer,
        &["export", &path(&run_dir)?, "--out", &path(&bundle)?],
    )?;

    step("5/6 enrolling the catalogue shot of every product, the unseen half included");
    let list = catalogue.join("catalogue.tsv");
    let enrolled = json_of(&run_tool(
        &trainer,
        &[
            "gallery",
            "--bundle",
            &path(&bundle)?,
            "--images",
            &path(&list)?,
            "--runtime",
            "cpu",
        ],
    )?)?;
    println!("   {} items in the gallery", enrolled["items"]);

    let shots = read_list(&catalogue, "queries.tsv")?;
    step(&format!(
        "6/6 lookupd run: replay camera over {} camera shots of unseen products, a scripted button",
        shots.len()
    ));
    stage_frames(&shots, &frames, 11)?;
    let reports = lookup_run(
        &lookupd,
        &bundle,
        &frames,
        shots.len(),
        &args.runtime,
        print_line,
    )?;
    let summary = summarise(&reports, &pretrained, &tuned, started);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if reports.len() != shots.len() {
        bail!(
            "{} lookups reported for {} triggers",
            reports.len(),
            shots.len()
        );
    }
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// The trainer and lookupd binaries beside this one, built first (release) when run by cargo.
fn binaries() -> Result<(PathBuf, PathBuf)> {
    if let Ok(cargo) = std::env::var("CARGO") {
        step("building trainer and lookupd (release; the first time takes a while)");
        // Without V4L2 (the demo replays files): the build then needs no libclang, so the demo
        // runs on a fresh machine with nothing installed.
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "trainer", "-p", "lookupd"])
            .arg("--no-default-features")
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p trainer -p lookupd --no-default-features failed");
        }
    }
    let dir = std::env::current_exe()?
        .parent()
        .context("the demo's directory")?
        .to_path_buf();
    let (trainer, lookupd) = (dir.join("trainer"), dir.join("lookupd"));
    for b in [&trainer, &lookupd] {
        if !b.exists() {
            bail!(
                "{} is missing: run the demo with `cargo demo` (it builds it)",
                b.display()
            );
        }
    }
    Ok((trainer, lookupd))
}

/// Runs a tool with its progress on the terminal.
fn run_streaming(program: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| program.display().to_string())?;
    if !status.success() {
        bail!("{} {} failed ({status})", program.display(), args.join(" "));
    }
    Ok(())
}

/// Recall@1 of a `trainer eval` report, `kind` being float or binary.
fn r1(eval: &Value, kind: &str) -> f64 {
    eval[kind]["recall_at_k"]["1"].as_f64().unwrap_or(f64::NAN)
}

fn recall_line(eval: &Value) -> String {
    format!(
        "unseen products: R@1 {:.3} (float), {:.3} (binary codes); MAP@R {:.3}",
        r1(eval, "float"),
        r1(eval, "binary"),
        eval["float"]["map_at_r"].as_f64().unwrap_or(f64::NAN)
    )
}

fn print_line(line: &Value) {
    match line["event"].as_str() {
        Some("lookup") => {
            let frame = line["frame"].as_str().unwrap_or("?");
            let want = expected_sku(frame).unwrap_or("?");
            let top = &line["hits"][0];
            let got = top["sku"].as_str().unwrap_or("-");
            let mark = if got == want { "ok " } else { "MISS" };
            let t = &line["timings_us"];
            println!(
                "   [{mark}] {frame:<44} -> {got:<28} d={:<4} infer {:>6.1} ms  total {:>6.1} ms",
                top["distance"],
                t["infer"].as_f64().unwrap_or(0.0) / 1e3,
                t["total"].as_f64().unwrap_or(0.0) / 1e3,
            );
        }
        Some("started") => println!(
            "   lookupd: {} items, model on {}",
            line["items"], line["backend"]
        ),
        Some("fault") => println!("   fault ({}): {}", line["source"], line["message"]),
        _ => {}
    }
}

fn summarise(reports: &[Reported], pretrained: &Value, tuned: &Value, started: Instant) -> Value {
    let correct = reports.iter().filter(|r| r.correct()).count();
    let accuracy = correct as f64 / reports.len().max(1) as f64;
    step("summary");
    println!(
        "   lookupd top-1 on unseen products: {correct}/{} = {accuracy:.3}",
        reports.len()
    );
    println!(
        "   R@1 on unseen products, ImageNet-only backbone: {:.3} float, {:.3} binary",
        r1(pretrained, "float"),
        r1(pretrained, "binary")
    );
    println!(
        "   R@1 on unseen products, fine-tuned (NormSoftmax): {:.3} float, {:.3} binary",
        r1(tuned, "float"),
        r1(tuned, "binary")
    );
    println!("   latency per stage (us)      mean      p50      p95      max");
    let mut stages = serde_json::Map::new();
    for stage in STAGES {
        let s = stage_stats(reports, stage);
        println!(
            "   {stage:<24} {:>8} {:>8} {:>8} {:>8}",
            s.mean, s.p50, s.p95, s.max
        );
        stages.insert(
            stage.to_string(),
            serde_json::to_value(s).unwrap_or_default(),
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("   demo time: {elapsed:.0} s");
    json!({
        "lookups": reports.len(),
        "top1_correct": correct,
        "top1_accuracy": accuracy,
        "recall_at_1": {
            "pretrained": {"float": r1(pretrained, "float"), "binary": r1(pretrained, "binary")},
            "fine_tuned": {"float": r1(tuned, "float"), "binary": r1(tuned, "binary")},
        },
        "latency_us": stages,
        "seconds": elapsed,
    })
}
