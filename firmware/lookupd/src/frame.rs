//! Camera frames: the newest-frame slot the capture thread fills and the lookup loop empties,
//! and the conversion of camera pixel formats (YUYV, MJPEG) to packed RGB8.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

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

/// The Huffman tables of JPEG Annex K.3 (K.3.1 luminance and chrominance DC, K.3.2 AC) as one
/// DHT segment: what an MJPEG frame without a DHT segment is coded with (the AVI MJPEG
/// convention many UVC cameras follow).
pub const STANDARD_DHT: [u8; 420] = [
    0xFF, 0xC4, 0x01, 0xA2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A,
    0x0B, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x10, 0x00,
    0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D, 0x01,
    0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22,
    0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0, 0x24,
    0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
    0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8,
    0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6,
    0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3,
    0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9,
    0xFA, 0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01,
    0x02, 0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
    0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
    0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19,
    0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85,
    0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3,
    0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
    0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
    0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6,
    0xF7, 0xF8, 0xF9, 0xFA,
];

/// Decodes MJPEG frames straight into a [`Frame`]'s buffer with zune-jpeg's `decode_into` (no
/// output image is allocated), and decodes frames that omit the Huffman tables by splicing in
/// [`STANDARD_DHT`]. Kept by the capture thread from frame to frame.
///
/// What still allocates per frame is zune-jpeg's own decoder state (component descriptors, a
/// few MCU rows of coefficients and up-sampling scratch): `tests/no_alloc.rs` measures it.
#[derive(Debug, Default)]
pub struct MjpegDecoder {
    /// A frame without tables, with [`STANDARD_DHT`] spliced in after SOI; grows to the largest
    /// such frame, then is reused.
    spliced: Vec<u8>,
}

impl MjpegDecoder {
    /// Decodes one JPEG into `frame` (resized; its buffer grows only for a larger frame). Grey
    /// JPEGs are expanded to RGB. A broken frame is an error, never a panic; so is a frame cut
    /// short (no end-of-image marker, zero padding after it allowed), which the decoder would
    /// otherwise fill with grey: a lookup must not see half a picture.
    pub fn decode(&mut self, src: &[u8], frame: &mut Frame) -> Result<()> {
        let used = src.len() - src.iter().rev().take_while(|&&b| b == 0).count();
        if !src[..used].ends_with(&[0xFF, 0xD9]) {
            return Err(ApplianceError::Frame(format!(
                "MJPEG frame of {} bytes has no end-of-image marker: cut short",
                src.len()
            )));
        }
        let src = match has_huffman_tables(src) {
            Some(false) => {
                self.spliced.clear();
                self.spliced.extend_from_slice(&src[..2]);
                self.spliced.extend_from_slice(&STANDARD_DHT);
                self.spliced.extend_from_slice(&src[2..]);
                &self.spliced[..]
            }
            // Tables present, or not a JPEG we can walk: the decoder says what is wrong.
            _ => src,
        };
        let bad = |e: &dyn std::fmt::Display| ApplianceError::Frame(format!("MJPEG frame: {e}"));
        let options = DecoderOptions::default()
            .set_strict_mode(false)
            .jpeg_set_out_colorspace(ColorSpace::RGB);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(src), options);
        decoder.decode_headers().map_err(|e| bad(&e))?;
        let (width, height) = decoder
            .dimensions()
            .ok_or_else(|| bad(&"no frame header"))?;
        match decoder.output_colorspace() {
            Some(ColorSpace::RGB) => {}
            other => {
                return Err(bad(&format!(
                    "the decoder gives {other:?} pixels, not RGB (input {:?})",
                    decoder.input_colorspace()
                )));
            }
        }
        frame.resize(width as u32, height as u32);
        decoder.decode_into(&mut frame.rgb).map_err(|e| bad(&e))
    }
}

