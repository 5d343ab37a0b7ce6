//! Camera sources on a capture thread that keeps only the newest frame: a V4L2 device (MMAP
//! streaming, YUYV or MJPEG) or a folder of images replayed in name order, looped, standing in
//! for a camera anywhere. A source that fails is reported as a fault and reopened with backoff.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::frame::{self, Frame, FrameSlot, PixelFormat, THUMB_H, THUMB_W};
use crate::trigger::MotionDetector;

/// Where frames come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CameraUri {
    /// `v4l2:///dev/videoN`.
    V4l2(PathBuf),
    /// `file:///DIR`: the images under DIR (png, jpg; sub-folders included) in name order,
    /// looped; with `?step`, the next image at each lookup instead of at the frame rate.
    Replay { dir: PathBuf, step: bool },
}

impl FromStr for CameraUri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("v4l2://") {
            if path.is_empty() {
                return Err(format!("camera {s:?}: no device path (v4l2:///dev/video0)"));
            }
            return Ok(CameraUri::V4l2(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("file://") {
            let (path, step) = match rest.split_once('?') {
                None => (rest, false),
                Some((path, "step")) => (path, true),
                Some((_, query)) => {
                    return Err(format!(
                        "camera {s:?}: unknown option {query:?} (only ?step is known)"
                    ));
                }
            };
            if path.is_empty() {
                return Err(format!("camera {s:?}: no folder (file:///path/to/images)"));
            }
            return Ok(CameraUri::Replay {
                dir: PathBuf::from(path),
                step,
            });
        }
        Err(format!(
            "camera {s:?} is neither v4l2:///dev/videoN nor file:///DIR"
        ))
    }
}

impl std::fmt::Display for CameraUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CameraUri::V4l2(path) => write!(f, "v4l2://{}", path.display()),
            CameraUri::Replay { dir, step } => {
                write!(
                    f,
                    "file://{}{}",
                    dir.display(),
                    if *step { "?step" } else { "" }
                )
            }
        }
    }
}

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// `None`: MJPEG if the camera offers it, else YUYV.
    pub pixel_format: Option<PixelFormat>,
    /// No frame for this long is a fault (the device is reopened).
    pub timeout: Duration,
}

/// Runs on every frame the source delivers, on the capture thread (the motion trigger).
pub struct MotionHook {
    pub detector: MotionDetector,
    pub on_fire: Box<dyn FnMut() + Send>,
}

impl std::fmt::Debug for MotionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotionHook")
            .field("detector", &self.detector)
            .finish_non_exhaustive()
    }
}

/// What the capture thread and the loop share.
#[derive(Debug, Default)]
struct Shared {
    slot: FrameSlot,
    stop: AtomicBool,
    /// The current fault, if any; `fault_version` changes with it.
    fault: Mutex<Option<String>>,
    fault_version: AtomicU64,
    /// Step replay: frames asked for, and the signal for a new ask.
    asked: Mutex<u64>,
    ask: Condvar,
}

impl Shared {
    fn set_fault(&self, message: Option<String>) {
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        if *fault != message {
            match &message {
                Some(m) => tracing::warn!("camera: {m}"),
                None => tracing::info!("camera: frames again"),
            }
            *fault = message;
            self.fault_version.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Sleeps `d` in short steps, returning early (true) when asked to stop.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
        }
        self.stop.load(Ordering::SeqCst)
    }
}

/// A running camera source.
#[derive(Debug)]
pub struct Camera {
    uri: CameraUri,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    seen_fault_version: u64,
}

/// Wait between reopening attempts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);

