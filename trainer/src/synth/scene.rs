//! The two kinds of picture: the clean catalogue shot, and a camera shot of the product held
//! under the appliance (pose, clutter, hand, light, optics, sensor).

use image::RgbImage;
use rand::Rng;
use rand::rngs::StdRng;

use super::paint::{
    Canvas, Rgb, SplitMix, Texture, coverage, hsv, mix, scale, sd_capsule, sd_ellipse,
    sd_round_box, unrotate,
};
use super::product::Design;
use super::text::{Glyphs, Mask};

/// A product's design and its rendered artwork.
#[derive(Debug)]
pub struct Product {
    pub design: Design,
    pub texture: Texture,
}

/// Share of the half frame the product's largest half extent fills in a catalogue shot.
const CATALOGUE_FILL: f32 = 0.86;
const CATALOGUE_BACKGROUND: Rgb = [0.955, 0.955, 0.945];
/// Distance of the product plane from the camera, in product units: a hand-held product
/// under a close camera shows clear perspective.
const DISTANCE: f32 = 3.2;

/// A pinhole camera looking at the product plane.
struct Projector {
    /// Rotation columns: the product's u axis, v axis and normal in camera space.
    axes: [[f32; 3]; 3],
    centre: [f32; 3],
    focal: f32,
    half: f32,
}

impl Projector {
    /// `unit_px`: pixels per product unit for an unrotated product; `at`: where the product
    /// centre lands in the image; angles in radians.
    fn new(size: usize, unit_px: f32, at: [f32; 2], roll: f32, yaw: f32, pitch: f32) -> Self {
        let half = size as f32 / 2.0;
        let focal = unit_px * DISTANCE;
        let (sr, cr) = roll.sin_cos();
        let (sy, cy) = yaw.sin_cos();
        let (sp, cp) = pitch.sin_cos();
        // R = Rz(roll) * Ry(yaw) * Rx(pitch), stored by columns.
        let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
        let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
        let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
        let m = matmul(rz, matmul(ry, rx));
        let axes = [
            [m[0][0], m[1][0], m[2][0]],
            [m[0][1], m[1][1], m[2][1]],
            [m[0][2], m[1][2], m[2][2]],
        ];
        let centre = [
            (at[0] - half) * DISTANCE / focal,
            (at[1] - half) * DISTANCE / focal,
            DISTANCE,
        ];
        Self {
            axes,
            centre,
            focal,
            half,
        }
    }

    /// The product coordinates seen at pixel (x, y), if the ray meets the plane in front.
    fn to_product(&self, x: f32, y: f32) -> Option<(f32, f32)> {
        let ray = [
            (x - self.half) / self.focal,
            (y - self.half) / self.focal,
            1.0,
        ];
        let n = self.axes[2];
        let denom = dot(n, ray);
        if denom.abs() < 1e-6 {
            return None;
        }
        let t = dot(n, self.centre) / denom;
        if t <= 0.0 {
            return None;
        }
        let p = [
            ray[0] * t - self.centre[0],
            ray[1] * t - self.centre[1],
            ray[2] * t - self.centre[2],
        ];
        Some((dot(self.axes[0], p), dot(self.axes[1], p)))
    }

    fn to_image(&self, u: f32, v: f32) -> [f32; 2] {
        let [a, b, c] = self.centre;
        let p = [
            a + u * self.axes[0][0] + v * self.axes[1][0],
            b + u * self.axes[0][1] + v * self.axes[1][1],
            c + u * self.axes[0][2] + v * self.axes[1][2],
        ];
        let z = p[2].max(1e-3);
        [
            self.half + self.focal * p[0] / z,
            self.half + self.focal * p[1] / z,
        ]
    }

