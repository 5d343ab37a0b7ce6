//! Turns a training run into what the device consumes: the bundle's model and manifest
//! (`trainer export`) and its gallery of catalogue codes (`trainer gallery`), computed by
//! firmware/infer on the exported model with the device's own preprocessing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bundle::{
    LabelRow, Labels, Manifest, ModelSpec, PreprocessSpec, Preprocessor, Provenance, SelfTest,
};
use burn::module::Module;
use burn::tensor::Tensor;

use crate::config::TrainConfig;
use crate::data::{Loader, LoaderOptions, Preprocess};
use crate::export;
use crate::model::EmbeddingModel;
use crate::train::{self, MetricsLine};

/// Images for the export check: up to this many readable test images of the run's data.
const CHECK_IMAGES: usize = 4;

/// What `export_run` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    pub bundle: std::path::PathBuf,
    pub epoch: usize,
    pub check_images: usize,
    /// Largest difference between tract's and burn's embeddings, relative to the largest value.
    pub relative_difference: f32,
    pub model_sha256: String,
}

/// Runs `images` (n NCHW images of `side` pixels) through the burn model and through the ONNX
/// bytes on tract; fails, saying by how much, when they differ by more than
/// [`export::CHECK_TOLERANCE`] relative to the largest value. Returns the difference.
pub fn check_export(
    model: &EmbeddingModel,
    onnx: &[u8],
    images: &[f32],
    n: usize,
    side: usize,
) -> Result<f32> {
    // The images go where the model's weights are (Flex when published, any backend in tests).
    let device = model
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(burn::tensor::Device::flex);
    let input = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(images.to_vec(), [n, 3, side, side]),
        &device,
    );
    let expected: Vec<f32> = model
        .embed(input)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|error| anyhow::anyhow!("reading burn's embeddings: {error:?}"))?;
    let actual = export::run_with_tract(onnx, images, n, side)?;
    if actual.len() != expected.len() {
        bail!(
            "the exported model gives {} values for {n} images, burn {}",
            actual.len(),
            expected.len()
        );
    }
    let difference = export::relative_difference(&actual, &expected);
    if difference.is_nan() || difference > export::CHECK_TOLERANCE {
        bail!(
            "export check failed: on {n} images the ONNX model (tract) differs from the burn model by {difference:.3e} relative to the largest value (allowed {:e}); nothing was written",
            export::CHECK_TOLERANCE
        );
    }
    Ok(difference)
}

/// `trainer export`: the run's model as `model.onnx` plus `manifest.toml` in `out`, after
/// checking on real images that tract computes what burn computes.
pub fn export_run(run: &Path, checkpoint: Option<usize>, out: &Path) -> Result<ExportReport> {
    let device = burn::tensor::Device::flex();
    let (config, model, epoch) = train::load_model(run, checkpoint, &device)?;
    let model = burn::module::Module::valid(&model);
    let side = config.image_size as usize;
    let onnx = export::to_onnx(&model, side, env!("CARGO_PKG_VERSION"))?;

    // The check: real images through both.
    let dataset = crate::data::load(&train::data_spec(&config)?)?;
    let preprocess = Preprocess::new(config.image_size, config.resize)?;
    let mut loader = Loader::eval(
        std::sync::Arc::new(dataset.test),
        preprocess,
        CHECK_IMAGES,
        LoaderOptions::default(),
    )?;
    let batch = loader
        .next()
        .context("the run's test split has no readable image for the export check")?;
    let n = batch.len();
    let difference = check_export(&model, &onnx, &batch.images, n, side)?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let model_path = out.join(bundle::MODEL_FILE);
    export::write(&model_path, &onnx)?;
    let manifest = manifest_for(run, &config, epoch, out)?;
    manifest
        .write(out)
        .with_context(|| format!("writing the manifest into {}", out.display()))?;
    Ok(ExportReport {
        bundle: out.to_owned(),
        epoch,
        check_images: n,
        relative_difference: difference,
        model_sha256: manifest.files[bundle::MODEL_FILE].sha256.clone(),
    })
}

