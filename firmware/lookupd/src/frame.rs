//! Camera frames: the newest-frame slot the capture thread fills and the lookup loop empties,
//! and the conversion of camera pixel formats (YUYV, MJPEG) to packed RGB8.

use std::io::Cursor;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::ImageDecoder;
use image::codecs::jpeg::JpegDecoder;

use crate::error::{ApplianceError, Result};

/// Bytes of a frame's label (the replayed file's name, or the camera's frame number).
pub const FRAME_LABEL_BYTES: usize = 64;

/// One frame in packed RGB8, rows top to bottom. Its buffer is reused from frame to frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// Increases with every frame the source delivers; 0: no frame yet.
    pub seq: u64,
    /// When the source delivered it.
    pub captured: Instant,
    /// What it shows, for reports: the replayed file's path in its folder, or `frame-N`.
    pub label: heapless::String<FRAME_LABEL_BYTES>,
}

impl Default for Frame {
    fn default() -> Self {
        Self {
            width: 0,
            height: 0,
            rgb: Vec::new(),
            seq: 0,
            captured: Instant::now(),
            label: heapless::String::new(),
        }
    }
}

impl Frame {
    /// Sets the label, cut at a character boundary if it is longer than [`FRAME_LABEL_BYTES`].
    pub fn set_label(&mut self, label: &str) {
        self.label.clear();
        push_truncated(&mut self.label, label);
    }

    /// Resizes the buffer for a `width x height` RGB8 frame (no allocation once it is large
    /// enough).
    pub fn resize(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.rgb.resize(width as usize * height as usize * 3, 0);
    }
}

/// Appends as much of `s` to `out` as fits, cut at a character boundary.
pub fn push_truncated<const N: usize>(out: &mut heapless::String<N>, s: &str) {
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
}

/// The newest frame, handed from the capture thread to the lookup loop by swapping buffers:
/// neither side allocates, and a lookup never gets a frame older than the newest one.
#[derive(Debug, Default)]
pub struct FrameSlot {
    newest: Mutex<Frame>,
    arrived: Condvar,
}

impl FrameSlot {
    fn lock(&self) -> MutexGuard<'_, Frame> {
        // A panicking capture thread leaves a usable frame behind: the lock is not poisoned
        // for our purpose.
        self.newest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `frame` the newest one; `frame` gets back the buffer of the one it replaces.
    pub fn publish(&self, frame: &mut Frame) {
        std::mem::swap(&mut *self.lock(), frame);
        self.arrived.notify_all();
    }

    /// The sequence number of the newest frame (0: none yet).
    pub fn newest_seq(&self) -> u64 {
        self.lock().seq
    }

    /// Swaps the newest frame into `frame` if it is newer than `frame`'s, waiting up to
    /// `timeout` for one. Returns whether `frame` now holds a newer frame.
    pub fn take_newer(&self, frame: &mut Frame, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut newest = self.lock();
        while newest.seq <= frame.seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            newest = self
                .arrived
                .wait_timeout(newest, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut *newest, frame);
        true
    }
}

/// Camera pixel formats the appliance converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// YUV 4:2:2, `Y0 U Y1 V` per two pixels (V4L2 `YUYV`).
    Yuyv,
    /// Motion JPEG: each frame a JPEG (V4L2 `MJPG`).
    Mjpeg,
}

