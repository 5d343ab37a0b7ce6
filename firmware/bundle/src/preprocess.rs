//! The device's preprocessing, the one implementation shared by the trainer (catalogue images,
//! when it computes gallery codes) and lookupd (camera frames):
//!
//! 1. resize the RGB8 image to `resize x resize` with `image`'s `imageops::resize` and
//!    `FilterType::Triangle` (bilinear); the aspect ratio is not kept;
//! 2. take the centre `crop x crop` square, at offset `(resize - crop) / 2` (integer division)
//!    on both axes;
//! 3. write `v * (1 / (255 * std)) + (-mean / std)` per channel as three planes (R, G, B), NCHW.
//!
//! This is, float for float, what the trainer's `Preprocess::eval` computes on the same image
//! (checked by `trainer/tests/preprocess_parity.rs`).
//!
//! Two entry points give identical floats:
//! * [`PreprocessSpec::apply_rgb8`] / [`PreprocessSpec::apply_image`] call `imageops::resize`,
//!   which allocates a `width x resize` four-channel f32 image and the `resize x resize` RGB8
//!   result on every call (nothing is allocated when the image already is `resize x resize`).
//! * [`Preprocessor`] computes the same resize itself (the same weights, summed in the same order)
//!   but only for the pixels the crop keeps, with the filter weights and a scratch buffer kept
//!   between calls: after the first frame of a given size it allocates nothing. The crate's tests
//!   check that it equals `imageops::resize` bit for bit on many sizes; it is the one for a camera
//!   loop.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Rgb, RgbImage};
use resample::Taps;

use crate::error::{BundleError, Result};
use crate::manifest::PreprocessSpec;

impl PreprocessSpec {
    /// Floats per image: `3 * crop * crop`.
    pub fn out_len(&self) -> usize {
        3 * self.crop as usize * self.crop as usize
    }

    /// Offset of the centre crop in the resized square, on both axes.
    pub fn crop_offset(&self) -> u32 {
        (self.resize - self.crop.min(self.resize)) / 2
    }

    /// Preprocesses a packed RGB8 image (`width * height * 3` bytes, rows top to bottom, no
    /// padding) into `out`: `3 * crop * crop` floats, the R, G and B planes of the centre crop,
    /// normalised. See the module documentation for the exact rule.
    pub fn apply_rgb8(
        &self,
        width: u32,
        height: u32,
        pixels: &[u8],
        out: &mut [f32],
    ) -> Result<()> {
        self.check()?;
        check_out(self, out)?;
        check_pixels(width, height, width as usize * 3, pixels)?;
        let r = self.resize;
        let need = width as usize * height as usize * 3;
        let view: ImageBuffer<Rgb<u8>, &[u8]> =
            ImageBuffer::from_raw(width, height, &pixels[..need]).expect("the length was checked");
        let (scale, bias) = self.affine();
        if (width, height) == (r, r) {
            write_crop(
                view.as_raw(),
                r,
                self.crop,
                self.crop_offset(),
                scale,
                bias,
                out,
            );
        } else {
            let square = imageops::resize(&view, r, r, FilterType::Triangle);
            write_crop(
                square.as_raw(),
                r,
                self.crop,
                self.crop_offset(),
                scale,
                bias,
                out,
            );
        }
        Ok(())
    }

    /// [`PreprocessSpec::apply_rgb8`] on an `image` RGB image.
    pub fn apply_image(&self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        self.apply_rgb8(img.width(), img.height(), img.as_raw(), out)
    }

    /// `(scale, bias)` per channel: `(v / 255 - mean) / std == v * scale + bias`, in the form
    /// (and so the rounding) the trainer uses.
    pub fn affine(&self) -> ([f32; 3], [f32; 3]) {
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let bias: [f32; 3] = std::array::from_fn(|c| -self.mean[c] / self.std[c]);
        (scale, bias)
    }
}

