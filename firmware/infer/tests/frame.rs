//! Frame preprocessing on the GPU (`Model::run_rgb8*`, `Model::preprocess_rgb8`): the kernel's
//! crop and normalisation against values computed here, runs from a frame against runs from the
//! floats the kernel wrote, frame buffers that grow and geometries that change, and the errors.
//! The resize itself is checked against bundle's CPU preprocessing in lookupd's
//! `tests/gpu_preprocess.rs` (infer does not depend on bundle).

mod common;

use common::{load_gpu, model_path};
use infer::{Backend, FramePrep, InferError, LoadOptions, Model};

/// `frame_head` (1x1 conv, global average pool: 8 values) for a `side x side` input.
fn frame_model(backend: Backend, side: usize) -> Result<Model, InferError> {
    Model::load(
        &model_path("frame_head"),
        &LoadOptions {
            backend,
            max_batch: 2,
            input_hw: Some((side, side)),
            ..LoadOptions::default()
        },
    )
}

/// The GPU model, or `None` when there is no adapter and INFER_ALLOW_NO_GPU=1 (see common).
fn gpu_model(side: usize) -> Option<Model> {
    match frame_model(Backend::Gpu, side) {
        Ok(m) => Some(m),
        Err(InferError::NoAdapter(e)) if std::env::var_os("INFER_ALLOW_NO_GPU").is_some() => {
            eprintln!("SKIPPED gpu frame check: no adapter ({e})");
            None
        }
        Err(e) => panic!("loading frame_head on the GPU: {e}"),
    }
}

/// Deterministic bytes (an LCG), every seed different.
fn pixels(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// ImageNet's normalisation in the bundle's form: `v * 1 / (255 std) - mean / std`.
fn prep(resize: u32, crop: u32) -> FramePrep {
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    FramePrep {
        resize,
        crop,
        scale: std::array::from_fn(|c| 1.0 / (255.0 * std[c])),
        bias: std::array::from_fn(|c| -mean[c] / std[c]),
    }
}

#[test]
fn a_frame_of_the_resize_size_is_only_cropped_and_normalised() {
    // 11x11 -> crop 7 at offset 2: the resize is an identity, the kernel must copy exactly.
    let (r, s) = (11u32, 7u32);
    let Some(mut gpu) = gpu_model(s as usize) else {
        return;
    };
    let p = prep(r, s);
    let frame = pixels((r * r * 3) as usize, 5);
    let mut got = vec![f32::NAN; (3 * s * s) as usize];
    gpu.preprocess_rgb8(&p, r, r, &frame, &mut got).unwrap();
    let off = p.crop_offset() as usize;
    let (r, s) = (r as usize, s as usize);
    let mut worst = 0.0f32;
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s {
                let v = frame[((off + y) * r + off + x) * 3 + c] as f32;
                let want = v * p.scale[c] + p.bias[c];
                let d = (got[c * s * s + y * s + x] - want).abs();
                worst = worst.max(d);
            }
        }
    }
    // Bit for bit: the kernel rounds the product before the add, as Rust does.
    assert_eq!(worst, 0.0, "max |gpu - expected|");
}

#[test]
fn a_run_from_a_frame_equals_a_run_on_the_floats_the_kernel_wrote() {
    let s = 6usize;
    let Some(mut gpu) = gpu_model(s) else {
        return;
    };
    let mut cpu = frame_model(Backend::Cpu, s).unwrap();
    for (w, h, r, seed) in [(13u32, 9u32, 8u32, 1u64), (5, 17, 6, 2), (40, 31, 9, 3)] {
        let p = prep(r, s as u32);
        let frame = pixels((w * h * 3) as usize, seed);
        let mut input = vec![f32::NAN; 3 * s * s];
        gpu.preprocess_rgb8(&p, w, h, &frame, &mut input).unwrap();
        assert!(input.iter().all(|v| v.is_finite()), "{w}x{h}");
        let mut from_frame = vec![f32::NAN; 8];
        let mut from_floats = vec![f32::NAN; 8];
        gpu.run_rgb8(&p, w, h, &frame, &mut from_frame).unwrap();
        gpu.run(1, &input, &mut from_floats).unwrap();
        assert_eq!(from_frame, from_floats, "{w}x{h} -> {r} -> {s}");
        let mut tract = vec![0.0; 8];
        cpu.run(1, &input, &mut tract).unwrap();
        common::assert_close(&format!("{w}x{h} vs tract"), &from_frame, &tract);
        let mut code = [0u8; 1];
        let mut want = [0u8; 1];
        gpu.run_rgb8_packed(&p, w, h, &frame, &mut code).unwrap();
        infer::pack_signs(&from_floats, 8, &mut want);
        assert_eq!(code, want, "{w}x{h} packed");
    }
}