/// The self-test's tolerance: this share of the code's bits may differ between the trainer's
/// CPU run and the device (GPU floats differ a little near zero).
const SELFTEST_TOLERANCE: f64 = 0.02;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The manifest of a freshly exported model (already written to `out/model.onnx`).
fn manifest_for(run: &Path, config: &TrainConfig, epoch: usize, out: &Path) -> Result<Manifest> {
    let metrics = train::read_metrics(run)?
        .into_iter()
        .rev()
        .find_map(|line| match line {
            MetricsLine::Eval { eval, epoch: e, .. } if e <= epoch => Some(eval),
            _ => None,
        })
        .and_then(|eval| bundle::json_to_toml(&eval));
    let mut manifest = Manifest {
        format_version: bundle::FORMAT_VERSION,
        backbone: config.backbone.name().to_owned(),
        model: ModelSpec {
            file: bundle::MODEL_FILE.to_owned(),
            input_name: export::INPUT_NAME.to_owned(),
            output_name: export::OUTPUT_NAME.to_owned(),
            input_size: config.image_size,
            channels: 3,
            embedding_dim: config.embedding_dim as u32,
            code_bits: config.embedding_dim as u32,
            output_l2_normalized: false,
        },
        preprocess: PreprocessSpec::imagenet(config.resize, config.image_size),
        files: Default::default(),
        provenance: Provenance {
            trainer_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_unix: unix_now(),
            dataset: config.data.clone(),
            run: run.display().to_string(),
            epoch: Some(epoch as u32),
            notes: None,
            metrics,
        },
        selftest: None,
    };
    manifest.record_file(out, bundle::MODEL_FILE)?;
    let code = selftest_code(&out.join(bundle::MODEL_FILE), &manifest)?;
    manifest.selftest = Some(SelfTest {
        pattern: bundle::SELFTEST_PATTERN.to_owned(),
        expected_code: bundle::to_hex(&code),
        max_hamming: ((manifest.model.code_bits as f64) * SELFTEST_TOLERANCE).ceil() as u32,
    });
    Ok(manifest)
}

/// The code firmware/infer (on the CPU) gives the built-in self-test pattern.
fn selftest_code(model_path: &Path, manifest: &Manifest) -> Result<Vec<u8>> {
    let mut model = load_infer(model_path, manifest, infer::Backend::Cpu, 1)?;
    let mut preprocessor = Preprocessor::new(manifest.preprocess.clone())?;
    let mut input = vec![0.0; preprocessor.out_len()];
    preprocessor.apply_image(&bundle::selftest_pattern(bundle::SELFTEST_SIDE), &mut input)?;
    let mut code = vec![0u8; manifest.model.code_bits as usize / 8];
    model
        .run_packed(1, &input, &mut code)
        .context("embedding the self-test pattern")?;
    Ok(code)
}

fn load_infer(
    model_path: &Path,
    manifest: &Manifest,
    backend: infer::Backend,
    max_batch: usize,
) -> Result<infer::Model> {
    let side = manifest.model.input_size as usize;
    let options = infer::LoadOptions {
        backend,
        max_batch,
        input_hw: Some((side, side)),
        ..infer::LoadOptions::default()
    };
    infer::Model::load(model_path, &options)
        .with_context(|| format!("loading {}", model_path.display()))
}

/// Where the catalogue images come from.
#[derive(Clone, Debug)]
pub enum Catalogue {
    /// Every image of a dataset (both splits), its class name as the SKU.
    Data(crate::data::DataSpec),
    /// A TSV file of `SKU<TAB>IMAGE PATH` lines (relative paths are taken from the file's folder).
    List(PathBuf),
}

/// What `build_gallery` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GalleryReport {
    pub bundle: PathBuf,
    pub added: usize,
    pub skipped: Vec<String>,
    pub items: usize,
    pub backend: String,
}

