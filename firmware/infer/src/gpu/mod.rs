//! The GPU backend: the plan's steps as WGSL compute kernels through wgpu.
//!
//! Load time creates everything: one storage buffer per constant, activation buffers shared by
//! tensors whose lifetimes do not overlap, one bind group and one parameter block per dispatch,
//! staging buffers for the input and the output. A run writes the input into the mapped upload
//! buffer, records every dispatch into one compute pass and one submit, and maps back only the
//! output (or its packed signs).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wgpu::util::DeviceExt;

use crate::frame::{FramePrep, taps_words};
use crate::graph::{Graph, MAX_RANK, Operand, PoolKind, RowOp, StepKind, UnaryOp, ValueId, Window};
use crate::{GpuTuning, InferError, KernelTime, PointwiseTiles, RunTimings, SplitSums};

const PRELUDE: &str = include_str!("wgsl/prelude.wgsl");
const WORKGROUP: u32 = 64;
/// Bytes of parameters a dispatch reads (the `Params` struct of the prelude).
const PARAM_BYTES: u64 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kernel {
    /// `channels4`: an invocation computes four output channels (a group's outputs are a
    /// multiple of 4), else one.
    Conv {
        channels4: bool,
    },
    /// 64-channel tiles when `wide`; `vec_x` / `vec_w`: the input's pixels / the weight's
    /// output channels are a multiple of 4, so their 4-wide loads are single vector loads.
    Pointwise {
        wide: bool,
        vec_x: bool,
        vec_w: bool,
    },
    SplitK,
    /// `vec_a`: a conv's weight rows (its output channels) are a multiple of 4; `vec`: the
    /// output's columns are (see `wgsl/reduce.wgsl`).
    Reduce {
        vec_a: bool,
        vec: bool,
    },
    /// A depthwise conv fused into the 1x1 conv after it (see `wgsl/separable.wgsl`): `vec_a`
    /// and `vec` as for `Reduce` (the 1x1 conv's output channels, the pixels);
    /// `dw_channels`: the depthwise outputs its workgroup memory holds.
    Separable {
        vec_a: bool,
        vec: bool,
        dw_channels: u32,
    },
    Binary,
    Unary,
    Pool,
    Rows,
    MatMul,
    Pack,
    Frame,
}

impl Kernel {
    /// Its invocations a workgroup.
    fn workgroup_size(self) -> u32 {
        match self {
            Kernel::Reduce { .. } | Kernel::Separable { .. } => REDUCE_WORKGROUP as u32,
            _ => WORKGROUP,
        }
    }

    fn source(self) -> &'static str {
        match self {
            Kernel::Conv { .. } => include_str!("wgsl/conv.wgsl"),
            Kernel::Pointwise { .. } => include_str!("wgsl/pointwise.wgsl"),
            Kernel::SplitK => include_str!("wgsl/splitk.wgsl"),
            Kernel::Reduce { .. } => include_str!("wgsl/reduce.wgsl"),
            Kernel::Separable { .. } => include_str!("wgsl/separable.wgsl"),
            Kernel::Binary => include_str!("wgsl/binary.wgsl"),
            Kernel::Unary => include_str!("wgsl/unary.wgsl"),
            Kernel::Pool => include_str!("wgsl/pool.wgsl"),
            Kernel::Rows => include_str!("wgsl/rows.wgsl"),
            Kernel::MatMul => include_str!("wgsl/matmul.wgsl"),
            Kernel::Pack => include_str!("wgsl/pack.wgsl"),
            Kernel::Frame => include_str!("wgsl/frame.wgsl"),
        }
    }

    /// What the kernel's source needs declared before it: the 1x1 kernel's tile width; for
    /// it, the reduce and the separable kernels the input arrays with their 4-wide loads, the
    /// residual and output arrays with 4-wide loads and stores, as vectors or as four scalars
    /// (`vec_x`, `vec`: the pixels or columns, which the output shares, are a multiple of 4).
    fn header(self) -> String {
        let array = |binding: u32, name: &str, vector: bool| {
            let (ty, load) = if vector {
                ("vec4<f32>", format!("{name}[o / 4u]"))
            } else {
                (
                    "f32",
                    format!("vec4<f32>({name}[o], {name}[o + 1u], {name}[o + 2u], {name}[o + 3u])"),
                )
            };
            format!(
                "@group(0) @binding({binding}) var<storage, read> {name}: array<{ty}>;\n\
                 fn load_{name}(o: u32) -> vec4<f32> {{ return {load}; }}\n"
            )
        };
        // The output's first `lanes` values from `o` (all four where vectors), and its
        // residual.
        let output = |vector: bool| {
            let store = if vector {
                "@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>;\n\
                 fn store_y(o: u32, v: vec4<f32>, lanes: u32) { y[o / 4u] = v; }\n"
            } else {
                "@group(0) @binding(5) var<storage, read_write> y: array<f32>;\n\
                 fn store_y(o: u32, v: vec4<f32>, lanes: u32) {\n\
                     y[o] = v.x;\n\
                     if (lanes > 1u) { y[o + 1u] = v.y; }\n\
                     if (lanes > 2u) { y[o + 2u] = v.z; }\n\
                     if (lanes > 3u) { y[o + 3u] = v.w; }\n\
                 }\n"
            };
            format!("{}{store}", array(4, "res", vector))
        };
        // The reduce kernel's rows: four values `step` apart, one vector load where they are
        // neighbours; and the sums over its input groups, which the separable kernel shares.
        let rows = |vec_a: bool| {
            let (ty, load_a) = if vec_a {
                ("vec4<f32>", "a[o / 4u]")
            } else {
                (
                    "f32",
                    "vec4<f32>(a[o], a[o + step], a[o + 2u * step], a[o + 3u * step])",
                )
            };
            format!(
                "const WORKGROUP_SIZE: u32 = {REDUCE_WORKGROUP}u;\n\
                 @group(0) @binding(1) var<storage, read> a: array<{ty}>;\n\
                 fn load_a(o: u32, step: u32) -> vec4<f32> {{ return {load_a}; }}\n{}",
                include_str!("wgsl/group_sums.wgsl")
            )
        };
        match self {
            Kernel::Conv { channels4 } => {
                format!("const CB: u32 = {}u;\n", if channels4 { 4 } else { 1 })
            }
            Kernel::Pointwise { wide, vec_x, vec_w } => format!(
                "const TILE_C: u32 = {}u;\n{}{}{}",
                if wide { 64 } else { 32 },
                array(1, "x", vec_x),
                array(2, "wt", vec_w),
                output(vec_x),
            ),
            Kernel::Reduce { vec_a, vec } => {
                format!("{}{}{}", rows(vec_a), array(2, "b", vec), output(vec))
            }
            Kernel::Separable {
                vec_a,
                vec,
                dw_channels,
            } => format!(
                "const DW_CHANNELS: u32 = {dw_channels}u;\n{}{}",
                rows(vec_a),
                output(vec)
            ),
            _ => String::new(),
        }
    }
}

/// The adapter and device, shared by every plan loaded on it.
#[derive(Debug)]
pub(crate) struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pub adapter: String,
    timestamps: bool,
    /// The first uncaptured wgpu error, turned into an `InferError` instead of a panic.
    error: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// The best adapter: Vulkan first (hardware before software), then any other backend.
    /// Software adapters (lavapipe) count only with `allow_software`: `auto` prefers tract to
    /// a GPU emulated on the CPU.
    pub fn new(want_timestamps: bool, allow_software: bool) -> Result<Self, InferError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        // GL cannot run the plan's storage-buffer kernels well; skip it unless asked for.
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let rank = |a: &wgpu::Adapter| {
            let info = a.get_info();
            let kind = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            (info.backend != wgpu::Backend::Vulkan, kind)
        };
        let adapter = adapters
            .into_iter()
            .filter(|a| a.get_info().backend != wgpu::Backend::Gl)
            .min_by_key(rank)
            .ok_or_else(|| {
                InferError::NoAdapter("wgpu found no Vulkan, Metal or DX12 adapter".into())
            })?;
        if !allow_software && adapter.get_info().device_type == wgpu::DeviceType::Cpu {
            return Err(InferError::NoAdapter(format!(
                "the only adapter, {}, is a software one",
                adapter.get_info().name
            )));
        }
        let info = adapter.get_info();
        let timestamps =
            want_timestamps && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        if want_timestamps && !timestamps {
            return Err(InferError::Device(format!(
                "adapter {} has no timestamp queries: cannot profile",
                info.name
            )));
        }
        let mut required_features = wgpu::Features::empty();
        if timestamps {
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("infer"),
            required_features,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| InferError::Device(e.to_string()))?;
        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        Ok(GpuContext {
            device,
            queue,
            adapter: format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type),
            timestamps,
            error,
        })
    }

    fn check(&self, during: &'static str) -> Result<(), InferError> {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(InferError::Gpu { during, message }),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// Invocations per sample.
    threads: u32,
    /// Invocations per workgroup.
    group: u32,
    /// The samples of the batch an invocation covers (along z): 1, or `MATMUL_SAMPLES`.
    samples: u32,
    label: String,
    /// The batch sizes it runs at: a 1x1 conv or a MatMul has one set of dispatches per range
    /// of batches that splits its inputs alike (see `input_splits`).
    batches: std::ops::RangeInclusive<usize>,
}

