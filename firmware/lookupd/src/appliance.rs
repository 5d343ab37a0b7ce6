//! [`Appliance`]: an opened, verified bundle, ready to name frames and enrol items.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bundle::{Manifest, Preprocessor};
use gallery::{Gallery, Hit, KnnScratch, MAX_K, Searcher};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::enrol;
use crate::error::{ApplianceError, Result};
use crate::parts;
use crate::skus::{self, SkuTable};

/// One item of a lookup's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupHit<'a> {
    /// The item's id (in the gallery and `labels.tsv`).
    pub id: u64,
    /// Its SKU, from `labels.tsv`.
    pub sku: &'a str,
    /// Hamming distance between the frame's code and the item's.
    pub distance: u32,
    /// The item's row in the gallery file.
    pub row: u64,
}

/// Whether the frame shows a catalogue item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The top hit is within the maximum distance (or no maximum is set).
    Known,
    /// No hit, or the top hit is farther than the maximum distance.
    Unknown,
}

impl Verdict {
    /// `known` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Known => "known",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Wall time of each stage of one lookup, in microseconds.
///
/// On the `cpu` backend `preprocess` is the resize, crop and normalisation (bundle's
/// `Preprocessor`) and `infer` the model run. On the `gpu` backend the frame goes to the GPU as
/// it is and a kernel preprocesses it in the same submit as the network: `preprocess` is then
/// the copy of the frame into the GPU's staging buffer, and the preprocessing kernel's time is
/// inside `infer` (the GPU's kernels are not timed one by one outside `--profile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StageTimings {
    /// Resize, crop and normalise the frame (gpu backend: hand the frame to the GPU).
    pub preprocess: u64,
    /// Run the model and pack the signs of the embedding (upload and read-back included; on
    /// the gpu backend, the preprocessing kernel too).
    pub infer: u64,
    /// Hamming top-k in the gallery, and the labels of the hits.
    pub search: u64,
    /// The whole lookup.
    pub total: u64,
}

/// The result of one lookup: borrowed from the [`Appliance`] until its next call.
#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    found: &'a [Hit],
    skus: &'a SkuTable,
    /// [`Verdict::Unknown`] when there is no hit or the top hit is beyond the maximum distance.
    pub verdict: Verdict,
    /// Per-stage timings.
    pub timings: StageTimings,
    /// The frame's packed code (gallery bit order).
    pub code: &'a [u8],
}

impl<'a> Lookup<'a> {
    /// The `k` nearest items, ordered by (distance, id); fewer if the gallery is smaller.
    pub fn hits(&self) -> impl ExactSizeIterator<Item = LookupHit<'a>> + Clone + use<'a> {
        let skus = self.skus;
        self.found.iter().map(move |h| LookupHit {
            id: h.id,
            sku: skus.get(h.row as usize),
            distance: h.distance,
            row: h.row,
        })
    }

    /// The `i`-th nearest item.
    pub fn hit(&self, i: usize) -> Option<LookupHit<'a>> {
        self.hits().nth(i)
    }

    /// The top hit, unless the verdict is [`Verdict::Unknown`].
    pub fn known(&self) -> Option<LookupHit<'a>> {
        match self.verdict {
            Verdict::Known => self.hit(0),
            Verdict::Unknown => None,
        }
    }
}

/// An opened bundle: the verified manifest, the model loaded on its runtime, the memory-mapped
/// gallery, the labels, and every buffer a lookup needs, allocated once at [`Appliance::open`].
///
/// A lookup ([`Appliance::lookup_rgb8`]) preprocesses the frame into the input buffer, runs the
/// model into the code buffer, searches the gallery and fills the hits buffer; it allocates
/// nothing of its own (the model runtime's own allocations are measured in `tests/no_alloc.rs`).
///
/// One process at a time owns a bundle: [`Appliance::enroll`] writes its files.
#[derive(Debug)]
pub struct Appliance {
    pub(crate) dir: PathBuf,
    pub(crate) manifest: Manifest,
    pub(crate) model: infer::Model,
    pub(crate) preprocessor: Preprocessor,
    /// The same preprocessing for the GPU's frame kernel (used on the gpu backend).
    frame_prep: infer::FramePrep,
    pub(crate) gallery: Gallery,
    pub(crate) searcher: Searcher,
    /// The search's buffers, so that a lookup allocates nothing.
    scratch: KnnScratch,
    /// The SKU of each gallery row.
    pub(crate) skus: SkuTable,
    /// The largest id labelled: enrolled items are numbered after it.
    pub(crate) max_id: Option<u64>,
    /// One preprocessed frame, `3 x size x size` floats.
    pub(crate) input: Vec<f32>,
    /// One packed code, `code_bits / 8` bytes.
    pub(crate) code: Vec<u8>,
    hits: Vec<Hit>,
    max_distance: Option<u32>,
}

