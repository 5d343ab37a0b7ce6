//! Preprocessing of camera frames on the GPU: what the caller asks for ([`FramePrep`]) and the
//! filter taps the kernel applies, computed here on the CPU once per frame size.
//!
//! The rule is the bundle crate's (the device's one definition of preprocessing): resize the
//! RGB8 frame to `resize x resize` with `image` 0.25's `imageops::resize` and
//! `FilterType::Triangle` (aspect ratio not kept), take the centre `crop x crop` square at offset
//! `(resize - crop) / 2`, round each filtered value to u8 as `image` does, then write
//! `v * scale + bias` per channel as three planes (NCHW). `infer` knows nothing of bundles, so the
//! caller passes the numbers; the taps below are computed exactly as `image` (and
//! `bundle::Preprocessor`) computes them, and lookupd's tests check the GPU against
//! `bundle::Preprocessor` float for float.

use resample::Taps;

use crate::InferError;

/// How a packed RGB8 frame becomes the model's `3 x crop x crop` input (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FramePrep {
    /// The frame is resized to `resize x resize` (triangle filter, aspect not kept).
    pub resize: u32,
    /// Side of the centre crop; must equal the model's input height and width.
    pub crop: u32,
    /// Per channel (R, G, B): `input = pixel * scale + bias`, the pixel in 0..=255.
    pub scale: [f32; 3],
    pub bias: [f32; 3],
}

impl FramePrep {
    /// Offset of the centre crop in the resized square, on both axes.
    pub fn crop_offset(&self) -> u32 {
        (self.resize - self.crop.min(self.resize)) / 2
    }

    pub(crate) fn check(&self, input_shape: &[usize]) -> Result<(), InferError> {
        let bad = |m: String| Err(InferError::Input(format!("frame preprocessing: {m}")));
        if self.crop == 0 || self.crop > self.resize {
            return bad(format!(
                "crop {} must be from 1 to the resize side {}",
                self.crop, self.resize
            ));
        }
        let side = self.crop as usize;
        if input_shape != [3, side, side] {
            return bad(format!(
                "a {side}x{side} RGB crop does not fit the model's input {input_shape:?}"
            ));
        }
        if !self.scale.iter().chain(&self.bias).all(|v| v.is_finite()) {
            return bad(format!(
                "scale {:?} and bias {:?} must be finite",
                self.scale, self.bias
            ));
        }
        Ok(())
    }
}

/// Checks a packed RGB8 frame: `width * height * 3` bytes, not empty.
pub(crate) fn check_frame(width: u32, height: u32, pixels: &[u8]) -> Result<(), InferError> {
    let need = (width as u64) * (height as u64) * 3;
    if width == 0 || height == 0 || pixels.len() as u64 != need {
        return Err(InferError::Input(format!(
            "{} bytes for a {width}x{height} RGB8 frame, expected {need} (and a frame of at \
             least 1x1)",
            pixels.len()
        )));
    }
    Ok(())
}

/// Word offsets of the parts of the taps buffer (`u32` words; weights as f32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TapsLayout {
    pub rows_left: u32,
    pub rows_start: u32,
    pub cols_left: u32,
    pub cols_start: u32,
    pub weights: u32,
}

/// The taps of a `width x height` frame under `prep`, as the kernel reads them: row lefts, row
/// starts, column lefts, column starts (offset past the row weights), then all weights.
pub(crate) fn taps_words(prep: &FramePrep, width: u32, height: u32) -> (Vec<u32>, TapsLayout) {
    let (r, s, offset) = (prep.resize, prep.crop, prep.crop_offset());
    let rows = Taps::new(height, r, offset, s);
    let cols = Taps::new(width, r, offset, s);
    let n_row_weights = rows.weights.len() as u32;
    let mut words = Vec::with_capacity(
        rows.left.len() * 2 + cols.left.len() * 2 + 2 + rows.weights.len() + cols.weights.len(),
    );
    let at = |w: &Vec<u32>| w.len() as u32;
    let rows_left = at(&words);
    words.extend_from_slice(&rows.left);
    let rows_start = at(&words);
    words.extend_from_slice(&rows.start);
    let cols_left = at(&words);
    words.extend_from_slice(&cols.left);
    let cols_start = at(&words);
    words.extend(cols.start.iter().map(|&i| i + n_row_weights));
    let weights = at(&words);
    words.extend(
        rows.weights
            .iter()
            .chain(&cols.weights)
            .map(|w| w.to_bits()),
    );
    (
        words,
        TapsLayout {
            rows_left,
            rows_start,
            cols_left,
            cols_start,
            weights,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crop_that_does_not_fit_the_model_is_refused() {
        let prep = FramePrep {
            resize: 10,
            crop: 8,
            scale: [1.0; 3],
            bias: [0.0; 3],
        };
        prep.check(&[3, 8, 8]).unwrap();
        let err = prep.check(&[3, 9, 9]).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        let err = FramePrep { crop: 11, ..prep }
            .check(&[3, 11, 11])
            .unwrap_err()
            .to_string();
        assert!(err.contains("crop 11"), "{err}");
        let err = FramePrep {
            bias: [f32::NAN, 0.0, 0.0],
            ..prep
        }
        .check(&[3, 8, 8])
        .unwrap_err()
        .to_string();
        assert!(err.contains("finite"), "{err}");
        let err = check_frame(4, 3, &[0; 35]).unwrap_err().to_string();
        assert!(err.contains("expected 36"), "{err}");
        assert!(check_frame(0, 3, &[]).is_err());
    }
}