impl Dispatch {
    fn workgroups(&self) -> (u32, u32) {
        let groups = self.threads.div_ceil(self.group).max(1);
        let x = groups.min(65535);
        (x, groups.div_ceil(x))
    }
}

#[derive(Debug)]
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    count: u32,
}

/// What a run reads back.
#[derive(Debug)]
pub(crate) enum Output<'a> {
    Floats(&'a mut [f32]),
    Packed(&'a mut [u8]),
    /// The model input a frame was preprocessed into (the network does not run).
    Input(&'a mut [f32]),
}

impl Output<'_> {
    fn kind(&self) -> OutputKind {
        match self {
            Output::Floats(_) => OutputKind::Floats,
            Output::Packed(_) => OutputKind::Packed,
            Output::Input(_) => OutputKind::Input,
        }
    }

    /// The part for samples `start..start + rows`, `per` elements a sample.
    fn rows(&mut self, start: usize, rows: usize, per: usize) -> Output<'_> {
        let range = start * per..(start + rows) * per;
        match self {
            Output::Floats(out) => Output::Floats(&mut out[range]),
            Output::Packed(out) => Output::Packed(&mut out[range]),
            Output::Input(out) => Output::Input(&mut out[range]),
        }
    }
}

/// A stream's batch on the GPU: its submission, its run and its first sample.
type InFlight = (wgpu::SubmissionIndex, RunKey, usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Floats,
    Packed,
    Input,
}

/// Everything a run's command buffer depends on: two runs with the same key record the same
/// commands, so the next run's can be recorded ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunKey {
    batch: usize,
    source: Source,
    /// The staging set of a run of floats (see `Staging`); 0 for a frame.
    staging: usize,
    output: OutputKind,
    /// Bumped whenever the frame buffers or the frame kernel's bind group are remade.
    frame_generation: u64,
}

/// Where a run's input comes from: `bytes` are copied from a staging buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// NCHW floats, into the input buffer.
    Floats { bytes: u64 },
    /// A packed RGB8 frame, into the frame buffer, then the frame kernel.
    Frame { bytes: u64 },
}

/// The buffers of frame preprocessing: made at the first frame, grown for a larger one; the
/// taps and parameters rewritten when the frame size or the preprocessing changes.
#[derive(Debug)]
struct FrameStage {
    /// Bytes `upload` and `frame` hold (a multiple of 4).
    capacity: u64,
    upload: wgpu::Buffer,
    /// Whether `upload` is mapped for writing.
    upload_mapped: bool,
    /// The frame as u32 words, read by the kernel.
    frame: wgpu::Buffer,
    params: wgpu::Buffer,
    taps: Option<wgpu::Buffer>,
    /// What the taps and parameters were written for.
    geometry: Option<(FramePrep, u32, u32)>,
    /// Remade when a buffer it binds is.
    dispatch: Option<Dispatch>,
    /// For `preprocess_frame` only.
    input_readback: Option<wgpu::Buffer>,
}

/// Inputs of at least twice this size are copied into the mapped upload buffer by rayon's
/// threads, a piece of this size each: one core's copy into mapped (possibly write-combined)
/// memory runs at about 10 GB/s, which made the copy of a 224x224 batch of 32 (19 MB) 1.7 ms
/// on the H200's host. A frame-sized input (0.6 MB) is copied by the calling thread.
const COPY_PIECE: usize = 1 << 20;

/// Copies `src` into the mapped `dst` (same length).
fn copy_input(mut dst: wgpu::WriteOnly<'_, [u8]>, src: &[u8]) {
    if src.len() < 2 * COPY_PIECE {
        dst.copy_from_slice(src);
        return;
    }
    // Whole pieces as arrays: a `WriteOnly` of an array may cross threads, one of a slice not.
    let (pieces, mut rest) = dst.into_chunks::<COPY_PIECE>();
    let sources = src.chunks_exact(COPY_PIECE);
    rest.copy_from_slice(sources.remainder());
    rayon::in_place_scope(|scope| {
        for (piece, source) in pieces.into_iter().zip(sources) {
            scope.spawn(move |_| {
                let mut piece: wgpu::WriteOnly<'_, [u8]> = piece.into();
                piece.copy_from_slice(source);
            });
        }
    });
}

/// Maps a staging buffer for writing again if a failed run left it unmapped.
fn remap(ctx: &GpuContext, buffer: &wgpu::Buffer, mapped: &mut bool) -> Result<(), InferError> {
    if !*mapped {
        buffer.map_async(wgpu::MapMode::Write, .., |_| ());
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| InferError::Gpu {
                during: "mapping the upload buffer",
                message: e.to_string(),
            })?;
        *mapped = true;
    }
    Ok(())
}

/// The host-visible buffers a run of floats goes through: the input is written into `upload`
/// (kept mapped between runs) and the output read from `readback`. A plan has one set from
/// load; a stream adds a second, so that one batch is copied in or out while the GPU runs
/// another.
#[derive(Debug)]
struct Staging {
    upload: wgpu::Buffer,
    /// Whether `upload` is mapped for writing (false after a run that failed midway).
    upload_mapped: bool,
    readback: wgpu::Buffer,
    readback_packed: Option<wgpu::Buffer>,
}

impl Staging {
    fn new(device: &wgpu::Device, in_bytes: u64, out_bytes: u64, packed: Option<u64>) -> Self {
        Staging {
            upload: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("upload"),
                size: in_bytes.max(16),
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            }),
            upload_mapped: true,
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: out_bytes.max(16),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            readback_packed: packed.map(|size| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback packed"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }),
        }
    }

    fn bytes(&self) -> u64 {
        self.upload.size()
            + self.readback.size()
            + self.readback_packed.as_ref().map_or(0, wgpu::Buffer::size)
    }
}

#[derive(Debug)]
pub(crate) struct GpuPlan {
    ctx: GpuContext,
    dispatches: Vec<Dispatch>,
    pack: Option<Dispatch>,
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    packed: Option<wgpu::Buffer>,
    /// Staging for runs of floats: the first set from load, the second made by the first
    /// stream (see `Staging`).
    staging: Vec<Staging>,
    in_len: usize,
    out_len: usize,
    words: usize,
    max_batch: usize,
    bytes: u64,
    memory: crate::PlanMemory,
    profiler: Option<Profiler>,
    /// The frame preprocessing kernel, compiled at load.
    frame_pipeline: wgpu::ComputePipeline,
    frame: Option<FrameStage>,
    /// Counts the remakings of the frame stage's buffers and bind group (see `RunKey`).
    frame_generation: u64,
    /// The next run's commands, recorded while the GPU ran the last one (for a run like it).
    recorded: Option<(RunKey, wgpu::CommandBuffer)>,
}

