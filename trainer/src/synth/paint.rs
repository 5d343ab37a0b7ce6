//! Raster primitives: a float RGB canvas, anti-aliased coverage from signed distances, a
//! premultiplied RGBA texture with bilinear lookup, separable blur and a cheap noise source.
//!
//! Colours are sRGB-encoded values in 0..=1; the synthetic scenes need plausibility, not
//! photometric accuracy, so no gamma handling.

use image::RgbImage;

pub type Rgb = [f32; 3];

pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

pub fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

pub fn luma(c: Rgb) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// Hue in turns (any real; wraps), saturation and value in 0..=1.
pub fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Coverage of a pixel whose centre lies `d` pixels outside a shape's edge (negative inside):
/// a one-pixel linear ramp, which is all the anti-aliasing these scenes need.
pub fn coverage(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

/// Signed distance to an axis-aligned box of half sizes (hx, hy) centred on the origin.
pub fn sd_box(x: f32, y: f32, hx: f32, hy: f32) -> f32 {
    let dx = x.abs() - hx;
    let dy = y.abs() - hy;
    let (ox, oy) = (dx.max(0.0), dy.max(0.0));
    (ox * ox + oy * oy).sqrt() + dx.max(dy).min(0.0)
}

pub fn sd_round_box(x: f32, y: f32, hx: f32, hy: f32, r: f32) -> f32 {
    let r = r.min(hx).min(hy);
    sd_box(x, y, hx - r, hy - r) - r
}

/// Approximate signed distance to an ellipse (exact on the axes; good enough for a 1 px ramp).
pub fn sd_ellipse(x: f32, y: f32, rx: f32, ry: f32) -> f32 {
    let k = ((x / rx).powi(2) + (y / ry).powi(2)).sqrt();
    (k - 1.0) * rx.min(ry)
}

/// Signed distance to a capsule: the segment a-b thickened by r.
pub fn sd_capsule(p: [f32; 2], a: [f32; 2], b: [f32; 2], r: f32) -> f32 {
    let (pax, pay) = (p[0] - a[0], p[1] - a[1]);
    let (bax, bay) = (b[0] - a[0], b[1] - a[1]);
    let len2 = (bax * bax + bay * bay).max(1e-12);
    let h = ((pax * bax + pay * bay) / len2).clamp(0.0, 1.0);
    let (dx, dy) = (pax - bax * h, pay - bay * h);
    (dx * dx + dy * dy).sqrt() - r
}

/// Rotates (x, y) by -angle: the coordinates of a point in a frame turned by `angle`.
pub fn unrotate(x: f32, y: f32, angle: f32) -> (f32, f32) {
    let (s, c) = angle.sin_cos();
    (c * x + s * y, -s * x + c * y)
}

/// A float RGB image.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, colour: Rgb) -> Self {
        Self {
            width,
            height,
            pixels: vec![colour; width * height],
        }
    }

    /// Blends over the pixels of the box [x0, x1] x [y0, y1] (clipped to the canvas) what
    /// `shade(x, y)` returns for each pixel centre: a colour and its opacity.
    pub fn paint(
        &mut self,
        bounds: [f32; 4],
        mut shade: impl FnMut(f32, f32) -> Option<(Rgb, f32)>,
    ) {
        let Some((x0, y0, x1, y1)) = self.clip(bounds) else {
            return;
        };
        for y in y0..y1 {
            let row = y * self.width;
            for x in x0..x1 {
                if let Some((c, a)) = shade(x as f32 + 0.5, y as f32 + 0.5)
                    && a > 0.0
                {
                    let p = &mut self.pixels[row + x];
                    *p = mix(*p, c, a.min(1.0));
                }
            }
        }
    }

    /// Multiplies every pixel by `gain(x, y)` (per channel): lighting, white balance.
    pub fn modulate(&mut self, mut gain: impl FnMut(f32, f32) -> Rgb) {
        for (i, p) in self.pixels.iter_mut().enumerate() {
            let x = (i % self.width) as f32 + 0.5;
            let y = (i / self.width) as f32 + 0.5;
            let g = gain(x, y);
            *p = [p[0] * g[0], p[1] * g[1], p[2] * g[2]];
        }
    }

    fn clip(&self, b: [f32; 4]) -> Option<(usize, usize, usize, usize)> {
        if !b.iter().all(|v| v.is_finite()) {
            return None;
        }
        let x0 = b[0].floor().max(0.0) as usize;
        let y0 = b[1].floor().max(0.0) as usize;
        let x1 = (b[2].ceil().max(0.0) as usize).min(self.width);
        let y1 = (b[3].ceil().max(0.0) as usize).min(self.height);
        (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
    }

    /// Gaussian blur with separate horizontal and vertical sigmas (pixels); edges clamp.
    pub fn blur(&mut self, sigma_x: f32, sigma_y: f32) {
        if sigma_x > 0.05 {
            let kernel = gaussian(sigma_x);
            let mut out = self.pixels.clone();
            for y in 0..self.height {
                let row = &self.pixels[y * self.width..(y + 1) * self.width];
                convolve_line(row, &mut out[y * self.width..(y + 1) * self.width], &kernel);
            }
            self.pixels = out;
        }
        if sigma_y > 0.05 {
            let kernel = gaussian(sigma_y);
            let mut column = vec![[0.0; 3]; self.height];
            let mut blurred = vec![[0.0; 3]; self.height];
            for x in 0..self.width {
                for (y, c) in column.iter_mut().enumerate() {
                    *c = self.pixels[y * self.width + x];
                }
                convolve_line(&column, &mut blurred, &kernel);
                for (y, c) in blurred.iter().enumerate() {
                    self.pixels[y * self.width + x] = *c;
                }
            }
        }
    }

    /// Quantises to 8 bits, adding `noise` (values in 0..=1 units) first.
    pub fn to_image(&self, mut noise: impl FnMut() -> Rgb) -> RgbImage {
        let mut out = RgbImage::new(self.width as u32, self.height as u32);
        for (dst, src) in out.pixels_mut().zip(&self.pixels) {
            let n = noise();
            for k in 0..3 {
                dst.0[k] = ((src[k] + n[k]).clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        }
        out
    }
}

fn gaussian(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

fn convolve_line(src: &[Rgb], dst: &mut [Rgb], kernel: &[f32]) {
    let radius = (kernel.len() / 2) as isize;
    let last = src.len() as isize - 1;
    for (i, d) in dst.iter_mut().enumerate() {
        let mut acc = [0.0f32; 3];
        for (k, w) in kernel.iter().enumerate() {
            let j = (i as isize + k as isize - radius).clamp(0, last) as usize;
            acc[0] += src[j][0] * w;
            acc[1] += src[j][1] * w;
            acc[2] += src[j][2] * w;
        }
        *d = acc;
    }
}

/// A square premultiplied-RGBA image of a product; product units [-1, 1] span it on both axes.
#[derive(Clone, Debug)]
pub struct Texture {
    pub size: usize,
    pub texels: Vec<[f32; 4]>,
}

impl Texture {
    /// Bilinear lookup at product coordinates (u, v); transparent outside.
    pub fn sample(&self, u: f32, v: f32) -> [f32; 4] {
        let n = self.size as f32;
        let x = (u + 1.0) * 0.5 * n - 0.5;
        let y = (v + 1.0) * 0.5 * n - 0.5;
        if !(x > -1.0 && y > -1.0 && x < n && y < n) {
            return [0.0; 4];
        }
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as isize, y0 as isize);
        let mut acc = [0.0f32; 4];
        for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
            for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                let (xi, yi) = (x0 + dx, y0 + dy);
                if xi < 0 || yi < 0 || xi >= self.size as isize || yi >= self.size as isize {
                    continue;
                }
                let t = self.texels[yi as usize * self.size + xi as usize];
                let w = wx * wy;
                for k in 0..4 {
                    acc[k] += t[k] * w;
                }
            }
        }
        acc
    }
}

