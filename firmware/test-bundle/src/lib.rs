//! A real bundle for tests (lookupd's, flash's) and the lookup_loop benchmark: firmware/infer's
//! `embed256` test model, a manifest written here, a gallery of codes computed by infer (CPU)
//! from generated catalogue images, labels, the hashes, and the self-test code computed as the
//! trainer computes it. Used only as a dev-dependency; it panics on any failure, as a test would.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bundle::{
    FORMAT_VERSION, GALLERY_FILE, LABELS_FILE, LabelRow, Labels, MODEL_FILE, Manifest, ModelSpec,
    PreprocessSpec, Preprocessor, Provenance, SELFTEST_PATTERN, SELFTEST_SIDE, SelfTest,
    selftest_pattern,
};
use gallery::Gallery;
use image::RgbImage;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `embed256` of infer's test models: a 3x3 conv over a 3x8x8 input, flattened to 256 values.
pub fn model_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/models/embed256.onnx")
}

pub const CODE_BITS: u32 = 256;
/// The model's input side, and the resize before its centre crop.
pub const INPUT_SIZE: u32 = 8;
pub const RESIZE: u32 = 10;
/// Catalogue items of [`build_bundle`]'s bundle.
pub const ITEMS: usize = 6;

/// Random pixels: every seed a different image.
pub fn noise_image(seed: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    RgbImage::from_fn(width, height, |_, _| image::Rgb(rng.random()))
}

#[derive(Debug)]
pub struct CatalogueItem {
    pub id: u64,
    pub sku: String,
    pub image: RgbImage,
    /// The image saved as PNG (outside the bundle).
    pub png: PathBuf,
}

/// A bundle in a temporary directory of its own, with its catalogue images.
#[derive(Debug)]
pub struct TestBundle {
    /// Holds `bundle/` and `images/`.
    pub root: tempfile::TempDir,
    pub items: Vec<CatalogueItem>,
}

impl TestBundle {
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("bundle")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
    pub fn dir_arg(&self) -> String {
        self.dir().to_str().unwrap().to_owned()
    }
    /// A new image (not in the catalogue), saved as PNG beside the catalogue's.
    pub fn new_image(&self, seed: u64) -> (RgbImage, PathBuf) {
        let image = noise_image(seed, 29, 41);
        let png = self.root.path().join(format!("images/new{seed}.png"));
        image.save(&png).unwrap();
        (image, png)
    }
    pub fn manifest(&self) -> Manifest {
        Manifest::read(self.dir()).unwrap()
    }
    /// Flips every bit of the byte at `offset` (from the end when negative).
    pub fn flip_byte(&self, name: &str, offset: i64) {
        let path = self.file(name);
        let mut bytes = fs::read(&path).unwrap();
        let at = if offset < 0 {
            bytes.len() - offset.unsigned_abs() as usize
        } else {
            offset as usize
        };
        bytes[at] ^= 0xff;
        fs::write(&path, bytes).unwrap();
    }
}

/// The manifest of a model shaped like `embed256` with `code_bits` outputs (3x8x8 input,
/// ImageNet preprocessing after a resize to 10), with no files recorded and no self-test;
/// `run` goes into the provenance.
pub fn manifest_template(code_bits: u32, run: &str) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        backbone: format!("embed{code_bits}-test"),
        model: ModelSpec {
            file: MODEL_FILE.into(),
            input_name: "x".into(),
            output_name: "y".into(),
            input_size: INPUT_SIZE,
            channels: 3,
            embedding_dim: code_bits,
            code_bits,
            output_l2_normalized: false,
        },
        preprocess: PreprocessSpec::imagenet(RESIZE, INPUT_SIZE),
        files: BTreeMap::new(),
        provenance: Provenance {
            trainer_version: "test".into(),
            created_unix: 1_790_000_000,
            dataset: "noise".into(),
            run: run.into(),
            epoch: None,
            notes: None,
            metrics: None,
        },
        selftest: None,
    }
}

