//! Preprocessing on the GPU (infer's frame kernel) against the device's CPU preprocessing
//! (`bundle::Preprocessor`) on small odd-sized frames, and lookups on the gpu backend against
//! the same lookups on the cpu backend: the same code and the same hits.
//!
//! They need a GPU adapter (CI: lavapipe). Without one they fail, unless INFER_ALLOW_NO_GPU=1,
//! in which case they print SKIPPED (as infer's GPU tests do).
//!
//! Tolerance of the float comparison: none, the GPU's floats must be the CPU's bit for bit.
//! Why that holds: the kernel applies the taps the CPU applies (infer computes them with
//! bundle's code, image's triangle-filter weights), sums them in the CPU's order, rounds to u8
//! half away from zero as `image` does, and normalises with bundle's own `(scale, bias)`
//! floats; Vulkan's f32 add and multiply are correctly rounded, and the kernel keeps the
//! compiler from fusing a multiply and an add into one rounding (see infer's frame.wgsl). Were a
//! single filtered value off in its last bit next to x.5, it would round to the neighbouring
//! grey level and differ here by `scale` (about 0.017): the test reports how many values differ
//! and by how much, and fails on any.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bundle::{PreprocessSpec, Preprocessor};
use common::build_bundle;
use image::RgbImage;
use infer::{Backend, FramePrep, InferError, LoadOptions, Model};
use lookupd::{Appliance, ApplianceError};

fn no_gpu_allowed(what: &str, e: &dyn std::fmt::Display) -> bool {
    if std::env::var_os("INFER_ALLOW_NO_GPU").is_some() {
        eprintln!("SKIPPED {what}: no GPU adapter ({e})");
        return true;
    }
    false
}

/// infer's `frame_head` test model (any input size) on the GPU for a `side x side` input.
fn gpu_model(side: u32) -> Option<Model> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/models/frame_head.onnx");
    let opts = LoadOptions {
        backend: Backend::Gpu,
        max_batch: 1,
        input_hw: Some((side as usize, side as usize)),
        ..LoadOptions::default()
    };
    match Model::load(&path, &opts) {
        Ok(m) => Some(m),
        Err(e @ InferError::NoAdapter(_)) if no_gpu_allowed("gpu preprocessing", &e) => None,
        Err(e) => panic!("loading frame_head on the GPU: {e}"),
    }
}

/// A bundle's appliance on the GPU (None: no adapter, and allowed).
fn gpu_appliance(dir: &Path) -> Option<Appliance> {
    match Appliance::open(dir, Backend::Gpu, 1) {
        Ok(a) => Some(a),
        Err(
            e @ ApplianceError::Model {
                error: InferError::NoAdapter(_),
                ..
            },
        ) if no_gpu_allowed("gpu lookups", &e) => None,
        Err(e) => panic!("opening the bundle on the GPU: {e}"),
    }
}

/// Noise, or a smooth image (gradients: filtered values often fall on or near x.5, where
/// rounding differences would show).
fn frame(width: u32, height: u32, seed: u64, smooth: bool) -> RgbImage {
    if !smooth {
        return common::noise_image(seed, width, height);
    }
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (3 + k) + y * (5 + 2 * k) + seed as u32 * 7) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
}

#[test]
fn gpu_preprocessing_matches_the_cpu_preprocessing_on_odd_frames() {
    let imagenet = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let halves = ([0.5f32; 3], [0.5f32; 3]);
    // (frame width, height, resize, crop, mean and std): downscales, upscales, a frame already
    // of the resize size (a copy), one side only resized, 1-pixel frames, crop = resize, and a
    // camera-sized one.
    let cases = [
        (29u32, 41u32, 10u32, 8u32, imagenet),
        (7, 5, 9, 9, halves),
        (64, 48, 20, 17, imagenet),
        (13, 13, 13, 11, imagenet),
        (13, 30, 13, 8, halves),
        (101, 37, 24, 24, imagenet),
        (3, 200, 16, 12, imagenet),
        (1, 1, 5, 3, halves),
        (250, 3, 11, 8, imagenet),
        // A camera's frame at a backbone's size.
        (640, 480, 256, 224, imagenet),
    ];
    let (mut values, mut differ, mut worst, mut levels) = (0usize, 0usize, 0f32, 0f32);
    let mut first = None;
    let mut gpu_ms = Vec::new();
    for (n, &(w, h, resize, crop, (mean, std))) in cases.iter().enumerate() {
        let Some(mut model) = gpu_model(crop) else {
            return;
        };
        let spec = PreprocessSpec {
            resize,
            crop,
            mean,
            std,
            filter: "triangle".into(),
        };
        let (scale, bias) = spec.affine();
        let prep = FramePrep {
            resize,
            crop,
            scale,
            bias,
        };
        let mut cpu = Preprocessor::new(spec.clone()).unwrap();
        for smooth in [false, true] {
            let img = frame(w, h, 40 + n as u64, smooth);
            let mut want = vec![0.0; cpu.out_len()];
            let mut got = vec![f32::NAN; cpu.out_len()];
            cpu.apply_image(&img, &mut want).unwrap();
            let t = model
                .preprocess_rgb8(&prep, w, h, img.as_raw(), &mut got)
                .unwrap();
            gpu_ms.push(t.upload_ms + t.run_ms + t.readback_ms);
            let plane = (crop * crop) as usize;
            for (i, (g, c)) in got.iter().zip(&want).enumerate() {
                values += 1;
                let d = (g - c).abs();
                if d != 0.0 {
                    differ += 1;
                    worst = worst.max(d);
                    levels = levels.max(d / scale[i / plane]);
                    first.get_or_insert(format!(
                        "{w}x{h} -> {resize} -> {crop} (smooth {smooth}) value {i}: gpu {g}, cpu {c}"
                    ));
                }
            }
        }
    }
    gpu_ms.sort_by(f64::total_cmp);
    println!(
        "gpu vs cpu preprocessing: {values} values, {differ} differ (max |diff| {worst:e}, \
         {levels} grey levels); GPU preprocess call (upload, kernel, read-back of the input) \
         median {:.3} ms",
        gpu_ms[gpu_ms.len() / 2]
    );
    assert_eq!(differ, 0, "first: {first:?}");
}

