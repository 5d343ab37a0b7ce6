//! Trigger-to-report latency and memory of the appliance loop (issue 6).
//!
//! `cargo bench -p lookupd --bench lookup_loop -- [--bundle DIR] [--items N] [--lookups N]
//! [--code-bits BITS] [--runtime cpu|gpu|auto] [--json]`
//!
//! Builds a temporary bundle (the model and manifest of `--bundle`, or a small built-in model)
//! with a synthetic gallery of `--items` random codes, then runs [`lookupd::run`] with the replay
//! camera in step mode and the stdin trigger, closed loop: the next trigger is released only once
//! the previous lookup's report has been written, so each `total` is the trigger-to-report latency
//! of one lookup and never includes queueing behind another. A counting global allocator and
//! `/proc/self/status` give the memory figures; the target (heap under 64 MiB with a
//! 1,000,000-item 2048-bit gallery, not growing over 10,000 lookups) is checked at the end, and
//! the bench exits with status 1 when it is missed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bundle::{GALLERY_FILE, LABELS_FILE, LABELS_HEADER, MODEL_FILE, Manifest};
use clap::Parser;
use gallery::Gallery;
use lookupd::config::RunConfig;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use tract_onnx::pb;

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// Counts every allocation of every thread (atomics, so the capture thread, the trigger thread
/// and the search pool are seen too), and the allocations of the calling thread alone (the loop
/// runs on the bench's main thread, so that count is the loop's own).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The largest `LIVE` since [`reset_peaks`]; `PEAK_STEADY` is reset again after the first report.
static PEAK: AtomicUsize = AtomicUsize::new(0);
static PEAK_STEADY: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const` and without a destructor: touching it from the allocator never allocates.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
    PEAK_STEADY.fetch_max(live, Ordering::Relaxed);
}

fn counted() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down may allocate after its locals are gone.
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            counted();
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            counted();
            grew(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            counted();
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reset_peaks() {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    PEAK_STEADY.store(live, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Memory snapshots.

/// The allocator's counters and the kernel's view of the process at one instant. Taking one
/// allocates nothing (a stack buffer for `/proc/self/status`), so it does not disturb the counts.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    heap_live: usize,
    heap_peak: usize,
    allocations: u64,
    /// Allocations of the thread that took the snapshot.
    thread_allocations: u64,
    status: ProcStatus,
}

/// Fields of `/proc/self/status`, in KiB (0 where the kernel does not give them).
#[derive(Clone, Copy, Debug, Default)]
struct ProcStatus {
    vm_rss: u64,
    vm_hwm: u64,
    /// Anonymous pages: the heap (including what C libraries malloc), stacks, driver memory.
    rss_anon: u64,
    /// File pages: the mapped gallery, the binary.
    rss_file: u64,
}

fn snapshot() -> Snapshot {
    Snapshot {
        heap_live: LIVE.load(Ordering::Relaxed),
        heap_peak: PEAK.load(Ordering::Relaxed),
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        thread_allocations: THREAD_ALLOCATIONS.with(Cell::get),
        status: proc_status(),
    }
}

fn proc_status() -> ProcStatus {
    let mut buf = [0u8; 8192];
    let mut len = 0;
    if let Ok(mut f) = File::open("/proc/self/status") {
        while len < buf.len() {
            match f.read(&mut buf[len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    }
    let mut s = ProcStatus::default();
    for line in buf[..len].split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'));
        match &line[..colon] {
            b"VmRSS" => s.vm_rss = value,
            b"VmHWM" => s.vm_hwm = value,
            b"RssAnon" => s.rss_anon = value,
            b"RssFile" => s.rss_file = value,
            _ => {}
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Arguments.

#[derive(Debug, Parser)]
#[command(about = "Trigger-to-report latency and memory of lookupd's loop")]
struct Args {
    /// Take the model and manifest of this bundle (its gallery and labels are not used).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Items of the synthetic gallery.
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Lookups to time.
    #[arg(long, default_value_t = 10_000)]
    lookups: usize,
    /// Code width of the built-in model (a multiple of 64, 64 to 4096; ignored with --bundle).
    #[arg(long, default_value_t = 2048)]
    code_bits: u32,
    /// The model runtime: cpu, gpu or auto.
    #[arg(long, default_value = "cpu")]
    runtime: String,
    /// Hits per lookup.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Replayed frames (random 640x480 PNGs), one per trigger, looped.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Seed of the gallery, the frames and the built-in model's weights.
    #[arg(long, default_value_t = 6)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---------------------------------------------------------------------------------------------
// The bundle.

/// Rows of codes generated and written at a time while building the gallery.
const CHUNK_ROWS: usize = 16 * 1024;

struct Built {
    dir: PathBuf,
    frames: PathBuf,
    code_bits: u32,
    model: String,
    gallery_bytes: u64,
}

/// A model shaped like `embed256` for any width: a 3x3 convolution with `code_bits / 64`
/// output channels over a 3x8x8 input, flattened to `code_bits` values. Written here rather than
/// committed beside infer's test models so that every width costs no file, and a 2048-bit bundle
/// (the memory target) needs no trained model.
fn conv_model(code_bits: u32, seed: u64) -> Vec<u8> {
    let channels = i64::from(code_bits / 64);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensor = |name: &str, dims: &[i64]| {
        let n = dims.iter().product::<i64>() as usize;
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: (0..n)
                .flat_map(|_| rng.random_range(-0.5f32..0.5).to_le_bytes())
                .collect(),
            ..Default::default()
        }
    };
    let initializer = vec![tensor("w", &[channels, 3, 3, 3]), tensor("b", &[channels])];
    let ints = |name: &str, values: &[i64]| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str, attribute| pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    };
    let axis = pb::AttributeProto {
        name: "axis".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    };
    let value_info = |name: &str, dims: &[Option<i64>]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(match d {
                                Some(v) => pb::tensor_shape_proto::dimension::Value::DimValue(*v),
                                None => {
                                    pb::tensor_shape_proto::dimension::Value::DimParam("N".into())
                                }
                            }),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    };
    let side = i64::from(test_bundle::INPUT_SIZE);
    pb::ModelProto {
        ir_version: 8,
        producer_name: "lookupd lookup_loop bench".into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: format!("embed{code_bits}"),
            node: vec![
                node(
                    "Conv",
                    &["x", "w", "b"],
                    "a",
                    vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
                ),
                node("Flatten", &["a"], "y", vec![axis]),
            ],
            initializer,
            input: vec![value_info("x", &[None, Some(3), Some(side), Some(side)])],
            output: vec![value_info("y", &[None, Some(i64::from(code_bits))])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The manifest of the built-in model (the tests' bundle's, at any width); no self-test.
fn builtin_manifest(code_bits: u32) -> Manifest {
    let mut manifest = test_bundle::manifest_template(code_bits, "lookupd lookup_loop bench");
    manifest.backbone = format!("embed{code_bits}-bench");
    manifest.provenance.trainer_version = "bench".into();
    manifest.provenance.dataset = "random codes".into();
    manifest
}

fn build(args: &Args, root: &Path) -> Result<Built> {
    let dir = root.join("bundle");
    std::fs::create_dir_all(&dir)?;
    let mut manifest = match &args.bundle {
        Some(source) => {
            // The source's manifest as it is, self-test included: that depends on the model
            // alone, which is copied unchanged, so it stays true.
            let manifest = Manifest::read(source)?;
            manifest.check()?;
            std::fs::copy(
                source.join(&manifest.model.file),
                dir.join(&manifest.model.file),
            )
            .with_context(|| format!("copying the model of {}", source.display()))?;
            manifest
        }
        None => {
            let bits = args.code_bits;
            ensure!(
                bits.is_multiple_of(64) && (64..=4096).contains(&bits),
                "--code-bits {bits}: the built-in model needs a multiple of 64 from 64 to 4096"
            );
            let model = dir.join(MODEL_FILE);
            if bits == 256 {
                std::fs::copy(test_bundle::model_source(), &model)
                    .context("copying embed256.onnx")?;
            } else {
                std::fs::write(&model, conv_model(bits, args.seed))?;
            }
            builtin_manifest(bits)
        }
    };
    // Only the three files the appliance needs are listed: the others of a source bundle are
    // not copied.
    manifest.files.clear();
    let model_file = manifest.model.file.clone();
    manifest.record_file(&dir, &model_file)?;
    let model_hash: [u8; 32] = bundle::from_hex(&manifest.files[&model_file].sha256)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a sha256 of another length"))?;
    let code_bits = manifest.model.code_bits;

    write_gallery(
        &dir.join(GALLERY_FILE),
        &root.join("codes.staging"),
        code_bits,
        model_hash,
        args,
    )?;
    write_labels(&dir.join(LABELS_FILE), args.items)?;
    manifest.record_file(&dir, GALLERY_FILE)?;
    manifest.record_file(&dir, LABELS_FILE)?;
    manifest.write(&dir)?;
    let gallery_bytes = std::fs::metadata(dir.join(GALLERY_FILE))?.len();

    let frames = root.join("frames");
    std::fs::create_dir_all(&frames)?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xf4a3e5);
    for i in 0..args.frames.max(1) {
        let image = image::RgbImage::from_fn(640, 480, |_, _| image::Rgb(rng.random()));
        image.save(frames.join(format!("frame{i:03}.png")))?;
    }
    Ok(Built {
        dir,
        frames,
        code_bits,
        model: manifest.backbone.clone(),
        gallery_bytes,
    })
}

/// Writes a gallery of `args.items` random codes (ids 1, 2, ...).
///
/// The codes are generated a chunk at a time into a staging file, which is then mapped and
/// handed to `Gallery::create` in one call: the bench never holds more than a chunk of codes on
/// its heap, and the gallery gets exactly the capacity it needs (appending chunk by chunk would
/// rewrite the whole file at each growth by 1.5 and leave up to half of it as spare capacity,
/// which would then be counted as mapped gallery).
fn write_gallery(
    path: &Path,
    staging: &Path,
    code_bits: u32,
    model_hash: [u8; 32],
    args: &Args,
) -> Result<()> {
    let code_bytes = code_bits as usize / 8;
    let mut rng = StdRng::seed_from_u64(args.seed);
    {
        let mut out = BufWriter::new(File::create(staging)?);
        let mut chunk = vec![0u8; CHUNK_ROWS * code_bytes];
        let mut left = args.items;
        while left > 0 {
            let rows = left.min(CHUNK_ROWS);
            rng.fill(&mut chunk[..rows * code_bytes]);
            out.write_all(&chunk[..rows * code_bytes])?;
            left -= rows;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let file = File::open(staging)?;
    // An empty gallery maps nothing (mapping 0 bytes fails).
    let map = if args.items > 0 {
        // SAFETY: the staging file is this process's own, written above and not changed while
        // mapped.
        Some(unsafe { memmap2::Mmap::map(&file)? })
    } else {
        None
    };
    let codes: &[u8] = map.as_deref().unwrap_or(&[]);
    // 8 bytes an item, freed before the appliance opens.
    let ids: Vec<u64> = (1..=args.items as u64).collect();
    Gallery::create(path, code_bits, model_hash, codes, &ids)
        .with_context(|| format!("creating {}", path.display()))?;
    drop(map);
    std::fs::remove_file(staging)?;
    Ok(())
}

/// `labels.tsv`: `id<TAB>SKU-0000123<TAB>synthetic`, one row per item, streamed to the file.
fn write_labels(path: &Path, items: usize) -> Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    writeln!(out, "{LABELS_HEADER}")?;
    for id in 1..=items {
        writeln!(out, "{id}\tSKU-{id:07}\tsynthetic")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The closed loop: a trigger input gated by the reports.

/// How far the loop has got: lines released to the stdin trigger, and their outcomes written.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    released: u64,
    /// Lookup reports and lookup faults written: each answers one released line.
    answered: u64,
    /// When the first line was released.
    first_release: Option<Instant>,
    /// An answer took longer than [`STALL`]: the input was ended.
    stalled: bool,
}

/// The longest wait for a lookup's outcome before the bench gives up.
const STALL: Duration = Duration::from_secs(60);

impl Gate {
    fn answered(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.answered += 1;
        self.changed.notify_all();
    }
}

/// The stdin trigger's input: `total` empty lines (a lookup each), each released only once the
/// previous one's outcome has been written; then the end of input, which stops the loop.
struct GatedLines {
    gate: Arc<Gate>,
    total: u64,
    /// A released `\n` not yet consumed.
    pending: bool,
}

impl Read for GatedLines {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let line = self.fill_buf()?;
            let n = line.len().min(buf.len());
            buf[..n].copy_from_slice(&line[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for GatedLines {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.pending {
            let mut s = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.released == self.total || s.stalled {
                return Ok(&[]);
            }
            let deadline = Instant::now() + STALL;
            while s.answered < s.released {
                let now = Instant::now();
                if now >= deadline {
                    s.stalled = true;
                    return Ok(&[]);
                }
                s = self
                    .gate
                    .changed
                    .wait_timeout(s, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            s.released += 1;
            s.first_release.get_or_insert_with(Instant::now);
            self.pending = true;
        }
        Ok(b"\n")
    }

    fn consume(&mut self, amount: usize) {
        if amount > 0 {
            self.pending = false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report sink.

/// The parts of a report line the bench reads; everything else is skipped without allocating
/// (the strings are borrowed from the line).
#[derive(Deserialize)]
struct Probe<'a> {
    event: &'a str,
    #[serde(default)]
    source: Option<&'a str>,
    #[serde(default)]
    backend: Option<&'a str>,
    #[serde(default)]
    timings_us: Option<Timings>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
struct Timings {
    capture_age: u64,
    preprocess: u64,
    infer: u64,
    search: u64,
    total: u64,
}

/// Stages as printed; `frame+report` is what `total` holds beyond the appliance's stages (in
/// step mode, mostly the replay camera decoding the next PNG after the trigger).
const STAGES: [&str; 6] = [
    "capture_age",
    "preprocess",
    "infer",
    "search",
    "frame+other",
    "total",
];

/// The `out` of the loop: splits the JSON lines, records each lookup's timings in buffers made
/// before the run, takes the memory snapshots, and opens the gate for the next trigger.
struct Sink {
    line: Vec<u8>,
    gate: Arc<Gate>,
    lookups: usize,
    stages: [Vec<u64>; 6],
    faults: u64,
    fault_sample: String,
    backend: String,
    after_first: Option<Snapshot>,
    at_middle: Option<Snapshot>,
    at_last: Option<Snapshot>,
    last_report: Option<Instant>,
}

impl Sink {
    fn new(gate: Arc<Gate>, lookups: usize) -> Self {
        Self {
            line: Vec::with_capacity(64 * 1024),
            gate,
            lookups,
            stages: std::array::from_fn(|_| Vec::with_capacity(lookups)),
            faults: 0,
            fault_sample: String::with_capacity(256),
            backend: String::with_capacity(64),
            after_first: None,
            at_middle: None,
            at_last: None,
            last_report: None,
        }
    }

    fn on_line(&mut self) -> io::Result<()> {
        let probe: Probe<'_> = serde_json::from_slice(&self.line).map_err(io::Error::other)?;
        match probe.event {
            "started" => {
                self.backend.clear();
                self.backend.push_str(probe.backend.unwrap_or("?"));
            }
            "lookup" => {
                let t = probe.timings_us.unwrap_or_default();
                let other = t.total.saturating_sub(t.preprocess + t.infer + t.search);
                let values = [
                    t.capture_age,
                    t.preprocess,
                    t.infer,
                    t.search,
                    other,
                    t.total,
                ];
                for (stage, v) in self.stages.iter_mut().zip(values) {
                    // Within the capacity made before the run: no allocation.
                    if stage.len() < stage.capacity() {
                        stage.push(v);
                    }
                }
                let n = self.stages[0].len();
                // Snapshots before the gate opens: the next lookup has not started yet.
                if n == 1 {
                    self.after_first = Some(snapshot());
                    PEAK_STEADY.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                if n == self.lookups.div_ceil(2) {
                    self.at_middle = Some(snapshot());
                }
                if n == self.lookups {
                    self.at_last = Some(snapshot());
                }
                self.last_report = Some(Instant::now());
                self.gate.answered();
            }
            "fault" => {
                self.faults += 1;
                if self.fault_sample.is_empty() {
                    self.fault_sample = String::from_utf8_lossy(&self.line).into_owned();
                }
                // A lookup that failed still answers its trigger.
                if probe.source == Some("lookup") {
                    self.gate.answered();
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            let parsed = self.on_line();
            self.line.clear();
            parsed?;
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Figures.

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Summary {
    mean: f64,
    p50: u64,
    p99: u64,
    max: u64,
}

/// Sorts `values` in place (no allocation) and summarises them; nearest-rank percentiles.
fn summarise(values: &mut [u64]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    values.sort_unstable();
    let rank =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Summary {
        mean: values.iter().sum::<u64>() as f64 / values.len() as f64,
        p50: rank(0.50),
        p99: rank(0.99),
        max: values[values.len() - 1],
    }
}

const MIB: f64 = 1024.0 * 1024.0;
/// The heap limit.
const HEAP_LIMIT: usize = 64 << 20;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB
}

fn kib_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lookup_loop: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the bench; `Ok(false)` when the memory target is missed.
fn bench(args: Args) -> Result<bool> {
    ensure!(args.lookups > 0, "--lookups must be at least 1");
    let root = tempfile::tempdir()?;
    let t = Instant::now();
    eprintln!(
        "lookup_loop: building a bundle of {} items in {}",
        args.items,
        root.path().display()
    );
    let built = build(&args, root.path())?;
    eprintln!(
        "lookup_loop: built in {:.1} s ({} bits, model {}); {} lookups on the {} runtime",
        t.elapsed().as_secs_f64(),
        built.code_bits,
        built.model,
        args.lookups,
        args.runtime
    );

    let mut config = RunConfig::default();
    config.camera.uri = format!("file://{}?step", built.frames.display());
    config.trigger.specs = vec!["stdin".into()];
    config.lookup.runtime = args.runtime.clone();
    config.lookup.k = args.k;

    let gate = Arc::new(Gate::default());
    let input = GatedLines {
        gate: gate.clone(),
        total: args.lookups as u64,
        pending: false,
    };
    let mut sink = Sink::new(gate.clone(), args.lookups);

    // Forget the bundle build in the peaks: `5` resets VmHWM (Linux 4.0 and later), and the
    // allocator's peaks start from what the bench holds now.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    reset_peaks();
    let before = snapshot();
    let started = Instant::now();
    let summary = lookupd::run(
        &built.dir,
        &config,
        Box::new(input),
        &mut sink,
        Arc::new(AtomicBool::new(false)),
    )
    .context("lookupd::run")?;
    let wall = started.elapsed();
    let end = snapshot();
    let peak_steady = PEAK_STEADY.load(Ordering::Relaxed);

    let gate_state = gate.state.lock().unwrap_or_else(|e| e.into_inner());
    if gate_state.stalled {
        bail!(
            "no report within {} s of a trigger (after {} lookups)",
            STALL.as_secs(),
            summary.lookups
        );
    }
    let (Some(first), Some(middle), Some(last)) = (sink.after_first, sink.at_middle, sink.at_last)
    else {
        bail!(
            "{} of {} lookups reported ({} faults{}{})",
            sink.stages[0].len(),
            args.lookups,
            sink.faults,
            if sink.faults > 0 { "; first: " } else { "" },
            sink.fault_sample.trim()
        );
    };
    let timed = match (gate_state.first_release, sink.last_report) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => wall,
    };
    drop(gate_state);

    let stages: Vec<(&str, Summary)> = STAGES
        .iter()
        .zip(sink.stages.iter_mut())
        .map(|(name, v)| (*name, summarise(v)))
        .collect();
    let lookups = args.lookups;
    let per_second = lookups as f64 / timed.as_secs_f64();
    let steady = (lookups - 1).max(1) as f64;
    let allocs_per_lookup = (last.allocations - first.allocations) as f64 / steady;
    let loop_allocs_per_lookup =
        (last.thread_allocations - first.thread_allocations) as f64 / steady;
    // The bench's own buffers were made before `before`: subtracting them leaves lookupd's.
    let base = before.heap_live;
    let heap_open = first.heap_live.saturating_sub(base);
    let heap_last = last.heap_live.saturating_sub(base);
    let heap_peak = end.heap_peak.saturating_sub(base);
    let heap_peak_steady = peak_steady.saturating_sub(base);
    let growth = last.heap_live as i64 - first.heap_live as i64;
    let growth_second_half = last.heap_live as i64 - middle.heap_live as i64;
    let under_limit = heap_peak < HEAP_LIMIT;
    // Not growing: the second half of the run ends with the heap it started with. The first
    // half may still see one-time buffers of threads that start lazily; those show in `growth`.
    let not_growing = growth_second_half <= 0;
    let met = under_limit && not_growing;

    let target = format!(
        "heap (peak, lookupd's) {:.1} MiB {} 64 MiB: {}; growth over the second half {} B: {}",
        mib(heap_peak),
        if under_limit { "<" } else { ">=" },
        if under_limit { "ok" } else { "MISSED" },
        growth_second_half,
        if not_growing { "ok" } else { "MISSED" },
    );

    if args.json {
        let stage_json: serde_json::Map<String, serde_json::Value> = stages
            .iter()
            .map(|(name, s)| {
                (
                    (*name).to_string(),
                    serde_json::to_value(s).unwrap_or_default(),
                )
            })
            .collect();
        let status = |s: &Snapshot| {
            serde_json::json!({
                "vm_rss_kib": s.status.vm_rss, "vm_hwm_kib": s.status.vm_hwm,
                "rss_anon_kib": s.status.rss_anon, "rss_file_kib": s.status.rss_file,
            })
        };
        let json = serde_json::json!({
            "items": args.items,
            "code_bits": built.code_bits,
            "model": built.model,
            "backend": sink.backend,
            "lookups": lookups,
            "faults": sink.faults,
            "stages_us": stage_json,
            "lookups_per_second": per_second,
            "memory": {
                "heap_bench_base_bytes": base,
                "heap_after_open_bytes": heap_open,
                "heap_after_last_bytes": heap_last,
                "heap_growth_bytes": growth,
                "heap_growth_second_half_bytes": growth_second_half,
                "heap_peak_bytes": heap_peak,
                "heap_peak_after_open_bytes": heap_peak_steady,
                "allocations_per_lookup": allocs_per_lookup,
                "loop_thread_allocations_per_lookup": loop_allocs_per_lookup,
                "gallery_file_bytes": built.gallery_bytes,
                "hwm_reset": hwm_reset,
                "before_open": status(&before),
                "after_first_report": status(&first),
                "after_last_lookup": status(&last),
                "end": status(&end),
            },
            "target_met": met,
        });
        println!("{json}");
    } else {
        println!(
            "lookup_loop: {} items x {} bits ({}), {} runtime, k = {}, {} lookups, closed loop, \
             replay camera (step) over {} random 640x480 PNGs",
            args.items, built.code_bits, built.model, sink.backend, args.k, lookups, args.frames
        );
        println!();
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}",
            "stage (us)", "mean", "p50", "p99", "max"
        );
        for (name, s) in &stages {
            println!(
                "{name:<12} {:>10.1} {:>10} {:>10} {:>10}",
                s.mean, s.p50, s.p99, s.max
            );
        }
        println!();
        println!(
            "throughput   {per_second:.1} lookups/s ({lookups} in {:.1} s); faults {}",
            timed.as_secs_f64(),
            sink.faults
        );
        println!();
        println!(
            "heap (lookupd's, counting allocator; the bench's own {:.2} MiB not included)",
            mib(base)
        );
        println!("  after open (first report)   {:>10.2} MiB", mib(heap_open));
        println!("  after the last lookup       {:>10.2} MiB", mib(heap_last));
        println!(
            "  growth first -> last        {growth:>10} B (second half: {growth_second_half} B)"
        );
        println!("  peak (open included)        {:>10.2} MiB", mib(heap_peak));
        println!(
            "  peak after open             {:>10.2} MiB",
            mib(heap_peak_steady)
        );
        println!(
            "  allocations per lookup      {allocs_per_lookup:>10.2} (all threads; the loop \
             thread's: {loop_allocs_per_lookup:.2})"
        );
        println!(
            "gallery file (mapped, not heap) {:.1} MiB",
            mib(built.gallery_bytes as usize)
        );
        println!();
        println!(
            "process (/proc/self/status, MiB){}",
            if hwm_reset {
                "; VmHWM reset before open"
            } else {
                "; VmHWM NOT reset (includes the bundle build)"
            }
        );
        println!(
            "  {:<20} {:>9} {:>9} {:>9} {:>9}",
            "", "VmRSS", "VmHWM", "RssAnon", "RssFile"
        );
        for (name, s) in [
            ("before open", &before),
            ("after first report", &first),
            ("after last lookup", &last),
            ("end (loop stopped)", &end),
        ] {
            let p = s.status;
            println!(
                "  {name:<20} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                kib_mib(p.vm_rss),
                kib_mib(p.vm_hwm),
                kib_mib(p.rss_anon),
                kib_mib(p.rss_file)
            );
        }
        println!();
        println!("target: {target}");
    }
    if !met {
        eprintln!("lookup_loop: memory target missed: {target}");
    }
    Ok(met)
}
