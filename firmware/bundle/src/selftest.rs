//! The built-in self-test image: the trainer embeds it when it writes a bundle and records the
//! code in the manifest; `lookupd selftest` embeds it on the device and compares.

use image::{Rgb, RgbImage};

/// Name of the pattern [`selftest_pattern`] draws (the manifest's `selftest.pattern`). A changed
/// drawing gets a new name, never this one.
pub const SELFTEST_PATTERN: &str = "gradient-checker-v1";

/// The side, in pixels, at which the trainer and the device render the pattern before
/// preprocessing it (not a usual resize side, so the resize is exercised).
pub const SELFTEST_SIDE: u32 = 320;

/// Draws pattern [`SELFTEST_PATTERN`] on a `side x side` RGB image, deterministically (integer
/// arithmetic only). Quadrants: top left, a red (left to right) and green (top to bottom)
/// gradient over blue 128; top right, a light and dark checkerboard of 16 cells a side; bottom
/// left, six vertical colour bars (red, green, blue, yellow, cyan, magenta); bottom right, a
/// diagonal gradient.
pub fn selftest_pattern(side: u32) -> RgbImage {
    let half = side / 2;
    let cell = (side / 16).max(1);
    // 0..=255 across `n` samples (the last one 255).
    let ramp = |i: u32, n: u32| -> u8 {
        if n <= 1 {
            0
        } else {
            (i.min(n - 1) * 255 / (n - 1)) as u8
        }
    };
    const BARS: [[u8; 3]; 6] = [
        [220, 20, 20],
        [20, 200, 40],
        [30, 40, 220],
        [230, 220, 30],
        [30, 210, 220],
        [210, 40, 200],
    ];
    RgbImage::from_fn(side, side, |x, y| {
        let (left, top) = (x < half, y < half);
        let (w, h) = (
            if left { half } else { side - half },
            if top { half } else { side - half },
        );
        let (qx, qy) = (
            if left { x } else { x - half },
            if top { y } else { y - half },
        );
        Rgb(match (left, top) {
            (true, true) => [ramp(qx, w), ramp(qy, h), 128],
            (false, true) => {
                if ((x / cell) + (y / cell)).is_multiple_of(2) {
                    [240, 236, 228]
                } else {
                    [18, 22, 30]
                }
            }
            (true, false) => BARS[((qx * 6) / w.max(1)).min(5) as usize],
            (false, false) => {
                let v = ramp(qx + qy, w + h - 1);
                [255 - v, v / 2 + 64, v]
            }
        })
    })
}
