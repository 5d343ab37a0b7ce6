//! The settings of `lookupd run`: read from `lookupd.toml` (every key optional, every default
//! documented in the shipped `firmware/lookupd/lookupd.toml`), then overridden by flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::camera::CameraUri;
use crate::error::{ApplianceError, Result};
use crate::report::REPORT_HITS;
use crate::trigger::{GpioLine, MotionSettings, TriggerSpec};

/// Everything `lookupd run` can be told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub camera: CameraSettings,
    pub trigger: TriggerSettings,
    pub motion: MotionSettings,
    pub led: LedSettings,
    pub lookup: LookupSettings,
    pub gpu: GpuSettings,
    pub report: ReportSettings,
}

/// `[camera]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSettings {
    /// `v4l2:///dev/videoN`, `file:///DIR` (images replayed in name order, looped) or
    /// `file:///DIR?step` (the next image at each trigger).
    pub uri: String,
    /// Requested capture size; the driver may choose the nearest it supports.
    pub width: u32,
    pub height: u32,
    /// Requested frame rate (and the replay rate of `file://`).
    pub fps: u32,
    /// `auto` (MJPEG if the camera offers it, else YUYV), `yuyv` or `mjpeg`.
    pub pixel_format: String,
    /// A camera that delivers no frame for this long is at fault (and is reopened).
    pub timeout_ms: u64,
    /// A lookup waits for a newer frame when the newest is older than this.
    pub max_frame_age_ms: u64,
}

impl Default for CameraSettings {
    fn default() -> Self {
        Self {
            uri: "v4l2:///dev/video0".into(),
            width: 640,
            height: 480,
            fps: 30,
            pixel_format: "auto".into(),
            timeout_ms: 2000,
            max_frame_age_ms: 200,
        }
    }
}

/// `[trigger]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerSettings {
    /// What starts a lookup; several may be given.
    pub specs: Vec<String>,
    /// A press must hold this long to count.
    pub debounce_ms: u64,
    /// A second GPIO line (`CHIP:LINE[:active-low]`) that enrols the current frame; empty: none.
    pub enroll: String,
    /// SKU prefix of items enrolled by the enrol button (the Unix time follows it).
    pub enroll_sku_prefix: String,
}

impl Default for TriggerSettings {
    fn default() -> Self {
        Self {
            specs: vec!["gpio:gpiochip0:17:active-low".into()],
            debounce_ms: 20,
            enroll: String::new(),
            enroll_sku_prefix: "enrolled-".into(),
        }
    }
}

/// `[led]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedSettings {
    /// The status LED's GPIO line (`CHIP:LINE[:active-low]`); empty: none.
    pub line: String,
    /// How long it blinks per lookup.
    pub blink_ms: u64,
}

impl Default for LedSettings {
    fn default() -> Self {
        Self {
            line: String::new(),
            blink_ms: 80,
        }
    }
}

/// `[lookup]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupSettings {
    /// Hits per report (1 to 10).
    pub k: usize,
    /// The top hit farther than this Hamming distance makes the verdict `unknown`; absent:
    /// every top hit is known.
    pub max_distance: Option<u32>,
    /// `auto` (the GPU if there is one, else the CPU, with a warning), `gpu` or `cpu`.
    pub runtime: String,
}

impl Default for LookupSettings {
    fn default() -> Self {
        Self {
            k: 5,
            max_distance: None,
            runtime: "auto".into(),
        }
    }
}

/// `[gpu]`: how the GPU plan shapes its work (the gpu runtime only; see [`infer::GpuTuning`]).
/// `lookupd bench-model` takes the same settings as flags, to find the fastest on the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuSettings {
    /// `auto`, `narrow` or `wide`.
    pub pointwise_tiles: String,
    /// 0: never split.
    pub split_workgroups: usize,
    /// `dispatch` or `workgroup`.
    pub split_sums: String,
    pub fuse_depthwise: bool,
}

impl Default for GpuSettings {
    fn default() -> Self {
        let t = infer::GpuTuning::default();
        Self {
            pointwise_tiles: t.pointwise_tiles.to_string(),
            split_workgroups: t.split_workgroups,
            split_sums: t.split_sums.to_string(),
            fuse_depthwise: t.fuse_depthwise,
        }
    }
}

/// `[report]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Also write each lookup as a postcard frame (COBS-delimited) to this file or serial
    /// device; empty: none.
    pub serial: String,
}

/// The settings checked and parsed, ready for the loop.
#[derive(Clone, Debug)]
pub struct Checked {
    pub camera: CameraUri,
    pub triggers: Vec<TriggerSpec>,
    pub enroll_line: Option<GpioLine>,
    pub led_line: Option<GpioLine>,
    pub runtime: infer::Backend,
    pub tuning: infer::GpuTuning,
    pub serial: Option<PathBuf>,
    pub debounce: Duration,
    pub blink: Duration,
    pub frame_timeout: Duration,
    pub max_frame_age: Duration,
}

