//! Product designs and their front-facing artwork.
//!
//! Products come in families, as on a real shelf: a brand shares shape, layout, pattern,
//! logo and typeface across two or three variants that differ in colour and variant name.
//! Siblings are what makes the task fine-grained: colour histograms alone do not separate a
//! brand's "Lemon" from its "Mint" under a different white balance, the printed name does.

use std::collections::HashSet;

use rand::Rng;
use rand::rngs::StdRng;

use super::paint::{
    Rgb, Texture, coverage, hsv, luma, mix, scale, sd_box, sd_ellipse, sd_round_box, smoothstep,
    unrotate,
};
use super::text::{Glyphs, Mask};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    Box,
    Can,
    Bottle,
    Bag,
}

/// A repeating decoration, in product units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    Plain,
    Stripes {
        angle: f32,
        period: f32,
        duty: f32,
    },
    Dots {
        period: f32,
        radius: f32,
    },
    Checks {
        angle: f32,
        period: f32,
    },
    Waves {
        period: f32,
        amplitude: f32,
        wavelength: f32,
    },
    Rings {
        period: f32,
        centre: [f32; 2],
    },
    Sash {
        angle: f32,
        offset: f32,
        width: f32,
    },
}

impl Pattern {
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::Plain => "plain",
            Pattern::Stripes { .. } => "stripes",
            Pattern::Dots { .. } => "dots",
            Pattern::Checks { .. } => "checks",
            Pattern::Waves { .. } => "waves",
            Pattern::Rings { .. } => "rings",
            Pattern::Sash { .. } => "sash",
        }
    }

    /// Share of the pixel at (u, v) covered by the pattern's ink; `px` is the pixel size.
    fn cover(&self, u: f32, v: f32, px: f32) -> f32 {
        let band = |t: f32, period: f32, duty: f32| {
            let f = (t / period).rem_euclid(1.0);
            coverage(((f - 0.5).abs() - duty / 2.0) * period / px)
        };
        match *self {
            Pattern::Plain => 0.0,
            Pattern::Stripes {
                angle,
                period,
                duty,
            } => band(unrotate(u, v, angle).0, period, duty),
            Pattern::Dots { period, radius } => {
                let row = (v / period).floor();
                let shift = if row as i64 % 2 == 0 { 0.0 } else { 0.5 };
                let fx = (u / period + shift).rem_euclid(1.0) - 0.5;
                let fy = (v / period).rem_euclid(1.0) - 0.5;
                coverage(((fx * fx + fy * fy).sqrt() * period - radius) / px)
            }
            Pattern::Checks { angle, period } => {
                let (a, b) = unrotate(u, v, angle);
                let fa = (a / period).rem_euclid(1.0) - 0.5;
                let fb = (b / period).rem_euclid(1.0) - 0.5;
                let edge = fa
                    .abs()
                    .min(fb.abs())
                    .min(0.5 - fa.abs())
                    .min(0.5 - fb.abs())
                    * period;
                let inside = if fa * fb > 0.0 { 1.0 } else { -1.0 };
                0.5 + inside * (edge / px).min(0.5)
            }
            Pattern::Waves {
                period,
                amplitude,
                wavelength,
            } => band(
                v + amplitude * (u * std::f32::consts::TAU / wavelength).sin(),
                period,
                0.45,
            ),
            Pattern::Rings { period, centre } => {
                let r = ((u - centre[0]).powi(2) + (v - centre[1]).powi(2)).sqrt();
                band(r, period, 0.4)
            }
            Pattern::Sash {
                angle,
                offset,
                width,
            } => coverage(((unrotate(u, v, angle).1 - offset).abs() - width) / px),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoShape {
    Circle,
    Ring,
    Triangle,
    Diamond,
    Hexagon,
    Star,
    Plus,
    Crescent,
}

impl LogoShape {
    const ALL: [LogoShape; 8] = [
        LogoShape::Circle,
        LogoShape::Ring,
        LogoShape::Triangle,
        LogoShape::Diamond,
        LogoShape::Hexagon,
        LogoShape::Star,
        LogoShape::Plus,
        LogoShape::Crescent,
    ];

    /// Signed distance (product units) from a logo of radius r centred on the origin.
    fn sd(self, x: f32, y: f32, r: f32) -> f32 {
        let polygon = |n: f32, rot: f32| {
            let sector = std::f32::consts::TAU / n;
            let a = (y.atan2(x) - rot).rem_euclid(sector) - sector / 2.0;
            (x * x + y * y).sqrt() * a.cos() - r * (std::f32::consts::PI / n).cos()
        };
        let len = (x * x + y * y).sqrt();
        match self {
            LogoShape::Circle => len - r,
            LogoShape::Ring => (len - 0.72 * r).abs() - 0.28 * r,
            LogoShape::Triangle => polygon(3.0, -std::f32::consts::FRAC_PI_2),
            LogoShape::Diamond => polygon(4.0, 0.0),
            LogoShape::Hexagon => polygon(6.0, 0.0),
            LogoShape::Star => {
                let sector = std::f32::consts::TAU / 5.0;
                let a = (y.atan2(x) + std::f32::consts::FRAC_PI_2).rem_euclid(sector) / sector;
                let tri = (a - 0.5).abs() * 2.0;
                len - r * (0.45 + 0.55 * tri)
            }
            LogoShape::Plus => sd_box(x, y, r, 0.34 * r).min(sd_box(x, y, 0.34 * r, r)),
            LogoShape::Crescent => {
                (len - r).max(-(((x - 0.42 * r).powi(2) + (y + 0.18 * r).powi(2)).sqrt() - 0.8 * r))
            }
        }
    }
}

/// Where the pattern is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternOn {
    Body,
    Panel,
}

/// The silhouette: half width and height in product units, plus shape details.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub shape: Shape,
    pub w: f32,
    pub h: f32,
    /// Bottle: cap height, cap and neck half widths, shoulder start and end (v).
    cap_h: f32,
    cap_w: f32,
    neck_w: f32,
    shoulder: [f32; 2],
    /// Can: half height of the rim ellipses. Bag: crimp band height and zigzag period.
    rim: f32,
    crimp_period: f32,
}