impl Appliance {
    /// Opens the bundle in `dir` and refuses to start unless all of it holds:
    ///
    /// 1. an enrolment interrupted by a crash is completed first (see [`crate::enrol`]);
    /// 2. the manifest is valid and every file it lists has its size and sha256
    ///    ([`Manifest::open`]), and it lists the model, `gallery.gal` and `labels.tsv`;
    /// 3. the gallery validates completely, has the manifest's code width, and carries the
    ///    model's sha256 (its codes come from this model);
    /// 4. `labels.tsv` is valid and labels every gallery item;
    /// 5. the model loads on `runtime` (for batches up to `max_batch`) with the manifest's
    ///    input size, and its output width is the manifest's embedding width.
    ///
    /// Each error names the file concerned. The GPU plan takes the default tuning.
    pub fn open(dir: impl AsRef<Path>, runtime: infer::Backend, max_batch: usize) -> Result<Self> {
        Self::open_tuned(dir, runtime, infer::GpuTuning::default(), max_batch)
    }

    /// [`Appliance::open`] with the GPU plan shaped by `tuning` (`[gpu]` of `lookupd.toml`;
    /// `lookupd bench-model` compares tunings on the device).
    pub fn open_tuned(
        dir: impl AsRef<Path>,
        runtime: infer::Backend,
        tuning: infer::GpuTuning,
        max_batch: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        enrol::recover(&dir)?;
        let manifest = Manifest::open(&dir)?;
        parts::require_listed(&dir, &manifest)?;
        let model_hash = parts::model_hash(&dir, &manifest)?;
        let gallery = parts::open_gallery(&dir, &manifest, &model_hash)?;
        let labels = skus::read(&dir, &gallery, &[])?;
        let mut model = parts::load_model(&dir, &manifest, runtime, tuning, max_batch.max(1))?;
        let preprocessor = Preprocessor::new(manifest.preprocess.clone())?;
        let frame_prep = frame_prep(&manifest);
        let searcher = Searcher::with_defaults().map_err(ApplianceError::Search)?;
        let scratch = searcher
            .knn_scratch(&gallery, MAX_K)
            .map_err(ApplianceError::Search)?;
        let input = vec![0.0; preprocessor.out_len()];
        let mut code = vec![0; manifest.model.code_bits as usize / 8];
        // One run at load, so the first frame is as fast as the others (tract optimises its
        // plan on first use, the GPU compiles its pipelines).
        model
            .run_packed(1, &input, &mut code)
            .map_err(|error| ApplianceError::Model {
                path: dir.join(&manifest.model.file),
                error,
            })?;
        tracing::info!(
            bundle = %dir.display(),
            items = gallery.len(),
            code_bits = gallery.code_bits(),
            backend = %model.backend(),
            adapter = %model.adapter(),
            kernel = searcher.kernel().name(),
            "bundle open"
        );
        Ok(Self {
            input,
            code,
            hits: Vec::with_capacity(MAX_K),
            dir,
            manifest,
            model,
            preprocessor,
            frame_prep,
            gallery,
            searcher,
            scratch,
            skus: labels.skus,
            max_id: labels.max_id,
            max_distance: None,
        })
    }

    /// Sets the largest Hamming distance at which the top hit still names the frame; beyond it
    /// the verdict is [`Verdict::Unknown`]. `None` (the default): any top hit is known.
    pub fn with_max_distance(mut self, max_distance: Option<u32>) -> Self {
        self.max_distance = max_distance;
        self
    }

    /// See [`Appliance::with_max_distance`].
    pub fn set_max_distance(&mut self, max_distance: Option<u32>) {
        self.max_distance = max_distance;
    }

