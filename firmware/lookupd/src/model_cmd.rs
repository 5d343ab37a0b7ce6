//! `lookupd embed` and `lookupd bench-model`: the ONNX runtime (firmware/infer) from the shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use infer::{
    Backend, GpuTuning, KernelTime, LoadOptions, Model, PointwiseTiles, RunTimings, SplitSums,
};
use serde::Serialize;

use crate::npy;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Input batch, float32 NCHW .npy.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the first output, float32 .npy.
    #[arg(long)]
    out: PathBuf,
    /// Samples a run takes at most: a larger input runs in batches of this many, two in
    /// flight on the GPU (GPU memory grows with it). A model exported for a fixed batch runs
    /// at that batch instead.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// auto (GPU when an adapter exists, else CPU), gpu or cpu.
    #[arg(long, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Print the GPU time of each kernel of the first batch (timestamp queries) to stderr.
    #[arg(long)]
    profile: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input size HxW, e.g. 224x224: needed where the model leaves it symbolic.
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    /// Timed runs after two warm-up runs.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Also time streams of this many batches (`run_many`: two batches in flight, one copied
    /// in or out while the GPU runs the other), as many streams as --iters; 0: none.
    #[arg(long, default_value_t = 0)]
    stream: usize,
    /// auto (GPU when an adapter exists, else CPU), gpu or cpu.
    #[arg(long, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Add the median GPU time of each kernel (timestamp queries) to the report.
    #[arg(long)]
    profile: bool,
    /// The GPU's 1x1 conv tiles: auto, narrow (32 channels) or wide (64), to compare them.
    #[arg(long, default_value_t = GpuTuning::default().pointwise_tiles)]
    pointwise_tiles: PointwiseTiles,
    /// The workgroups a GPU 1x1 conv or linear layer aims at, splitting its inputs to reach
    /// them (0: never split), to compare them.
    #[arg(long, default_value_t = GpuTuning::default().split_workgroups)]
    split_workgroups: usize,
    /// Where a split GPU layer adds up its partial sums: dispatch (a second kernel) or
    /// workgroup (in the layer's own kernel; linear layers then take it at every batch).
    #[arg(long, default_value_t = GpuTuning::default().split_sums)]
    split_sums: SplitSums,
    /// Run each depthwise conv and the 1x1 conv after it as one GPU kernel where the 1x1
    /// conv's tiles do not fill the GPU (small batches, late layers), to compare.
    #[arg(long)]
    fuse_depthwise: bool,
    /// Threads of the CPU backend (0: every core).
    #[arg(long, default_value_t = LoadOptions::default().cpu_threads)]
    cpu_threads: usize,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once('x')
        .ok_or_else(|| format!("size `{s}`: expected HxW, e.g. 224x224"))?;
    let p = |v: &str| {
        v.parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("size `{s}`: `{v}` is not a positive integer"))
    };
    Ok((p(h)?, p(w)?))
}

fn print_kernels(kernels: &[KernelTime]) {
    let total: f64 = kernels.iter().map(|k| k.ms).sum();
    for k in kernels {
        eprintln!("{:9.3} ms  {}", k.ms, k.kernel);
    }
    eprintln!(
        "{total:9.3} ms  total GPU time of {} kernels",
        kernels.len()
    );
}

