//! `lookupd query`, `lookupd selftest` and `lookupd enroll`: the appliance library
//! (`lookupd::Appliance`, `lookupd::selftest`) from the shell.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use infer::Backend;
use lookupd::{Appliance, EnrolItem, Lookup};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The bundle directory (manifest.toml, model.onnx, gallery.gal, labels.tsv).
    #[arg(long)]
    bundle: PathBuf,
    /// Images to name (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Nearest items reported per image (1 to 1000).
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// One JSON object per image and line: {"image", "hits": [{"id", "sku", "distance"}],
    /// "verdict", "timings_us"}.
    #[arg(long)]
    json: bool,
    /// Where the model runs: auto (GPU when a hardware adapter exists, else CPU), gpu or cpu.
    #[arg(long, default_value_t = Backend::Auto)]
    runtime: Backend,
    /// Hamming distance beyond which the top hit is reported as unknown (default: none).
    #[arg(long)]
    max_distance: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// The bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// Where the model runs: auto, gpu or cpu.
    #[arg(long, default_value_t = Backend::Auto)]
    runtime: Backend,
    /// Print the report as one JSON object: {"ok", "bundle", "backend", "checks": [{"name",
    /// "ok", "detail"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// The SKU or product name the images show (one new item per image).
    #[arg(long)]
    sku: String,
    /// Photographs of the product (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Where the model runs: auto, gpu or cpu.
    #[arg(long, default_value_t = Backend::Auto)]
    runtime: Backend,
}

fn open(bundle: &Path, runtime: Backend) -> Result<Appliance> {
    Appliance::open(bundle, runtime, 1)
        .with_context(|| format!("bundle {} refused", bundle.display()))
}

fn read_image(path: &Path) -> Result<image::DynamicImage> {
    image::ImageReader::open(path)
        .with_context(|| format!("opening image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading image {}", path.display()))?
        .decode()
        .with_context(|| format!("decoding image {}", path.display()))
}

#[derive(Serialize)]
struct JsonHit<'a> {
    id: u64,
    sku: &'a str,
    distance: u32,
}

#[derive(Serialize)]
struct JsonLookup<'a> {
    image: String,
    hits: Vec<JsonHit<'a>>,
    verdict: &'static str,
    timings_us: lookupd::StageTimings,
}

fn print_lookup(image: &Path, lookup: &Lookup<'_>, json: bool) -> Result<()> {
    if json {
        let line = JsonLookup {
            image: image.display().to_string(),
            hits: lookup
                .hits()
                .map(|h| JsonHit {
                    id: h.id,
                    sku: h.sku,
                    distance: h.distance,
                })
                .collect(),
            verdict: lookup.verdict.as_str(),
            timings_us: lookup.timings,
        };
        println!("{}", serde_json::to_string(&line)?);
    } else {
        let hits: Vec<String> = lookup
            .hits()
            .map(|h| format!("{} (id {}) @{}", h.sku, h.id, h.distance))
            .collect();
        let t = lookup.timings;
        println!(
            "{}: {}: {}  [preprocess {} us, infer {} us, search {} us]",
            image.display(),
            lookup.verdict.as_str(),
            hits.join(", "),
            t.preprocess,
            t.infer,
            t.search
        );
    }
    Ok(())
}

pub fn query(args: QueryArgs) -> Result<ExitCode> {
    let mut appliance = open(&args.bundle, args.runtime)?.with_max_distance(args.max_distance);
    for path in &args.images {
        let image = read_image(path)?;
        let lookup = appliance
            .lookup_image(&image, args.k)
            .with_context(|| format!("looking up {}", path.display()))?;
        print_lookup(path, &lookup, args.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn selftest(args: SelftestArgs) -> Result<ExitCode> {
    let report = lookupd::selftest(&args.bundle, args.runtime);
    let passed = report.passed();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = serde_json::Value::Bool(passed);
        println!("{}", serde_json::to_string(&value)?);
    } else {
        for c in &report.checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!(
            "selftest of {}: {}",
            args.bundle.display(),
            if passed { "passed" } else { "FAILED" }
        );
    }
    for c in report.failures() {
        tracing::error!(check = c.name, "{}", c.detail);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn enroll(args: EnrollArgs) -> Result<ExitCode> {
    let images = args
        .images
        .iter()
        .map(|p| read_image(p))
        .collect::<Result<Vec<_>>>()?;
    let sources: Vec<String> = args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let items: Vec<EnrolItem<'_>> = images
        .iter()
        .zip(&sources)
        .map(|(image, source)| EnrolItem {
            sku: &args.sku,
            source,
            image,
        })
        .collect();
    let mut appliance = open(&args.bundle, args.runtime)?;
    let ids = appliance
        .enroll_items(&items)
        .with_context(|| format!("enrolling into {}", args.bundle.display()))?;
    for (path, id) in args.images.iter().zip(&ids) {
        println!("{}: enrolled as item {id} ({})", path.display(), args.sku);
    }
    Ok(ExitCode::SUCCESS)
}
