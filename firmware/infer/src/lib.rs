//! `infer`: runs an ONNX backbone on the GPU through wgpu compute shaders, or on the CPU through
//! tract, behind one `Model` type.
//!
//! Loading parses the ONNX file once, lets tract check it and infer its shapes, and (for the
//! GPU) lowers it to a plan of WGSL kernels whose buffers are all allocated for a maximum batch.
//! Running a batch records the plan into one command buffer; nothing is allocated on the GPU
//! per run. An op the plan cannot run is a load-time error naming the node and the op.
//!
//! On the GPU a packed RGB8 camera frame can be the input ([`Model::run_rgb8_packed`]): a
//! kernel resizes, crops and normalises it ([`FramePrep`]) in the same submit as the network.

mod cpu;
mod error;
mod frame;
mod gpu;
mod graph;
mod guard;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

pub use error::InferError;
pub use frame::FramePrep;

/// `FromStr` and `Display` of a settings enum by the names it has on command lines and in
/// configs (`what` names the setting in the error, which lists the names).
macro_rules! names {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!("{} `{s}`: expected {}", $what, one_of(&[$($name),+]))),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($ty::$variant => $name,)+
                })
            }
        }
    };
}

/// "a, b or c".
fn one_of(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Which runtime executes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The GPU when wgpu finds a hardware adapter, otherwise the CPU (and the log says so).
    /// A software Vulkan (lavapipe) is slower than tract, so `auto` does not pick it.
    #[default]
    Auto,
    /// The GPU; software adapters such as lavapipe are accepted (tests use them).
    Gpu,
    /// tract's optimised CPU runtime.
    Cpu,
}

names!(Backend, "backend", Auto => "auto", Gpu => "gpu", Cpu => "cpu");

/// Which output tiles the GPU's 1x1 convs use (see `gpu/wgsl/pointwise.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PointwiseTiles {
    /// 64-channel tiles where a batch has enough of them to fill the GPU unsplit (a big batch,
    /// an early layer), 32-channel tiles elsewhere.
    #[default]
    Auto,
    /// 32 channels x 64 pixels a workgroup everywhere (4 x 8 outputs an invocation).
    Narrow,
    /// 64 channels x 64 pixels wherever a conv has more than 32 outputs (8 x 8 outputs an
    /// invocation; half the loads a multiply-add, twice the registers).
    Wide,
}

names!(
    PointwiseTiles,
    "pointwise tiles",
    Auto => "auto",
    Narrow => "narrow",
    Wide => "wide"
);

/// Where a GPU layer whose outputs are too few to fill the GPU adds up the partial sums of its
/// split inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitSums {
    /// Workgroups sum ranges of the inputs into a scratch buffer, a second dispatch adds them
    /// (`gpu/wgsl/splitk.wgsl`).
    #[default]
    Dispatch,
    /// The invocations of one workgroup share out the inputs and add up their sums in
    /// workgroup memory (`gpu/wgsl/reduce.wgsl`): one dispatch a layer. Linear layers take it
    /// at every batch.
    Workgroup,
}

names!(
    SplitSums,
    "split sums",
    Dispatch => "dispatch",
    Workgroup => "workgroup"
);

/// How the GPU plan shapes its work; the defaults suit a big GPU. Other values are for
/// comparing them (`bench-model`) and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuTuning {
    /// The 1x1 convs' tiles.
    pub pointwise_tiles: PointwiseTiles,
    /// The workgroups a 1x1 conv or a linear layer aims at: one with fewer than half as many
    /// splits its inputs into ranges to get about this many (a big GPU has over a hundred
    /// cores, each running several workgroups); `Auto` takes wide tiles where they reach half.
    /// 0 never splits.
    pub split_workgroups: usize,
    /// Where a split layer adds up its partial sums.
    pub split_sums: SplitSums,
    /// Runs a depthwise conv and the 1x1 conv after it (an inverted-residual block's depthwise
    /// and projection convs) as one kernel at the batches where the 1x1 conv's tiles do not fill
    /// the GPU (`gpu/wgsl/separable.wgsl`): one dispatch fewer a block, and the depthwise output
    /// never goes to memory. Needs 256-invocation workgroups with room for the depthwise
    /// outputs of four pixels; layers it does not fit run unfused.
    pub fuse_depthwise: bool,
}

