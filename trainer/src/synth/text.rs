//! Printed text for packaging and clutter: glyph outlines from a system font through
//! ab_glyph, or, where no font is installed, glyph-like bar patterns so that the catalogue
//! still has "writing" (the names then differ by pattern instead of letters).

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontArc, PxScale, ScaleFont, point};

use super::SynthError;
use super::paint::{coverage, mix64, sd_box};

/// Where Debian (fonts-dejavu-core), Arch and Fedora put DejaVu.
const FONT_DIRS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/share/fonts/dejavu",
];
/// The faces a product may be printed in, all in fonts-dejavu-core.
const FONT_FILES: [&str; 4] = [
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSansMono-Bold.ttf",
];

/// A single-channel coverage image that text is drawn into.
#[derive(Clone, Debug)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Mask {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    fn add(&mut self, x: i64, y: i64, c: f32) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let p = &mut self.data[y as usize * self.width + x as usize];
            *p = p.max(c.min(1.0));
        }
    }

    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
}

/// How text is drawn.
pub enum Glyphs {
    Fonts(Vec<(PathBuf, FontArc)>),
    Bars,
}

impl std::fmt::Debug for Glyphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Glyphs {
    /// The DejaVu faces installed on this machine, or bar patterns if there are none.
    pub fn system() -> Self {
        let fonts: Vec<(PathBuf, FontArc)> = FONT_FILES
            .iter()
            .filter_map(|file| {
                FONT_DIRS.iter().find_map(|dir| {
                    let path = Path::new(dir).join(file);
                    let bytes = std::fs::read(&path).ok()?;
                    FontArc::try_from_vec(bytes).ok().map(|font| (path, font))
                })
            })
            .collect();
        if fonts.is_empty() {
            tracing::warn!(
                "no DejaVu font found in {}; names are printed as bar patterns",
                FONT_DIRS.join(", ")
            );
            Glyphs::Bars
        } else {
            Glyphs::Fonts(fonts)
        }
    }

    /// One TrueType or OpenType file given by the user.
    pub fn from_file(path: &Path) -> Result<Self, SynthError> {
        let bytes = std::fs::read(path).map_err(|source| SynthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let font = FontArc::try_from_vec(bytes).map_err(|e| SynthError::Font {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Glyphs::Fonts(vec![(path.to_path_buf(), font)]))
    }

    /// For synth.json and the log: which glyphs the images were drawn with (the output
    /// depends on it, so it belongs with the seed).
    pub fn describe(&self) -> String {
        match self {
            Glyphs::Fonts(fonts) => fonts
                .iter()
                .map(|(path, _)| {
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(", "),
            Glyphs::Bars => "bar patterns (no font)".into(),
        }
    }

    /// Draws `text` centred on `centre`, `height` pixels high (the font's em), shrunk to at
    /// most `max_width` wide. `pick` chooses the face.
    pub fn draw(
        &self,
        pick: u32,
        text: &str,
        mask: &mut Mask,
        centre: [f32; 2],
        max_width: f32,
        height: f32,
    ) {
        if text.is_empty() || height <= 0.5 || max_width <= 0.5 {
            return;
        }
        match self {
            Glyphs::Fonts(fonts) => {
                let font = &fonts[pick as usize % fonts.len()].1;
                let width = advance(font, text, height);
                let px = if width > max_width {
                    height * max_width / width
                } else {
                    height
                };
                let width = advance(font, text, px);
                let scale = PxScale::from(px);
                let scaled = font.as_scaled(scale);
                // Centre the capitals (about 0.7 em tall) on `centre`.
                let baseline = centre[1] + 0.36 * px;
                let mut x = centre[0] - width / 2.0;
                let mut previous = None;
                for ch in text.chars() {
                    let id = scaled.glyph_id(ch);
                    if let Some(p) = previous {
                        x += scaled.kern(p, id);
                    }
                    let glyph = id.with_scale_and_position(scale, point(x, baseline));
                    if let Some(outline) = font.outline_glyph(glyph) {
                        let b = outline.px_bounds();
                        outline.draw(|gx, gy, c| {
                            mask.add(b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, c)
                        });
                    }
                    x += scaled.h_advance(id);
                    previous = Some(id);
                }
            }
            Glyphs::Bars => draw_bars(text, mask, centre, max_width, height),
        }
    }
}

fn advance(font: &FontArc, text: &str, px: f32) -> f32 {
    let scaled = font.as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut previous = None;
    for ch in text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = previous {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// Each character becomes a 3x5 block pattern derived from its code: legible as "print" and
/// distinct per name, with no font data.
fn draw_bars(text: &str, mask: &mut Mask, centre: [f32; 2], max_width: f32, height: f32) {
    let count = text.chars().count() as f32;
    let mut cap = height * 0.7;
    let mut cell = cap * 0.75;
    if cell * count > max_width {
        let k = max_width / (cell * count);
        cap *= k;
        cell *= k;
    }
    let (bw, bh) = (cell * 0.8 / 3.0, cap / 5.0);
    let x0 = centre[0] - cell * count / 2.0;
    let y0 = centre[1] - cap / 2.0;
    for (i, ch) in text.chars().enumerate() {
        if ch.is_whitespace() {
            continue;
        }
        let mut bits = mix64(ch.to_ascii_uppercase() as u64 + 0x51_7A) as u32 & 0x7FFF;
        // A stem on the left keeps every pattern letter-like and never empty.
        bits |= 0b001_001_001_001_001;
        for b in 0..15 {
            if bits & (1 << b) == 0 {
                continue;
            }
            let (col, row) = ((b % 3) as f32, (b / 3) as f32);
            let cx = x0 + i as f32 * cell + (col + 0.5) * bw;
            let cy = y0 + (row + 0.5) * bh;
            let (hx, hy) = (bw * 0.5, bh * 0.5);
            let (xa, xb) = ((cx - hx - 1.0).floor(), (cx + hx + 1.0).ceil());
            let (ya, yb) = ((cy - hy - 1.0).floor(), (cy + hy + 1.0).ceil());
            let mut y = ya;
            while y <= yb {
                let mut x = xa;
                while x <= xb {
                    let c = coverage(sd_box(x + 0.5 - cx, y + 0.5 - cy, hx, hy));
                    if c > 0.0 {
                        mask.add(x as i64, y as i64, c);
                    }
                    x += 1.0;
                }
                y += 1.0;
            }
        }
    }
}