    /// Image bounding box of the product-space box [-w, w] x [-h, h].
    fn bounds(&self, w: f32, h: f32) -> [f32; 4] {
        let corners = [[-w, -h], [w, -h], [w, h], [-w, h]].map(|[u, v]| self.to_image(u, v));
        let xs = corners.map(|c| c[0]);
        let ys = corners.map(|c| c[1]);
        let min = |a: [f32; 4]| a.into_iter().fold(f32::INFINITY, f32::min);
        let max = |a: [f32; 4]| a.into_iter().fold(f32::NEG_INFINITY, f32::max);
        [min(xs) - 2.0, min(ys) - 2.0, max(xs) + 2.0, max(ys) + 2.0]
    }
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn matmul(a: [[f32; 3]; 3], b: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

/// Paints the product through `projector`, 2x2 supersampled (the texture has about two texels
/// per pixel, and small text would alias with one sample).
fn paint_product(canvas: &mut Canvas, product: &Product, projector: &Projector) {
    let g = &product.design.geometry;
    let bounds = projector.bounds(g.w, g.h);
    canvas.paint(bounds, |x, y| {
        let mut acc = [0.0f32; 4];
        for (dx, dy) in [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)] {
            if let Some((u, v)) = projector.to_product(x + dx, y + dy) {
                let t = product.texture.sample(u, v);
                for k in 0..4 {
                    acc[k] += 0.25 * t[k];
                }
            }
        }
        (acc[3] > 1e-4).then(|| {
            let a = acc[3];
            ([acc[0] / a, acc[1] / a, acc[2] / a], a)
        })
    });
}

fn catalogue_unit_px(size: usize, design: &Design) -> f32 {
    CATALOGUE_FILL * (size as f32 / 2.0) / design.extent()
}

/// The clean catalogue shot: centred, front-facing, plain light background, even light, a
/// soft contact shadow.
pub fn catalogue_shot(product: &Product, size: usize) -> RgbImage {
    let n = size as f32;
    let unit_px = catalogue_unit_px(size, &product.design);
    let g = &product.design.geometry;
    let mut canvas = Canvas::new(size, size, CATALOGUE_BACKGROUND);
    let (sx, sy) = (g.w * unit_px * 1.05, 0.05 * n);
    let shadow_y = n / 2.0 + g.h * unit_px;
    canvas.paint(
        [0.0, shadow_y - 2.0 * sy, n, shadow_y + 2.0 * sy],
        |x, y| {
            let k = ((x - n / 2.0) / sx).powi(2) + ((y - shadow_y) / sy).powi(2);
            Some(([0.0; 3], 0.22 * (-2.0 * k).exp()))
        },
    );
    let projector = Projector::new(size, unit_px, [n / 2.0, n / 2.0], 0.0, 0.0, 0.0);
    paint_product(&mut canvas, product, &projector);
    canvas.to_image(|| [0.0; 3])
}

/// How far the camera shots stray from the catalogue shot. One place to tune the task's
/// difficulty: the pretrained backbone should find unseen items clearly less often than a
/// fine-tuned one.
struct Ranges {
    scale: (f32, f32),
    roll: f32,
    yaw: f32,
    pitch: f32,
    offset: f32,
    hand: f64,
    gain: (f32, f32),
    gradient: f32,
    white_balance: f32,
    blur: (f32, f32),
    noise: (f32, f32),
    jpeg: f64,
    /// Clutter objects on the surface.
    objects: (usize, usize),
}

const RANGES: Ranges = Ranges {
    scale: (0.6, 1.05),
    roll: 0.4,
    yaw: 0.55,
    pitch: 0.4,
    offset: 0.15,
    hand: 0.6,
    gain: (0.65, 1.3),
    gradient: 0.3,
    white_balance: 0.14,
    blur: (0.2, 1.3),
    noise: (0.006, 0.03),
    jpeg: 0.5,
    objects: (4, 14),
};

/// A camera shot: a random pose over a cluttered surface, often a hand holding the product,
/// uneven light and a colour cast, defocus, sensor noise and sometimes JPEG artefacts.
pub fn camera_shot(product: &Product, size: usize, glyphs: &Glyphs, rng: &mut StdRng) -> RgbImage {
    let r = &RANGES;
    let n = size as f32;
    let mut canvas = clutter(size, glyphs, rng);

    let unit_px = catalogue_unit_px(size, &product.design) * rng.random_range(r.scale.0..r.scale.1);
    let at = [
        n / 2.0 + rng.random_range(-r.offset..r.offset) * n,
        n / 2.0 + rng.random_range(-r.offset..r.offset) * n,
    ];
    let projector = Projector::new(
        size,
        unit_px,
        at,
        rng.random_range(-r.roll..r.roll),
        rng.random_range(-r.yaw..r.yaw),
        rng.random_range(-r.pitch..r.pitch),
    );

    // Cast shadow: the silhouette shifted away from the light, darkening what lies below.
    let shift = [
        rng.random_range(-0.05..0.05) * n,
        rng.random_range(0.0..0.06) * n,
    ];
    let strength = rng.random_range(0.15..0.45);
    let g = product.design.geometry;
    let b = projector.bounds(g.w, g.h);
    canvas.paint(
        [
            b[0] + shift[0],
            b[1] + shift[1],
            b[2] + shift[0],
            b[3] + shift[1],
        ],
        |x, y| {
            let (u, v) = projector.to_product(x - shift[0], y - shift[1])?;
            let a = product.texture.sample(u, v)[3];
            (a > 0.0).then_some(([0.0; 3], strength * a))
        },
    );
    paint_product(&mut canvas, product, &projector);

    if rng.random_bool(r.hand) {
        let radius = product.design.extent() * unit_px;
        hand(&mut canvas, at, radius, rng);
    }

    // Light: overall gain, a linear falloff across the frame, a vignette, a colour cast.
    let gain = rng.random_range(r.gain.0..r.gain.1);
    let angle = rng.random_range(0.0..std::f32::consts::TAU);
    let (dx, dy) = (angle.cos(), angle.sin());
    let slope = rng.random_range(0.0..r.gradient);
    let vignette = rng.random_range(0.0..0.35);
    let warm = rng.random_range(-r.white_balance..r.white_balance);
    let tint = rng.random_range(-0.05..0.05);
    let cast = [1.0 + warm, 1.0 + tint, 1.0 - warm];
    canvas.modulate(|x, y| {
        let (px, py) = (x / n - 0.5, y / n - 0.5);
        let k = gain
            * (1.0 + slope * 2.0 * (px * dx + py * dy))
            * (1.0 - vignette * (px * px + py * py) * 2.0);
        [k * cast[0], k * cast[1], k * cast[2]]
    });
    // A specular glare spot, as from a ceiling light on shiny packaging.
    if rng.random_bool(0.3) {
        let c = [rng.random_range(0.0..n), rng.random_range(0.0..n)];
        let radius = rng.random_range(0.04..0.14) * n;
        let peak = rng.random_range(0.3..0.8);
        canvas.paint(
            [
                c[0] - 3.0 * radius,
                c[1] - 3.0 * radius,
                c[0] + 3.0 * radius,
                c[1] + 3.0 * radius,
            ],
            |x, y| {
                let d2 = ((x - c[0]).powi(2) + (y - c[1]).powi(2)) / (radius * radius);
                Some(([1.0; 3], peak * (-d2).exp()))
            },
        );
    }

    // Defocus or motion: a Gaussian, sometimes stretched along one axis.
    let sigma = rng.random_range(r.blur.0..r.blur.1) * n / 256.0;
    let stretch = if rng.random_bool(0.3) {
        rng.random_range(1.5..2.5)
    } else {
        1.0
    };
    if rng.random_bool(0.5) {
        canvas.blur(sigma * stretch, sigma);
    } else {
        canvas.blur(sigma, sigma * stretch);
    }

    // Sensor noise: luminance and chroma, from a generator seeded by this shot's stream.
    let sigma_noise = rng.random_range(r.noise.0..r.noise.1);
    let mut noise = SplitMix::new(rng.random());
    let mut image = canvas.to_image(|| {
        let (l, c1) = noise.normal_pair();
        let (c2, _) = noise.normal_pair();
        let s = sigma_noise;
        [s * (l + 0.4 * c1), s * l, s * (l + 0.4 * c2)]
    });

    if rng.random_bool(r.jpeg) {
        let quality = rng.random_range(35..90);
        if let Some(decoded) = jpeg_round_trip(&image, quality) {
            image = decoded;
        }
    }
    image
}

/// Compresses and decompresses in memory: the blocking and ringing of a cheap camera.
/// `None` if the codec refuses (then the shot stays uncompressed; never expected).
fn jpeg_round_trip(image: &RgbImage, quality: u8) -> Option<RgbImage> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(image)
        .ok()?;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .ok()
        .map(|d| d.to_rgb8())
}

