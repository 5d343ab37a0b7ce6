//! The shared EfficientNet-Lite0 fixture (PyTorch export, real weights): both backends must
//! reproduce onnxruntime's output within 1e-4 of the largest output value.

mod common;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use common::{fixtures, load, load_gpu, load_gpu_tuned, max_diff};
use infer::{Backend, GpuTuning, SplitSums};

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(BufReader::new(file)).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().unwrap())
}

fn check(mut model: infer::Model, what: &str) {
    let dir = fixtures();
    let (in_shape, x) = read_npy(&dir.join("efficientnet_lite0_imagenet.input.npy"));
    let (out_shape, want) = read_npy(&dir.join("efficientnet_lite0_imagenet.output.npy"));
    assert_eq!(model.input_shape(), &in_shape[1..]);
    assert_eq!(model.output_shape(), &out_shape[1..]);
    let batch = in_shape[0];
    let mut got = vec![f32::NAN; want.len()];
    let t = std::time::Instant::now();
    model.run(batch, &x, &mut got).unwrap();
    let (diff, scale) = max_diff(&got, &want);
    eprintln!(
        "{what} ({}): max |diff| {diff:e}, largest output {scale}, {:.1} ms for batch {batch}",
        model.adapter(),
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max |diff| {diff:e} above 1e-4 x {scale}"
    );
    // Batch 1 gives the first sample's row.
    let per = want.len() / batch;
    let mut one = vec![f32::NAN; per];
    model.run(1, &x[..x.len() / batch], &mut one).unwrap();
    let (diff1, _) = max_diff(&one, &want[..per]);
    assert!(diff1 <= 1e-4 * scale, "{what} batch 1: {diff1:e}");
}

fn fixture_model() -> std::path::PathBuf {
    fixtures().join("efficientnet_lite0_imagenet.onnx")
}

#[test]
fn fixture_on_cpu_matches_reference() {
    check(load(&fixture_model(), Backend::Cpu, 2).unwrap(), "cpu");
}

/// The CPU backend on one thread and on three (more than this machine's cores, so the pool
/// really splits the work) gives the same bits: tract splits by whole output tiles and rows.
#[test]
fn fixture_on_cpu_threads_gives_the_same_bits() {
    let dir = fixtures();
    let (in_shape, x) = read_npy(&dir.join("efficientnet_lite0_imagenet.input.npy"));
    let outputs: Vec<Vec<f32>> = [1, 3]
        .into_iter()
        .map(|cpu_threads| {
            let opts = infer::LoadOptions {
                backend: Backend::Cpu,
                max_batch: in_shape[0],
                cpu_threads,
                ..infer::LoadOptions::default()
            };
            let mut model = infer::Model::load(&fixture_model(), &opts).unwrap();
            let mut y = vec![f32::NAN; in_shape[0] * 1000];
            model.run(in_shape[0], &x, &mut y).unwrap();
            y
        })
        .collect();
    assert!(outputs[0].iter().all(|v| v.is_finite()));
    let same = outputs[0]
        .iter()
        .zip(&outputs[1])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "1 and 3 threads differ");
}

#[test]
fn fixture_on_gpu_matches_reference() {
    if let Some(m) = load_gpu(&fixture_model(), 2) {
        check(m, "gpu");
    }
}

/// With the split layers' sums added within a workgroup (`SplitSums::Workgroup`): the late 1x1
/// convs at batch 1 and the classifier at every batch take the reduce kernel.
#[test]
fn fixture_on_gpu_with_sums_in_workgroups_matches_reference() {
    let tuning = GpuTuning {
        split_sums: SplitSums::Workgroup,
        ..GpuTuning::default()
    };
    if let Some(m) = load_gpu_tuned(&fixture_model(), 2, tuning) {
        let reducing = m
            .kernels(1)
            .iter()
            .filter(|k| k.contains("inputs in"))
            .count();
        assert!(reducing >= 10, "{:?}", m.kernels(1));
        check(m, "gpu, sums in workgroups");
    }
}

/// With each depthwise conv fused into the 1x1 conv after it where that does not fill the GPU
/// (`fuse_depthwise`) and the sums in workgroups: Lite0's blocks after the first at batch 1.
#[test]
fn fixture_on_gpu_with_depthwise_convs_fused_matches_reference() {
    let tuning = GpuTuning {
        split_sums: SplitSums::Workgroup,
        fuse_depthwise: true,
        ..GpuTuning::default()
    };
    if let Some(m) = load_gpu_tuned(&fixture_model(), 2, tuning) {
        let k = m.kernels(1);
        let fused = k.iter().filter(|k| k.contains("depthwise fused")).count();
        assert!(fused >= 14, "{k:?}");
        check(m, "gpu, depthwise convs fused");
    }
}