/// SplitMix64: per-pixel noise needs hundreds of thousands of draws per image, and a
/// generator this small keeps that cheap while staying a pure function of its seed.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Two standard normal draws (Box-Muller).
    pub fn normal_pair(&mut self) -> (f32, f32) {
        let u1 = self.unit().max(1e-7);
        let u2 = self.unit();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        (r * c, r * s)
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixing function for deriving seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_have_the_right_sign() {
        assert!(sd_box(0.0, 0.0, 1.0, 1.0) < 0.0);
        assert!((sd_box(2.0, 0.0, 1.0, 1.0) - 1.0).abs() < 1e-6);
        assert!(sd_ellipse(0.0, 0.5, 1.0, 0.4) > 0.0);
        assert!(sd_capsule([0.5, 0.1], [0.0, 0.0], [1.0, 0.0], 0.2) < 0.0);
        assert_eq!(coverage(-3.0), 1.0);
        assert_eq!(coverage(3.0), 0.0);
    }

    #[test]
    fn hsv_primaries() {
        let red = hsv(0.0, 1.0, 1.0);
        assert!((red[0] - 1.0).abs() < 1e-6 && red[1].abs() < 1e-6);
        let blue = hsv(2.0 / 3.0, 1.0, 1.0);
        assert!((blue[2] - 1.0).abs() < 1e-6 && blue[0].abs() < 1e-5);
    }

    #[test]
    fn blur_keeps_a_flat_image_flat() {
        let mut c = Canvas::new(9, 7, [0.25, 0.5, 0.75]);
        c.blur(1.5, 0.7);
        assert!(c.pixels.iter().all(|p| (p[1] - 0.5).abs() < 1e-5));
    }
}