impl Geometry {
    fn random(shape: Shape, rng: &mut StdRng) -> Self {
        let mut g = Geometry {
            shape,
            w: 0.6,
            h: 0.9,
            cap_h: 0.0,
            cap_w: 0.0,
            neck_w: 0.0,
            shoulder: [0.0; 2],
            rim: 0.0,
            crimp_period: 0.1,
        };
        match shape {
            Shape::Box => {
                g.w = rng.random_range(0.45..0.78);
                g.h = rng.random_range(0.72..0.95);
            }
            Shape::Can => {
                g.w = rng.random_range(0.42..0.6);
                g.h = rng.random_range(0.7..0.92);
                g.rim = 0.1 * g.w;
            }
            Shape::Bottle => {
                g.w = rng.random_range(0.32..0.48);
                g.h = 0.95;
                g.cap_h = rng.random_range(0.1..0.18);
                g.neck_w = rng.random_range(0.1..0.17);
                g.cap_w = g.neck_w * rng.random_range(1.05..1.35);
                let s0 = -g.h + g.cap_h + rng.random_range(0.1..0.3);
                g.shoulder = [s0, s0 + rng.random_range(0.15..0.35)];
            }
            Shape::Bag => {
                g.w = rng.random_range(0.55..0.78);
                g.h = rng.random_range(0.78..0.95);
                g.rim = rng.random_range(0.06..0.1);
                g.crimp_period = rng.random_range(0.04..0.08);
            }
        }
        g
    }

    /// Half width of the silhouette at height v (for cylinder shading).
    fn half_width(&self, v: f32) -> f32 {
        match self.shape {
            Shape::Bottle => {
                if v < -self.h + self.cap_h {
                    self.cap_w
                } else {
                    self.neck_w
                        + (self.w - self.neck_w) * smoothstep(self.shoulder[0], self.shoulder[1], v)
                }
            }
            Shape::Bag => self.w * (1.0 - 0.06 * (v / self.h).powi(2)),
            _ => self.w,
        }
    }