fn params_bytes(p: &[u32]) -> [u8; PARAM_BYTES as usize] {
    let mut b = [0u8; PARAM_BYTES as usize];
    for (i, v) in p.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// The first parameters of the windowed kernels (`conv.wgsl`, `pool.wgsl`): the output's size,
/// then the window's input, output, kernel, stride, leading padding and dilation.
fn window_params(total: usize, win: &Window) -> Vec<u32> {
    [
        total, win.c, win.h, win.w, win.oh, win.ow, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl,
        win.dh, win.dw,
    ]
    .map(|x| x as u32)
    .to_vec()
}

/// The samples of the batch an invocation of `matmul.wgsl` computes, each weight it reads
/// used for all of them: its accumulator's four lanes.
const MATMUL_SAMPLES: u32 = 4;

/// Invocations of a workgroup of `wgsl/reduce.wgsl`.
const REDUCE_WORKGROUP: usize = 256;
/// Its workgroup memory: four vec4 partial sums an invocation.
const REDUCE_SHARED_BYTES: u32 = REDUCE_WORKGROUP as u32 * 4 * 16;

/// The input groups of a reduce kernel over `k` inputs: a power of two from 4 to 64 that gives
/// each invocation at most about 16 inputs (a longer chain of loads is latency a small layer
/// cannot hide), as few as that so that more outputs share a workgroup.
fn reduce_groups(k: usize) -> usize {
    k.div_ceil(16).next_power_of_two().clamp(4, 64)
}

/// The pixels of a 1x1 kernel's output tile (`wgsl/pointwise.wgsl`); its channels are 32
/// (narrow) or 64 (wide).
const POINTWISE_TILE_PIXELS: usize = 64;
/// The depth of the input slices it reads at once: a split's range is a multiple of it.
const POINTWISE_SLICE: usize = 16;

/// The split of a step's `k` inputs into `(splits, chunk)` when a batch dispatches `workgroups`:
/// one split when they alone fill the GPU (half of `target`) or the inputs are few, else about
/// `target` workgroups in all, in ranges of at least 64 inputs.
fn input_split(k: usize, workgroups: usize, target: usize) -> (usize, usize) {
    if fills_gpu(workgroups, target) || k < 128 {
        return (1, k);
    }
    let want = target.div_ceil(workgroups).min(k / 64).max(1);
    let chunk = k.div_ceil(want).next_multiple_of(POINTWISE_SLICE);
    (k.div_ceil(chunk), chunk)
}

fn fills_gpu(workgroups: usize, target: usize) -> bool {
    workgroups >= target / 2
}

/// The shape of a step that may split its inputs: a 1x1 conv or a MatMul.
#[derive(Debug, Clone, Copy)]
struct SplitShape {
    /// Inputs summed into an output.
    k: usize,
    /// Workgroups a sample: narrow tiles for a 1x1 conv, 64 outputs for a MatMul.
    workgroups: usize,
    /// Workgroups a sample with wide 1x1 tiles, for a conv of more than 32 outputs.
    wide_workgroups: Option<usize>,
    /// Outputs a sample.
    outputs: usize,
    /// A MatMul (which `SplitSums::Workgroup` runs as the reduce kernel at every batch).
    linear: bool,
    /// A 1x1 conv that runs fused with the depthwise conv before it where a batch's tiles do
    /// not fill the GPU (see `separable_pairs`): its quads of pixels and of output channels.
    separable: Option<(usize, usize)>,
}

/// How a step runs at a range of batch sizes.
#[derive(Debug, Clone)]
struct Split {
    batches: std::ops::RangeInclusive<usize>,
    /// Wide 1x1 tiles (64 channels).
    wide: bool,
    splits: usize,
    chunk: usize,
    /// Runs as the reduce kernel (`SplitSums::Workgroup`): its inputs shared out in one
    /// workgroup, not split among workgroups; then `splits` is 1.
    reduce: bool,
    /// Runs fused with the depthwise conv before it (`wgsl/separable.wgsl`), its output
    /// channels in this many blocks; then `splits` is 1.
    fused: Option<usize>,
}

/// A step's tiles and split of its inputs for every batch from 1 to `max_batch`, as ranges of
/// batches: a small batch splits the inputs of a late layer to fill the GPU (or fuses the
/// depthwise conv before it), a large one needs no split (which saves the partial sums and their
/// kernel); `Auto` takes wide tiles where they fill the GPU unsplit.
fn input_splits(shape: SplitShape, max_batch: usize, tuning: GpuTuning) -> Vec<Split> {
    let target = tuning.split_workgroups;
    let mut ranges: Vec<Split> = Vec::new();
    for batch in 1..=max_batch {
        let wide = shape
            .wide_workgroups
            .filter(|w| match tuning.pointwise_tiles {
                PointwiseTiles::Auto => fills_gpu(w * batch, target),
                PointwiseTiles::Narrow => false,
                PointwiseTiles::Wide => true,
            });
        let workgroups = wide.unwrap_or(shape.workgroups) * batch;
        let (splits, chunk) = input_split(shape.k, workgroups, target);
        let fused = shape
            .separable
            .filter(|_| !fills_gpu(shape.workgroups * batch, target))
            .map(|(pixel_quads, row_quads)| {
                separable_blocks(pixel_quads * batch, row_quads, target)
            });
        let reduce = fused.is_none()
            && tuning.split_sums == SplitSums::Workgroup
            && (splits > 1 || shape.linear);
        let (wide, splits, chunk) = if reduce || fused.is_some() {
            (false, 1, shape.k)
        } else {
            (wide.is_some(), splits, chunk)
        };
        let key = (wide, splits, chunk, reduce, fused);
        match ranges.last_mut() {
            Some(r) if (r.wide, r.splits, r.chunk, r.reduce, r.fused) == key => {
                r.batches = *r.batches.start()..=batch;
            }
            _ => ranges.push(Split {
                batches: batch..=batch,
                wide,
                splits,
                chunk,
                reduce,
                fused,
            }),
        }
    }
    ranges
}

/// Whether a conv runs as the tiled 1x1 kernel.
fn is_pointwise(win: &Window, group: usize) -> bool {
    (win.kh, win.kw, win.sh, win.sw) == (1, 1, 1, 1)
        && (win.pt, win.pl, win.pb, win.pr) == (0, 0, 0, 0)
        && group == 1
}

/// The split shape of a 1x1 conv (32- or 64-channel x 64-pixel tiles; `after_depthwise`: it may
/// run fused with the depthwise conv before it) or a MatMul (one output per invocation); `None`
/// for any other step.
fn split_shape(kind: &StepKind, after_depthwise: bool) -> Option<SplitShape> {
    match kind {
        StepKind::Conv {
            cout, group, win, ..
        } if is_pointwise(win, *group) => {
            let npix = win.oh * win.ow;
            let tiles =
                |channels: usize| npix.div_ceil(POINTWISE_TILE_PIXELS) * cout.div_ceil(channels);
            Some(SplitShape {
                k: win.c,
                workgroups: tiles(32),
                wide_workgroups: (*cout > 32).then(|| tiles(64)),
                outputs: cout * npix,
                linear: false,
                separable: after_depthwise.then(|| (npix.div_ceil(4), cout.div_ceil(4))),
            })
        }
        StepKind::MatMul { rows, k, n, .. } => Some(SplitShape {
            k: *k,
            workgroups: (rows * n).div_ceil(WORKGROUP as usize),
            wide_workgroups: None,
            outputs: rows * n,
            linear: true,
            separable: None,
        }),
        _ => None,
    }
}

/// The vec4s of workgroup memory of `wgsl/separable.wgsl` for a depthwise conv of `channels`:
/// one a depthwise output, then four an invocation for its partial sums; rounded up to a
/// multiple of the workgroup, so that few layers compile their own kernel (a power of two
/// would not fit Lite0's 1152 channels in lavapipe's 32 KB).
fn separable_channels(channels: usize) -> usize {
    channels
        .max(4 * REDUCE_WORKGROUP)
        .next_multiple_of(REDUCE_WORKGROUP)
}

fn separable_shared_bytes(channels: usize) -> usize {
    separable_channels(channels) * 16
}

/// The blocks of output channels a fused depthwise + 1x1 layer of `pixel_quads` a batch and
/// `row_quads` dispatches (a workgroup for each quad of pixels and block): enough for about
/// half of `target` workgroups, each block at most a quad of channels an invocation.
fn separable_blocks(pixel_quads: usize, row_quads: usize, target: usize) -> usize {
    let want = (target / 2)
        .div_ceil(pixel_quads)
        .max(row_quads.div_ceil(REDUCE_WORKGROUP))
        .clamp(1, row_quads);
    row_quads.div_ceil(row_quads.div_ceil(want))
}

/// The input groups of a block of `quads` (quads of output channels) over `channels` inputs in
/// `wgsl/separable.wgsl`: as many as the workgroup holds beside the block, at most as many as
/// the reduce kernel takes for the inputs (`reduce_groups`).
fn separable_groups(quads: usize, channels: usize) -> usize {
    (REDUCE_WORKGROUP / quads.next_power_of_two()).min(reduce_groups(channels))
}

/// The depthwise convs that run fused into the 1x1 conv after them (`wgsl/separable.wgsl`), as
/// the 1x1 conv's step to the depthwise conv's: a depthwise conv (a channel a group, no
/// residual, not itself 1x1) whose output only the next step reads, a 1x1 conv, and whose
/// channels fit the adapter's `shared_bytes` of workgroup memory.
fn separable_pairs(g: &Graph, shared_bytes: u32) -> HashMap<usize, usize> {
    let root = |v: ValueId| g.values[v].root;
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    for s in &g.steps {
        for v in s.inputs() {
            *readers.entry(root(v)).or_default() += 1;
        }
    }
    let mut pairs = HashMap::new();
    for (i, pair) in g.steps.windows(2).enumerate() {
        let (
            StepKind::Conv {
                residual: None,
                cout,
                group,
                win,
                ..
            },
            StepKind::Conv {
                x,
                group: pw_group,
                win: pw_win,
                ..
            },
        ) = (&pair[0].kind, &pair[1].kind)
        else {
            continue;
        };
        let out = root(pair[0].out);
        let depthwise = *group == win.c && *cout == win.c && !is_pointwise(win, *group);
        let reads_it = root(*x) == out
            && (pw_win.c, pw_win.h, pw_win.w) == (*cout, win.oh, win.ow)
            && readers.get(&out) == Some(&1)
            && out != root(g.output);
        let fits = separable_shared_bytes(win.c) <= shared_bytes as usize;
        if depthwise && is_pointwise(pw_win, *pw_group) && reads_it && fits {
            pairs.insert(i + 1, i);
        }
    }
    pairs
}

/// Assigns each stored value a buffer, reusing buffers whose values are dead: returns the buffer
/// of each root value and each buffer's size in bytes. A fused depthwise conv's input lives
/// until the 1x1 conv that reads it in its place (`pairs`, see `separable_pairs`).
fn assign_buffers(
    g: &Graph,
    max_batch: usize,
    pairs: &HashMap<usize, usize>,
) -> (HashMap<ValueId, usize>, Vec<u64>) {
    let bytes = |v: ValueId| (g.values[v].len().max(1) * max_batch * 4) as u64;
    let root = |v: ValueId| g.values[v].root;
    let reads = |i: usize| {
        let mut v = g.steps[i].inputs();
        v.extend(pairs.get(&i).map(|&dw| g.steps[dw].inputs()[0]));
        v
    };
    let mut last_use: HashMap<ValueId, usize> = HashMap::new();
    for i in 0..g.steps.len() {
        for v in reads(i) {
            last_use.insert(root(v), i);
        }
    }
    last_use.insert(root(g.output), usize::MAX);
    let mut slot_of = HashMap::new();
    let mut sizes: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let take = |need: u64, sizes: &mut Vec<u64>, free: &mut Vec<usize>| -> usize {
        // Best fit among free buffers, else grow the largest free one, else a new buffer.
        let fit = free
            .iter()
            .enumerate()
            .filter(|(_, s)| sizes[**s] >= need)
            .min_by_key(|(_, s)| sizes[**s])
            .map(|(i, _)| i);
        let pick = fit.or_else(|| {
            free.iter()
                .enumerate()
                .max_by_key(|(_, s)| sizes[**s])
                .map(|(i, _)| i)
        });
        match pick {
            Some(i) => {
                let s = free.swap_remove(i);
                sizes[s] = sizes[s].max(need);
                s
            }
            None => {
                sizes.push(need);
                sizes.len() - 1
            }
        }
    };
    let input_root = root(g.input);
    slot_of.insert(input_root, take(bytes(input_root), &mut sizes, &mut free));
    for (i, s) in g.steps.iter().enumerate() {
        let out = root(s.out);
        slot_of.insert(out, take(bytes(out), &mut sizes, &mut free));
        let mut dead: Vec<ValueId> = reads(i).into_iter().map(root).collect();
        dead.push(out);
        dead.sort_unstable();
        dead.dedup();
        for r in dead {
            let last = last_use.get(&r).copied();
            if last == Some(i) || (r == out && last.is_none()) {
                free.push(slot_of[&r]);
            }
        }
    }
    (slot_of, sizes)
}

impl GpuPlan {
    pub fn new(
        ctx: GpuContext,
        g: &Graph,
        max_batch: usize,
        tuning: GpuTuning,
    ) -> Result<Self, InferError> {
        let device = &ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let limits = device.limits();
        let big_workgroups = limits.max_compute_invocations_per_workgroup
            >= REDUCE_WORKGROUP as u32
            && limits.max_compute_workgroup_size_x >= REDUCE_WORKGROUP as u32;
        let reduce_fits =
            big_workgroups && limits.max_compute_workgroup_storage_size >= REDUCE_SHARED_BYTES;
        let tuning = if tuning.split_sums == SplitSums::Workgroup && !reduce_fits {
            tracing::warn!(
                "the adapter's workgroups are too small for the reduce kernel ({REDUCE_WORKGROUP} \
                 invocations, {REDUCE_SHARED_BYTES} bytes): split layers sum in a second dispatch"
            );
            GpuTuning {
                split_sums: SplitSums::Dispatch,
                ..tuning
            }
        } else {
            tuning
        };
        if tuning.fuse_depthwise && !big_workgroups {
            tracing::warn!(
                "the adapter's workgroups are too small for the fused depthwise kernel \
                 ({REDUCE_WORKGROUP} invocations): depthwise convs run on their own"
            );
        }
        let pairs = if tuning.fuse_depthwise && big_workgroups {
            separable_pairs(g, limits.max_compute_workgroup_storage_size)
        } else {
            HashMap::new()
        };
        // The split shape of each 1x1 conv and MatMul, and how it runs at each batch.
        let step_splits: Vec<Option<(SplitShape, Vec<Split>)>> = (0..g.steps.len())
            .map(|si| {
                split_shape(&g.steps[si].kind, pairs.contains_key(&si))
                    .map(|shape| (shape, input_splits(shape, max_batch, tuning)))
            })
            .collect();
        let (slot_of, sizes) = assign_buffers(g, max_batch, &pairs);
        let max_bind = limits.max_storage_buffer_binding_size;
        if let Some(big) = sizes.iter().find(|&&s| s > max_bind) {
            return Err(InferError::Device(format!(
                "an activation needs {big} bytes at batch {max_batch}, above the adapter's \
                 binding limit of {max_bind}: lower the batch"
            )));
        }
        let storage = wgpu::BufferUsages::STORAGE;
        let slots: Vec<wgpu::Buffer> = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("activation {i}")),
                    size: s.max(16),
                    usage: storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        // 1x1 conv weights travel transposed (below), not as they are.
        let replaced: Vec<usize> = g
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Conv {
                    weight, group, win, ..
                } if is_pointwise(win, *group) => Some(*weight),
                _ => None,
            })
            .collect();
        let consts: Vec<wgpu::Buffer> = g
            .consts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let used = if replaced.contains(&i) {
                    &[][..]
                } else {
                    &c.data[..]
                };
                let mut data = bytemuck::cast_slice::<f32, u8>(used).to_vec();
                data.resize(data.len().max(16), 0);
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(&format!("constant {i}")),
                    contents: &data,
                    usage: storage,
                })
            })
            .collect();
        // Partial sums of split 1x1 convs; they run one after another and share it.
        let scratch_bytes = step_splits
            .iter()
            .flatten()
            .flat_map(|(shape, splits)| {
                splits
                    .iter()
                    .filter(|r| r.splits > 1)
                    .map(|r| (r.splits * shape.outputs * r.batches.end() * 4) as u64)
            })
            .max()
            .unwrap_or(0);
        let scratch = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("split partial sums"),
            size: scratch_bytes.max(16),
            usage: storage,
            mapped_at_creation: false,
        });
        // Bound where a kernel's optional input (bias, residual) is absent.
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("absent"),
            size: 16,
            usage: storage,
            mapped_at_creation: false,
        });
        let buf = |v: ValueId| &slots[slot_of[&g.values[v].root]];
        let operand = |o: Operand| match o {
            Operand::Value(v) => buf(v),
            Operand::Const(c) => &consts[c],
        };

        let mut pipelines: HashMap<Kernel, wgpu::ComputePipeline> = HashMap::new();
        let mut pipeline = |k: Kernel| {
            pipelines
                .entry(k)
                .or_insert_with(|| {
                    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("{k:?}")),
                        source: wgpu::ShaderSource::Wgsl(
                            format!("{PRELUDE}\n{}\n{}", k.header(), k.source()).into(),
                        ),
                    });
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&format!("{k:?}")),
                        layout: None,
                        module: &module,
                        entry_point: Some("main"),
                        compilation_options: Default::default(),
                        cache: None,
                    })
                })
                .clone()
        };

        let align = u64::from(limits.min_uniform_buffer_offset_alignment).max(PARAM_BYTES);
        // A 1x1 conv or a MatMul takes one dispatch per range of batches, two where it splits
        // its inputs; any other step one; the pack kernel one.
        let n_dispatch = 1 + step_splits
            .iter()
            .map(|splits| match splits {
                Some((_, splits)) => splits
                    .iter()
                    .map(|r| if r.splits > 1 { 2 } else { 1 })
                    .sum(),
                None => 1,
            })
            .sum::<usize>();
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: align * n_dispatch as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        let mut param_blocks: Vec<[u8; PARAM_BYTES as usize]> = Vec::new();
        let mut make = |kernel: Kernel,
                        p: &[u32],
                        bufs: &[&wgpu::Buffer],
                        threads: usize,
                        label: String|
         -> Result<Dispatch, InferError> {
            let threads = u32::try_from(threads)
                .map_err(|_| InferError::Device(format!("{label}: too many invocations")))?;
            let index = param_blocks.len() as u64;
            param_blocks.push(params_bytes(p));
            let pipeline = pipeline(kernel);
            let layout = pipeline.get_bind_group_layout(0);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: index * align,
                    size: wgpu::BufferSize::new(PARAM_BYTES),
                }),
            }];
            for (i, b) in bufs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                });
            }
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&label),
                layout: &layout,
                entries: &entries,
            });
            Ok(Dispatch {
                pipeline,
                bind_group,
                threads,
                group: kernel.workgroup_size(),
                samples: 1,
                label,
                batches: 1..=max_batch,
            })
        };

        // The 1x1 kernel reads its weight as [cin, cout] (contiguous across a tile's output
        // channels, like the pixels of its input); ONNX stores a 1x1 conv's as [cout, cin].
        let transposed: HashMap<usize, wgpu::Buffer> = g
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.kind {
                StepKind::Conv {
                    weight,
                    cout,
                    group,
                    win,
                    ..
                } if is_pointwise(win, *group) => {
                    let (cin, cout) = (win.c, *cout);
                    let w = &g.consts[*weight].data;
                    let t: Vec<f32> = (0..cin * cout)
                        .map(|e| w[(e % cout) * cin + e / cout])
                        .collect();
                    Some((
                        i,
                        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some("1x1 weight [cin, cout]"),
                            contents: bytemuck::cast_slice(&t),
                            usage: storage,
                        }),
                    ))
                }
                _ => None,
            })
            .collect();
        let f = f32::to_bits;
        let u = |x: usize| x as u32;
        // The largest batch at which each fused depthwise conv runs inside the 1x1 conv after
        // it: the batches from 1 that leave the GPU unfilled.
        let fused_until: HashMap<usize, usize> = pairs
            .iter()
            .map(|(&pw, &dw)| {
                let until = step_splits[pw]
                    .iter()
                    .flat_map(|(_, splits)| splits)
                    .take_while(|r| r.fused.is_some())
                    .last()
                    .map_or(0, |r| *r.batches.end());
                (dw, until)
            })
            .collect();
        let mut dispatches = Vec::with_capacity(g.steps.len());
        for (si, s) in g.steps.iter().enumerate() {
            let label = format!("{} [{}]", s.node, s.ops);
            let out = buf(s.out);
            let total = g.values[s.out].len();
            // A 1x1 conv or a MatMul: one set of dispatches per range of batch sizes that split
            // the inputs alike (see `input_splits`); a split one writes partial sums into the
            // scratch buffer, which the SplitK kernel adds up before the fused epilogue, or with
            // `SplitSums::Workgroup` is one reduce kernel that adds them in workgroup memory; a
            // 1x1 conv after a depthwise conv may instead run both (`fuse_depthwise`).
            if let Some((shape, splits)) = &step_splits[si] {
                // What every kernel of the step binds and fuses.
                let (x, bias, residual, lo, hi) = match &s.kind {
                    StepKind::Conv {
                        x,
                        bias,
                        residual,
                        lo,
                        hi,
                        ..
                    } => (
                        buf(*x),
                        bias.map(|b| &consts[b]),
                        residual.map(buf),
                        *lo,
                        *hi,
                    ),
                    StepKind::MatMul { x, bias, .. } => {
                        (buf(*x), bias.map(|c| &consts[c]), None, -f32::MAX, f32::MAX)
                    }
                    _ => unreachable!("split_shape is only some for these"),
                };
                let flags = u32::from(bias.is_some()) | (u32::from(residual.is_some()) << 1);
                let (bias_buf, residual_buf) = (bias.unwrap_or(&dummy), residual.unwrap_or(&dummy));
                for split in splits.iter().cloned() {
                    let Split {
                        batches,
                        wide,
                        splits,
                        chunk,
                        reduce,
                        fused,
                    } = split;
                    if let Some(blocks) = fused {
                        let dw = &g.steps[pairs[&si]];
                        let (
                            StepKind::Conv {
                                x: dw_x,
                                weight: dw_weight,
                                bias: dw_bias,
                                lo: dw_lo,
                                hi: dw_hi,
                                win,
                                ..
                            },
                            StepKind::Conv { cout, .. },
                        ) = (&dw.kind, &s.kind)
                        else {
                            unreachable!("separable_pairs pairs convs")
                        };
                        let quads = cout.div_ceil(4).div_ceil(blocks);
                        let kgroups = separable_groups(quads, win.c);
                        let mut p = window_params(total, win);
                        p.extend([
                            u32::from(dw_bias.is_some()),
                            f(*dw_lo),
                            f(*dw_hi),
                            u(*cout),
                            flags,
                            f(lo),
                            f(hi),
                            u(kgroups),
                            u(quads),
                            u(blocks),
                        ]);
                        let bufs = [
                            &transposed[&si],
                            buf(*dw_x),
                            bias_buf,
                            residual_buf,
                            out,
                            &consts[*dw_weight],
                            dw_bias.map_or(&dummy, |b| &consts[b]),
                        ];
                        let npix = win.oh * win.ow;
                        let kernel = Kernel::Separable {
                            vec_a: cout % 4 == 0,
                            vec: npix % 4 == 0,
                            dw_channels: u(separable_channels(win.c)),
                        };
                        let name = format!(
                            "{} [{}] + {label} (depthwise fused, channel blocks: {blocks})",
                            dw.node, dw.ops
                        );
                        let threads = npix.div_ceil(4) * blocks * REDUCE_WORKGROUP;
                        let mut d = make(kernel, &p, &bufs, threads, name)?;
                        d.batches = batches;
                        dispatches.push(d);
                        continue;
                    }
                    if reduce {
                        // (a, b, rows, columns, a's steps an input / a row / a sample, b's
                        // step a sample, the bias's flag: per row or per column): see
                        // reduce.wgsl.
                        let (a, b, rows, cols, a_steps, b_sample, bias_flag) = match &s.kind {
                            StepKind::Conv { cout, win, .. } => {
                                let npix = win.oh * win.ow;
                                let b_sample = win.c * npix;
                                (&transposed[&si], x, *cout, npix, [*cout, 1, 0], b_sample, 1)
                            }
                            StepKind::MatMul {
                                weight, rows, k, n, ..
                            } => (x, &consts[*weight], *rows, *n, [1, *k, rows * k], 0, 4),
                            _ => unreachable!("split_shape is only some for these"),
                        };
                        let kgroups = reduce_groups(shape.k);
                        let quads_per_row = cols.div_ceil(4);
                        let tiles = rows.div_ceil(4) * quads_per_row;
                        let workgroups = tiles.div_ceil(REDUCE_WORKGROUP / kgroups);
                        let p = [
                            u(total),
                            u(shape.k),
                            u(rows),
                            u(cols),
                            u(a_steps[0]),
                            u(a_steps[1]),
                            u(a_steps[2]),
                            u(b_sample),
                            (flags & 2) | if bias.is_some() { bias_flag } else { 0 },
                            f(lo),
                            f(hi),
                            u(kgroups),
                            u(quads_per_row),
                            u(tiles),
                        ];
                        let bufs = [a, b, bias_buf, residual_buf, out];
                        let name = format!("{label} (inputs in {kgroups} groups)");
                        // A conv's weight rows are contiguous: vector loads of 4 channels.
                        let vec_a = a_steps[1] == 1 && rows % 4 == 0;
                        let kernel = Kernel::Reduce {
                            vec_a,
                            vec: cols % 4 == 0,
                        };
                        let threads = workgroups * REDUCE_WORKGROUP;
                        let mut d = make(kernel, &p, &bufs, threads, name)?;
                        d.batches = batches;
                        dispatches.push(d);
                        continue;
                    }
                    let tile = if wide { " (64-channel tiles)" } else { "" };
                    let name = if splits == 1 {
                        format!("{label}{tile}")
                    } else {
                        format!("{label}{tile} (x{splits} partial)")
                    };
                    // The first kernel, and the bias's period: output i of a sample has the
                    // bias of (i / bias_div) % bias_mod (a conv's channel, a MatMul's column).
                    let (partial, bias_div, bias_mod) = match &s.kind {
                        StepKind::Conv { cout, win, .. } => {
                            let (cin, cout, npix) = (win.c, *cout, win.oh * win.ow);
                            let tiles_p = npix.div_ceil(POINTWISE_TILE_PIXELS);
                            let workgroups = shape
                                .wide_workgroups
                                .filter(|_| wide)
                                .unwrap_or(shape.workgroups);
                            let p = [
                                u(total),
                                u(cin),
                                u(npix),
                                u(cout),
                                u(tiles_p),
                                flags,
                                f(lo),
                                f(hi),
                                u(workgroups * splits),
                                u(splits),
                                u(chunk),
                            ];
                            let bufs = if splits == 1 {
                                [x, &transposed[&si], bias_buf, residual_buf, out]
                            } else {
                                [x, &transposed[&si], &dummy, &dummy, &scratch]
                            };
                            let threads = 64 * workgroups * splits;
                            let kernel = Kernel::Pointwise {
                                wide,
                                vec_x: npix % 4 == 0,
                                vec_w: cout % 4 == 0,
                            };
                            (make(kernel, &p, &bufs, threads, name)?, npix, cout)
                        }
                        StepKind::MatMul {
                            weight, rows, k, n, ..
                        } => {
                            let p = [
                                u(total),
                                u(*k),
                                u(*n),
                                flags,
                                u(*rows),
                                u(splits),
                                u(chunk),
                                // Samples past the range's largest batch are not computed:
                                // the scratch buffer holds the partial sums of that many.
                                u(*batches.end()),
                            ];
                            let y = if splits == 1 { out } else { &scratch };
                            let bufs = [x, &consts[*weight], bias_buf, y];
                            let mut d = make(Kernel::MatMul, &p, &bufs, total * splits, name)?;
                            d.samples = MATMUL_SAMPLES;
                            (d, 1, *n)
                        }
                        _ => unreachable!("split_shape is only some for these"),
                    };
                    let mut variant = vec![partial];
                    if splits > 1 {
                        let q = [
                            u(total),
                            u(splits),
                            flags,
                            f(lo),
                            f(hi),
                            u(bias_div),
                            u(bias_mod),
                        ];
                        let sum_bufs = [&scratch, bias_buf, residual_buf, out];
                        variant.push(make(Kernel::SplitK, &q, &sum_bufs, total, label.clone())?);
                    }
                    for mut d in variant {
                        d.batches = batches.clone();
                        dispatches.push(d);
                    }
                }
                continue;
            }
            let d = match &s.kind {
                StepKind::Conv {
                    x,
                    weight,
                    bias,
                    residual,
                    lo,
                    hi,
                    cout,
                    group,
                    win,
                } => {
                    let flags = u32::from(bias.is_some()) | (u32::from(residual.is_some()) << 1);
                    // An invocation computes four neighbouring outputs of a row, for four
                    // channels where a group has a multiple of 4.
                    let channels4 = (cout / group) % 4 == 0;
                    let per = if channels4 { 4 } else { 1 };
                    let quads = cout / per * win.oh * win.ow.div_ceil(4);
                    let mut p = window_params(total, win);
                    p.extend([
                        u(win.c / group),
                        u(cout / group),
                        flags,
                        f(*lo),
                        f(*hi),
                        u(quads),
                    ]);
                    let bufs = [
                        buf(*x),
                        &consts[*weight],
                        bias.map_or(&dummy, |b| &consts[b]),
                        residual.map_or(&dummy, buf),
                        out,
                    ];
                    let label = if channels4 {
                        format!("{label} (4 channels an invocation)")
                    } else {
                        label
                    };
                    make(Kernel::Conv { channels4 }, &p, &bufs, quads, label)?
                }
                // Dispatched above, with the 1x1 convs.
                StepKind::MatMul { .. } => continue,
                StepKind::Binary { op, a, b, bc } => {
                    let mut p = vec![u(total), *op as u32, u(bc.a_batch), u(bc.b_batch)];
                    p.extend(bc.dims.iter().map(|&x| u(x)));
                    p.extend(bc.a_strides.iter().map(|&x| u(x)));
                    p.extend(bc.b_strides.iter().map(|&x| u(x)));
                    debug_assert_eq!(p.len(), 4 + 3 * MAX_RANK);
                    make(
                        Kernel::Binary,
                        &p,
                        &[operand(*a), operand(*b), out],
                        total,
                        label,
                    )?
                }
                StepKind::Unary { op, x } => {
                    let (code, lo, hi) = match op {
                        UnaryOp::Clamp { lo, hi } => (0, *lo, *hi),
                        UnaryOp::Sqrt => (1, 0.0, 0.0),
                        UnaryOp::Square => (2, 0.0, 0.0),
                        UnaryOp::Sigmoid => (3, 0.0, 0.0),
                        UnaryOp::Reciprocal => (4, 0.0, 0.0),
                        UnaryOp::Neg => (5, 0.0, 0.0),
                    };
                    let p = [u(total), code, f(lo), f(hi)];
                    make(Kernel::Unary, &p, &[buf(*x), out], total, label)?
                }
                StepKind::Pool { kind, x, win } => {
                    let mode = match kind {
                        PoolKind::Max => 0,
                        PoolKind::AvgIncludePad => 1,
                        PoolKind::AvgExcludePad => 2,
                    };
                    let mut p = window_params(total, win);
                    p.extend([mode, u(win.pb), u(win.pr)]);
                    make(Kernel::Pool, &p, &[buf(*x), out], total, label)?
                }
                StepKind::Rows {
                    op,
                    x,
                    rows,
                    len,
                    scale,
                    bias,
                } => {
                    let (code, eps) = match op {
                        RowOp::Mean => (0, 0.0),
                        RowOp::Sum => (1, 0.0),
                        RowOp::L2 => (2, 0.0),
                        RowOp::SumSquare => (3, 0.0),
                        RowOp::LpNormalize => (4, 0.0),
                        RowOp::LayerNorm { eps } => (5, *eps),
                    };
                    let flags = u32::from(scale.is_some()) | (u32::from(bias.is_some()) << 1);
                    let p = [u(*rows), u(*len), code, f(eps), flags];
                    let bufs = [
                        buf(*x),
                        scale.map_or(&dummy, |c| &consts[c]),
                        bias.map_or(&dummy, |c| &consts[c]),
                        out,
                    ];
                    // A workgroup per row.
                    make(Kernel::Rows, &p, &bufs, *rows * WORKGROUP as usize, label)?
                }
            };
            // A depthwise conv runs on its own only at the batches where the 1x1 conv after it
            // does not run it.
            let first = fused_until.get(&si).map_or(1, |until| until + 1);
            if first <= max_batch {
                dispatches.push(Dispatch {
                    batches: first..=max_batch,
                    ..d
                });
            }
        }

        let in_len = g.values[g.input].len();
        let out_len = g.values[g.output].len();
        let words = out_len.div_ceil(32);
        let (pack, packed) = if out_len.is_multiple_of(8) {
            let packed = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("packed code"),
                size: (words * 4 * max_batch) as u64,
                usage: storage | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let d = make(
                Kernel::Pack,
                &[u(out_len), u(words)],
                &[buf(g.output), &packed],
                words,
                "sign and pack".into(),
            )?;
            (Some(d), Some(packed))
        } else {
            (None, None)
        };
        {
            let mut view = params
                .get_mapped_range_mut(..)
                .map_err(|e| InferError::Device(e.to_string()))?;
            let mut bytes = vec![0u8; (align * n_dispatch as u64) as usize];
            for (i, b) in param_blocks.iter().enumerate() {
                let o = i * align as usize;
                bytes[o..o + b.len()].copy_from_slice(b);
            }
            view.copy_from_slice(&bytes);
        }
        params.unmap();

        let in_bytes = (in_len * 4 * max_batch) as u64;
        let out_bytes = (out_len * 4 * max_batch) as u64;
        // Mapped at creation; re-mapped by each run once the GPU has copied from it.
        let staging = Staging::new(
            device,
            in_bytes,
            out_bytes,
            packed.as_ref().map(wgpu::Buffer::size),
        );
        let profiler = ctx.timestamps.then(|| {
            // Room for the frame kernel and the pack kernel.
            let count = 2 * (dispatches.len() as u32 + 2);
            Profiler {
                queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: u64::from(count) * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps readback"),
                    size: u64::from(count) * 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                count,
            }
        });

        let bytes = sizes.iter().sum::<u64>()
            + scratch.size()
            + transposed.values().map(wgpu::Buffer::size).sum::<u64>()
            + consts.iter().map(wgpu::Buffer::size).sum::<u64>()
            + params.size()
            + staging.bytes()
            + packed.as_ref().map_or(0, wgpu::Buffer::size);
        let memory = crate::PlanMemory {
            total: bytes,
            activations: sizes.iter().sum(),
            constants: consts
                .iter()
                .chain(transposed.values())
                .map(wgpu::Buffer::size)
                .sum(),
            // What the activations would take without reuse: every stored tensor at once.
            unshared_activations: (0..g.values.len())
                .filter(|&v| g.values[v].root == v)
                .map(|v| (g.values[v].len() * max_batch * 4) as u64)
                .sum(),
            buffers: sizes.len(),
        };
        // Compiled now so the first frame pays no shader compilation.
        let frame_pipeline = pipeline(Kernel::Frame);
        let input = slots[slot_of[&g.values[g.input].root]].clone();
        let output = slots[slot_of[&g.values[g.output].root]].clone();
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(InferError::Gpu {
                during: "building the plan",
                message: e.to_string(),
            });
        }
        ctx.check("building the plan")?;
        Ok(GpuPlan {
            ctx,
            dispatches,
            pack,
            input,
            output,
            packed,
            staging: vec![staging],
            in_len,
            out_len,
            words,
            max_batch,
            bytes,
            memory,
            profiler,
            frame_pipeline,
            frame: None,
            frame_generation: 0,
            recorded: None,
        })
    }

    pub fn adapter(&self) -> &str {
        &self.ctx.adapter
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn memory(&self) -> crate::PlanMemory {
        self.memory
    }

    pub fn kernel_labels(&self, batch: usize) -> Vec<String> {
        self.dispatches
            .iter()
            .filter(|d| d.batches.contains(&batch))
            .map(|d| d.label.clone())
            .collect()
    }

    fn check_batch(&self, batch: usize) -> Result<(), InferError> {
        if batch == 0 || batch > self.max_batch {
            return Err(InferError::Input(format!(
                "batch {batch}: the plan was built for 1 to {}",
                self.max_batch
            )));
        }
        Ok(())
    }

    /// Runs `batch` samples of NCHW floats.
    pub fn run(
        &mut self,
        batch: usize,
        input: &[f32],
        output: Output<'_>,
        profile: Option<&mut Vec<KernelTime>>,
    ) -> Result<RunTimings, InferError> {
        self.check_batch(batch)?;
        let t0 = Instant::now();
        let source = self.write_floats(0, input)?;
        let upload_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.execute(batch, source, 0, output, profile, upload_ms)
    }

    /// Runs the samples of `input` (NCHW floats, whole samples) in batches of `batch`, the last
    /// one smaller where they do not divide, with two batches in flight: while the GPU runs
    /// one, the CPU writes the next into the other staging set and reads the one before back.
    /// The wall time splits into `upload_ms` (writing inputs), `readback_ms` (reading outputs)
    /// and `run_ms` (the rest: waiting for the GPU). The second staging set is made by the
    /// first stream and kept.
    pub fn run_stream(
        &mut self,
        batch: usize,
        input: &[f32],
        mut output: Output<'_>,
    ) -> Result<RunTimings, InferError> {
        self.check_batch(batch)?;
        if self.staging.len() < 2 {
            let first = &self.staging[0];
            let second = Staging::new(
                &self.ctx.device,
                first.upload.size(),
                first.readback.size(),
                first.readback_packed.as_ref().map(wgpu::Buffer::size),
            );
            self.bytes += second.bytes();
            self.memory.total += second.bytes();
            self.staging.push(second);
        }
        let t0 = Instant::now();
        let mut timings = RunTimings::default();
        let mut in_flight = VecDeque::with_capacity(2);
        let streamed = self.stream_batches(batch, input, &mut output, &mut in_flight, &mut timings);
        if streamed.is_err() {
            self.settle(&mut in_flight);
        }
        streamed?;
        timings.run_ms = t0.elapsed().as_secs_f64() * 1e3 - timings.upload_ms - timings.readback_ms;
        Ok(timings)
    }

    fn stream_batches(
        &mut self,
        batch: usize,
        input: &[f32],
        output: &mut Output<'_>,
        in_flight: &mut VecDeque<InFlight>,
        timings: &mut RunTimings,
    ) -> Result<(), InferError> {
        let per = match output.kind() {
            OutputKind::Floats => self.out_len,
            OutputKind::Packed => self.out_len / 8,
            OutputKind::Input => self.in_len,
        };
        let samples = input.len() / self.in_len;
        for (i, start) in (0..samples).step_by(batch).enumerate() {
            let rows = batch.min(samples - start);
            let set = i % 2;
            // The batch before last used this staging set: read it back first.
            if in_flight.len() == 2 {
                self.finish_oldest(in_flight, output, per, timings)?;
            }
            let t = Instant::now();
            let source = self.write_floats(
                set,
                &input[start * self.in_len..(start + rows) * self.in_len],
            )?;
            timings.upload_ms += t.elapsed().as_secs_f64() * 1e3;
            let key = RunKey {
                batch: rows,
                source,
                staging: set,
                output: output.kind(),
                frame_generation: self.frame_generation,
            };
            let commands = self.record(key, false)?;
            let index = self.ctx.queue.submit([commands]);
            let (upload, _, dst, out_bytes) = self.run_buffers(key)?;
            dst.map_async(wgpu::MapMode::Read, 0..out_bytes, |_| ());
            upload.map_async(wgpu::MapMode::Write, .., |_| ());
            in_flight.push_back((index, key, start));
        }
        while !in_flight.is_empty() {
            self.finish_oldest(in_flight, output, per, timings)?;
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight (not for the one after it) and reads it back.
    fn finish_oldest(
        &mut self,
        in_flight: &mut VecDeque<InFlight>,
        output: &mut Output<'_>,
        per: usize,
        timings: &mut RunTimings,
    ) -> Result<(), InferError> {
        let Some((index, key, start)) = in_flight.front().cloned() else {
            return Ok(());
        };
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| InferError::Gpu {
                during: "waiting for the GPU",
                message: e.to_string(),
            })?;
        self.staging[key.staging].upload_mapped = true;
        self.ctx.check("running the plan")?;
        let t = Instant::now();
        self.read_back(key, output.rows(start, key.batch, per))?;
        timings.readback_ms += t.elapsed().as_secs_f64() * 1e3;
        in_flight.pop_front();
        Ok(())
    }

    /// After a stream failed: waits for what it submitted and unmaps its read-back buffers,
    /// so that the next run finds every buffer as a run leaves it. The errors this raises
    /// (a buffer whose mapping failed) belong to the failed stream and are dropped.
    fn settle(&mut self, in_flight: &mut VecDeque<InFlight>) {
        let _ = self.ctx.device.poll(wgpu::PollType::wait_indefinitely());
        for (_, key, _) in in_flight.drain(..) {
            if let Ok((_, _, dst, _)) = self.run_buffers(key) {
                dst.unmap();
            }
            self.staging[key.staging].upload_mapped = true;
        }
        let _ = self.ctx.check("settling a failed stream");
    }

    /// Writes NCHW floats into staging set `set`'s upload buffer and unmaps it for the copy.
    fn write_floats(&mut self, set: usize, input: &[f32]) -> Result<Source, InferError> {
        let staging = &mut self.staging[set];
        let bytes = std::mem::size_of_val(input) as u64;
        remap(&self.ctx, &staging.upload, &mut staging.upload_mapped)?;
        {
            let mut view =
                staging
                    .upload
                    .get_mapped_range_mut(0..bytes)
                    .map_err(|e| InferError::Gpu {
                        during: "upload",
                        message: e.to_string(),
                    })?;
            copy_input(view.slice(..), bytemuck::cast_slice(input));
        }
        staging.upload.unmap();
        staging.upload_mapped = false;
        Ok(Source::Floats { bytes })
    }

    /// Preprocesses one packed RGB8 frame into the input (the frame kernel, in the same command
    /// buffer and submit as the network) and runs batch 1. `Output::Input` reads back the
    /// preprocessed input instead of running the network.
    pub fn run_frame(
        &mut self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        pixels: &[u8],
        output: Output<'_>,
    ) -> Result<RunTimings, InferError> {
        let t0 = Instant::now();
        let bytes = pixels.len() as u64;
        let words_bytes = bytes.next_multiple_of(4);
        self.frame_stage(prep, width, height, words_bytes)?;
        let stage = self.frame.as_mut().expect("made by frame_stage");
        remap(&self.ctx, &stage.upload, &mut stage.upload_mapped)?;
        {
            let mut view = stage
                .upload
                .get_mapped_range_mut(0..words_bytes)
                .map_err(|e| InferError::Gpu {
                    during: "frame upload",
                    message: e.to_string(),
                })?;
            view.slice(..pixels.len()).copy_from_slice(pixels);
        }
        stage.upload.unmap();
        stage.upload_mapped = false;
        let upload_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.execute(
            1,
            Source::Frame { bytes: words_bytes },
            0,
            output,
            None,
            upload_ms,
        )
    }

    /// Makes the frame buffers big enough for `bytes` (grown, never shrunk: a camera's size
    /// seldom changes) and the taps and parameters right for `prep` at `width x height`.
    /// Allocates only on the first frame, a larger frame, or a new geometry.
    fn frame_stage(
        &mut self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        bytes: u64,
    ) -> Result<(), InferError> {
        let device = &self.ctx.device;
        let max_bind = device.limits().max_storage_buffer_binding_size;
        if bytes > max_bind {
            return Err(InferError::Input(format!(
                "a {width}x{height} RGB8 frame needs {bytes} bytes, above the adapter's binding \
                 limit of {max_bind}"
            )));
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let grow = self.frame.as_ref().is_none_or(|f| f.capacity < bytes);
        if grow {
            tracing::info!(width, height, bytes, "GPU frame buffers sized");
            let buffer = |label, size, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let upload = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("frame upload"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            let frame = buffer(
                "frame",
                bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            );
            let params = buffer(
                "frame params",
                PARAM_BYTES,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            );
            let old = self.frame.take();
            self.frame = Some(FrameStage {
                capacity: bytes,
                upload,
                upload_mapped: true,
                frame,
                params,
                // The taps are remade below, with the geometry.
                taps: old.as_ref().and_then(|o| o.taps.clone()),
                geometry: None,
                dispatch: None,
                input_readback: old.and_then(|o| o.input_readback),
            });
        }
        let stage = self.frame.as_mut().expect("made above");
        if stage.geometry != Some((*prep, width, height)) {
            let (words, layout) = taps_words(prep, width, height);
            let taps_bytes = (words.len() * 4) as u64;
            if stage.taps.as_ref().is_none_or(|t| t.size() < taps_bytes) {
                stage.taps = Some(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("frame taps"),
                    size: taps_bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
                stage.dispatch = None;
            }
            let taps = stage.taps.as_ref().expect("made above");
            self.ctx
                .queue
                .write_buffer(taps, 0, bytemuck::cast_slice(&words));
            let f = f32::to_bits;
            let mut p = vec![
                width,
                height,
                prep.crop,
                layout.rows_left,
                layout.rows_start,
                layout.cols_left,
                layout.cols_start,
                layout.weights,
            ];
            p.extend(prep.scale.map(f));
            p.extend(prep.bias.map(f));
            // The kernel's opaque zero (see frame.wgsl).
            p.push(0);
            self.ctx
                .queue
                .write_buffer(&stage.params, 0, &params_bytes(&p));
            stage.geometry = Some((*prep, width, height));
        }
        if stage.dispatch.is_none() {
            // Commands recorded ahead name the old buffers.
            self.frame_generation += 1;
            let layout = self.frame_pipeline.get_bind_group_layout(0);
            let entries = [
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: stage.params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: stage.frame.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: stage.taps.as_ref().expect("made above").as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: self.input.as_entire_binding(),
                },
            ];
            stage.dispatch = Some(Dispatch {
                pipeline: self.frame_pipeline.clone(),
                bind_group: device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("frame preprocessing"),
                    layout: &layout,
                    entries: &entries,
                }),
                threads: prep.crop * prep.crop,
                group: Kernel::Frame.workgroup_size(),
                samples: 1,
                label: "frame preprocessing [resize, crop, normalise]".into(),
                batches: 1..=1,
            });
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(InferError::Gpu {
                during: "preparing the frame buffers",
                message: e.to_string(),
            });
        }
        Ok(())
    }

    /// The buffers a run copies from and into: (the staging buffer of its input, the buffer
    /// of its output, the read-back buffer, the bytes read back), or why the run cannot be.
    fn run_buffers(
        &self,
        key: RunKey,
    ) -> Result<(&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, u64), InferError> {
        let upload = match key.source {
            Source::Frame { .. } => match &self.frame {
                Some(stage) => &stage.upload,
                None => return Err(InferError::Input("no frame uploaded".into())),
            },
            Source::Floats { .. } => &self.staging[key.staging].upload,
        };
        let staging = &self.staging[key.staging];
        let batch = key.batch;
        let (src, dst, out_bytes) = match key.output {
            OutputKind::Packed => {
                let (Some(p), Some(r)) = (&self.packed, &staging.readback_packed) else {
                    return Err(InferError::Input(format!(
                        "the output has {} values, not a multiple of 8: it cannot be packed",
                        self.out_len
                    )));
                };
                (p, r, (batch * self.words * 4) as u64)
            }
            OutputKind::Floats => (
                &self.output,
                &staging.readback,
                (batch * self.out_len * 4) as u64,
            ),
            OutputKind::Input => {
                let Some(r) = self.frame.as_ref().and_then(|s| s.input_readback.as_ref()) else {
                    return Err(InferError::Input(
                        "no read-back buffer for the model input".into(),
                    ));
                };
                (&self.input, r, (batch * self.in_len * 4) as u64)
            }
        };
        Ok((upload, src, dst, out_bytes))
    }

    /// The dispatches of a run with their batch (the frame kernel's is 1).
    fn run_dispatches(&self, key: RunKey) -> impl Iterator<Item = (&Dispatch, u32)> + Clone {
        let frame = match key.source {
            Source::Frame { .. } => self.frame.as_ref().and_then(|s| s.dispatch.as_ref()),
            Source::Floats { .. } => None,
        };
        let network = key.output != OutputKind::Input;
        let z = key.batch as u32;
        // The frame kernel (one frame: z = 1), then the network, then the pack kernel.
        frame
            .map(|d| (d, 1))
            .into_iter()
            .chain(
                self.dispatches
                    .iter()
                    .filter(move |d| network && d.batches.contains(&key.batch))
                    .map(move |d| (d, z.div_ceil(d.samples))),
            )
            .chain(
                self.pack
                    .as_ref()
                    .filter(|_| key.output == OutputKind::Packed)
                    .map(move |d| (d, z)),
            )
    }

    /// Records a run: the copy in, every dispatch, the copy out, and with `timestamps` one
    /// pass per kernel with begin/end timestamps and their resolve.
    fn record(&self, key: RunKey, timestamps: bool) -> Result<wgpu::CommandBuffer, InferError> {
        let (upload, src, dst, out_bytes) = self.run_buffers(key)?;
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        match (key.source, &self.frame) {
            (Source::Frame { bytes }, Some(stage)) => {
                enc.copy_buffer_to_buffer(upload, 0, &stage.frame, 0, bytes);
            }
            (Source::Floats { bytes }, _) => {
                enc.copy_buffer_to_buffer(upload, 0, &self.input, 0, bytes);
            }
            (Source::Frame { .. }, None) => unreachable!("checked by run_buffers"),
        }
        let list = self.run_dispatches(key);
        match &self.profiler {
            Some(prof) if timestamps => {
                for (i, (d, z)) in list.clone().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &prof.queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    let (x, y) = d.workgroups();
                    pass.set_pipeline(&d.pipeline);
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            _ => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("plan"),
                    timestamp_writes: None,
                });
                for (d, z) in list.clone() {
                    let (x, y) = d.workgroups();
                    pass.set_pipeline(&d.pipeline);
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    pass.dispatch_workgroups(x, y, z);
                }
            }
        }
        enc.copy_buffer_to_buffer(src, 0, dst, 0, out_bytes);
        if let (Some(prof), true) = (&self.profiler, timestamps) {
            let used = 2 * list.count() as u32;
            debug_assert!(used <= prof.count);
            enc.resolve_query_set(&prof.queries, 0..used, &prof.resolve, 0);
            enc.copy_buffer_to_buffer(&prof.resolve, 0, &prof.readback, 0, u64::from(used) * 8);
        }
        Ok(enc.finish())
    }

    /// Submits a run's commands (recorded ahead when the last run was like it), records the
    /// next run's while the GPU works, waits, and reads the output back.
    fn execute(
        &mut self,
        batch: usize,
        source: Source,
        staging: usize,
        output: Output<'_>,
        profile: Option<&mut Vec<KernelTime>>,
        upload_ms: f64,
    ) -> Result<RunTimings, InferError> {
        let t1 = Instant::now();
        let key = RunKey {
            batch,
            source,
            staging,
            output: output.kind(),
            frame_generation: self.frame_generation,
        };
        let profiling = profile.is_some() && self.profiler.is_some();
        let commands = match self.recorded.take() {
            Some((k, c)) if k == key && !profiling => c,
            // A recording for another kind of run is dropped unsubmitted.
            _ => self.record(key, profiling)?,
        };
        self.ctx.queue.submit([commands]);
        {
            let (upload, _, dst, out_bytes) = self.run_buffers(key)?;
            dst.map_async(wgpu::MapMode::Read, 0..out_bytes, |_| ());
            // The staging buffer just copied from is mapped again for the next run.
            upload.map_async(wgpu::MapMode::Write, .., |_| ());
        }
        let n_kernels = self.run_dispatches(key).count() as u32;
        if let (Some(prof), true) = (&self.profiler, profiling) {
            prof.readback
                .map_async(wgpu::MapMode::Read, 0..u64::from(2 * n_kernels) * 8, |_| ());
        }
        // Recording takes about 2.6 us a dispatch on this project's 2-core CPU (185 us for
        // EfficientNet-Lite0's 71): done here, it overlaps the GPU's work instead of delaying
        // the next run. Commands name buffers, not their contents, so they stay right for a
        // run with the same key; submitting checks that no buffer they use is mapped.
        if !profiling {
            let next = self.record(key, false)?;
            self.recorded = Some((key, next));
        }
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| InferError::Gpu {
                during: "waiting for the GPU",
                message: e.to_string(),
            })?;
        let labels: Option<Vec<String>> = profiling.then(|| {
            self.run_dispatches(key)
                .map(|(d, _)| d.label.clone())
                .collect()
        });
        match source {
            Source::Frame { .. } => {
                if let Some(stage) = self.frame.as_mut() {
                    stage.upload_mapped = true;
                }
            }
            Source::Floats { .. } => self.staging[staging].upload_mapped = true,
        }
        self.ctx.check("running the plan")?;
        let t2 = Instant::now();
        self.read_back(key, output)?;
        if let (Some(prof), Some(times), Some(labels)) = (&self.profiler, profile, labels) {
            let view = prof
                .readback
                .get_mapped_range(0..u64::from(2 * n_kernels) * 8)
                .map_err(|e| InferError::Gpu {
                    during: "reading timestamps",
                    message: e.to_string(),
                })?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            let period = f64::from(self.ctx.queue.get_timestamp_period());
            times.clear();
            for (i, label) in labels.into_iter().enumerate() {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
                times.push(KernelTime {
                    kernel: label,
                    ms: dt / 1e6,
                });
            }
            drop(view);
            prof.readback.unmap();
        }
        let t3 = Instant::now();
        Ok(RunTimings {
            upload_ms,
            run_ms: (t2 - t1).as_secs_f64() * 1e3,
            readback_ms: (t3 - t2).as_secs_f64() * 1e3,
        })
    }

    /// Copies a finished run's mapped read-back buffer into `output` and unmaps it.
    fn read_back(&self, key: RunKey, output: Output<'_>) -> Result<(), InferError> {
        let (_, _, dst, out_bytes) = self.run_buffers(key)?;
        let (code, stride) = (self.out_len / 8, self.words * 4);
        {
            let view = dst
                .get_mapped_range(0..out_bytes)
                .map_err(|e| InferError::Gpu {
                    during: "read-back",
                    message: e.to_string(),
                })?;
            match output {
                Output::Floats(out) | Output::Input(out) => {
                    out.copy_from_slice(bytemuck::cast_slice(&view));
                }
                Output::Packed(out) => {
                    // The kernel writes whole 32-bit words per sample; the code is its first bytes.
                    for (n, chunk) in out.chunks_exact_mut(code).enumerate() {
                        chunk.copy_from_slice(&view[n * stride..n * stride + code]);
                    }
                }
            }
        }
        dst.unmap();
        Ok(())
    }

    /// Preprocesses one frame and reads back the model input it wrote (checks and tools: the
    /// network does not run). Makes its read-back buffer on first use.
    pub fn preprocess_frame(
        &mut self,
        prep: &FramePrep,
        width: u32,
        height: u32,
        pixels: &[u8],
        out: &mut [f32],
    ) -> Result<RunTimings, InferError> {
        let words_bytes = (pixels.len() as u64).next_multiple_of(4);
        self.frame_stage(prep, width, height, words_bytes)?;
        let in_bytes = (self.in_len * 4) as u64;
        let stage = self.frame.as_mut().expect("made by frame_stage");
        if stage.input_readback.is_none() {
            stage.input_readback = Some(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("input readback"),
                size: in_bytes.max(16),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        self.run_frame(prep, width, height, pixels, Output::Input(out))
    }
}