fn run_config(frames: &Path, runtime: &str) -> lookupd::config::RunConfig {
    let mut c = lookupd::config::RunConfig::default();
    c.camera.uri = format!("file://{}?step", frames.display());
    c.camera.timeout_ms = 2000;
    c.trigger.specs = vec!["stdin".into()];
    c.lookup.runtime = runtime.into();
    c.lookup.k = 3;
    c
}

fn run_lines(dir: &Path, config: &lookupd::config::RunConfig, triggers: usize) -> Vec<String> {
    let mut out = Vec::new();
    lookupd::run(
        dir,
        config,
        Box::new(std::io::Cursor::new("\n".repeat(triggers))),
        &mut out,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_lookup_on_the_gpu_backend_gives_the_cpu_lookups_code_and_hits() {
    let b = build_bundle();
    let Some(mut gpu) = gpu_appliance(&b.dir()) else {
        return;
    };
    assert_eq!(gpu.backend(), Backend::Gpu);
    let mut cpu = Appliance::open(b.dir(), Backend::Cpu, 1).unwrap();
    // The catalogue's own images (each must find itself at distance 0), new images of other
    // sizes, and a frame as large as a camera's.
    let mut frames: Vec<(String, RgbImage)> = b
        .items
        .iter()
        .map(|i| (i.sku.clone(), i.image.clone()))
        .collect();
    for seed in 0..4 {
        frames.push((format!("new {seed}"), b.new_image(500 + seed).0));
    }
    frames.push(("camera-sized".into(), common::noise_image(9, 640, 480)));
    let mut codes_equal = 0;
    for (name, img) in &frames {
        let (w, h) = img.dimensions();
        let c = cpu.lookup_rgb8(w, h, img.as_raw(), 3).unwrap();
        let (c_code, c_hits) = (c.code.to_vec(), c.hits().collect::<Vec<_>>());
        let c_hits: Vec<(u64, u32)> = c_hits.iter().map(|h| (h.id, h.distance)).collect();
        let g = gpu.lookup_rgb8(w, h, img.as_raw(), 3).unwrap();
        let g_hits: Vec<(u64, u32)> = g.hits().map(|h| (h.id, h.distance)).collect();
        assert_eq!(g.code, &c_code[..], "{name}: code");
        assert_eq!(g_hits, c_hits, "{name}: hits");
        if let Some(item) = b.items.iter().find(|i| &i.sku == name) {
            assert_eq!(g.hit(0).unwrap().id, item.id);
            assert_eq!(g.hit(0).unwrap().distance, 0);
        }
        codes_equal += 1;
    }
    assert_eq!(codes_equal, frames.len());

    // The deploy health check runs the pattern through the same GPU path: the code the
    // manifest expects (computed with the CPU preprocessing), to the bit.
    let report = lookupd::selftest(b.dir(), Backend::Gpu);
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.backend.as_deref(), Some("gpu"));
    let code = report
        .checks
        .iter()
        .find(|c| c.name == "selftest-code")
        .unwrap();
    assert!(
        code.detail.contains("a code 0 bits from"),
        "{}",
        code.detail
    );
}

#[test]
fn the_run_loop_on_the_gpu_backend_reports_what_the_cpu_backend_reports() {
    let b = build_bundle();
    if gpu_appliance(&b.dir()).is_none() {
        return;
    }
    let frames: PathBuf = b.root.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let order = [2usize, 5, 0, 3];
    for (n, &i) in order.iter().enumerate() {
        std::fs::copy(&b.items[i].png, frames.join(format!("{n:03}.png"))).unwrap();
    }
    let parse = |lines: Vec<String>| -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let gpu = parse(run_lines(
        &b.dir(),
        &run_config(&frames, "gpu"),
        order.len(),
    ));
    let cpu = parse(run_lines(
        &b.dir(),
        &run_config(&frames, "cpu"),
        order.len(),
    ));
    assert_eq!(gpu[0]["backend"], "gpu");
    assert_eq!(cpu[0]["backend"], "cpu");
    let lookups = |lines: &[serde_json::Value]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["event"] == "lookup")
            .map(|l| l["hits"].clone())
            .collect()
    };
    let (g, c) = (lookups(&gpu), lookups(&cpu));
    assert_eq!(g.len(), order.len(), "{gpu:?}");
    assert_eq!(g, c);
    for (hits, &i) in g.iter().zip(&order) {
        assert_eq!(hits[0]["sku"], b.items[i].sku.as_str());
        assert_eq!(hits[0]["distance"], 0);
    }
}