#[test]
fn frame_buffers_grow_and_geometry_changes_give_the_same_floats_as_a_fresh_model() {
    let s = 5usize;
    let Some(mut warm) = gpu_model(s) else {
        return;
    };
    // Small, larger (the buffers grow), small again, another crop offset, the first again.
    let cases = [
        (7u32, 6u32, 9u32, 11u64),
        (33, 21, 9, 12),
        (7, 6, 9, 13),
        (9, 12, 7, 14),
        (7, 6, 9, 11),
    ];
    for (w, h, r, seed) in cases {
        let p = prep(r, s as u32);
        let frame = pixels((w * h * 3) as usize, seed);
        let mut got = vec![f32::NAN; 3 * s * s];
        let mut want = vec![f32::NAN; 3 * s * s];
        warm.preprocess_rgb8(&p, w, h, &frame, &mut got).unwrap();
        let mut fresh = gpu_model(s).expect("an adapter was found above");
        fresh.preprocess_rgb8(&p, w, h, &frame, &mut want).unwrap();
        assert_eq!(got, want, "{w}x{h} -> {r}");
    }
    // The same frame size resized to 6 then 24, and 24 then 6: in one order the second needs
    // more taps than the first, so only the taps buffer and the kernel's bind group are remade
    // (the commands recorded ahead for a run like the last must not be reused).
    for order in [[6u32, 24], [24, 6]] {
        let mut warm = gpu_model(s).expect("an adapter was found above");
        let frame = pixels(24 * 24 * 3, 21);
        for r in order {
            let p = prep(r, s as u32);
            let mut got = vec![f32::NAN; 3 * s * s];
            let mut want = vec![f32::NAN; 3 * s * s];
            warm.preprocess_rgb8(&p, 24, 24, &frame, &mut got).unwrap();
            let mut fresh = gpu_model(s).expect("an adapter was found above");
            fresh
                .preprocess_rgb8(&p, 24, 24, &frame, &mut want)
                .unwrap();
            assert_eq!(got, want, "24x24 -> {r} after {order:?}");
        }
    }
}

#[test]
fn bad_frames_and_settings_are_errors_and_the_cpu_says_gpu_only() {
    let s = 4usize;
    let mut cpu = frame_model(Backend::Cpu, s).unwrap();
    let frame = pixels(6 * 5 * 3, 1);
    let mut out = vec![0.0; 8];
    let err = cpu
        .run_rgb8(&prep(6, 4), 6, 5, &frame, &mut out)
        .unwrap_err();
    assert!(matches!(err, InferError::GpuOnly(_)), "{err}");
    assert!(err.to_string().contains("GPU backend only"), "{err}");

    let Some(mut gpu) = gpu_model(s) else {
        return;
    };
    let mut input = vec![0.0; 3 * s * s];
    let cases: [(FramePrep, u32, u32, &[u8], &str); 5] = [
        (prep(6, 4), 6, 5, &frame[1..], "expected 90"),
        (prep(6, 4), 0, 5, &[], "expected 0"),
        (prep(6, 5), 6, 5, &frame, "does not fit"),
        (prep(3, 4), 6, 5, &frame, "crop 4"),
        (
            FramePrep {
                scale: [f32::INFINITY, 1.0, 1.0],
                ..prep(6, 4)
            },
            6,
            5,
            &frame,
            "finite",
        ),
    ];
    for (p, w, h, px, says) in cases {
        let err = gpu.preprocess_rgb8(&p, w, h, px, &mut input).unwrap_err();
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    let err = gpu
        .run_rgb8(&prep(6, 4), 6, 5, &frame, &mut [0.0; 9])
        .unwrap_err();
    assert!(err.to_string().contains("expected 8"), "{err}");
    // A model whose input is not 3 x crop x crop (embed40: 3x4x5).
    let mut other = load_gpu(&model_path("embed40"), 1).expect("an adapter was found above");
    let err = other
        .run_rgb8_packed(&prep(6, 4), 6, 5, &frame, &mut [0u8; 5])
        .unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    // After the errors, a good frame still runs.
    gpu.preprocess_rgb8(&prep(6, 4), 6, 5, &frame, &mut input)
        .unwrap();
}
