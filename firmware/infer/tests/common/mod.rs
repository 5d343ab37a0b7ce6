//! Helpers shared by the infer integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use infer::{Backend, GpuTuning, InferError, LoadOptions, Model};
use prost::Message;
use tract_onnx::pb;

pub fn model_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(format!("{name}.onnx"))
}

/// The shared fixtures directory (`../shared/fixtures` beside the repository).
/// The test model `name` with `edit` applied, written into `dir` (over the last one made of it).
pub fn mutated(
    dir: &tempfile::TempDir,
    name: &str,
    edit: impl FnOnce(&mut pb::ModelProto),
) -> PathBuf {
    let bytes = std::fs::read(model_path(name)).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    edit(&mut model);
    let path = dir.path().join(format!("{name}.onnx"));
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    assert!(
        dir.join("efficientnet_lite0_imagenet.onnx").is_file(),
        "the shared fixtures are missing: expected {}/efficientnet_lite0_imagenet.onnx",
        dir.display()
    );
    dir
}

/// Deterministic values in [-2, 2): a small LCG, so tests need no RNG crate.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

pub fn load(path: &Path, backend: Backend, max_batch: usize) -> Result<Model, InferError> {
    Model::load(
        path,
        &LoadOptions {
            backend,
            max_batch,
            ..LoadOptions::default()
        },
    )
}

/// The GPU model, or `None` (said on stderr) when there is no adapter and the environment
/// allows it with INFER_ALLOW_NO_GPU=1. Without that variable a missing adapter fails the test:
/// CI installs lavapipe, so a GPU test never passes by not running.
pub fn load_gpu(path: &Path, max_batch: usize) -> Option<Model> {
    load_gpu_tuned(path, max_batch, GpuTuning::default())
}

/// `load_gpu` with the given tuning.
pub fn load_gpu_tuned(path: &Path, max_batch: usize, tuning: GpuTuning) -> Option<Model> {
    let opts = LoadOptions {
        backend: Backend::Gpu,
        max_batch,
        tuning,
        ..LoadOptions::default()
    };
    match Model::load(path, &opts) {
        Ok(m) => Some(m),
        Err(InferError::NoAdapter(e)) if std::env::var_os("INFER_ALLOW_NO_GPU").is_some() => {
            eprintln!("SKIPPED gpu check of {}: no adapter ({e})", path.display());
            None
        }
        Err(e) => panic!("loading {} on the GPU: {e}", path.display()),
    }
}

/// Test model `name` on tract and on the GPU, each for batches up to `max_batch`, or `None`
/// where `load_gpu` finds no adapter and may skip.
pub fn cpu_and_gpu(name: &str, max_batch: usize) -> Option<(Model, Model)> {
    let path = model_path(name);
    let cpu = load(&path, Backend::Cpu, max_batch).expect("tract loads the model");
    load_gpu(&path, max_batch).map(|gpu| (cpu, gpu))
}

/// Values of one sample's input and of its first output.
pub fn sample_lens(model: &Model) -> (usize, usize) {
    (
        model.input_shape().iter().product(),
        model.output_shape().iter().product(),
    )
}

/// Largest absolute difference, and the largest magnitude of the reference.
pub fn max_diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(
            0.0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (diff, scale)
}

/// Asserts `got` matches `want` within 1e-4 of the largest reference value (at least 1e-4).
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let (diff, scale) = max_diff(got, want);
    let tol = 1e-4 * scale.max(1.0);
    assert!(
        diff <= tol,
        "{what}: max |gpu - tract| = {diff:e} > {tol:e} (largest |tract| {scale})"
    );
}