pub fn embed(args: EmbedArgs) -> Result<ExitCode> {
    let (shape, data) = npy::read_f32_array(&args.input)?;
    let batch = *shape
        .first()
        .with_context(|| format!("{}: a 0-d array has no batch", args.input.display()))?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if batch == 0 {
        bail!("{}: shape {shape:?} holds no samples", args.input.display());
    }
    let hw = (shape.len() == 4).then(|| (shape[2], shape[3]));
    let opts = LoadOptions {
        backend: args.backend,
        max_batch: batch.min(args.batch),
        input_hw: hw,
        profile: args.profile,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&args.model, &opts).with_context(|| {
        format!(
            "loading {} for the input {} of shape {shape:?}",
            args.model.display(),
            args.input.display()
        )
    })?;
    if shape[1..] != *model.input_shape() {
        bail!(
            "{}: shape {shape:?}, the model takes (batch, {:?})",
            args.input.display(),
            model.input_shape()
        );
    }
    tracing::info!(backend = %model.backend(), adapter = %model.adapter(), "model loaded");
    let per: usize = model.output_shape().iter().product();
    let mut out = vec![0.0f32; batch * per];
    let in_len = data.len() / batch;
    let mut done = 0;
    if args.profile {
        let first = model.max_batch().min(batch);
        let mut kernels = Vec::new();
        model.run_profiled(
            first,
            &data[..first * in_len],
            &mut out[..first * per],
            &mut kernels,
        )?;
        print_kernels(&kernels);
        done = first;
    }
    if done < batch {
        let timings = model.run_many(&data[done * in_len..], &mut out[done * per..])?;
        tracing::info!(
            samples = batch - done,
            upload_ms = timings.upload_ms,
            run_ms = timings.run_ms,
            readback_ms = timings.readback_ms,
            "embedded"
        );
    }
    let mut out_shape = vec![batch];
    out_shape.extend(model.output_shape());
    npy::write_f32_array(&args.out, &out_shape, &out)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct KernelReport {
    kernel: String,
    median_ms: f64,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    backend: String,
    adapter: String,
    batch: usize,
    /// The image size the model ran at; none for an input that is not an image batch.
    size: Option<[usize; 2]>,
    iters: usize,
    pointwise_tiles: String,
    split_workgroups: usize,
    split_sums: String,
    fuse_depthwise: bool,
    cpu_threads: usize,
    /// Median wall time of one batch: upload + run + read-back.
    ms_per_batch: f64,
    img_per_s: f64,
    upload_ms: f64,
    run_ms: f64,
    readback_ms: f64,
    gpu_kernels: usize,
    gpu_bytes: u64,
    gpu_activation_bytes: u64,
    gpu_constant_bytes: u64,
    /// The activations if every tensor had its own buffer (for comparison with the plan's).
    gpu_unshared_activation_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<StreamReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kernels: Vec<KernelReport>,
}

/// Streams of batches (`--stream`): the throughput of a long input, the batches overlapping.
#[derive(Debug, Serialize)]
struct StreamReport {
    batches: usize,
    /// Median wall time of a stream, divided by its batches.
    ms_per_batch: f64,
    img_per_s: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let opts = LoadOptions {
        backend: args.backend,
        max_batch: args.batch,
        input_hw: args.size,
        profile: args.profile,
        tuning: GpuTuning {
            pointwise_tiles: args.pointwise_tiles,
            split_workgroups: args.split_workgroups,
            split_sums: args.split_sums,
            fuse_depthwise: args.fuse_depthwise,
        },
        cpu_threads: args.cpu_threads,
    };
    let mut model = Model::load(&args.model, &opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let in_len: usize = model.input_shape().iter().product();
    let per: usize = model.output_shape().iter().product();
    // The model checked one batch; a stream holds --stream of them.
    if args
        .stream
        .checked_mul(args.batch * in_len.max(per))
        .is_none_or(|v| v > infer::MAX_RUN_VALUES)
    {
        bail!(
            "--stream {}: {} batches of {} would hold more than {} values",
            args.stream,
            args.stream,
            args.batch,
            infer::MAX_RUN_VALUES
        );
    }
    // A fixed pseudo-random input in [-2, 2): timings must not depend on the values.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let input: Vec<f32> = (0..args.batch * in_len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    let mut out = vec![0.0f32; args.batch * per];
    for _ in 0..2 {
        model.run(args.batch, &input, &mut out)?;
    }
    let mut walls = Vec::new();
    let mut splits: Vec<RunTimings> = Vec::new();
    let mut kernel_ms: Vec<Vec<f64>> = Vec::new();
    let mut kernel_names: Vec<String> = Vec::new();
    let mut kernels = Vec::new();
    for _ in 0..args.iters {
        let t = Instant::now();
        let split = if args.profile {
            model.run_profiled(args.batch, &input, &mut out, &mut kernels)?
        } else {
            model.run(args.batch, &input, &mut out)?
        };
        walls.push(t.elapsed().as_secs_f64() * 1e3);
        splits.push(split);
        if kernel_ms.is_empty() {
            kernel_ms = vec![Vec::new(); kernels.len()];
            kernel_names = kernels.iter().map(|k| k.kernel.clone()).collect();
        }
        for (acc, k) in kernel_ms.iter_mut().zip(&kernels) {
            acc.push(k.ms);
        }
    }
    let pick = |f: fn(&RunTimings) -> f64| median(&mut splits.iter().map(f).collect::<Vec<_>>());
    let (upload_ms, run_ms, readback_ms) = (
        pick(|s| s.upload_ms),
        pick(|s| s.run_ms),
        pick(|s| s.readback_ms),
    );
    let ms = median(&mut walls);
    let stream = (args.stream > 0)
        .then(|| time_streams(&mut model, &input, &args))
        .transpose()?;
    let mem = model.gpu_memory().unwrap_or_default();
    let report = BenchReport {
        model: args.model.display().to_string(),
        backend: model.backend().to_string(),
        adapter: model.adapter(),
        batch: args.batch,
        size: match model.input_shape() {
            &[_, h, w] => Some([h, w]),
            _ => None,
        },
        iters: args.iters,
        pointwise_tiles: args.pointwise_tiles.to_string(),
        split_workgroups: args.split_workgroups,
        split_sums: args.split_sums.to_string(),
        fuse_depthwise: args.fuse_depthwise,
        cpu_threads: args.cpu_threads,
        ms_per_batch: ms,
        img_per_s: args.batch as f64 * 1e3 / ms,
        upload_ms,
        run_ms,
        readback_ms,
        gpu_kernels: model.kernels(args.batch).len(),
        gpu_bytes: mem.total,
        gpu_activation_bytes: mem.activations,
        gpu_constant_bytes: mem.constants,
        gpu_unshared_activation_bytes: mem.unshared_activations,
        stream,
        kernels: kernel_names
            .into_iter()
            .zip(kernel_ms.iter_mut())
            .map(|(kernel, v)| KernelReport {
                kernel,
                median_ms: median(v),
            })
            .collect(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Times `args.iters` streams of `args.stream` batches of `input` (one batch, repeated).
fn time_streams(model: &mut Model, input: &[f32], args: &BenchArgs) -> Result<StreamReport> {
    let per: usize = model.output_shape().iter().product();
    let samples = args.stream * args.batch;
    let long: Vec<f32> = input
        .iter()
        .copied()
        .cycle()
        .take(input.len() * args.stream)
        .collect();
    let mut out = vec![0.0f32; samples * per];
    // One stream to warm up: it makes the second staging set.
    model.run_many(&long, &mut out)?;
    let mut walls = Vec::new();
    for _ in 0..args.iters {
        let t = Instant::now();
        model.run_many(&long, &mut out)?;
        walls.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let ms = median(&mut walls) / args.stream as f64;
    Ok(StreamReport {
        batches: args.stream,
        ms_per_batch: ms,
        img_per_s: args.batch as f64 * 1e3 / ms,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn size_is_h_by_w() {
        assert_eq!(parse_size("224x160"), Ok((224, 160)));
        for bad in ["224", "0x4", "ax3", "3x", "-1x2"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    /// `embed` on the CPU writes what the library computes, with the batch first, whether the
    /// input runs in one batch or in several (`--batch 2`: 2 + 2 + 1).
    #[test]
    fn embed_writes_the_first_output() {
        let model =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/models/embedding_head.onnx");
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
        let x: Vec<f32> = (0..5 * 3 * 11 * 9)
            .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
            .collect();
        npy::write_f32_array(&input, &[5, 3, 11, 9], &x).unwrap();
        let mut m = Model::load(
            &model,
            &LoadOptions {
                backend: Backend::Cpu,
                max_batch: 5,
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let mut want = vec![0.0; 5 * 64];
        m.run(5, &x, &mut want).unwrap();
        for batch in [32, 2] {
            embed(EmbedArgs {
                model: model.clone(),
                input: input.clone(),
                out: out.clone(),
                batch,
                backend: Backend::Cpu,
                profile: false,
            })
            .unwrap();
            let (shape, y) = npy::read_f32_array(&out).unwrap();
            assert_eq!(shape, [5, 64]);
            assert_eq!(y, want, "--batch {batch}");
        }
        let (_, y) = npy::read_f32_array(&out).unwrap();
        // Unit vectors: the model ends with L2 normalisation.
        let norm: f32 = y[..64].iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
}