fn check_out(spec: &PreprocessSpec, out: &[f32]) -> Result<()> {
    if out.len() != spec.out_len() {
        return Err(BundleError::Preprocess {
            what: "output",
            message: format!(
                "has {} floats, expected 3 x {c} x {c} = {}",
                out.len(),
                spec.out_len(),
                c = spec.crop
            ),
        });
    }
    Ok(())
}

fn check_pixels(width: u32, height: u32, stride: usize, pixels: &[u8]) -> Result<()> {
    let bad = |message: String| BundleError::Preprocess {
        what: "input",
        message,
    };
    if width == 0 || height == 0 {
        return Err(bad(format!("image is {width}x{height}")));
    }
    let row = width as usize * 3;
    if stride < row {
        return Err(bad(format!(
            "row stride {stride} bytes is less than a row of {width} RGB pixels"
        )));
    }
    let need = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .ok_or_else(|| bad(format!("image {width}x{height} is too large")))?;
    if pixels.len() < need || (stride == row && pixels.len() != need) {
        return Err(bad(format!(
            "{} bytes for a {width}x{height} RGB8 image (row stride {stride}), expected {}",
            pixels.len(),
            if stride == row {
                need.to_string()
            } else {
                format!("at least {need}")
            }
        )));
    }
    Ok(())
}

/// The centre crop of a `r x r` packed RGB8 square, normalised into three planes; the trainer's
/// loop, operation for operation.
fn write_crop(
    raw: &[u8],
    r: u32,
    s: u32,
    offset: u32,
    scale: [f32; 3],
    bias: [f32; 3],
    out: &mut [f32],
) {
    let (s, r, plane) = (s as usize, r as usize, s as usize * s as usize);
    let (x0, y0) = (offset as usize, offset as usize);
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    for y in 0..s {
        let row = &raw[(y0 + y) * r * 3..(y0 + y + 1) * r * 3];
        for x in 0..s {
            let p = &row[(x0 + x) * 3..(x0 + x) * 3 + 3];
            let i = y * s + x;
            red[i] = p[0] as f32 * scale[0] + bias[0];
            green[i] = p[1] as f32 * scale[1] + bias[1];
            blue[i] = p[2] as f32 * scale[2] + bias[2];
        }
    }
}

/// The filter geometry of one input size.
#[derive(Debug)]
struct Geometry {
    width: u32,
    height: u32,
    /// Source rows of the crop's rows (vertical pass).
    rows: Taps,
    /// Source columns of the crop's columns (horizontal pass).
    cols: Taps,
}

/// [`PreprocessSpec::apply_rgb8`] without allocating in steady state: keeps the filter weights of
/// the last input size and a scratch buffer (`3 * width * crop` floats) between calls. Gives the
/// same floats as [`PreprocessSpec::apply_rgb8`], bit for bit.
///
/// Allocates on the first call and when the input size changes (weights; the scratch buffer only
/// grows); nothing otherwise.
#[derive(Debug)]
pub struct Preprocessor {
    spec: PreprocessSpec,
    scale: [f32; 3],
    bias: [f32; 3],
    geometry: Option<Geometry>,
    /// The vertical pass, for the crop's rows only: `crop` rows of `width` RGB f32 pixels.
    scratch: Vec<f32>,
}

impl Preprocessor {
    /// A preprocessor for `spec`, checked.
    pub fn new(spec: PreprocessSpec) -> Result<Self> {
        spec.check()?;
        let (scale, bias) = spec.affine();
        Ok(Self {
            spec,
            scale,
            bias,
            geometry: None,
            scratch: Vec::new(),
        })
    }

    /// The spec it applies.
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// Floats per image: `3 * crop * crop`.
    pub fn out_len(&self) -> usize {
        self.spec.out_len()
    }

    /// Preprocesses a packed RGB8 image; the same contract and result as
    /// [`PreprocessSpec::apply_rgb8`].
    pub fn apply_rgb8(
        &mut self,
        width: u32,
        height: u32,
        pixels: &[u8],
        out: &mut [f32],
    ) -> Result<()> {
        self.apply_rgb8_strided(width, height, width as usize * 3, pixels, out)
    }

