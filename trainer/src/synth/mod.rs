//! `trainer synth`: a synthetic retail catalogue, so that the demo and the whole-system tests
//! need no dataset.
//!
//! Layout of the output directory (the `folder` dataset layout, one sub-folder per item, the
//! folder name being both the class and the SKU):
//!
//! ```text
//! DIR/synth.json            parameters, seed, counts, the glyphs used, every product
//! DIR/split.txt             `train SKU` for the first half of the items, `test SKU` for the rest
//! DIR/catalogue.tsv         `SKU<TAB>SKU/catalogue.png` for every item (`trainer gallery --images`)
//! DIR/queries.tsv           `SKU<TAB>SKU/view-NN.png` for the camera shots of the test items
//! DIR/0001-brand-variant/catalogue.png, view-01.png .. view-VV.png
//! ```
//!
//! The train half is the first ceil(N/2) items in SKU order, the same as the folder loader's
//! default split, so `folder:DIR` with or without `split.txt` sees the same classes.
//!
//! Everything is a pure function of (seed, item, shot) and of the glyphs used (recorded in
//! synth.json): the same seed and fonts give byte-identical files, in any thread count.

mod paint;
mod product;
mod scene;
mod text;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

use paint::mix64;
use scene::Product;
pub use text::Glyphs;

/// Image side limits: below 32 px nothing is recognisable; above 1024 px the files only grow.
pub const MIN_SIZE: u32 = 32;
pub const MAX_SIZE: u32 = 1024;
/// Views are numbered with two digits.
pub const MAX_VIEWS: usize = 99;
pub const MAX_ITEMS: usize = 100_000;

/// What marks a directory as this command's output (and so safe to regenerate).
const GENERATOR: &str = "trainer synth";
const FORMAT: u32 = 1;
const MANIFEST: &str = "synth.json";
const TOP_FILES: [&str; 4] = [MANIFEST, "split.txt", "catalogue.tsv", "queries.tsv"];

/// Everything that can go wrong while synthesising.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Argument(String),
    /// The output directory cannot be used (not empty and not a previous synth output, ...).
    #[error("{}: {reason}", path.display())]
    OutDir { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot write image: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("font {}: {reason}", path.display())]
    Font { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which glyphs print the product names.
#[derive(Debug, Clone, Default)]
pub enum FontChoice {
    /// DejaVu from the usual system folders, bar patterns if none is installed.
    #[default]
    System,
    File(PathBuf),
    /// Bar patterns only: the same output on every machine.
    Bars,
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub items: usize,
    pub views: usize,
    pub seed: u64,
    pub size: u32,
    pub font: FontChoice,
    /// Draw a progress bar on stderr (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

impl SynthOptions {
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Argument(m));
        if !(2..=MAX_ITEMS).contains(&self.items) {
            return bad(format!(
                "--items must be between 2 and {MAX_ITEMS} (one item to train on, one unseen), got {}",
                self.items
            ));
        }
        if !(1..=MAX_VIEWS).contains(&self.views) {
            return bad(format!(
                "--views must be between 1 and {MAX_VIEWS}, got {}",
                self.views
            ));
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return bad(format!(
                "--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {}",
                self.size
            ));
        }
        Ok(())
    }
}

/// One item as listed in synth.json.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ItemInfo {
    pub sku: String,
    pub brand: String,
    pub variant: String,
    pub shape: String,
    pub pattern: String,
    pub split: String,
}

/// The content of synth.json.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub format: u32,
    /// False while the files are being written: a crashed run is recognisable.
    pub complete: bool,
    pub seed: u64,
    pub items: usize,
    pub views: usize,
    pub size: u32,
    pub train_items: usize,
    pub test_items: usize,
    pub images: usize,
    pub glyphs: String,
    pub products: Vec<ItemInfo>,
}

/// What `synthesize` did (printed by `trainer synth --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthReport {
    pub out: PathBuf,
    pub items: usize,
    pub views: usize,
    pub size: u32,
    pub seed: u64,
    pub train_items: usize,
    pub test_items: usize,
    pub images: usize,
    pub glyphs: String,
    pub seconds: f64,
}

/// The folder name of item `index` (0-based): a zero-padded number, so that sorted names are
/// item order, then the product's name for people reading lookup results.
fn sku(index: usize, items: usize, brand: &str, variant: &str) -> String {
    let width = items.to_string().len().max(4);
    let slug: String = format!("{brand}-{variant}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{:0width$}-{slug}", index + 1)
}

fn view_name(view: usize) -> String {
    format!("view-{:02}.png", view + 1)
}