impl Default for GpuTuning {
    fn default() -> Self {
        GpuTuning {
            pointwise_tiles: PointwiseTiles::Auto,
            split_workgroups: 256,
            split_sums: SplitSums::Dispatch,
            fuse_depthwise: false,
        }
    }
}

/// As `lookupd.toml`'s `[gpu]` keys: `pointwise_tiles=auto split_workgroups=256 ...`.
impl fmt::Display for GpuTuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pointwise_tiles={} split_workgroups={} split_sums={} fuse_depthwise={}",
            self.pointwise_tiles, self.split_workgroups, self.split_sums, self.fuse_depthwise
        )
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub backend: Backend,
    /// The largest batch a run may take; GPU buffers are sized for it.
    pub max_batch: usize,
    /// Spatial size (H, W) for models whose input leaves it symbolic.
    pub input_hw: Option<(usize, usize)>,
    /// Request GPU timestamp queries so `run_profiled` can time each kernel.
    pub profile: bool,
    /// How the GPU plan shapes its work (tiles, splits).
    pub tuning: GpuTuning,
    /// Threads of the CPU backend (tract's matrix products): 1 runs on the calling thread
    /// alone, 0 (the default) takes every core the system offers. The results do not depend
    /// on it: tract splits its work by whole output tiles and rows.
    pub cpu_threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            backend: Backend::Auto,
            max_batch: 8,
            input_hw: None,
            profile: false,
            tuning: GpuTuning::default(),
            cpu_threads: 0,
        }
    }
}

/// Wall-clock split of one run, in milliseconds. On the GPU: `upload` is writing the input
/// into the mapped staging buffer, `run` is from there until the GPU has finished (copy in,
/// kernels, copy out), `readback` is reading the mapped output. On the CPU all is `run`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTimings {
    pub upload_ms: f64,
    pub run_ms: f64,
    pub readback_ms: f64,
}

/// GPU memory of a plan, in bytes, at its maximum batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanMemory {
    /// Everything the plan holds: activations, constants, parameters, staging.
    pub total: u64,
    /// The shared activation buffers.
    pub activations: u64,
    pub constants: u64,
    /// What the activations would need if no buffer were reused.
    pub unshared_activations: u64,
    /// How many activation buffers the tensors share.
    pub buffers: usize,
}

/// GPU time of one kernel, from timestamp queries.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// `node [ops]`: the ONNX node and the ops fused into the kernel.
    pub kernel: String,
    pub ms: f64,
}

#[derive(Debug)]
enum Engine {
    Gpu(Box<gpu::GpuPlan>),
    Cpu(Box<cpu::CpuModel>),
}

/// A loaded model, ready to run batches.
#[derive(Debug)]
pub struct Model {
    engine: Engine,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    max_batch: usize,
    fixed_batch: Option<usize>,
    /// Scratch for packing on the CPU backend, allocated at load.
    scratch: Vec<f32>,
}

fn tract_err(e: impl fmt::Display) -> InferError {
    InferError::Tract(format!("{e:#}"))
}

/// Signs and packs a batch of embeddings the way the GPU kernel does: bit i of a code is bit
/// (i % 8) of byte (i / 8), set where the value is > 0 (the gallery's bit order).
pub fn pack_signs(values: &[f32], dim: usize, out: &mut [u8]) {
    assert!(
        dim.is_multiple_of(8),
        "the code width must be a multiple of 8"
    );
    assert_eq!(values.len() / dim * (dim / 8), out.len());
    for (row, code) in values.chunks_exact(dim).zip(out.chunks_exact_mut(dim / 8)) {
        for (byte, vals) in code.iter_mut().zip(row.chunks_exact(8)) {
            *byte = vals
                .iter()
                .enumerate()
                .fold(0u8, |b, (i, &v)| b | (u8::from(v > 0.0) << i));
        }
    }
}

/// The most values a tensor of the model may hold for one sample (1 GiB of float32): far beyond
/// any backbone's, and a bound that turns a malformed model's absurd shapes (huge padding) into
/// an error at load instead of an allocation that fails or a run that never ends.
const MAX_TENSOR_VALUES: usize = 1 << 28;

/// The most values a run's input or first output may hold at the maximum batch (8 GiB of
/// float32): a larger maximum batch is an error at load, not an allocation that aborts.
pub const MAX_RUN_VALUES: usize = 1 << 31;