impl Camera {
    /// Starts the capture thread. Opening failures are not errors here: the thread reports them
    /// as a fault and retries with backoff, so a camera plugged in later is picked up.
    pub fn start(uri: CameraUri, options: CaptureOptions, motion: Option<MotionHook>) -> Camera {
        let shared = Arc::new(Shared::default());
        let thread = {
            let (uri, shared) = (uri.clone(), shared.clone());
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || capture(&uri, &options, motion, &shared))
                .expect("spawning the capture thread")
        };
        Camera {
            uri,
            shared,
            thread: Some(thread),
            seen_fault_version: 0,
        }
    }

    pub fn uri(&self) -> &CameraUri {
        &self.uri
    }

    /// Gets a frame newer than `frame`'s into it, waiting up to `timeout`. A step replay is
    /// asked for its next image first. Returns whether a newer frame arrived.
    pub fn take_newer(&self, frame: &mut Frame, timeout: Duration) -> bool {
        if matches!(self.uri, CameraUri::Replay { step: true, .. }) {
            *self.shared.asked.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            self.shared.ask.notify_all();
        }
        self.shared.slot.take_newer(frame, timeout)
    }

    /// The newest frame's sequence number (0: none yet).
    pub fn newest_seq(&self) -> u64 {
        self.shared.slot.newest_seq()
    }

    /// `Some(state)` when the fault state changed since the last call: `Some(Some(message))`
    /// for a new fault, `Some(None)` when it is over.
    pub fn fault_change(&mut self) -> Option<Option<String>> {
        let version = self.shared.fault_version.load(Ordering::SeqCst);
        if version == self.seen_fault_version {
            return None;
        }
        self.seen_fault_version = version;
        Some(
            self.shared
                .fault
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.ask.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The capture thread: open, stream, and on failure report and reopen with backoff.
fn capture(
    uri: &CameraUri,
    options: &CaptureOptions,
    mut motion: Option<MotionHook>,
    shared: &Shared,
) {
    let mut back = Frame::default();
    let mut seq = 0u64;
    let mut thumb = [0f32; THUMB_W * THUMB_H];
    let mut publish = |frame: &mut Frame| {
        seq += 1;
        frame.seq = seq;
        frame.captured = Instant::now();
        if let Some(hook) = motion.as_mut() {
            frame::grey_thumbnail(frame, &mut thumb);
            if hook.detector.update(&thumb) {
                (hook.on_fire)();
            }
        }
        shared.slot.publish(frame);
    };
    let mut backoff = BACKOFF_FIRST;
    while !shared.stop.load(Ordering::SeqCst) {
        let outcome = match uri {
            CameraUri::Replay { dir, step } => {
                replay(dir, *step, options, shared, &mut back, &mut publish)
            }
            CameraUri::V4l2(path) => v4l2(path, options, shared, &mut back, &mut publish),
        };
        match outcome {
            Ok(()) => return,
            Err(Streamed { message, frames }) => {
                shared.set_fault(Some(format!("{uri}: {message}")));
                if frames > 0 {
                    backoff = BACKOFF_FIRST;
                }
                if shared.sleep(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_LAST);
            }
        }
    }
}

/// Why a source stopped, and how many frames it delivered before.
#[derive(Debug)]
struct Streamed {
    message: String,
    frames: u64,
}

fn failed(message: impl Into<String>, frames: u64) -> Streamed {
    Streamed {
        message: message.into(),
        frames,
    }
}

/// Image files under `dir`, sub-folders included, by path.
pub fn list_images(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Replays the images of `dir`, looped: at the frame rate, or one per ask (`step`).
fn replay(
    dir: &Path,
    step: bool,
    options: &CaptureOptions,
    shared: &Shared,
    back: &mut Frame,
    publish: &mut impl FnMut(&mut Frame),
) -> Result<(), Streamed> {
    let files = list_images(dir).map_err(|e| failed(format!("cannot list: {e}"), 0))?;
    if files.is_empty() {
        return Err(failed("no images (png, jpg) in the folder", 0));
    }
    shared.set_fault(None);
    let period = Duration::from_secs_f64(1.0 / options.fps.max(1) as f64);
    let (mut delivered, mut next_at) = (0u64, Instant::now());
    for path in files.iter().cycle() {
        if step {
            let mut asked = shared.asked.lock().unwrap_or_else(|e| e.into_inner());
            while *asked <= delivered {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                asked = shared
                    .ask
                    .wait_timeout(asked, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        } else {
            if shared.sleep(next_at.saturating_duration_since(Instant::now())) {
                return Ok(());
            }
            next_at += period;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let image = match image::open(path) {
            Ok(image) => image.into_rgb8(),
            Err(e) => {
                // One bad file is not a camera fault: say so and go on with the next.
                tracing::warn!("{}: skipped: {e}", path.display());
                continue;
            }
        };
        back.resize(image.width(), image.height());
        back.rgb.copy_from_slice(image.as_raw());
        let label = path.strip_prefix(dir).unwrap_or(path);
        back.set_label(&label.to_string_lossy());
        publish(back);
        delivered += 1;
    }
    Ok(())
}

/// Streams a V4L2 device until it fails (unplugged, no frame within the timeout).
#[cfg(feature = "v4l2")]
fn v4l2(
    path: &Path,
    options: &CaptureOptions,
    shared: &Shared,
    back: &mut Frame,
    publish: &mut impl FnMut(&mut Frame),
) -> Result<(), Streamed> {
    use v4l::buffer::Type;
    use v4l::io::traits::CaptureStream;
    use v4l::prelude::{Device, MmapStream};

    let device = Device::with_path(path).map_err(|e| failed(format!("cannot open: {e}"), 0))?;
    let (format, pixel_format) =
        negotiate(&device, options).map_err(|message| failed(message, 0))?;
    tracing::info!(
        "{}: {}x{} {} at {} fps requested",
        path.display(),
        format.width,
        format.height,
        format.fourcc,
        options.fps
    );
    let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, 4)
        .map_err(|e| failed(format!("cannot start streaming: {e}"), 0))?;
    stream.set_timeout(options.timeout);
    let mut frames = 0u64;
    let mut bad_frames = 0u64;
    let mut mjpeg = frame::MjpegDecoder::default();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (buffer, meta) = match CaptureStream::next(&mut stream) {
            Ok(next) => next,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(failed(
                    format!("no frame within {} ms", options.timeout.as_millis()),
                    frames,
                ));
            }
            Err(e) => return Err(failed(format!("capture failed: {e}"), frames)),
        };
        // The driver's bytesused, not the buffer's length: an MJPEG frame is shorter.
        let used = &buffer[..(meta.bytesused as usize).min(buffer.len())];
        match frame::convert(
            pixel_format,
            format.width,
            format.height,
            format.stride as usize,
            used,
            back,
            &mut mjpeg,
        ) {
            Ok(()) => {
                frames += 1;
                if frames == 1 {
                    shared.set_fault(None);
                }
                back.label.clear();
                let _ = std::fmt::Write::write_fmt(
                    &mut back.label,
                    format_args!("frame-{}", meta.sequence),
                );
                publish(back);
            }
            Err(e) => {
                // A corrupt frame now and then is normal for MJPEG over USB.
                bad_frames += 1;
                if bad_frames.is_power_of_two() {
                    tracing::warn!("{}: {bad_frames} bad frame(s), latest: {e}", path.display());
                }
            }
        }
    }
}

/// Without the `v4l2` feature there is no V4L2 camera (the settings check refuses the URI).
#[cfg(not(feature = "v4l2"))]
fn v4l2(
    _: &Path,
    _: &CaptureOptions,
    _: &Shared,
    _: &mut Frame,
    _: &mut impl FnMut(&mut Frame),
) -> Result<(), Streamed> {
    Err(failed(V4L2_MISSING, 0))
}

/// Why a `v4l2://` camera is refused by a build without V4L2.
pub const V4L2_MISSING: &str =
    "this lookupd was built without V4L2 support (cargo feature `v4l2`, on by default)";

/// Sets the format: the requested pixel format, or MJPEG, else YUYV; the requested size and
/// rate (the driver may adjust them).
#[cfg(feature = "v4l2")]
fn negotiate(
    device: &v4l::Device,
    options: &CaptureOptions,
) -> Result<(v4l::Format, PixelFormat), String> {
    use v4l::FourCC;
    use v4l::video::Capture;

    let fourcc = |f: PixelFormat| match f {
        PixelFormat::Yuyv => FourCC::new(b"YUYV"),
        PixelFormat::Mjpeg => FourCC::new(b"MJPG"),
    };
    let offered: Vec<FourCC> = device
        .enum_formats()
        .map_err(|e| format!("cannot list formats: {e}"))?
        .into_iter()
        .map(|d| d.fourcc)
        .collect();
    let wanted = match options.pixel_format {
        Some(f) => vec![f],
        None => vec![PixelFormat::Mjpeg, PixelFormat::Yuyv],
    };
    let Some(pixel_format) = wanted.into_iter().find(|f| offered.contains(&fourcc(*f))) else {
        let names: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
        return Err(format!(
            "the camera offers {} but lookupd converts {}",
            names.join(", "),
            match options.pixel_format {
                Some(PixelFormat::Yuyv) => "YUYV (as configured)",
                Some(PixelFormat::Mjpeg) => "MJPG (as configured)",
                None => "YUYV and MJPG",
            }
        ));
    };
    let mut format = device
        .format()
        .map_err(|e| format!("cannot read the format: {e}"))?;
    format.width = options.width;
    format.height = options.height;
    format.fourcc = fourcc(pixel_format);
    let format = device
        .set_format(&format)
        .map_err(|e| format!("cannot set the format: {e}"))?;
    if format.fourcc != fourcc(pixel_format) {
        return Err(format!(
            "asked for {}, the driver set {}",
            fourcc(pixel_format),
            format.fourcc
        ));
    }
    if let Err(e) = device.set_params(&v4l::video::capture::Parameters::with_fps(options.fps)) {
        tracing::warn!("cannot set {} fps: {e}", options.fps);
    }
    Ok((format, pixel_format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_print_back() {
        for s in [
            "v4l2:///dev/video2",
            "file:///tmp/frames",
            "file:///tmp/f?step",
        ] {
            assert_eq!(s.parse::<CameraUri>().unwrap().to_string(), s);
        }
        for (bad, says) in [
            ("rtsp://cam", "neither"),
            ("v4l2://", "no device"),
            ("file://", "no folder"),
            ("file:///x?loop", "unknown option"),
        ] {
            let err = bad.parse::<CameraUri>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
