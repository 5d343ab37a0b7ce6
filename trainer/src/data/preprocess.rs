//! The public recipe's preprocessing: resize to a square (aspect not kept), then a random crop
//! and flip for training or the centre crop for evaluation, ImageNet normalisation, CHW f32.

use std::borrow::Cow;

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, RgbImage};
use rand::Rng;

use super::DataError;

/// ImageNet channel means (RGB), what the pretrained backbones expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Image geometry and normalisation; output is `3 x image_size x image_size`, RGB planes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Side of the crop fed to the network (224 in the recipe).
    pub image_size: u32,
    /// Side of the square the image is first resized to (256 in the recipe).
    pub resize: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            image_size: 224,
            resize: 256,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// The resized image, kept grey when it came grey (a third of the work).
enum Square<'a> {
    Grey(Cow<'a, GrayImage>),
    Rgb(Cow<'a, RgbImage>),
}

impl Preprocess {
    /// ImageNet statistics with the given sizes, checked.
    pub fn new(image_size: u32, resize: u32) -> Result<Self, DataError> {
        let p = Self {
            image_size,
            resize,
            ..Self::default()
        };
        p.validate()?;
        Ok(p)
    }

    /// The crop must fit in the resized square and the deviations must be positive.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.image_size == 0 || self.image_size > self.resize {
            return Err(DataError::Config(format!(
                "image size {} must be between 1 and the resize {}",
                self.image_size, self.resize
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(DataError::Config(format!(
                "bad normalisation mean {:?} std {:?}",
                self.mean, self.std
            )));
        }
        Ok(())
    }

    /// Floats per image: `3 * image_size * image_size`.
    pub fn out_len(&self) -> usize {
        3 * self.image_size as usize * self.image_size as usize
    }

    /// Training view: random crop position, then a horizontal flip with probability 1/2
    /// (drawn in that order from `rng`, so a seeded `rng` fixes the view).
    pub fn train<R: Rng + ?Sized>(
        &self,
        img: &DynamicImage,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        let room = self.resize - self.image_size.min(self.resize);
        let x = rng.random_range(0..=room);
        let y = rng.random_range(0..=room);
        let flip = rng.random_bool(0.5);
        self.apply(img, (x, y), flip, out)
    }

    /// Evaluation view: the centre crop, no flip.
    pub fn eval(&self, img: &DynamicImage, out: &mut [f32]) -> Result<(), DataError> {
        let c = (self.resize - self.image_size.min(self.resize)) / 2;
        self.apply(img, (c, c), false, out)
    }

    /// Resizes `img`, crops `image_size` at `crop` (top-left, in the resized square), flips it
    /// left-right if asked and writes the normalised planes into `out`.
    pub fn apply(
        &self,
        img: &DynamicImage,
        crop: (u32, u32),
        flip: bool,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        self.validate()?;
        if out.len() != self.out_len() {
            return Err(DataError::Config(format!(
                "output has {} floats, expected {}",
                out.len(),
                self.out_len()
            )));
        }
        let (s, r) = (self.image_size, self.resize);
        if crop.0 > r - s || crop.1 > r - s {
            return Err(DataError::Config(format!(
                "crop at {crop:?} of {s} leaves the {r}x{r} square"
            )));
        }
        if img.width() == 0 || img.height() == 0 {
            return Err(DataError::Config("image has zero size".into()));
        }
        let square = self.square(img);
        let (s, r, plane) = (s as usize, r as usize, s as usize * s as usize);
        let (x0, y0) = (crop.0 as usize, crop.1 as usize);
        // (v / 255 - mean) / std as one multiply-add.
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let bias: [f32; 3] = std::array::from_fn(|c| -self.mean[c] / self.std[c]);
        let src_x = |x: usize| if flip { x0 + s - 1 - x } else { x0 + x };
        let (red, rest) = out.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        match &square {
            Square::Grey(g) => {
                let raw = g.as_raw();
                for y in 0..s {
                    let row = &raw[(y0 + y) * r..(y0 + y + 1) * r];
                    for x in 0..s {
                        let v = row[src_x(x)] as f32;
                        let i = y * s + x;
                        red[i] = v * scale[0] + bias[0];
                        green[i] = v * scale[1] + bias[1];
                        blue[i] = v * scale[2] + bias[2];
                    }
                }
            }
            Square::Rgb(rgb) => {
                let raw = rgb.as_raw();
                for y in 0..s {
                    let row = &raw[(y0 + y) * r * 3..(y0 + y + 1) * r * 3];
                    for x in 0..s {
                        let p = &row[src_x(x) * 3..src_x(x) * 3 + 3];
                        let i = y * s + x;
                        red[i] = p[0] as f32 * scale[0] + bias[0];
                        green[i] = p[1] as f32 * scale[1] + bias[1];
                        blue[i] = p[2] as f32 * scale[2] + bias[2];
                    }
                }
            }
        }
        Ok(())
    }

    /// `img` resized to `resize x resize` with a triangle (bilinear) filter; no copy when it
    /// already has that size.
    fn square<'a>(&self, img: &'a DynamicImage) -> Square<'a> {
        let r = self.resize;
        let same = img.width() == r && img.height() == r;
        match img {
            DynamicImage::ImageLuma8(g) if same => Square::Grey(Cow::Borrowed(g)),
            DynamicImage::ImageLuma8(g) => {
                Square::Grey(Cow::Owned(imageops::resize(g, r, r, FilterType::Triangle)))
            }
            DynamicImage::ImageRgb8(rgb) if same => Square::Rgb(Cow::Borrowed(rgb)),
            DynamicImage::ImageRgb8(rgb) => Square::Rgb(Cow::Owned(imageops::resize(
                rgb,
                r,
                r,
                FilterType::Triangle,
            ))),
            other => {
                let rgb = other.to_rgb8();
                Square::Rgb(Cow::Owned(if same {
                    rgb
                } else {
                    imageops::resize(&rgb, r, r, FilterType::Triangle)
                }))
            }
        }
    }
}