/// The packed code infer (CPU) computes for `image` with the manifest's preprocessing.
pub fn code_of(model: &Path, manifest: &Manifest, image: &RgbImage) -> Vec<u8> {
    let side = manifest.model.input_size as usize;
    let mut m = infer::Model::load(
        model,
        &infer::LoadOptions {
            backend: infer::Backend::Cpu,
            max_batch: 1,
            input_hw: Some((side, side)),
            ..infer::LoadOptions::default()
        },
    )
    .unwrap();
    let mut pre = Preprocessor::new(manifest.preprocess.clone()).unwrap();
    let mut input = vec![0.0; pre.out_len()];
    pre.apply_image(image, &mut input).unwrap();
    let mut code = vec![0u8; manifest.model.code_bits as usize / 8];
    m.run_packed(1, &input, &mut code).unwrap();
    code
}

pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// A complete, valid bundle of [`ITEMS`] catalogue items with ids 100, 107, 114, ... in a
/// temporary directory of its own.
pub fn build_bundle() -> TestBundle {
    let root = tempfile::tempdir().unwrap();
    let items = write_bundle(
        &root.path().join("bundle"),
        &root.path().join("images"),
        ITEMS,
        "lookupd tests",
    );
    TestBundle { root, items }
}

/// Writes a valid bundle of `items` catalogue items (ids 100, 107, 114, ...; SKUs `SKU-0`,
/// `SKU-1`, ...; no two with the same code) into `dir`, their images as `images/catN.png`
/// (both directories created). Bundles of the same `items` and different `run`s differ in their
/// manifest only (the labels name each image by its file name, not its path).
pub fn write_bundle(dir: &Path, images: &Path, items: usize, run: &str) -> Vec<CatalogueItem> {
    fs::create_dir_all(dir).unwrap();
    fs::create_dir_all(images).unwrap();
    let model = dir.join(MODEL_FILE);
    fs::copy(model_source(), &model).unwrap();

    let mut manifest = manifest_template(CODE_BITS, run);
    manifest.record_file(dir, MODEL_FILE).unwrap();
    let model_hash: [u8; 32] = bundle::from_hex(&manifest.files[MODEL_FILE].sha256)
        .unwrap()
        .try_into()
        .unwrap();

    let mut catalogue = Vec::new();
    let mut codes = Vec::new();
    let mut labels = Labels::new();
    for i in 0..items {
        let image = noise_image(1000 + i as u64, 30 + 3 * i as u32, 40 - 2 * i as u32);
        let name = format!("cat{i}.png");
        let png = images.join(&name);
        image.save(&png).unwrap();
        let code = code_of(&model, &manifest, &image);
        for (j, other) in codes.chunks_exact(code.len()).enumerate() {
            assert!(
                hamming(other, &code) > 0,
                "items {j} and {i} have the same code"
            );
        }
        codes.extend_from_slice(&code);
        let (id, sku) = (100 + 7 * i as u64, format!("SKU-{i}"));
        labels
            .push(LabelRow {
                id,
                sku: sku.clone(),
                source: name,
            })
            .unwrap();
        catalogue.push(CatalogueItem {
            id,
            sku,
            image,
            png,
        });
    }
    let ids: Vec<u64> = catalogue.iter().map(|i| i.id).collect();
    Gallery::create(dir.join(GALLERY_FILE), CODE_BITS, model_hash, &codes, &ids).unwrap();
    labels.write(dir.join(LABELS_FILE)).unwrap();
    manifest.record_file(dir, GALLERY_FILE).unwrap();
    manifest.record_file(dir, LABELS_FILE).unwrap();

    let pattern = code_of(&model, &manifest, &selftest_pattern(SELFTEST_SIDE));
    manifest.selftest = Some(SelfTest {
        pattern: SELFTEST_PATTERN.into(),
        expected_code: bundle::to_hex(&pattern),
        max_hamming: 2,
    });
    manifest.write(dir).unwrap();
    Manifest::open(dir).unwrap();
    catalogue
}

/// Makes a bundle's self-test impossible to pass while every file still verifies: the
/// expected code is inverted.
pub fn break_selftest(dir: &Path) {
    let mut manifest = Manifest::read(dir).unwrap();
    let st = manifest.selftest.as_mut().unwrap();
    let code: Vec<u8> = bundle::from_hex(&st.expected_code)
        .unwrap()
        .iter()
        .map(|b| !b)
        .collect();
    st.expected_code = bundle::to_hex(&code);
    manifest.write(dir).unwrap();
    Manifest::open(dir).unwrap();
}