/// Whether a JPEG defines Huffman tables (a DHT segment) before its first scan; `None` when its
/// segments cannot be walked up to a scan (not a JPEG, or truncated).
pub fn has_huffman_tables(jpeg: &[u8]) -> Option<bool> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        if *jpeg.get(at)? != 0xFF {
            return None;
        }
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *jpeg.get(at + 1)? == 0xFF {
            at += 1;
        }
        match jpeg[at + 1] {
            0xC4 => return Some(true),
            0xDA => return Some(false),
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => at += 2,
            // Another image's start, or the end, before any scan.
            0xD8 | 0xD9 => return None,
            _ => {
                let len = u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]);
                if len < 2 {
                    return None;
                }
                at += 2 + len as usize;
            }
        }
    }
}

/// Decodes an MJPEG frame (one JPEG) into `frame` (resized) with a decoder of its own; the
/// capture thread keeps an [`MjpegDecoder`] instead.
pub fn mjpeg_to_rgb8(src: &[u8], frame: &mut Frame) -> Result<()> {
    MjpegDecoder::default().decode(src, frame)
}

/// Converts a frame of `format` into `frame`; MJPEG through `mjpeg`, kept between frames.
pub fn convert(
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    src: &[u8],
    frame: &mut Frame,
    mjpeg: &mut MjpegDecoder,
) -> Result<()> {
    match format {
        PixelFormat::Yuyv => yuyv_to_rgb8(width, height, stride, src, frame),
        PixelFormat::Mjpeg => mjpeg.decode(src, frame),
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

    /// A JPEG of `img` (image's encoder: the standard Huffman tables of Annex K.3).
    fn jpeg_of(img: &image::DynamicImage) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(img)
            .unwrap();
        jpeg
    }

    /// The JPEG's segments before its first scan, as (marker, whole segment range).
    fn segments(jpeg: &[u8]) -> Vec<(u8, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut at = 2;
        while jpeg[at + 1] != 0xDA {
            let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
            out.push((jpeg[at + 1], at..at + 2 + len));
            at += 2 + len;
        }
        out
    }

    /// The tables of DHT payloads: (class and id, counts and symbols), sorted.
    fn huffman_tables(mut payload: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut tables = Vec::new();
        while !payload.is_empty() {
            let symbols: usize = payload[1..17].iter().map(|&n| n as usize).sum();
            tables.push((payload[0], payload[1..17 + symbols].to_vec()));
            payload = &payload[17 + symbols..];
        }
        tables.sort();
        tables
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_with_the_standard_ones() {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(37, 22, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x * y) % 256) as u8])
        }));
        let jpeg = jpeg_of(&img);
        assert_eq!(has_huffman_tables(&jpeg), Some(true));
        // Strip every DHT segment; the encoder's tables must be the standard ones, or the
        // stripped frame would not be what a camera without tables sends.
        let mut stripped = jpeg[..2].to_vec();
        let mut tables = Vec::new();
        let mut last = 2;
        for (marker, range) in segments(&jpeg) {
            if marker == 0xC4 {
                tables.extend_from_slice(&jpeg[range.start + 4..range.end]);
            } else {
                stripped.extend_from_slice(&jpeg[range.clone()]);
            }
            last = range.end;
        }
        stripped.extend_from_slice(&jpeg[last..]);
        assert_eq!(huffman_tables(&tables), huffman_tables(&STANDARD_DHT[4..]));
        assert_eq!(has_huffman_tables(&stripped), Some(false));
        assert!(
            image::load_from_memory(&stripped).is_err(),
            "image's decoder needs the tables"
        );

        let mut decoder = MjpegDecoder::default();
        let (mut with, mut without) = (Frame::default(), Frame::default());
        decoder.decode(&jpeg, &mut with).unwrap();
        decoder.decode(&stripped, &mut without).unwrap();
        assert_eq!((without.width, without.height), (37, 22));
        assert_eq!(without.rgb, with.rgb);
        assert_eq!(
            with.rgb,
            image::load_from_memory(&jpeg).unwrap().to_rgb8().into_raw()
        );
        // The next frame reuses both buffers.
        let (rgb, spliced) = (without.rgb.as_ptr(), decoder.spliced.as_ptr());
        decoder.decode(&stripped, &mut without).unwrap();
        assert_eq!(
            (without.rgb.as_ptr(), decoder.spliced.as_ptr()),
            (rgb, spliced)
        );
    }

    #[test]
    fn mjpeg_grey_frames_become_rgb_and_broken_frames_are_errors() {
        let grey = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(9, 5, |x, y| {
            image::Luma([(x * 20 + y * 9) as u8])
        }));
        let jpeg = jpeg_of(&grey);
        let mut frame = Frame::default();
        mjpeg_to_rgb8(&jpeg, &mut frame).unwrap();
        assert_eq!(
            (frame.width, frame.height, frame.rgb.len()),
            (9, 5, 9 * 5 * 3)
        );
        let want = image::load_from_memory(&jpeg).unwrap().to_luma8();
        for (p, g) in frame.rgb.chunks_exact(3).zip(want.as_raw()) {
            assert_eq!(p, [*g; 3]);
        }
        // Zero padding after the end (a driver's bytesused rounded up) is fine.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 13]);
        let mut decoder = MjpegDecoder::default();
        decoder.decode(&padded, &mut frame).unwrap();
        assert_eq!(frame.rgb[..3], [want.as_raw()[0]; 3]);
        // Every truncation, garbage, segments that run off the end or hold nothing.
        for n in (0..jpeg.len() - 2).step_by(7) {
            let err = decoder.decode(&jpeg[..n], &mut frame).unwrap_err();
            assert!(err.to_string().contains("MJPEG frame"), "{n}: {err}");
        }
        for bad in [
            &b"not a jpeg"[..],
            &[0xFF, 0xD8, 0xFF, 0xC0, 0xFF, 0xFF],
            &[0xFF, 0xD8],
            &[0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x01, 0xFF, 0xD9],
            &[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 0xFF, 0xD9],
            &[
                0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x02, 0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD9,
            ],
        ] {
            let err = decoder.decode(bad, &mut frame).unwrap_err();
            assert!(err.to_string().contains("MJPEG frame"), "{bad:?}: {err}");
        }
        assert_eq!(has_huffman_tables(b"not a jpeg"), None);
        assert_eq!(
            has_huffman_tables(&[0xFF, 0xD8, 0xFF, 0xC0, 0xFF, 0xFF]),
            None
        );
        assert_eq!(has_huffman_tables(&[0xFF, 0xD8, 0xFF, 0xC4]), Some(true));
        assert_eq!(has_huffman_tables(&[0xFF, 0xD8, 0xFF, 0xDA]), Some(false));
    }

    #[test]
    fn corrupted_mjpeg_frames_are_errors_or_pictures_never_panics() {
        // Bytes flipped anywhere (headers, tables, scan data) of frames with and without
        // Huffman tables: a USB camera delivers such frames now and then.
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 15) as u8, 128])
        }));
        let jpeg = jpeg_of(&img);
        let mut stripped = jpeg[..2].to_vec();
        let mut last = 2;
        for (marker, range) in segments(&jpeg) {
            if marker != 0xC4 {
                stripped.extend_from_slice(&jpeg[range.clone()]);
            }
            last = range.end;
        }
        stripped.extend_from_slice(&jpeg[last..]);
        let mut decoder = MjpegDecoder::default();
        let mut frame = Frame::default();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for source in [&jpeg, &stripped] {
            for _ in 0..1500 {
                let mut bad = source.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % (bad.len() as u64 - 2)) as usize;
                    bad[at] = next() as u8;
                }
                let _ = decoder.decode(&bad, &mut frame);
                assert_eq!(
                    frame.rgb.len(),
                    frame.width as usize * frame.height as usize * 3
                );
            }
        }
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