impl Model {
    /// Loads the model at `path` for `opts.backend`. A file that is not a model, or a model the
    /// backend cannot run, is an error naming the problem (never a panic).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, InferError> {
        guard::catch_tract_panic("loading the model", || Self::load_unguarded(path, opts))
    }

    fn load_unguarded(path: &Path, opts: &LoadOptions) -> Result<Self, InferError> {
        let load_err = |message: String| InferError::Load {
            path: path.to_owned(),
            message,
        };
        if opts.max_batch == 0 {
            return Err(InferError::Input("max batch must be at least 1".into()));
        }
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_path(path)
            .map_err(|e| load_err(format!("{e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| load_err("no graph".into()))?;
        let spec = graph::input_spec(graph, opts.input_hw)?;
        let max_batch = spec.fixed_batch.unwrap_or(opts.max_batch);
        graph::check_attributes(graph)?;

        // tract checks the whole model and infers the output shape (batch 1).
        let typed = cpu::inference_model(&onnx, &proto, Some(1), &spec.inner)?
            .into_typed()
            .map_err(tract_err)?;
        for node in typed.nodes() {
            for output in &node.outputs {
                // A size that depends on the data (not known here) is left to the run.
                let Ok(dims) = output
                    .fact
                    .shape
                    .iter()
                    .map(|d| d.to_usize())
                    .collect::<Result<Vec<_>, _>>()
                else {
                    continue;
                };
                let values = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                if values.is_none_or(|v| v > MAX_TENSOR_VALUES) {
                    return Err(InferError::Tract(format!(
                        "node {} ({}) outputs a tensor of shape {:?}: more than {MAX_TENSOR_VALUES} \
                         values a sample",
                        node.name,
                        node.op.name(),
                        output.fact.shape
                    )));
                }
            }
        }
        let fact = typed.output_fact(0).map_err(tract_err)?;
        let tract_out: Vec<usize> = fact
            .shape
            .iter()
            .map(|d| d.to_usize().map_err(tract_err))
            .collect::<Result<_, _>>()?;
        if fact.datum_type != f32::datum_type() || tract_out.first() != Some(&1) {
            return Err(InferError::Tract(format!(
                "the first output must be float32 with the batch first, found {:?} {tract_out:?}",
                fact.datum_type
            )));
        }
        let output_shape = tract_out[1..].to_vec();
        for (what, shape) in [("input", &spec.inner), ("output", &output_shape)] {
            let per: usize = shape.iter().product();
            if max_batch
                .checked_mul(per)
                .is_none_or(|v| v > MAX_RUN_VALUES)
            {
                return Err(InferError::Input(format!(
                    "max batch {max_batch}: the {what} of a run would hold more than \
                     {MAX_RUN_VALUES} values ({per} a sample)"
                )));
            }
        }

        let want_gpu = match opts.backend {
            Backend::Cpu => None,
            Backend::Gpu => Some(gpu::GpuContext::new(opts.profile, true)?),
            Backend::Auto => match gpu::GpuContext::new(opts.profile, false) {
                Ok(ctx) => Some(ctx),
                Err(e @ InferError::NoAdapter(_)) => {
                    tracing::warn!("{e}: running on the CPU with tract");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let engine = match want_gpu {
            Some(ctx) => {
                let g = graph::lower(&onnx, &proto, path, opts.input_hw)?;
                let plan_out = g.values[g.output].inner.clone();
                if plan_out != output_shape {
                    return Err(InferError::ShapeMismatch {
                        plan: plan_out,
                        tract: output_shape,
                    });
                }
                let plan = gpu::GpuPlan::new(ctx, &g, max_batch, opts.tuning)?;
                tracing::info!(
                    adapter = plan.adapter(),
                    kernels = g.steps.len(),
                    bytes = plan.bytes(),
                    tuning = %opts.tuning,
                    "GPU plan ready"
                );
                Engine::Gpu(Box::new(plan))
            }
            None => Engine::Cpu(Box::new(cpu::CpuModel::new(
                onnx,
                proto,
                &spec.inner,
                spec.fixed_batch.unwrap_or(1),
                match opts.cpu_threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                },
            )?)),
        };
        let out_len: usize = output_shape.iter().product();
        let scratch = match engine {
            Engine::Cpu(_) => vec![0.0; out_len * max_batch],
            Engine::Gpu(_) => Vec::new(),
        };
        Ok(Model {
            engine,
            input_shape: spec.inner,
            output_shape,
            max_batch,
            fixed_batch: spec.fixed_batch,
            scratch,
        })
    }

    /// `gpu` or `cpu`.
    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Gpu(_) => Backend::Gpu,
            Engine::Cpu(_) => Backend::Cpu,
        }
    }

    /// The wgpu adapter, or the CPU runtime.
    pub fn adapter(&self) -> String {
        match &self.engine {
            Engine::Gpu(p) => p.adapter().to_owned(),
            Engine::Cpu(_) => "tract (CPU)".to_owned(),
        }
    }

    /// Per-sample input shape (without the batch axis).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Per-sample shape of the first output (without the batch axis).
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// GPU memory the plan holds; `None` on the CPU.
    pub fn gpu_memory(&self) -> Option<PlanMemory> {
        match &self.engine {
            Engine::Gpu(p) => Some(p.memory()),
            Engine::Cpu(_) => None,
        }
    }

    /// The kernels a run of `batch` samples dispatches, in order, as `node [fused ONNX ops]`
    /// (empty on the CPU). A late 1x1 conv splits its inputs over two kernels at small batches.
    pub fn kernels(&self, batch: usize) -> Vec<String> {
        match &self.engine {
            Engine::Gpu(p) => p.kernel_labels(batch),
            Engine::Cpu(_) => Vec::new(),
        }
    }

    fn check(
        &self,
        batch: usize,
        input: &[f32],
        out_per_sample: usize,
        out_len: usize,
    ) -> Result<(), InferError> {
        let in_len: usize = self.input_shape.iter().product();
        if batch == 0 || batch > self.max_batch {
            return Err(InferError::Input(format!(
                "batch {batch}: the model was loaded for 1 to {}",
                self.max_batch
            )));
        }
        if let Some(b) = self.fixed_batch
            && b != batch
        {
            return Err(InferError::Input(format!(
                "the model was exported for batch {b} only, not {batch}"
            )));
        }
        if input.len() != batch * in_len {
            return Err(InferError::Input(format!(
                "{} input values for batch {batch} of {:?}",
                input.len(),
                self.input_shape
            )));
        }
        if out_len != batch * out_per_sample {
            return Err(InferError::Input(format!(
                "output space of {out_len} for batch {batch} x {out_per_sample}"
            )));
        }
        Ok(())
    }

    /// Runs `batch` samples (NCHW, contiguous) and writes the first output.
    pub fn run(
        &mut self,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<RunTimings, InferError> {
        self.run_inner(batch, input, output, None)
    }

    /// Like `run`, and fills `kernels` with the GPU time of each kernel (the model must be
    /// loaded with `profile`; on the CPU the list stays empty).
    pub fn run_profiled(
        &mut self,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
        kernels: &mut Vec<KernelTime>,
    ) -> Result<RunTimings, InferError> {
        kernels.clear();
        self.run_inner(batch, input, output, Some(kernels))
    }

    fn run_inner(
        &mut self,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
        profile: Option<&mut Vec<KernelTime>>,
    ) -> Result<RunTimings, InferError> {
        let per: usize = self.output_shape.iter().product();
        self.check(batch, input, per, output.len())?;
        match &mut self.engine {
            Engine::Gpu(p) => p.run(batch, input, gpu::Output::Floats(output), profile),
            Engine::Cpu(m) => {
                let t = std::time::Instant::now();
                m.run(batch, input, output)?;
                Ok(RunTimings {
                    run_ms: t.elapsed().as_secs_f64() * 1e3,
                    ..RunTimings::default()
                })
            }
        }
    }

    /// Runs any number of samples (NCHW, contiguous; `input.len()` a whole number of them) in
    /// batches of `max_batch` and writes the first output of each. On the GPU two batches are
    /// in flight: the next batch's input is written and the last one's output read while the
    /// GPU runs, so a stream of batches goes faster than the same batches run one by one. A
    /// model exported for a fixed batch takes a multiple of it. The timings are the whole
    /// call's: writing inputs, waiting for the GPU, reading outputs.
    pub fn run_many(
        &mut self,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<RunTimings, InferError> {
        let per: usize = self.output_shape.iter().product();
        let samples = self.check_many(input, per, output.len())?;
        match &mut self.engine {
            Engine::Gpu(p) => p.run_stream(self.max_batch, input, gpu::Output::Floats(output)),
            Engine::Cpu(_) => self.cpu_batches(samples, input, |start, values| {
                output[start * per..start * per + values.len()].copy_from_slice(values);
            }),
        }
    }

    /// [`Model::run_many`], writing the packed signs of the first output, as
    /// [`Model::run_packed`] does: `dim / 8` bytes a sample.
    pub fn run_many_packed(
        &mut self,
        input: &[f32],
        codes: &mut [u8],
    ) -> Result<RunTimings, InferError> {
        let dim = self.packed_dim()?;
        let samples = self.check_many(input, dim / 8, codes.len())?;
        match &mut self.engine {
            Engine::Gpu(p) => p.run_stream(self.max_batch, input, gpu::Output::Packed(codes)),
            Engine::Cpu(_) => self.cpu_batches(samples, input, |start, values| {
                let code = dim / 8;
                let end = start * code + values.len() / 8;
                pack_signs(values, dim, &mut codes[start * code..end]);
            }),
        }
    }

    /// `run_many` on the CPU: runs `samples` samples in batches of `max_batch` into the
    /// scratch space and hands each batch's first output to `take(first sample, values)`.
    fn cpu_batches(
        &mut self,
        samples: usize,
        input: &[f32],
        mut take: impl FnMut(usize, &[f32]),
    ) -> Result<RunTimings, InferError> {
        let Engine::Cpu(model) = &mut self.engine else {
            unreachable!("called for the CPU engine only");
        };
        let t = std::time::Instant::now();
        let in_len: usize = self.input_shape.iter().product();
        let per: usize = self.output_shape.iter().product();
        for start in (0..samples).step_by(self.max_batch) {
            let rows = self.max_batch.min(samples - start);
            let values = &mut self.scratch[..rows * per];
            model.run(
                rows,
                &input[start * in_len..(start + rows) * in_len],
                values,
            )?;
            take(start, values);
        }
        Ok(RunTimings {
            run_ms: t.elapsed().as_secs_f64() * 1e3,
            ..RunTimings::default()
        })
    }

    /// The samples `input` holds, once it and the output space are checked for `run_many`.
    fn check_many(
        &self,
        input: &[f32],
        out_per_sample: usize,
        out_len: usize,
    ) -> Result<usize, InferError> {
        let in_len: usize = self.input_shape.iter().product();
        if input.is_empty() || !input.len().is_multiple_of(in_len) {
            return Err(InferError::Input(format!(
                "{} input values: not a whole number of samples of {:?}",
                input.len(),
                self.input_shape
            )));
        }
        let samples = input.len() / in_len;
        if let Some(b) = self.fixed_batch
            && !samples.is_multiple_of(b)
        {
            return Err(InferError::Input(format!(
                "{samples} samples: the model was exported for batch {b} only, so it takes a \
                 multiple of {b}"
            )));
        }
        if out_len != samples * out_per_sample {
            return Err(InferError::Input(format!(
                "output space of {out_len} for {samples} samples x {out_per_sample}"
            )));
        }
        Ok(samples)
    }

    /// Runs `batch` samples and writes the signs of the first output packed into bits
    /// (`pack_signs` order), `dim / 8` bytes per sample. On the GPU only the packed bits are
    /// read back.
    pub fn run_packed(
        &mut self,
        batch: usize,
        input: &[f32],
        codes: &mut [u8],
    ) -> Result<RunTimings, InferError> {
        let dim = self.packed_dim()?;
        self.check(batch, input, dim / 8, codes.len())?;
        match &mut self.engine {
            Engine::Gpu(p) => p.run(batch, input, gpu::Output::Packed(codes), None),
            Engine::Cpu(m) => {
                let t = std::time::Instant::now();
                let scratch = &mut self.scratch[..batch * dim];
                m.run(batch, input, scratch)?;
                pack_signs(scratch, dim, codes);
                Ok(RunTimings {
                    run_ms: t.elapsed().as_secs_f64() * 1e3,
                    ..RunTimings::default()
                })
            }
        }
    }

    /// Preprocesses one packed RGB8 frame (`width * height * 3` bytes, rows top to bottom) on
    /// the GPU as `prep` says, runs the model on it (batch 1) and writes the packed signs of the
    /// first output, as [`Model::run_packed`] does. The frame is uploaded as it is (bytes packed
    /// into 32-bit words) and the resize, crop and normalisation run as one kernel recorded
    /// before the network's, in the same command buffer and submit. `upload_ms` is the copy of
    /// the frame into the mapped staging buffer (and, when the frame size or `prep` changed, the
    /// filter taps); the kernel's time is part of `run_ms`.
    ///
    /// The frame buffers are made at the first frame and grown for a larger one; after that a
    /// run creates nothing on the GPU. GPU backend only: on the CPU, preprocess the frame
    /// (bundle's `Preprocessor`) and call [`Model::run_packed`].
    pub fn run_rgb8_packed(
        &mut self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        pixels: &[u8],
        codes: &mut [u8],
    ) -> Result<RunTimings, InferError> {
        let dim = self.packed_dim()?;
        self.check_frame(prep, width, height, pixels, dim / 8, codes.len())?;
        self.frame_plan()?
            .run_frame(prep, width, height, pixels, gpu::Output::Packed(codes))
    }

    /// [`Model::run_rgb8_packed`], writing the first output's floats instead.
    pub fn run_rgb8(
        &mut self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        pixels: &[u8],
        output: &mut [f32],
    ) -> Result<RunTimings, InferError> {
        let per: usize = self.output_shape.iter().product();
        self.check_frame(prep, width, height, pixels, per, output.len())?;
        self.frame_plan()?
            .run_frame(prep, width, height, pixels, gpu::Output::Floats(output))
    }

    /// Only the GPU preprocessing of [`Model::run_rgb8_packed`]: writes the model input it
    /// computes (`3 x crop x crop` floats, NCHW) into `input`; the network does not run. For
    /// checks and tools (its read-back buffer is made on first use).
    pub fn preprocess_rgb8(
        &mut self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        pixels: &[u8],
        input: &mut [f32],
    ) -> Result<RunTimings, InferError> {
        let in_len: usize = self.input_shape.iter().product();
        self.check_frame(prep, width, height, pixels, in_len, input.len())?;
        self.frame_plan()?
            .preprocess_frame(prep, width, height, pixels, input)
    }

    /// The first output's values per sample, which packing needs to be a multiple of 8.
    fn packed_dim(&self) -> Result<usize, InferError> {
        let dim: usize = self.output_shape.iter().product();
        if dim.is_multiple_of(8) {
            Ok(dim)
        } else {
            Err(InferError::Input(format!(
                "the output has {dim} values, not a multiple of 8: it cannot be packed"
            )))
        }
    }

    /// The GPU plan that frames run on: frame preprocessing is a GPU kernel.
    fn frame_plan(&mut self) -> Result<&mut gpu::GpuPlan, InferError> {
        match &mut self.engine {
            Engine::Gpu(p) => Ok(p),
            Engine::Cpu(_) => Err(InferError::GpuOnly("frame preprocessing")),
        }
    }

    fn check_frame(
        &self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        pixels: &[u8],
        want: usize,
        got: usize,
    ) -> Result<(), InferError> {
        prep.check(&self.input_shape)?;
        frame::check_frame(width, height, pixels)?;
        if let Some(b) = self.fixed_batch.filter(|&b| b != 1) {
            return Err(InferError::Input(format!(
                "the model was exported for batch {b} only; a frame is batch 1"
            )));
        }
        if want != got {
            return Err(InferError::Input(format!(
                "output space of {got} for one frame, expected {want}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_back_their_names_and_list_them_when_wrong() {
        for b in [Backend::Auto, Backend::Gpu, Backend::Cpu] {
            assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
        }
        for t in [
            PointwiseTiles::Auto,
            PointwiseTiles::Narrow,
            PointwiseTiles::Wide,
        ] {
            assert_eq!(t.to_string().parse::<PointwiseTiles>(), Ok(t));
        }
        for s in [SplitSums::Dispatch, SplitSums::Workgroup] {
            assert_eq!(s.to_string().parse::<SplitSums>(), Ok(s));
        }
        assert_eq!(
            "vulkan".parse::<Backend>(),
            Err("backend `vulkan`: expected auto, gpu or cpu".to_owned())
        );
        assert_eq!(
            "Wide".parse::<PointwiseTiles>(),
            Err("pointwise tiles `Wide`: expected auto, narrow or wide".to_owned())
        );
        assert_eq!(
            "".parse::<SplitSums>(),
            Err("split sums ``: expected dispatch or workgroup".to_owned())
        );
    }
}