/// Writes the catalogue described by `options`. See the module documentation for the layout.
pub fn synthesize(options: &SynthOptions) -> Result<SynthReport, SynthError> {
    options.validate()?;
    let start = Instant::now();
    let glyphs = match &options.font {
        FontChoice::System => Glyphs::system(),
        FontChoice::File(path) => Glyphs::from_file(path)?,
        FontChoice::Bars => Glyphs::Bars,
    };
    prepare_out(&options.out)?;

    let (n, views, size) = (options.items, options.views, options.size as usize);
    let mut design_rng = StdRng::seed_from_u64(mix64(options.seed ^ 0xD351_6E00));
    let designs = product::designs(&mut design_rng, n);
    let train_items = n.div_ceil(2);
    let products: Vec<ItemInfo> = designs
        .iter()
        .enumerate()
        .map(|(i, d)| ItemInfo {
            sku: sku(i, n, &d.brand, &d.variant),
            brand: d.brand.clone(),
            variant: d.variant.clone(),
            shape: format!("{:?}", d.geometry.shape).to_ascii_lowercase(),
            pattern: d.pattern.name().into(),
            split: if i < train_items { "train" } else { "test" }.into(),
        })
        .collect();
    let mut manifest = Manifest {
        generator: GENERATOR.into(),
        format: FORMAT,
        complete: false,
        seed: options.seed,
        items: n,
        views,
        size: options.size,
        train_items,
        test_items: n - train_items,
        images: n * (views + 1),
        glyphs: glyphs.describe(),
        products,
    };
    write_manifest(&options.out, &manifest)?;
    tracing::info!(
        "synthesising {n} items x ({views} camera shots + 1 catalogue shot) at {size} px into {} (glyphs: {})",
        options.out.display(),
        manifest.glyphs
    );

    let progress = if options.progress {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    designs
        .into_par_iter()
        .zip(manifest.products.par_iter())
        .enumerate()
        .try_for_each(|(i, (design, info))| {
            let dir = options.out.join(&info.sku);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // Twice the output resolution: the shots sample it at 2x2 points per pixel.
            let texture = design.render(&glyphs, 2 * size);
            let item = Product { design, texture };
            write_png(
                &dir.join("catalogue.png"),
                &scene::catalogue_shot(&item, size),
            )?;
            // Each shot has its own stream, so shots never depend on one another or on
            // the order the thread pool runs them in.
            (0..views).into_par_iter().try_for_each(|v| {
                let stream = mix64(options.seed ^ mix64((i as u64) << 8 | (v as u64 + 1)));
                let mut rng = StdRng::seed_from_u64(stream);
                let shot = scene::camera_shot(&item, size, &glyphs, &mut rng);
                write_png(&dir.join(view_name(v)), &shot)
            })?;
            progress.inc(1);
            Ok::<(), SynthError>(())
        })?;
    progress.finish_and_clear();

    let mut split = String::new();
    let mut catalogue = String::new();
    let mut queries = String::new();
    for info in &manifest.products {
        split.push_str(&format!("{} {}\n", info.split, info.sku));
        catalogue.push_str(&format!("{0}\t{0}/catalogue.png\n", info.sku));
        if info.split == "test" {
            for v in 0..views {
                queries.push_str(&format!("{0}\t{0}/{1}\n", info.sku, view_name(v)));
            }
        }
    }
    write_text(&options.out.join("split.txt"), &split)?;
    write_text(&options.out.join("catalogue.tsv"), &catalogue)?;
    write_text(&options.out.join("queries.tsv"), &queries)?;
    manifest.complete = true;
    write_manifest(&options.out, &manifest)?;

    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        "wrote {} images in {seconds:.1} s: {} train items, {} unseen test items",
        manifest.images,
        manifest.train_items,
        manifest.test_items
    );
    Ok(SynthReport {
        out: options.out.clone(),
        items: n,
        views,
        size: options.size,
        seed: options.seed,
        train_items: manifest.train_items,
        test_items: manifest.test_items,
        images: manifest.images,
        glyphs: manifest.glyphs,
        seconds,
    })
}

fn write_text(path: &Path, text: &str) -> Result<(), SynthError> {
    std::fs::write(path, text).map_err(io_err(path))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), SynthError> {
    let path = dir.join(MANIFEST);
    let mut text = serde_json::to_string_pretty(manifest).map_err(|e| SynthError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    text.push('\n');
    write_text(&path, &text)
}

fn write_png(path: &Path, image: &image::RgbImage) -> Result<(), SynthError> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let mut writer = std::io::BufWriter::new(file);
    PngEncoder::new_with_quality(&mut writer, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| SynthError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    writer.flush().map_err(io_err(path))
}

/// Makes `out` ready: created if missing, used if empty, cleared if it holds exactly a
/// previous synth output. Anything else is refused rather than deleted.
fn prepare_out(out: &Path) -> Result<(), SynthError> {
    let refuse = |reason: String| {
        Err(SynthError::OutDir {
            path: out.to_path_buf(),
            reason,
        })
    };
    if !out.exists() {
        return std::fs::create_dir_all(out).map_err(io_err(out));
    }
    if !out.is_dir() {
        return refuse("exists and is not a directory".into());
    }
    let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(out)
        .map_err(io_err(out))?
        .collect::<Result<_, _>>()
        .map_err(io_err(out))?;
    if entries.is_empty() {
        return Ok(());
    }
    let manifest_path = out.join(MANIFEST);
    let previous: Manifest = match std::fs::read_to_string(&manifest_path)
        .ok()
        .and_then(|text| serde_json::from_str::<Manifest>(&text).ok())
    {
        Some(m) if m.generator == GENERATOR => m,
        _ => {
            return refuse(format!(
                "not empty and not a previous `{GENERATOR}` output (no valid {MANIFEST}); \
                 choose an empty or new directory"
            ));
        }
    };
    // Check everything before deleting anything.
    let mut doomed = Vec::new();
    for entry in &entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if TOP_FILES.contains(&name.as_str()) && path.is_file() {
            doomed.push((path, false));
        } else if path.is_dir() && previous.products.iter().any(|p| p.sku == name) {
            for file in std::fs::read_dir(&path).map_err(io_err(&path))? {
                let file = file.map_err(io_err(&path))?;
                let file_name = file.file_name().to_string_lossy().into_owned();
                let ours = file_name == "catalogue.png"
                    || (file_name.starts_with("view-") && file_name.ends_with(".png"));
                if !ours || !file.path().is_file() {
                    return refuse(format!(
                        "holds {} which `{GENERATOR}` did not write; refusing to replace the directory",
                        file.path().display()
                    ));
                }
            }
            doomed.push((path, true));
        } else {
            return refuse(format!(
                "holds {name:?} which the previous `{GENERATOR}` output did not write; \
                 refusing to replace the directory"
            ));
        }
    }
    tracing::info!("replacing the previous synth output in {}", out.display());
    for (path, is_dir) in doomed {
        if is_dir {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}