impl RunConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently keep a default).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ApplianceError::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| ApplianceError::Config(format!("{}: {}", path.display(), e.message())))
    }

    /// Checks every setting; the error names the key.
    pub fn check(&self) -> Result<Checked> {
        let bad = |key: &str, message: String| ApplianceError::Config(format!("{key}: {message}"));
        let c = &self.camera;
        let camera: CameraUri = c.uri.parse().map_err(|e| bad("camera.uri", e))?;
        if matches!(camera, CameraUri::V4l2(_)) && !cfg!(feature = "v4l2") {
            return Err(bad("camera.uri", crate::camera::V4L2_MISSING.into()));
        }
        if c.width == 0 || c.height == 0 || c.width > 8192 || c.height > 8192 {
            return Err(bad(
                "camera.width/height",
                format!("{}x{} is not a capture size", c.width, c.height),
            ));
        }
        if !(1..=240).contains(&c.fps) {
            return Err(bad("camera.fps", format!("{} is not from 1 to 240", c.fps)));
        }
        if !["auto", "yuyv", "mjpeg"].contains(&c.pixel_format.as_str()) {
            return Err(bad(
                "camera.pixel_format",
                format!("{:?} is not auto, yuyv or mjpeg", c.pixel_format),
            ));
        }
        if c.timeout_ms == 0 {
            return Err(bad("camera.timeout_ms", "must be positive".into()));
        }
        if self.trigger.specs.is_empty() {
            return Err(bad(
                "trigger.specs",
                "no trigger: give at least one (gpio:..., motion, stdin, interval:MS)".into(),
            ));
        }
        let triggers = self
            .trigger
            .specs
            .iter()
            .map(|s| s.parse::<TriggerSpec>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad("trigger.specs", e))?;
        if triggers
            .iter()
            .filter(|t| **t == TriggerSpec::Stdin)
            .count()
            > 1
        {
            return Err(bad("trigger.specs", "stdin is given twice".into()));
        }
        let line = |key: &str, s: &str| -> Result<Option<GpioLine>> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|e| bad(key, e))
            }
        };
        let enroll_line = line("trigger.enroll", &self.trigger.enroll)?;
        let led_line = line("led.line", &self.led.line)?;
        let m = &self.motion;
        if !(m.enter > m.exit && m.exit > 0.0 && m.settle > 0.0 && m.settle_frames > 0) {
            return Err(bad(
                "motion",
                "need enter > exit > 0, settle > 0 and settle_frames > 0".into(),
            ));
        }
        let l = &self.lookup;
        if !(1..=REPORT_HITS).contains(&l.k) {
            return Err(bad(
                "lookup.k",
                format!("{} is not from 1 to {REPORT_HITS}", l.k),
            ));
        }
        let runtime = l
            .runtime
            .parse::<infer::Backend>()
            .map_err(|e| bad("lookup.runtime", e.to_string()))?;
        let g = &self.gpu;
        let tuning = infer::GpuTuning {
            pointwise_tiles: g
                .pointwise_tiles
                .parse()
                .map_err(|e| bad("gpu.pointwise_tiles", e))?,
            split_workgroups: g.split_workgroups,
            split_sums: g.split_sums.parse().map_err(|e| bad("gpu.split_sums", e))?,
            fuse_depthwise: g.fuse_depthwise,
        };
        let serial = (!self.report.serial.is_empty()).then(|| PathBuf::from(&self.report.serial));
        Ok(Checked {
            camera,
            triggers,
            enroll_line,
            led_line,
            runtime,
            tuning,
            serial,
            debounce: Duration::from_millis(self.trigger.debounce_ms),
            blink: Duration::from_millis(self.led.blink_ms),
            frame_timeout: Duration::from_millis(c.timeout_ms),
            max_frame_age: Duration::from_millis(c.max_frame_age_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_documents_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lookupd.toml");
        let shipped = RunConfig::read(&path).unwrap();
        assert_eq!(shipped, RunConfig::default());
        let checked = RunConfig::default().check();
        if cfg!(feature = "v4l2") {
            checked.unwrap();
        } else {
            let e = checked.unwrap_err().to_string();
            assert!(e.contains("V4L2"), "{e}");
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases: [(&str, &str); 9] = [
            ("[camera]\nuri = \"rtsp://x\"", "camera.uri"),
            ("[camera]\nfps = 0", "camera.fps"),
            ("[camera]\npixel_format = \"nv12\"", "camera.pixel_format"),
            ("[trigger]\nspecs = [\"button\"]", "trigger.specs"),
            ("[trigger]\nspecs = []", "trigger.specs"),
            ("[lookup]\nk = 11", "lookup.k"),
            ("[led]\nline = \"gpiochip0\"", "led.line"),
            ("[gpu]\npointwise_tiles = \"huge\"", "gpu.pointwise_tiles"),
            ("[gpu]\nsplit_sums = \"Workgroup\"", "gpu.split_sums"),
        ];
        for (toml_text, key) in cases {
            let config: RunConfig = toml::from_str(toml_text).unwrap();
            let err = config.check().unwrap_err().to_string();
            assert!(err.starts_with(key), "{toml_text:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, "[camera]\nfsp = 30\n").unwrap();
        let err = RunConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("typo.toml") && err.contains("fsp"), "{err}");
    }
}