    /// The maximum distance of a known verdict.
    pub fn max_distance(&self) -> Option<u32> {
        self.max_distance
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bundle's manifest (its file hashes are updated by enrolment).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Items in the gallery.
    pub fn len(&self) -> usize {
        self.gallery.len()
    }

    /// Whether the gallery holds no item.
    pub fn is_empty(&self) -> bool {
        self.gallery.is_empty()
    }

    /// The runtime the model runs on (`gpu` or `cpu`; `auto` is resolved at open).
    pub fn backend(&self) -> infer::Backend {
        self.model.backend()
    }

    /// The GPU adapter, or the CPU runtime.
    pub fn adapter(&self) -> String {
        self.model.adapter()
    }

    /// Sizes the GPU's frame buffers for `width x height` frames and compiles nothing later: one
    /// embedding of a blank frame of that size (the result is dropped). Frames larger than the
    /// largest seen so far grow the buffers once; this spares the first lookup that cost. On
    /// the cpu backend it does nothing (bundle's preprocessor keeps its own buffers).
    pub fn warm_frames(&mut self, width: u32, height: u32) -> Result<()> {
        if self.model.backend() != infer::Backend::Gpu || width == 0 || height == 0 {
            return Ok(());
        }
        let blank = vec![0u8; width as usize * height as usize * 3];
        self.embed_rgb8(width, height, &blank).map(|_| ())
    }

    /// Preprocesses a packed RGB8 frame (`width * height * 3` bytes) into the input buffer and
    /// runs the model into the code buffer; returns (preprocess, infer) microseconds (see
    /// [`StageTimings`]). On the gpu backend the frame is preprocessed there.
    pub(crate) fn embed_rgb8(
        &mut self,
        width: u32,
        height: u32,
        pixels: &[u8],
    ) -> Result<(u64, u64)> {
        let t0 = Instant::now();
        if self.model.backend() == infer::Backend::Gpu {
            let t = self
                .model
                .run_rgb8_packed(&self.frame_prep, width, height, pixels, &mut self.code)
                .map_err(|e| match e {
                    infer::InferError::Input(message) => {
                        ApplianceError::Frame(format!("frame {width}x{height}: {message}"))
                    }
                    e => ApplianceError::Infer(e),
                })?;
            let all = micros(t0.elapsed());
            let handed = ((t.upload_ms * 1e3) as u64).min(all);
            return Ok((handed, all - handed));
        }
        self.preprocessor
            .apply_rgb8(width, height, pixels, &mut self.input)?;
        let t1 = Instant::now();
        self.model
            .run_packed(1, &self.input, &mut self.code)
            .map_err(ApplianceError::Infer)?;
        let t2 = Instant::now();
        Ok((micros(t1 - t0), micros(t2 - t1)))
    }

    /// [`Appliance::embed_rgb8`] on any image (converted to RGB8 unless it already is).
    pub(crate) fn embed_image(&mut self, image: &DynamicImage) -> Result<(u64, u64)> {
        match image.as_rgb8() {
            Some(rgb) => self.embed_rgb8(rgb.width(), rgb.height(), rgb.as_raw()),
            None => {
                let rgb = image.to_rgb8();
                self.embed_rgb8(rgb.width(), rgb.height(), rgb.as_raw())
            }
        }
    }

    /// Names a packed RGB8 frame (`width * height * 3` bytes, rows top to bottom): preprocess,
    /// embed and pack, then the `k` nearest gallery items (1 to [`MAX_K`]) ordered by
    /// (distance, id), with their SKUs, the verdict and the time of each stage.
    pub fn lookup_rgb8(
        &mut self,
        width: u32,
        height: u32,
        pixels: &[u8],
        k: usize,
    ) -> Result<Lookup<'_>> {
        check_k(k)?;
        let start = Instant::now();
        let (preprocess, infer) = self.embed_rgb8(width, height, pixels)?;
        self.search(start, preprocess, infer, k)
    }

    /// [`Appliance::lookup_rgb8`] on any image (converted to RGB8 unless it already is).
    pub fn lookup_image(&mut self, image: &DynamicImage, k: usize) -> Result<Lookup<'_>> {
        check_k(k)?;
        let start = Instant::now();
        let (preprocess, infer) = self.embed_image(image)?;
        self.search(start, preprocess, infer, k)
    }

    fn search(
        &mut self,
        start: Instant,
        preprocess: u64,
        infer: u64,
        k: usize,
    ) -> Result<Lookup<'_>> {
        let t = Instant::now();
        self.hits.clear();
        if !self.gallery.is_empty() {
            let found = self
                .searcher
                .knn_into(&self.gallery, &self.code, k, None, &mut self.scratch)
                .map_err(ApplianceError::Search)?;
            self.hits.extend_from_slice(found);
        }
        let search = micros(t.elapsed());
        let verdict = match (self.hits.first(), self.max_distance) {
            (None, _) => Verdict::Unknown,
            (Some(top), Some(max)) if top.distance > max => Verdict::Unknown,
            _ => Verdict::Known,
        };
        Ok(Lookup {
            found: &self.hits,
            skus: &self.skus,
            verdict,
            timings: StageTimings {
                preprocess,
                infer,
                search,
                total: micros(start.elapsed()),
            },
            code: &self.code,
        })
    }
}

/// The manifest's preprocessing as the GPU's frame kernel takes it: the same resize and crop,
/// and bundle's own `(scale, bias)` floats.
pub(crate) fn frame_prep(manifest: &Manifest) -> infer::FramePrep {
    let (scale, bias) = manifest.preprocess.affine();
    infer::FramePrep {
        resize: manifest.preprocess.resize,
        crop: manifest.preprocess.crop,
        scale,
        bias,
    }
}

fn check_k(k: usize) -> Result<()> {
    if !(1..=MAX_K).contains(&k) {
        return Err(ApplianceError::Request(format!(
            "k = {k} is out of range: it must be from 1 to {MAX_K}"
        )));
    }
    Ok(())
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