/// (SKU, image) pairs of a catalogue.
fn catalogue_items(catalogue: &Catalogue) -> Result<Vec<(String, crate::data::ImageSource)>> {
    match catalogue {
        Catalogue::Data(spec) => {
            let dataset = crate::data::load(spec)?;
            let mut items = Vec::new();
            for split in [&dataset.train, &dataset.test] {
                for sample in &split.samples {
                    items.push((
                        split.class_names[sample.label].clone(),
                        sample.source.clone(),
                    ));
                }
            }
            Ok(items)
        }
        Catalogue::List(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            let mut items = Vec::new();
            for (number, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((sku, image)) = line.split_once('\t') else {
                    bail!(
                        "{}:{}: expected `SKU<TAB>IMAGE PATH`",
                        path.display(),
                        number + 1
                    );
                };
                if sku.is_empty() || image.is_empty() {
                    bail!("{}:{}: empty SKU or image path", path.display(), number + 1);
                }
                items.push((
                    sku.to_owned(),
                    crate::data::ImageSource::File(base.join(image)),
                ));
            }
            Ok(items)
        }
    }
}

/// Images a gallery run embeds at a time (the model's batch).
const GALLERY_BATCH: usize = 16;
/// Images decoded and preprocessed together, in parallel (several batches: a stream).
const GALLERY_CHUNK: usize = 4 * GALLERY_BATCH;

/// A chunk of catalogue images, decoded and preprocessed.
struct PreparedChunk<'a> {
    /// The preprocessed images that decoded, one after the other.
    input: Vec<f32>,
    kept: Vec<&'a (String, crate::data::ImageSource)>,
    /// The images that did not decode (warned about), by their description.
    skipped: Vec<String>,
}

/// Decodes and preprocesses `chunk` on rayon's threads; an image that does not decode is
/// skipped with a warning, as one by one would.
fn prepare_chunk<'a>(
    chunk: &'a [(String, crate::data::ImageSource)],
    spec: &PreprocessSpec,
) -> Result<PreparedChunk<'a>> {
    use rayon::prelude::*;
    let per_image = spec.out_len();
    let mut input = vec![0.0f32; chunk.len() * per_image];
    let decoded: Vec<Result<bool>> = input
        .par_chunks_mut(per_image)
        .zip(chunk.par_iter())
        .map(|(out, (_, source))| match source.decode() {
            Ok(image) => {
                spec.apply_image(&image.to_rgb8(), out)?;
                Ok(true)
            }
            Err(error) => {
                tracing::warn!("{}: skipped: {error}", source.describe());
                Ok(false)
            }
        })
        .collect();
    let (mut kept, mut skipped) = (Vec::new(), Vec::new());
    for (i, (status, item)) in decoded.into_iter().zip(chunk).enumerate() {
        if status? {
            // Kept images move up over the skipped ones: the input stays contiguous.
            let row = kept.len();
            input.copy_within(i * per_image..(i + 1) * per_image, row * per_image);
            kept.push(item);
        } else {
            skipped.push(item.1.describe());
        }
    }
    input.truncate(kept.len() * per_image);
    Ok(PreparedChunk {
        input,
        kept,
        skipped,
    })
}