    /// Signed distance from the silhouette (product units; negative inside).
    fn sd(&self, u: f32, v: f32) -> f32 {
        match self.shape {
            Shape::Box => sd_round_box(u, v, self.w, self.h, 0.02),
            Shape::Can => {
                let e = self.rim;
                sd_box(u, v, self.w, self.h - e)
                    .min(sd_ellipse(u, v + self.h - e, self.w, e))
                    .min(sd_ellipse(u, v - self.h + e, self.w, e))
            }
            Shape::Bottle => {
                let body_top = self.shoulder[1];
                let body_half = (self.h - body_top) / 2.0;
                let body = sd_round_box(u, v - (body_top + body_half), self.w, body_half, 0.1);
                let upper = (u.abs() - self.half_width(v))
                    .max(-self.h - v)
                    .max(v - body_top - 0.02);
                body.min(upper)
            }
            Shape::Bag => {
                let tri = ((u / self.crimp_period).rem_euclid(1.0) - 0.5).abs() * 2.0;
                let zig = 0.3 * self.rim * tri;
                (u.abs() - self.half_width(v))
                    .max(-self.h + zig - v)
                    .max(v - self.h + zig)
            }
        }
    }

    /// The flat front area that carries the artwork: [u0, v0, u1, v1].
    fn face(&self) -> [f32; 4] {
        let (w, h) = (self.w, self.h);
        match self.shape {
            Shape::Box => [-0.9 * w, -0.88 * h, 0.9 * w, 0.92 * h],
            Shape::Can => [-0.92 * w, -h + 3.0 * self.rim, 0.92 * w, h - 2.5 * self.rim],
            Shape::Bottle => [-0.92 * w, self.shoulder[1] + 0.04, 0.92 * w, h - 0.06],
            Shape::Bag => [
                -0.85 * w,
                -h + self.rim + 0.04,
                0.85 * w,
                h - self.rim - 0.04,
            ],
        }
    }
}

/// One product's complete design.
#[derive(Debug, Clone)]
pub struct Design {
    pub geometry: Geometry,
    pub brand: String,
    pub variant: String,
    pub pattern: Pattern,
    pattern_on: PatternOn,
    pub logo: LogoShape,
    logo_at: [f32; 3],
    /// Label panel: centre v, half height, half width, corner radius.
    panel: [f32; 4],
    body: Rgb,
    accent: Rgb,
    label: Rgb,
    ink: Rgb,
    logo_colour: Rgb,
    cap: Rgb,
    font_pick: u32,
    /// Bag: crinkle highlights (angle, offset, strength).
    crinkles: Vec<[f32; 3]>,
}

const VARIANTS: [&str; 28] = [
    "Original", "Classic", "Light", "Extra", "Lemon", "Berry", "Mint", "Cocoa", "Spicy", "Honey",
    "Zero", "Fresh", "Gold", "Sea Salt", "Vanilla", "Orange", "Lime", "Cherry", "Herbal", "Dark",
    "Mild", "Strong", "Plus", "Max", "Coconut", "Ginger", "Mango", "Smoky",
];