/// Converts a YUYV frame (`stride` bytes per row) into `frame` (resized), with the BT.601
/// limited-range matrix webcams use. An odd width's last pixel is dropped.
pub fn yuyv_to_rgb8(
    width: u32,
    height: u32,
    stride: usize,
    src: &[u8],
    frame: &mut Frame,
) -> Result<()> {
    let (w, h) = (width as usize & !1, height as usize);
    let stride = stride.max(w * 2);
    if w == 0 || h == 0 || src.len() < stride * (h - 1) + w * 2 {
        return Err(ApplianceError::Frame(format!(
            "YUYV frame {width}x{height} (stride {stride}) needs {} bytes, got {}",
            stride * h.saturating_sub(1) + w * 2,
            src.len()
        )));
    }
    frame.resize(w as u32, h as u32);
    for (row, out) in src.chunks(stride).zip(frame.rgb.chunks_exact_mut(w * 3)) {
        for (yuyv, rgb) in row[..w * 2].chunks_exact(4).zip(out.chunks_exact_mut(6)) {
            let (u, v) = (yuyv[1] as i32 - 128, yuyv[3] as i32 - 128);
            ycbcr_to_rgb(yuyv[0], u, v, &mut rgb[..3]);
            ycbcr_to_rgb(yuyv[2], u, v, &mut rgb[3..]);
        }
    }
    Ok(())
}

/// BT.601 limited range in 16.16 fixed point: R = 1.164 (Y-16) + 1.596 V, G = 1.164 (Y-16)
/// - 0.392 U - 0.813 V, B = 1.164 (Y-16) + 2.017 U.
#[inline]
fn ycbcr_to_rgb(y: u8, u: i32, v: i32, out: &mut [u8]) {
    let c = (y as i32 - 16) * 76_284;
    let clamp = |x: i32| ((x + 32_768) >> 16).clamp(0, 255) as u8;
    out[0] = clamp(c + 104_595 * v);
    out[1] = clamp(c - 25_690 * u - 53_281 * v);
    out[2] = clamp(c + 132_186 * u);
}

/// Decodes an MJPEG frame (one JPEG) into `frame` (resized). Grey JPEGs are expanded to RGB.
pub fn mjpeg_to_rgb8(src: &[u8], frame: &mut Frame) -> Result<()> {
    let bad = |e: image::ImageError| ApplianceError::Frame(format!("MJPEG frame: {e}"));
    let decoder = JpegDecoder::new(Cursor::new(src)).map_err(bad)?;
    let (width, height) = decoder.dimensions();
    let colour = decoder.color_type();
    frame.resize(width, height);
    match colour {
        image::ColorType::Rgb8 => decoder.read_image(&mut frame.rgb).map_err(bad)?,
        image::ColorType::L8 => {
            let n = width as usize * height as usize;
            decoder.read_image(&mut frame.rgb[..n]).map_err(bad)?;
            // Expand in place from the end so no byte is overwritten before it is read.
            for i in (0..n).rev() {
                let g = frame.rgb[i];
                frame.rgb[i * 3..i * 3 + 3].fill(g);
            }
        }
        other => {
            return Err(ApplianceError::Frame(format!(
                "MJPEG frame in colour type {other:?}: only RGB and grey are supported"
            )));
        }
    }
    Ok(())
}

/// Converts a frame of `format` into `frame`.
pub fn convert(
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    src: &[u8],
    frame: &mut Frame,
) -> Result<()> {
    match format {
        PixelFormat::Yuyv => yuyv_to_rgb8(width, height, stride, src, frame),
        PixelFormat::Mjpeg => mjpeg_to_rgb8(src, frame),
    }
}

/// Side of the grey copy the motion trigger compares (in cells per row and column).
pub const THUMB_W: usize = 32;
/// Rows of the grey copy.
pub const THUMB_H: usize = 24;

