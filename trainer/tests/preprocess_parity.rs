//! The trainer's evaluation preprocessing and the device's (the `bundle` crate, which lookupd runs
//! on camera frames and the trainer on catalogue images for gallery codes) give the same floats,
//! bit for bit: a model evaluated here sees on the device exactly the input it saw here.

use bundle::{FILTER_TRIANGLE, PreprocessSpec, Preprocessor, SELFTEST_SIDE, selftest_pattern};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trainer::data::{IMAGENET_MEAN, IMAGENET_STD, Preprocess};

fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    RgbImage::from_fn(width, height, |_, _| Rgb(rng.random()))
}

fn grey_noise(width: u32, height: u32, seed: u64) -> GrayImage {
    let mut rng = StdRng::seed_from_u64(seed);
    GrayImage::from_fn(width, height, |_, _| Luma([rng.random()]))
}

fn trainer_eval(p: &Preprocess, img: &DynamicImage) -> Vec<f32> {
    let mut out = vec![f32::NAN; p.out_len()];
    p.eval(img, &mut out).unwrap();
    out
}

/// Index and values of the first float that differs, if any.
fn first_difference(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (x, y))| (i, *x, *y))
}

fn assert_same(what: &str, trainer: &Preprocess, img: &DynamicImage, rgb: &RgbImage) {
    let spec = PreprocessSpec {
        resize: trainer.resize,
        crop: trainer.image_size,
        mean: trainer.mean,
        std: trainer.std,
        filter: FILTER_TRIANGLE.into(),
    };
    let want = trainer_eval(trainer, img);
    let mut got = vec![f32::NAN; spec.out_len()];
    spec.apply_image(rgb, &mut got).unwrap();
    assert_eq!(
        first_difference(&want, &got),
        None,
        "{what}: PreprocessSpec::apply_image"
    );
    let mut fast = vec![f32::NAN; spec.out_len()];
    Preprocessor::new(spec)
        .unwrap()
        .apply_image(rgb, &mut fast)
        .unwrap();
    assert_eq!(first_difference(&want, &fast), None, "{what}: Preprocessor");
}

#[test]
fn the_recipe_statistics_agree() {
    let spec = PreprocessSpec::imagenet(256, 224);
    let trainer = Preprocess::new(224, 256).unwrap();
    assert_eq!((spec.mean, spec.std), (IMAGENET_MEAN, IMAGENET_STD));
    assert_eq!((spec.mean, spec.std), (trainer.mean, trainer.std));
    assert_eq!(spec.out_len(), trainer.out_len());
}

#[test]
fn trainer_and_device_preprocessing_agree_bit_for_bit() {
    let p = Preprocess::new(224, 256).unwrap();
    for (what, img) in [
        ("noise 300x200", noise(300, 200, 1)),
        ("noise 200x300", noise(200, 300, 2)),
        ("noise 256x256 (no resize)", noise(256, 256, 3)),
        ("noise 1280x720", noise(1280, 720, 4)),
        ("noise 17x9 (upscaled)", noise(17, 9, 5)),
        ("self-test pattern", selftest_pattern(SELFTEST_SIDE)),
    ] {
        assert_same(what, &p, &DynamicImage::ImageRgb8(img.clone()), &img);
    }
}

/// The trainer keeps a grey image grey through the resize; the device gets RGB frames. The same
/// grey picture gives the same floats either way.
#[test]
fn grey_images_agree_whether_grey_or_rgb() {
    let p = Preprocess::new(224, 256).unwrap();
    for (w, h, seed) in [(64, 64, 10), (300, 200, 11), (256, 256, 12)] {
        let grey = grey_noise(w, h, seed);
        let rgb = DynamicImage::ImageLuma8(grey.clone()).to_rgb8();
        let what = format!("grey {w}x{h}");
        assert_same(
            &format!("{what} as RGB"),
            &p,
            &DynamicImage::ImageRgb8(rgb.clone()),
            &rgb,
        );
        assert_same(
            &format!("{what} as Luma8"),
            &p,
            &DynamicImage::ImageLuma8(grey),
            &rgb,
        );
    }
}

/// Other recipes' sizes too (a crop equal to the resize, an odd margin).
#[test]
fn other_sizes_agree() {
    let img = noise(300, 200, 20);
    for (size, resize) in [(224, 224), (227, 256), (100, 143)] {
        let p = Preprocess::new(size, resize).unwrap();
        assert_same(
            &format!("{size} of {resize}"),
            &p,
            &DynamicImage::ImageRgb8(img.clone()),
            &img,
        );
    }
}