fn brand_name(rng: &mut StdRng) -> String {
    const ONSETS: [&str; 26] = [
        "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr",
        "dr", "fl", "gr", "kl", "pr", "st", "tr", "sh", "qu",
    ];
    const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ea", "oo"];
    const CODAS: [&str; 10] = ["", "", "", "n", "r", "x", "s", "l", "m", "k"];
    let syllables = rng.random_range(2..=3);
    let mut name = String::new();
    for _ in 0..syllables {
        name.push_str(ONSETS[rng.random_range(0..ONSETS.len())]);
        name.push_str(VOWELS[rng.random_range(0..VOWELS.len())]);
    }
    name.push_str(CODAS[rng.random_range(0..CODAS.len())]);
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Everything a family's variants share.
struct Family {
    geometry: Geometry,
    brand: String,
    pattern: Pattern,
    pattern_on: PatternOn,
    logo: LogoShape,
    logo_at: [f32; 3],
    panel: [f32; 4],
    hue: f32,
    hue_step: f32,
    saturation: f32,
    value: f32,
    accent_mode: u32,
    label_mode: u32,
    cap_mode: u32,
    font_pick: u32,
    crinkles: Vec<[f32; 3]>,
    variants: Vec<&'static str>,
}

impl Family {
    fn random(rng: &mut StdRng, brands: &mut HashSet<String>) -> Self {
        let shape = [Shape::Box, Shape::Can, Shape::Bottle, Shape::Bag][rng.random_range(0..4)];
        let geometry = Geometry::random(shape, rng);
        let brand = loop {
            let name = brand_name(rng);
            if (4..=10).contains(&name.len()) && brands.insert(name.clone()) {
                break name;
            }
        };
        let pattern = match rng.random_range(0..7) {
            0 => Pattern::Plain,
            1 => Pattern::Stripes {
                angle: rng.random_range(-1.2..1.2),
                period: rng.random_range(0.08..0.3),
                duty: rng.random_range(0.25..0.6),
            },
            2 => Pattern::Dots {
                period: rng.random_range(0.1..0.25),
                radius: rng.random_range(0.02..0.05),
            },
            3 => Pattern::Checks {
                angle: rng.random_range(-0.8..0.8),
                period: rng.random_range(0.1..0.3),
            },
            4 => Pattern::Waves {
                period: rng.random_range(0.1..0.25),
                amplitude: rng.random_range(0.02..0.06),
                wavelength: rng.random_range(0.3..0.8),
            },
            5 => Pattern::Rings {
                period: rng.random_range(0.1..0.22),
                centre: [rng.random_range(-0.6..0.6), rng.random_range(-0.9..0.9)],
            },
            _ => Pattern::Sash {
                angle: rng.random_range(-0.9..0.9),
                offset: rng.random_range(-0.4..0.4),
                width: rng.random_range(0.06..0.2),
            },
        };
        let pattern_on = if rng.random_bool(0.75) {
            PatternOn::Body
        } else {
            PatternOn::Panel
        };

        // Layout on the face: a label panel, and the logo in the larger room beside it.
        let face = geometry.face();
        let (face_w, face_h) = (face[2] - face[0], face[3] - face[1]);
        let panel_half_h = face_h * rng.random_range(0.12..0.2);
        let panel_cy = face[1] + face_h * rng.random_range(0.42..0.62);
        let panel_half_w = face_w / 2.0
            * match shape {
                Shape::Can | Shape::Bottle => 1.2,
                _ => rng.random_range(0.78..0.96),
            };
        let panel_r = match shape {
            Shape::Can | Shape::Bottle => 0.0,
            _ => panel_half_h * rng.random_range(0.0..0.9),
        };
        let above = panel_cy - panel_half_h - face[1];
        let below = face[3] - panel_cy - panel_half_h;
        let (room, room_centre) = if above >= below || rng.random_bool(0.2) {
            (above, face[1] + above / 2.0)
        } else {
            (below, face[3] - below / 2.0)
        };
        let logo_r = (0.36 * room).min(0.3 * face_w).max(0.04);
        let logo_x = match rng.random_range(0..3) {
            0 => 0.0,
            side => (if side == 1 { -1.0 } else { 1.0 }) * (face_w / 2.0 - 1.3 * logo_r).max(0.0),
        };
        let logo = LogoShape::ALL[rng.random_range(0..LogoShape::ALL.len())];

        let size = rng.random_range(1..=3usize);
        let mut variants: Vec<&'static str> = Vec::new();
        while variants.len() < size {
            let v = VARIANTS[rng.random_range(0..VARIANTS.len())];
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        let crinkles = (0..rng.random_range(3..7))
            .map(|_| {
                [
                    rng.random_range(-0.6..0.6f32),
                    rng.random_range(-0.9..0.9f32),
                    rng.random_range(0.06..0.18f32),
                ]
            })
            .collect();
        let hue_step = rng.random_range(0.14..0.4) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        Family {
            geometry,
            brand,
            pattern,
            pattern_on,
            logo,
            logo_at: [logo_x, room_centre, logo_r],
            panel: [panel_cy, panel_half_h, panel_half_w, panel_r],
            hue: rng.random_range(0.0..1.0),
            hue_step,
            saturation: rng.random_range(0.45..0.95),
            value: rng.random_range(0.4..0.95),
            accent_mode: rng.random_range(0..4),
            label_mode: rng.random_range(0..5),
            cap_mode: rng.random_range(0..4),
            font_pick: rng.random(),
            crinkles,
            variants,
        }
    }

    fn variant(&self, k: usize, rng: &mut StdRng) -> Design {
        let hue = self.hue + k as f32 * self.hue_step + rng.random_range(-0.02..0.02);
        let sat = (self.saturation + rng.random_range(-0.08..0.08)).clamp(0.3, 1.0);
        let val = (self.value + rng.random_range(-0.08..0.08)).clamp(0.3, 1.0);
        let body = hsv(hue, sat, val);
        let accent = match self.accent_mode {
            0 => hsv(hue + 0.5, sat, (val + 0.2).min(1.0)),
            1 => hsv(hue + 0.09, sat * 0.8, (1.2 - val).clamp(0.25, 1.0)),
            2 => hsv(hue, sat * 0.3, 0.97),
            _ => hsv(hue, sat, val * 0.45),
        };
        let label = match self.label_mode {
            0 => [0.96, 0.96, 0.94],
            1 => [0.97, 0.92, 0.8],
            2 => [0.1, 0.1, 0.11],
            3 => hsv(hue + 0.05, 0.2, 0.97),
            _ => accent,
        };
        let dark_ink = if luma(body) < 0.35 {
            body
        } else {
            hsv(hue, 0.8, 0.2)
        };
        let ink = if luma(label) > 0.5 {
            dark_ink
        } else {
            [0.98, 0.98, 0.97]
        };
        let logo_colour = if (luma(accent) - luma(body)).abs() > 0.25 {
            accent
        } else if luma(body) > 0.5 {
            hsv(hue, 0.9, 0.18)
        } else {
            [0.97, 0.97, 0.95]
        };
        let cap = match self.cap_mode {
            0 => [0.72, 0.73, 0.75],
            1 => [0.95, 0.95, 0.95],
            2 => [0.08, 0.08, 0.09],
            _ => accent,
        };
        Design {
            geometry: self.geometry,
            brand: self.brand.clone(),
            variant: self.variants[k].to_string(),
            pattern: self.pattern,
            pattern_on: self.pattern_on,
            logo: self.logo,
            logo_at: self.logo_at,
            panel: self.panel,
            body,
            accent,
            label,
            ink,
            logo_colour,
            cap,
            font_pick: self.font_pick,
            crinkles: self.crinkles.clone(),
        }
    }
}

/// The designs of items 0..n for `seed`. Item i depends only on the seed and i, never on n,
/// so a bigger catalogue extends a smaller one.
pub fn designs(rng: &mut StdRng, n: usize) -> Vec<Design> {
    let mut brands = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let family = Family::random(rng, &mut brands);
        for k in 0..family.variants.len() {
            if out.len() < n {
                out.push(family.variant(k, rng));
            }
        }
    }
    out
}

impl Design {
    /// The largest half extent of the silhouette, for framing.
    pub fn extent(&self) -> f32 {
        self.geometry.w.max(self.geometry.h)
    }

    /// Renders the front artwork into a `size` x `size` texture spanning [-1, 1]^2.
    pub fn render(&self, glyphs: &Glyphs, size: usize) -> Texture {
        let n = size as f32;
        let px = 2.0 / n;
        let to_texel = |u: f32| (u + 1.0) * 0.5 * n;
        let [cy, ph, pw, _] = self.panel;

        let mut text = Mask::new(size, size);
        let text_w = 2.0 * pw.min(self.geometry.w * 0.9) * 0.86 / px;
        glyphs.draw(
            self.font_pick,
            &self.brand,
            &mut text,
            [to_texel(0.0), to_texel(cy - 0.25 * ph)],
            text_w,
            1.15 * ph / px,
        );
        glyphs.draw(
            self.font_pick,
            &self.variant.to_uppercase(),
            &mut text,
            [to_texel(0.0), to_texel(cy + 0.58 * ph)],
            text_w * 0.8,
            0.5 * ph / px,
        );

        let mut texels = vec![[0.0f32; 4]; size * size];
        for (i, t) in texels.iter_mut().enumerate() {
            let (x, y) = (i % size, i / size);
            let u = (x as f32 + 0.5) * px - 1.0;
            let v = (y as f32 + 0.5) * px - 1.0;
            let alpha = coverage(self.geometry.sd(u, v) / px);
            if alpha <= 0.0 {
                continue;
            }
            let c = self.colour_at(u, v, px, text.get(x, y));
            *t = [c[0] * alpha, c[1] * alpha, c[2] * alpha, alpha];
        }
        Texture { size, texels }
    }

    fn colour_at(&self, u: f32, v: f32, px: f32, text: f32) -> Rgb {
        let g = &self.geometry;
        let [cy, ph, pw, pr] = self.panel;
        let pattern = self.pattern.cover(u, v, px);
        let mut c = self.body;
        if self.pattern_on == PatternOn::Body {
            c = mix(c, self.accent, pattern);
        }
        // Shape details drawn over the body: lid, rims, cap, crimps.
        match g.shape {
            Shape::Box => {
                let lid = coverage((v - (-g.h + 0.05 * g.h)) / px);
                c = mix(c, scale(c, 1.15), lid);
            }
            Shape::Can => {
                let top = coverage((v - (-g.h + 2.2 * g.rim)) / px);
                let bottom = coverage((g.h - 1.6 * g.rim - v) / px);
                let metal = [0.78, 0.79, 0.81];
                c = mix(c, metal, top.max(bottom));
            }
            Shape::Bottle => {
                let cap = coverage((v - (-g.h + g.cap_h)) / px);
                let ridges = 0.9 + 0.1 * (u * 90.0).sin();
                c = mix(c, scale(self.cap, ridges), cap);
            }
            Shape::Bag => {
                let crimp =
                    coverage((v - (-g.h + g.rim)) / px).max(coverage((g.h - g.rim - v) / px));
                let ridges = 0.82 + 0.18 * (u / g.crimp_period * std::f32::consts::TAU).sin();
                c = mix(c, scale(c, ridges), crimp);
            }
        }
        // The label panel and what is printed on it.
        let panel = coverage(sd_round_box(u, v - cy, pw, ph, pr) / px);
        if panel > 0.0 {
            let mut l = self.label;
            if self.pattern_on == PatternOn::Panel {
                l = mix(l, self.accent, 0.45 * pattern);
            }
            c = mix(c, l, panel);
        }
        let [lx, ly, lr] = self.logo_at;
        let logo = coverage(self.logo.sd(u - lx, v - ly, lr) / px);
        c = mix(c, self.logo_colour, logo);
        c = mix(c, self.ink, text);

        // Shading: cylinders are darker towards their sides with a vertical highlight; bags
        // bulge and crinkle; boxes get a gentle top-down falloff.
        match g.shape {
            Shape::Can | Shape::Bottle => {
                let x = (u / g.half_width(v).max(1e-3)).clamp(-1.0, 1.0);
                let shade = 0.62 + 0.42 * (1.0 - x * x).sqrt();
                let glint = 0.35 * (-((x + 0.45) / 0.12).powi(2)).exp();
                c = scale(c, shade);
                c = mix(c, [1.0; 3], glint);
            }
            Shape::Bag => {
                let (x, y) = (u / g.w, v / g.h);
                let mut shade = 1.04 - 0.22 * x.powi(4) - 0.18 * y.powi(4);
                let mut glint = 0.0f32;
                for [angle, offset, strength] in &self.crinkles {
                    let d = unrotate(u, v, *angle).1 - offset;
                    glint += strength * (-(d / 0.025).powi(2)).exp();
                    shade -= 0.4 * strength * (-((d + 0.04) / 0.03).powi(2)).exp();
                }
                c = scale(c, shade);
                c = mix(c, [1.0; 3], glint.min(0.5));
            }
            Shape::Box => {
                let edge = smoothstep(0.82, 1.0, u.abs() / g.w);
                c = scale(c, (1.0 - 0.06 * v / g.h) * (1.0 - 0.12 * edge));
            }
        }
        [
            c[0].clamp(0.0, 1.0),
            c[1].clamp(0.0, 1.0),
            c[2].clamp(0.0, 1.0),
        ]
    }
}
