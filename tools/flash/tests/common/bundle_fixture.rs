//! A real, small bundle: firmware/infer's `embed256` test model, a gallery of codes computed
//! by infer (CPU), labels, hashes and the self-test code (the approach of lookupd's tests).

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

const CODE_BITS: u32 = 256;
const INPUT_SIZE: u32 = 8;
const ITEMS: usize = 4;

fn model_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware/infer/tests/models/embed256.onnx")
}

fn noise_image(seed: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    RgbImage::from_fn(width, height, |_, _| image::Rgb(rng.random()))
}

fn code_of(model: &Path, manifest: &Manifest, image: &RgbImage) -> Vec<u8> {
    let side = manifest.model.input_size as usize;
    let mut m = infer::Model::load(
        model,
        &infer::LoadOptions {
            backend: infer::Backend::Cpu,
            max_batch: 1,
            input_hw: Some((side, side)),
            profile: false,
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

/// Writes a valid bundle into `dir` (created); `run` goes into the provenance, so bundles of
/// different `run`s differ in their manifest only.
pub fn build_bundle(dir: &Path, run: &str) {
    fs::create_dir_all(dir).unwrap();
    let model = dir.join(MODEL_FILE);
    fs::copy(model_source(), &model).unwrap();
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        backbone: "embed256-test".into(),
        model: ModelSpec {
            file: MODEL_FILE.into(),
            input_name: "x".into(),
            output_name: "y".into(),
            input_size: INPUT_SIZE,
            channels: 3,
            embedding_dim: CODE_BITS,
            code_bits: CODE_BITS,
            output_l2_normalized: false,
        },
        preprocess: PreprocessSpec::imagenet(10, INPUT_SIZE),
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
    };
    manifest.record_file(dir, MODEL_FILE).unwrap();
    let model_hash: [u8; 32] = bundle::from_hex(&manifest.files[MODEL_FILE].sha256)
        .unwrap()
        .try_into()
        .unwrap();
    let mut codes = Vec::new();
    let mut labels = Labels::new();
    let mut ids = Vec::new();
    for i in 0..ITEMS {
        let image = noise_image(1000 + i as u64, 30 + 3 * i as u32, 40 - 2 * i as u32);
        codes.extend_from_slice(&code_of(&model, &manifest, &image));
        let id = 100 + 7 * i as u64;
        ids.push(id);
        labels
            .push(LabelRow {
                id,
                sku: format!("SKU-{i}"),
                source: format!("cat{i}.png"),
            })
            .unwrap();
    }
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
}

/// A bundle whose files all verify but whose self-test cannot pass: the expected code is
/// inverted.
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