fn random_colour(rng: &mut StdRng) -> Rgb {
    hsv(
        rng.random_range(0.0..1.0),
        rng.random_range(0.0..0.9),
        rng.random_range(0.15..0.95),
    )
}

/// A cluttered surface: a shaded base with a texture (wood, tiles, fabric), random objects
/// and stray printed words.
fn clutter(size: usize, glyphs: &Glyphs, rng: &mut StdRng) -> Canvas {
    let n = size as f32;
    let (c0, c1) = (random_colour(rng), random_colour(rng));
    let angle = rng.random_range(0.0..std::f32::consts::TAU);
    let (gx, gy) = (angle.cos(), angle.sin());
    let texture = rng.random_range(0..4);
    let period = rng.random_range(0.02..0.12) * n;
    let contrast = rng.random_range(0.05..0.2);
    let tex_angle = rng.random_range(0.0..std::f32::consts::PI);
    let mut canvas = Canvas::new(size, size, c0);
    canvas.paint([0.0, 0.0, n, n], |x, y| {
        let t = ((x / n - 0.5) * gx + (y / n - 0.5) * gy + 0.5).clamp(0.0, 1.0);
        let base = mix(c0, c1, t);
        let (a, b) = unrotate(x, y, tex_angle);
        let k = match texture {
            // Wood grain: wavy stripes.
            0 => (a / period * std::f32::consts::TAU + 2.0 * (b / (3.0 * period)).sin()).sin(),
            // Tiles: dark grout lines.
            1 => {
                let fa = (a / (3.0 * period)).rem_euclid(1.0);
                let fb = (b / (3.0 * period)).rem_euclid(1.0);
                if fa < 0.06 || fb < 0.06 { -1.5 } else { 0.0 }
            }
            // Fabric: a fine check.
            2 => {
                let fa = ((a / (0.3 * period)).floor() as i64) & 1;
                let fb = ((b / (0.3 * period)).floor() as i64) & 1;
                if fa ^ fb == 1 { 1.0 } else { -1.0 }
            }
            _ => 0.0,
        };
        Some((scale(base, 1.0 + contrast * k), 1.0))
    });

    let objects = rng.random_range(RANGES.objects.0..RANGES.objects.1);
    for _ in 0..objects {
        let colour = random_colour(rng);
        let c = [
            rng.random_range(-0.1..1.1) * n,
            rng.random_range(-0.1..1.1) * n,
        ];
        let (hw, hh) = (
            rng.random_range(0.03..0.3) * n,
            rng.random_range(0.03..0.3) * n,
        );
        let angle = rng.random_range(0.0..std::f32::consts::PI);
        let kind = rng.random_range(0..5);
        let stripe = rng
            .random_bool(0.3)
            .then(|| (random_colour(rng), rng.random_range(0.01..0.05) * n));
        let reach = hw.max(hh) * 1.5;
        let end = [c[0] + hw * 2.0 * angle.cos(), c[1] + hw * 2.0 * angle.sin()];
        canvas.paint(
            [c[0] - reach, c[1] - reach, c[0] + reach, c[1] + reach],
            |x, y| {
                let (a, b) = unrotate(x - c[0], y - c[1], angle);
                let d = match kind {
                    0 => sd_round_box(a, b, hw, hh, 0.2 * hw.min(hh)),
                    1 => sd_ellipse(a, b, hw, hh),
                    2 => (sd_ellipse(a, b, hw, hw).abs()) - 0.15 * hw,
                    3 => sd_capsule(
                        [x, y],
                        c,
                        [(c[0] + end[0]) / 2.0, (c[1] + end[1]) / 2.0],
                        0.12 * hh,
                    ),
                    _ => sd_round_box(a, b, hw, 0.3 * hh, 0.0),
                };
                let cov = coverage(d);
                if cov <= 0.0 {
                    return None;
                }
                let fill = match stripe {
                    Some((s, w)) if (a / w).rem_euclid(2.0) < 1.0 => s,
                    _ => colour,
                };
                Some((fill, cov))
            },
        );
    }

    // Stray print (newspaper, other packaging): one or two random words.
    let words = rng.random_range(0..3);
    if words > 0 {
        let mut mask = Mask::new(size, size);
        let colour = random_colour(rng);
        for _ in 0..words {
            let word: String = (0..rng.random_range(3..9))
                .map(|_| (b'A' + rng.random_range(0..26u8)) as char)
                .collect();
            let centre = [rng.random_range(0.0..n), rng.random_range(0.0..n)];
            let height = rng.random_range(0.05..0.14) * n;
            glyphs.draw(rng.random(), &word, &mut mask, centre, n, height);
        }
        canvas.paint([0.0, 0.0, n, n], |x, y| {
            let m = mask.get(x as usize, y as usize);
            (m > 0.0).then_some((colour, m))
        });
    }
    canvas
}