/// `trainer gallery`: embeds the catalogue with firmware/infer on the bundle's model and
/// writes (or, with `append`, extends) `gallery.gal` and `labels.tsv`, then the manifest's hashes.
pub fn build_gallery(
    dir: &Path,
    catalogue: &Catalogue,
    append: bool,
    backend: infer::Backend,
) -> Result<GalleryReport> {
    let mut manifest = Manifest::read(dir)?;
    manifest.check()?;
    let model_path = dir.join(&manifest.model.file);
    let (model_sha, _) = bundle::sha256_file(&model_path)?;
    let recorded = manifest
        .files
        .get(&manifest.model.file)
        .map(|entry| entry.sha256.clone());
    if recorded.as_deref() != Some(model_sha.as_str()) {
        bail!(
            "{}: its sha256 does not match the manifest; re-export the bundle",
            model_path.display()
        );
    }
    let model_hash: [u8; 32] = bundle::from_hex(&model_sha)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad sha256"))?;
    let gallery_path = dir.join(bundle::GALLERY_FILE);
    let labels_path = dir.join(bundle::LABELS_FILE);
    let code_bits = manifest.model.code_bits;
    let code_bytes = code_bits as usize / 8;

    let (mut labels, mut gallery) = if append && gallery_path.exists() {
        let gallery = gallery::Gallery::open(&gallery_path)?;
        if gallery.model_hash() != &model_hash {
            bail!(
                "{}: built for another model; rebuild it without --append",
                gallery_path.display()
            );
        }
        (Labels::read(&labels_path)?, Some(gallery))
    } else {
        (Labels::new(), None)
    };
    let mut next_id = labels
        .rows()
        .iter()
        .map(|row| row.id + 1)
        .max()
        .unwrap_or(0);

    let items = catalogue_items(catalogue)?;
    if items.is_empty() {
        bail!("the catalogue has no images");
    }
    let spec = manifest.preprocess.clone();
    spec.check()?;
    let mut model = load_infer(&model_path, &manifest, backend, GALLERY_BATCH)?;
    let backend_used = model.backend().to_string();
    let mut codes = Vec::new();
    let mut ids = Vec::new();
    let mut skipped = Vec::new();
    let progress = indicatif::ProgressBar::new(items.len() as u64);
    // One thread decodes and preprocesses the next chunk (its images in parallel) while this
    // one embeds the last: at a GPU's speed, decoding is most of the work.
    std::thread::scope(|scope| -> Result<()> {
        let (chunks_tx, chunks_rx) = std::sync::mpsc::sync_channel(1);
        let (items, spec) = (&items, &spec);
        scope.spawn(move || {
            for chunk in items.chunks(GALLERY_CHUNK) {
                // A send fails once the embedding side stopped (on an error): stop too.
                if chunks_tx.send(prepare_chunk(chunk, spec)).is_err() {
                    break;
                }
            }
        });
        for prepared in chunks_rx {
            let prepared = prepared?;
            progress.inc((prepared.kept.len() + prepared.skipped.len()) as u64);
            skipped.extend(prepared.skipped);
            if prepared.kept.is_empty() {
                continue;
            }
            let start = codes.len();
            codes.resize(start + prepared.kept.len() * code_bytes, 0);
            model
                .run_many_packed(&prepared.input, &mut codes[start..])
                .context("embedding catalogue images")?;
            for (sku, source) in prepared.kept {
                ids.push(next_id);
                labels.push(LabelRow {
                    id: next_id,
                    sku: sku.clone(),
                    source: source.describe(),
                })?;
                next_id += 1;
            }
        }
        Ok(())
    })?;
    progress.finish_and_clear();

    match gallery.as_mut() {
        Some(gallery) => gallery.append(&codes, &ids)?,
        None => {
            // A new gallery is built beside the old one and renamed over it.
            let partial = dir.join(".gallery.gal.partial");
            let _ = std::fs::remove_file(&partial);
            gallery::Gallery::create(&partial, code_bits, model_hash, &codes, &ids)?;
            std::fs::rename(&partial, &gallery_path)
                .with_context(|| format!("replacing {}", gallery_path.display()))?;
        }
    }
    labels.write(&labels_path)?;
    manifest.record_file(dir, bundle::GALLERY_FILE)?;
    manifest.record_file(dir, bundle::LABELS_FILE)?;
    manifest.write(dir)?;
    Ok(GalleryReport {
        bundle: dir.to_owned(),
        added: ids.len(),
        skipped,
        items: labels.len(),
        backend: backend_used,
    })
}