    /// [`Preprocessor::apply_rgb8`] on an `image` RGB image.
    pub fn apply_image(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        self.apply_rgb8(img.width(), img.height(), img.as_raw(), out)
    }

    /// As [`Preprocessor::apply_rgb8`], for rows `stride` bytes apart (`stride >= 3 * width`;
    /// the bytes between rows are ignored, and `pixels` may end right after the last row), as
    /// camera buffers often are.
    pub fn apply_rgb8_strided(
        &mut self,
        width: u32,
        height: u32,
        stride: usize,
        pixels: &[u8],
        out: &mut [f32],
    ) -> Result<()> {
        check_out(&self.spec, out)?;
        check_pixels(width, height, stride, pixels)?;
        let (r, s, offset) = (self.spec.resize, self.spec.crop, self.spec.crop_offset());
        if (width, height) == (r, r) {
            // `imageops::resize` copies an image that already has the size: no filtering.
            self.crop_direct(stride, pixels, out);
            return Ok(());
        }
        if !matches!(&self.geometry, Some(g) if g.width == width && g.height == height) {
            self.geometry = Some(Geometry {
                width,
                height,
                rows: Taps::new(height, r, offset, s),
                cols: Taps::new(width, r, offset, s),
            });
        }
        let geometry = self.geometry.as_ref().expect("set above");
        let (w, s) = (width as usize, s as usize);
        let row_floats = 3 * w;
        self.scratch.clear();
        self.scratch.resize(row_floats * s, 0.0);

        // Vertical pass (image's `vertical_sample`), only the crop's rows: each value is
        // 0.0 + v0*w0 + v1*w1 + ..., summed in tap order as image does.
        for (k, acc) in self.scratch.chunks_exact_mut(row_floats).enumerate() {
            let (left, weights) = geometry.rows.get(k);
            for (i, &wt) in weights.iter().enumerate() {
                let src = &pixels[(left + i) * stride..(left + i) * stride + row_floats];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v as f32 * wt;
                }
            }
        }

        // Horizontal pass (image's `horizontal_sample`), only the crop's columns, rounded to u8
        // as image does, then normalised as the trainer does.
        let plane = s * s;
        let (red, rest) = out.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        let (scale, bias) = (self.scale, self.bias);
        for (y, row) in self.scratch.chunks_exact(row_floats).enumerate() {
            for x in 0..s {
                let (left, weights) = geometry.cols.get(x);
                let mut t = [0.0f32; 3];
                for (i, &wt) in weights.iter().enumerate() {
                    let p = &row[(left + i) * 3..(left + i) * 3 + 3];
                    t[0] += p[0] * wt;
                    t[1] += p[1] * wt;
                    t[2] += p[2] * wt;
                }
                let i = y * s + x;
                red[i] = to_u8_value(t[0]) * scale[0] + bias[0];
                green[i] = to_u8_value(t[1]) * scale[1] + bias[1];
                blue[i] = to_u8_value(t[2]) * scale[2] + bias[2];
            }
        }
        Ok(())
    }

    /// The crop of an image that already is `resize x resize`.
    fn crop_direct(&self, stride: usize, pixels: &[u8], out: &mut [f32]) {
        let (s, offset) = (self.spec.crop as usize, self.spec.crop_offset() as usize);
        let plane = s * s;
        let (red, rest) = out.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        let (scale, bias) = (self.scale, self.bias);
        for y in 0..s {
            let row = &pixels[(offset + y) * stride + offset * 3..][..s * 3];
            for (x, p) in row.chunks_exact(3).enumerate() {
                let i = y * s + x;
                red[i] = p[0] as f32 * scale[0] + bias[0];
                green[i] = p[1] as f32 * scale[1] + bias[1];
                blue[i] = p[2] as f32 * scale[2] + bias[2];
            }
        }
    }
}

/// The u8 that image stores for a filtered value (clamped to 0..=255, rounded half away from
/// zero), as f32.
fn to_u8_value(t: f32) -> f32 {
    t.clamp(0.0, 255.0).round() as u8 as f32
}