/// Skin tones from light to dark.
const SKIN: [Rgb; 6] = [
    [0.96, 0.80, 0.69],
    [0.92, 0.72, 0.58],
    [0.80, 0.58, 0.43],
    [0.62, 0.43, 0.30],
    [0.45, 0.30, 0.20],
    [0.33, 0.22, 0.15],
];

/// A hand reaching in from one side over the product at `centre` (its half extent on screen
/// is `radius`): a palm, four fingers and a thumb, shaded darker towards the edges.
fn hand(canvas: &mut Canvas, centre: [f32; 2], radius: f32, rng: &mut StdRng) {
    let skin = SKIN[rng.random_range(0..SKIN.len())];
    let skin = scale(skin, rng.random_range(0.9..1.08));
    let from = rng.random_range(0.0..std::f32::consts::TAU);
    let (ox, oy) = (from.cos(), from.sin());
    // Fingers point back towards the product; `perp` spreads them.
    let (dx, dy) = (-ox, -oy);
    let (px, py) = (-dy, dx);
    let size = radius * rng.random_range(0.45..0.7);
    let reach = rng.random_range(0.85..1.3);
    let palm = [
        centre[0] + ox * radius * reach,
        centre[1] + oy * radius * reach,
    ];
    let (palm_long, palm_wide) = (0.55 * size, 0.5 * size);
    let finger_r = 0.11 * size;
    let curl = rng.random_range(0.55..1.0);
    let lengths = [0.75, 0.85, 0.8, 0.62].map(|l| l * size * curl);
    let mut fingers = Vec::with_capacity(5);
    for (i, length) in lengths.iter().enumerate() {
        let spread = (i as f32 - 1.5) * 0.52 * palm_wide;
        let base = [
            palm[0] + dx * 0.7 * palm_long + px * spread,
            palm[1] + dy * 0.7 * palm_long + py * spread,
        ];
        let fan = (i as f32 - 1.5) * 0.08;
        let (fx, fy) = (
            dx * fan.cos() - dy * fan.sin(),
            dx * fan.sin() + dy * fan.cos(),
        );
        fingers.push((
            base,
            [base[0] + fx * length, base[1] + fy * length],
            finger_r,
        ));
    }
    let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let thumb_base = [
        palm[0] + px * side * 0.8 * palm_wide,
        palm[1] + py * side * 0.8 * palm_wide,
    ];
    let (ta, tb) = ((dx + px * side) * 0.7, (dy + py * side) * 0.7);
    fingers.push((
        thumb_base,
        [
            thumb_base[0] + ta * 0.75 * size * curl,
            thumb_base[1] + tb * 0.75 * size * curl,
        ],
        1.2 * finger_r,
    ));
    let angle = dy.atan2(dx);
    let extent = palm_long + size + finger_r * 2.0;
    canvas.paint(
        [
            palm[0] - extent,
            palm[1] - extent,
            palm[0] + extent,
            palm[1] + extent,
        ],
        |x, y| {
            let (a, b) = unrotate(x - palm[0], y - palm[1], angle);
            let mut d = sd_ellipse(a, b, palm_long, palm_wide);
            for (base, tip, r) in &fingers {
                d = d.min(sd_capsule([x, y], *base, *tip, *r));
            }
            let cov = coverage(d);
            if cov <= 0.0 {
                return None;
            }
            let depth = (-d / finger_r).clamp(0.0, 1.0);
            Some((scale(skin, 0.72 + 0.28 * depth), cov))
        },
    );
}
