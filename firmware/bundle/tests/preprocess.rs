//! The device's preprocessing: arithmetic, geometry, and the allocation-free path equal to the
//! `imageops::resize` one bit for bit.

use bundle::{PreprocessSpec, Preprocessor, SELFTEST_PATTERN, selftest_pattern, to_hex};
use image::{Rgb, RgbImage};
use sha2::{Digest, Sha256};

/// A deterministic noise image (xorshift), no `rand` needed.
fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 32) as u8
    };
    RgbImage::from_fn(width, height, |_, _| Rgb([next(), next(), next()]))
}

/// Values v/255 exactly recoverable: mean 0, std 1.
fn unit_spec(resize: u32, crop: u32) -> PreprocessSpec {
    PreprocessSpec {
        mean: [0.0; 3],
        std: [1.0; 3],
        ..PreprocessSpec::imagenet(resize, crop)
    }
}

fn run(spec: &PreprocessSpec, img: &RgbImage) -> Vec<f32> {
    let mut out = vec![0.0; spec.out_len()];
    spec.apply_image(img, &mut out).unwrap();
    out
}

#[test]
fn a_hand_computed_pixel() {
    let spec = PreprocessSpec::imagenet(256, 224);
    // A uniform image stays uniform through the resize, whatever its size.
    for (w, h) in [(256, 256), (300, 200), (31, 77)] {
        let img = RgbImage::from_pixel(w, h, Rgb([10, 128, 250]));
        let out = run(&spec, &img);
        let plane = 224 * 224;
        let want = [
            (10.0 / 255.0 - 0.485) / 0.229,
            (128.0 / 255.0 - 0.456) / 0.224,
            (250.0 / 255.0 - 0.406) / 0.225,
        ];
        for c in 0..3 {
            for &v in [0, 1234, plane - 1].iter() {
                let got = out[c * plane + v] as f64;
                assert!(
                    (got - want[c]).abs() < 1e-5,
                    "{w}x{h} channel {c}: {got} vs {}",
                    want[c]
                );
            }
        }
        // And exactly the trainer's multiply-add form.
        assert_eq!(
            out[0],
            10.0f32 * (1.0 / (255.0 * 0.229f32)) + (-0.485f32 / 0.229f32)
        );
        assert_eq!(out[0], -1.946_656_5, "{}", out[0]);
    }
}

#[test]
fn output_length_is_checked() {
    let spec = PreprocessSpec::imagenet(256, 224);
    assert_eq!(spec.out_len(), 3 * 224 * 224);
    let img = noise(50, 40, 1);
    for len in [0, spec.out_len() - 1, spec.out_len() + 1] {
        let mut out = vec![0.0; len];
        let err = spec.apply_image(&img, &mut out).unwrap_err();
        assert!(err.to_string().contains("output"), "{err}");
        let err = Preprocessor::new(spec.clone())
            .unwrap()
            .apply_image(&img, &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("output"), "{err}");
    }
    let mut out = vec![0.0; spec.out_len()];
    assert!(
        spec.apply_rgb8(50, 40, &img.as_raw()[1..], &mut out)
            .is_err()
    );
    assert!(spec.apply_rgb8(0, 40, &[], &mut out).is_err());
    let mut bad = spec.clone();
    bad.std[0] = -1.0;
    assert!(bad.apply_image(&img, &mut out).is_err());
    assert!(Preprocessor::new(bad).is_err());
}

/// The crop sits at (resize - crop) / 2 on both axes, rounded down.
#[test]
fn centre_crop_position() {
    for (resize, crop) in [(9, 4), (8, 4), (10, 10), (7, 1)] {
        let spec = unit_spec(resize, crop);
        assert_eq!(spec.crop_offset(), (resize - crop) / 2);
        // Each pixel holds its coordinates; already resize x resize, so no filtering.
        let img = RgbImage::from_fn(resize, resize, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 7]));
        let out = run(&spec, &img);
        let (s, o) = (crop as usize, spec.crop_offset() as usize);
        for y in 0..s {
            for x in 0..s {
                let r = (out[y * s + x] * 255.0).round() as usize;
                let g = (out[s * s + y * s + x] * 255.0).round() as usize;
                assert_eq!(
                    (r, g),
                    ((x + o) * 10, (y + o) * 10),
                    "{resize}/{crop} at {x},{y}"
                );
            }
        }
    }
}