/// Averages the frame's luma over a `THUMB_W x THUMB_H` grid of cells into `out`.
pub fn grey_thumbnail(frame: &Frame, out: &mut [f32; THUMB_W * THUMB_H]) {
    out.fill(0.0);
    let (w, h) = (frame.width as usize, frame.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    let mut counts = [0u32; THUMB_W * THUMB_H];
    // Every second pixel of every second row: plenty for a 32x24 grid, half the reads.
    for y in (0..h).step_by(2) {
        let cy = y * THUMB_H / h;
        let row = &frame.rgb[y * w * 3..(y + 1) * w * 3];
        for x in (0..w).step_by(2) {
            let p = &row[x * 3..x * 3 + 3];
            let luma = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            let cell = cy * THUMB_W + x * THUMB_W / w;
            out[cell] += luma;
            counts[cell] += 1;
        }
    }
    for (v, &n) in out.iter_mut().zip(&counts) {
        if n > 0 {
            *v /= n as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_known_colours() {
        // Y U Y V for: black, white (limited range), and the BT.601 codes of pure red, green
        // and blue, two pixels each.
        let cases: [([u8; 4], [u8; 3]); 5] = [
            ([16, 128, 16, 128], [0, 0, 0]),
            ([235, 128, 235, 128], [255, 255, 255]),
            ([81, 90, 81, 240], [255, 0, 0]),
            ([145, 54, 145, 34], [0, 255, 0]),
            ([41, 240, 41, 110], [0, 0, 255]),
        ];
        let src: Vec<u8> = cases.iter().flat_map(|(yuyv, _)| *yuyv).collect();
        let mut frame = Frame::default();
        yuyv_to_rgb8(10, 1, 20, &src, &mut frame).unwrap();
        assert_eq!((frame.width, frame.height), (10, 1));
        for (i, (_, want)) in cases.iter().enumerate() {
            for px in 0..2 {
                let got = &frame.rgb[(i * 2 + px) * 3..(i * 2 + px) * 3 + 3];
                for c in 0..3 {
                    assert!(
                        (got[c] as i32 - want[c] as i32).abs() <= 2,
                        "case {i}: got {got:?}, want {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn yuyv_honours_stride_and_refuses_short_frames() {
        // 2x2 frame with 8 bytes per row (4 of padding): padding must not leak in.
        let src = [
            235, 128, 235, 128, 9, 9, 9, 9, //
            16, 128, 16, 128, 9, 9, 9, 9,
        ];
        let mut frame = Frame::default();
        yuyv_to_rgb8(2, 2, 8, &src, &mut frame).unwrap();
        assert_eq!(frame.rgb, [255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0]);
        let err = yuyv_to_rgb8(2, 3, 8, &src, &mut frame).unwrap_err();
        assert!(err.to_string().contains("YUYV frame 2x3"), "{err}");
    }

    #[test]
    fn mjpeg_decodes_a_known_frame() {
        // A 16x8 JPEG: left half red, right half blue.
        let mut img = image::RgbImage::new(16, 8);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 8 {
                image::Rgb([230, 20, 20])
            } else {
                image::Rgb([20, 20, 230])
            };
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        let mut frame = Frame::default();
        mjpeg_to_rgb8(&jpeg, &mut frame).unwrap();
        assert_eq!((frame.width, frame.height), (16, 8));
        let at = |x: usize, y: usize| &frame.rgb[(y * 16 + x) * 3..(y * 16 + x) * 3 + 3];
        for (x, want) in [(2, [230, 20, 20]), (13, [20, 20, 230])] {
            let got = at(x, 4);
            for c in 0..3 {
                assert!((got[c] as i32 - want[c]).abs() <= 12, "x={x}: {got:?}");
            }
        }
        let err = mjpeg_to_rgb8(&jpeg[..40], &mut frame).unwrap_err();
        assert!(err.to_string().contains("MJPEG frame"), "{err}");
    }

    #[test]
    fn the_slot_hands_over_only_newer_frames() {
        let slot = FrameSlot::default();
        let mut mine = Frame::default();
        assert!(!slot.take_newer(&mut mine, Duration::from_millis(1)));
        let mut capture = Frame {
            seq: 1,
            ..Frame::default()
        };
        capture.set_label("first");
        slot.publish(&mut capture);
        capture.seq = 2;
        capture.set_label("second");
        slot.publish(&mut capture);
        assert!(slot.take_newer(&mut mine, Duration::ZERO));
        assert_eq!((mine.seq, mine.label.as_str()), (2, "second"));
        assert!(!slot.take_newer(&mut mine, Duration::from_millis(1)));
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        let mut frame = Frame::default();
        frame.set_label(&"é".repeat(40));
        assert_eq!(frame.label.len(), 64);
        assert!(frame.label.chars().all(|c| c == 'é'));
    }
}