/// A non-square image is squashed to the square, not cropped to it: its edges survive.
#[test]
fn non_square_image_is_squashed() {
    // Red, green, blue bands across the long axis: a quarter, a half, a quarter. Kept aspect and
    // a centre crop would leave only green; squashing keeps all three in the same proportions.
    let band = |t: u32| match t {
        0..20 => Rgb([255, 0, 0]),
        20..60 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    };
    let spec = unit_spec(20, 20);
    for (name, img) in [
        ("wide", RgbImage::from_fn(80, 20, |x, _| band(x))),
        ("tall", RgbImage::from_fn(20, 80, |_, y| band(y))),
    ] {
        let out = run(&spec, &img);
        // Channel values along the long axis (as x for the wide image, as y for the tall one).
        let at = |c: usize, t: usize, u: usize| {
            let (x, y) = if name == "wide" { (t, u) } else { (u, t) };
            (out[c * 400 + y * 20 + x] * 255.0).round() as u8
        };
        for u in [0, 7, 19] {
            assert_eq!(
                [at(0, 0, u), at(1, 0, u), at(2, 0, u)],
                [255, 0, 0],
                "{name}"
            );
            assert_eq!(
                [at(0, 3, u), at(1, 3, u), at(2, 3, u)],
                [255, 0, 0],
                "{name}"
            );
            assert_eq!(
                [at(0, 10, u), at(1, 10, u), at(2, 10, u)],
                [0, 255, 0],
                "{name}"
            );
            assert_eq!(
                [at(0, 16, u), at(1, 16, u), at(2, 16, u)],
                [0, 0, 255],
                "{name}"
            );
            assert_eq!(
                [at(0, 19, u), at(1, 19, u), at(2, 19, u)],
                [0, 0, 255],
                "{name}"
            );
        }
    }
}

/// `Preprocessor` (its own resize, crop pixels only, no allocation in steady state) equals the
/// `imageops::resize` path bit for bit: downscale, upscale, one axis each way, degenerate sizes.
#[test]
fn preprocessor_equals_imageops_bit_for_bit() {
    let specs = [
        PreprocessSpec::imagenet(256, 224),
        PreprocessSpec::imagenet(224, 224),
        PreprocessSpec::imagenet(9, 4),
        PreprocessSpec::imagenet(300, 288),
    ];
    let sizes = [
        (1, 1),
        (1, 7),
        (7, 1),
        (300, 200),
        (200, 300),
        (64, 64),
        (256, 256),
        (224, 224),
        (255, 257),
        (640, 480),
        (100, 1000),
        (13, 500),
        (256, 100),
        (1280, 720),
    ];
    for spec in &specs {
        let mut pre = Preprocessor::new(spec.clone()).unwrap();
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let img = noise(w, h, i as u64 + 1);
            let want = run(spec, &img);
            let mut got = vec![f32::NAN; spec.out_len()];
            // Twice: the second call reuses the cached weights and scratch.
            for _ in 0..2 {
                pre.apply_image(&img, &mut got).unwrap();
                let diff = want
                    .iter()
                    .zip(&got)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(
                    diff, None,
                    "resize {} crop {} on {w}x{h}",
                    spec.resize, spec.crop
                );
            }
            // Padded rows give the same result.
            let stride = w as usize * 3 + 5;
            let mut padded = vec![0xeeu8; stride * h as usize];
            for (y, row) in img.as_raw().chunks_exact(w as usize * 3).enumerate() {
                padded[y * stride..y * stride + row.len()].copy_from_slice(row);
            }
            let mut strided = vec![f32::NAN; spec.out_len()];
            pre.apply_rgb8_strided(w, h, stride, &padded, &mut strided)
                .unwrap();
            assert!(
                want.iter()
                    .zip(&strided)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}

#[test]
fn selftest_pattern_is_deterministic() {
    assert_eq!(SELFTEST_PATTERN, "gradient-checker-v1");
    let a = selftest_pattern(320);
    assert_eq!(a, selftest_pattern(320));
    assert_eq!(a.dimensions(), (320, 320));
    // Pinned: a change to the drawing must come with a new pattern name.
    assert_eq!(
        to_hex(&Sha256::digest(a.as_raw())),
        PINNED_320,
        "the gradient-checker-v1 drawing changed"
    );
    // Spot checks of each quadrant.
    assert_eq!(a.get_pixel(0, 0).0, [0, 0, 128]);
    assert_eq!(a.get_pixel(159, 159).0, [255, 255, 128]);
    assert_eq!(a.get_pixel(160, 0).0, [240, 236, 228]);
    assert_eq!(a.get_pixel(180, 0).0, [18, 22, 30]);
    assert_eq!(a.get_pixel(0, 200).0, [220, 20, 20]);
    assert_eq!(a.get_pixel(159, 200).0, [210, 40, 200]);
    assert_eq!(a.get_pixel(160, 160).0, [255, 64, 0]);
    assert_eq!(a.get_pixel(319, 319).0, [0, 191, 255]);
    // Any side works, including tiny ones.
    for side in [0, 1, 2, 3, 17, 224] {
        assert_eq!(selftest_pattern(side).dimensions(), (side, side));
    }
}

const PINNED_320: &str = "f8e956f699de8ebbbd8b44bf4b548aabb614a3d9bf4453dc51204ecacf2ed667";
