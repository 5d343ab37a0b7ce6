//! `manifest.toml`: what the device needs to interpret the model, the hash of every file, and
//! where the model came from.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BundleError, Result};
use crate::fsutil::{sha256_file, write_atomic};
use crate::hex::{from_hex, is_sha256_hex};
use crate::selftest::SELFTEST_PATTERN;
use crate::{GALLERY_FILE, LABELS_FILE, MANIFEST_FILE, MODEL_FILE};

/// The manifest format this build reads and writes. A manifest with a higher version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// The only resize filter defined so far: `image`'s `FilterType::Triangle` (bilinear).
pub const FILTER_TRIANGLE: &str = "triangle";

/// The bundle's `manifest.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Version of this manifest format ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// Name of the backbone architecture (e.g. "resnet50"), for people and reports.
    pub backbone: String,
    /// How to run `model.onnx`.
    pub model: ModelSpec,
    /// How a camera frame or catalogue image becomes the model's input.
    pub preprocess: PreprocessSpec,
    /// Every file of the bundle except `manifest.toml` itself, by file name.
    pub files: BTreeMap<String, FileEntry>,
    /// Where the model came from.
    pub provenance: Provenance,
    /// A known input and the code the model must give for it, checked on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selftest: Option<SelfTest>,
}

/// The model file and its interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// File name of the ONNX model inside the bundle ([`MODEL_FILE`]).
    pub file: String,
    /// Name of the ONNX graph input (NCHW float32).
    pub input_name: String,
    /// Name of the ONNX graph output (the embedding, `1 x embedding_dim` per image).
    pub output_name: String,
    /// Side of the square input, in pixels (equals `preprocess.crop`).
    pub input_size: u32,
    /// Input channels: 3 (RGB planes in that order).
    pub channels: u32,
    /// Width of the embedding the model outputs.
    pub embedding_dim: u32,
    /// Bits of the binary code: one per embedding value (bit set where the value is > 0).
    pub code_bits: u32,
    /// Whether the output is already L2-normalised (signs and ranking are the same either way).
    pub output_l2_normalized: bool,
}

/// The device's preprocessing: resize to a square (aspect not kept), centre crop, normalise.
/// [`PreprocessSpec::apply_rgb8`] is its one implementation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// The image is first resized to `resize x resize` pixels; its aspect ratio is not kept.
    pub resize: u32,
    /// Side of the centre crop taken from the resized square (equals `model.input_size`).
    pub crop: u32,
    /// Per-channel mean (RGB) subtracted after scaling pixel values to 0..=1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB) divided by after subtracting the mean.
    pub std: [f32; 3],
    /// Resize filter: [`FILTER_TRIANGLE`] ("triangle", bilinear) is the only one defined.
    pub filter: String,
}

/// Size and hash of one file of the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// sha256 of the file's bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// Length of the file in bytes.
    pub bytes: u64,
}

/// Where the model came from; for people, reports and rollbacks, never interpreted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Version of the trainer that wrote the bundle.
    pub trainer_version: String,
    /// When the bundle was written, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Training dataset (name, and version or hash where known).
    pub dataset: String,
    /// Name or directory of the training run.
    pub run: String,
    /// Epoch of the checkpoint exported, where it came from a training run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// Free-form notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The run's evaluation report, free-form (see [`json_to_toml`] for a JSON report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<toml::Value>,
}

/// The self-test: the built-in pattern, preprocessed and embedded, must give this code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// Name of the built-in pattern ([`SELFTEST_PATTERN`]), rendered at
    /// [`crate::SELFTEST_SIDE`] pixels square.
    pub pattern: String,
    /// The packed code expected (gallery bit order), `code_bits / 4` hex digits.
    pub expected_code: String,
    /// Largest Hamming distance from `expected_code` accepted (GPU and CPU floats differ a little).
    pub max_hamming: u32,
}

impl SelfTest {
    /// Hamming distance between `code` (packed, `code_bits / 8` bytes) and the expected code.
    pub fn distance(&self, code: &[u8]) -> Result<u32> {
        let expected = from_hex(&self.expected_code)
            .map_err(|e| BundleError::inconsistent("selftest.expected_code", e.to_string()))?;
        if expected.len() != code.len() {
            return Err(BundleError::inconsistent(
                "selftest.expected_code",
                format!(
                    "{} bytes, the code given has {}",
                    expected.len(),
                    code.len()
                ),
            ));
        }
        Ok(expected
            .iter()
            .zip(code)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum())
    }

    /// Whether `code` is within `max_hamming` of the expected code; `Ok(distance)` if so.
    pub fn check(&self, code: &[u8]) -> Result<u32> {
        let d = self.distance(code)?;
        if d > self.max_hamming {
            return Err(BundleError::inconsistent(
                "selftest",
                format!(
                    "the model's code for pattern {} is {d} bits from the expected code (at most {} allowed)",
                    self.pattern, self.max_hamming
                ),
            ));
        }
        Ok(d)
    }
}

impl Manifest {
    /// Path of the manifest inside bundle directory `dir`.
    pub fn path_in(dir: impl AsRef<Path>) -> PathBuf {
        dir.as_ref().join(MANIFEST_FILE)
    }

    /// Reads `dir/manifest.toml`. A format version newer than [`FORMAT_VERSION`] is refused
    /// before anything else (with [`BundleError::UnsupportedVersion`]); unknown fields are refused.
    /// Does not check the spec or the files: see [`Manifest::verify`] and [`Manifest::open`].
    pub fn read(dir: impl AsRef<Path>) -> Result<Self> {
        let path = Self::path_in(dir);
        let text = fs::read_to_string(&path).map_err(|e| BundleError::io(&path, e))?;
        Self::from_toml(&text, &path)
    }

    /// Parses manifest text; `path` only names the source in errors.
    pub fn from_toml(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let parse = |message: String| BundleError::Parse {
            path: path.to_owned(),
            message,
        };
        // The version first, so a newer manifest is refused as newer, not for its new fields.
        let table: toml::Table = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        match table.get("format_version") {
            None => return Err(parse("no format_version".into())),
            Some(toml::Value::Integer(v)) => {
                if *v < 1 || *v > i64::from(u32::MAX) {
                    return Err(parse(format!("format_version {v} is not a valid version")));
                }
                if *v > i64::from(FORMAT_VERSION) {
                    return Err(BundleError::UnsupportedVersion {
                        path: path.to_owned(),
                        found: *v as u32,
                        supported: FORMAT_VERSION,
                    });
                }
            }
            Some(other) => {
                return Err(parse(format!(
                    "format_version must be an integer, found {}",
                    other.type_str()
                )));
            }
        }
        toml::from_str(text).map_err(|e| parse(e.to_string()))
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| BundleError::Serialize {
            path: PathBuf::from(MANIFEST_FILE),
            message: e.to_string(),
        })
    }

    /// Writes `dir/manifest.toml` atomically (`manifest.toml.tmp`, fsync, rename, fsync of `dir`).
    /// Does not check anything: call [`Manifest::check`] first where that matters.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        let path = Self::path_in(dir);
        let text = self.to_toml().map_err(|e| match e {
            BundleError::Serialize { message, .. } => BundleError::Serialize {
                path: path.clone(),
                message,
            },
            other => other,
        })?;
        write_atomic(&path, text.as_bytes())
    }

    /// Hashes `dir/name` and records its entry in [`Manifest::files`] (replacing any old one).
    pub fn record_file(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<&FileEntry> {
        check_file_name(name)?;
        let (sha256, bytes) = sha256_file(dir.as_ref().join(name))?;
        self.files
            .insert(name.to_owned(), FileEntry { sha256, bytes });
        Ok(&self.files[name])
    }

    /// Reads `dir/manifest.toml` and verifies the bundle ([`Manifest::verify`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest = Self::read(dir)?;
        manifest.verify(dir)?;
        Ok(manifest)
    }

    /// Checks the manifest ([`Manifest::check`]), then that every listed file of `dir` is present
    /// with the listed size and sha256. Stops at the first problem, in that order and files in
    /// name order; the error names the file and what is wrong. Files present but not listed are
    /// ignored.
    pub fn verify(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        self.check()?;
        if !self.files.contains_key(&self.model.file) {
            return Err(BundleError::NotListed {
                path: Self::path_in(dir),
                name: self.model.file.clone(),
            });
        }
        for (name, entry) in &self.files {
            let path = dir.join(name);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BundleError::MissingFile { path });
                }
                Err(e) => return Err(BundleError::io(path, e)),
            };
            if !meta.is_file() {
                return Err(BundleError::MissingFile { path });
            }
            if meta.len() != entry.bytes {
                return Err(BundleError::SizeMismatch {
                    path,
                    expected: entry.bytes,
                    actual: meta.len(),
                });
            }
            let (actual, bytes) = sha256_file(&path)?;
            if bytes != entry.bytes {
                return Err(BundleError::SizeMismatch {
                    path,
                    expected: entry.bytes,
                    actual: bytes,
                });
            }
            if actual != entry.sha256 {
                return Err(BundleError::HashMismatch {
                    path,
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Checks the manifest on its own (no files read): version, the model and preprocessing
    /// specs agree with each other and with what the gallery accepts, file names and hashes are
    /// well formed, the self-test is well formed. The error names the field.
    pub fn check(&self) -> Result<()> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(inconsistent(
                "format_version",
                format!(
                    "{} (this build reads 1 to {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if self.backbone.trim().is_empty() {
            return Err(inconsistent("backbone", "empty"));
        }
        self.model.check()?;
        self.preprocess.check()?;
        if self.preprocess.crop != self.model.input_size {
            return Err(inconsistent(
                "preprocess.crop",
                format!(
                    "{} differs from model.input_size {}",
                    self.preprocess.crop, self.model.input_size
                ),
            ));
        }
        for (name, entry) in &self.files {
            check_file_name(name)?;
            if !is_sha256_hex(&entry.sha256) {
                return Err(inconsistent(
                    format!("files.{name:?}.sha256"),
                    format!("{:?} is not 64 lowercase hex digits", entry.sha256),
                ));
            }
        }
        if let Some(st) = &self.selftest {
            if st.pattern != SELFTEST_PATTERN {
                return Err(inconsistent(
                    "selftest.pattern",
                    format!(
                        "unknown pattern {:?} (this build knows {SELFTEST_PATTERN:?})",
                        st.pattern
                    ),
                ));
            }
            let code = from_hex(&st.expected_code)
                .map_err(|e| inconsistent("selftest.expected_code", e.to_string()))?;
            if code.len() * 8 != self.model.code_bits as usize {
                return Err(inconsistent(
                    "selftest.expected_code",
                    format!(
                        "{} bits, model.code_bits is {}",
                        code.len() * 8,
                        self.model.code_bits
                    ),
                ));
            }
            if st.max_hamming > self.model.code_bits {
                return Err(inconsistent(
                    "selftest.max_hamming",
                    format!(
                        "{} exceeds model.code_bits {}",
                        st.max_hamming, self.model.code_bits
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ModelSpec {
    /// Checks the model spec on its own; the error names the field.
    pub fn check(&self) -> Result<()> {
        check_file_name(&self.file).map_err(|e| inconsistent("model.file", e.to_string()))?;
        if self.input_name.is_empty() {
            return Err(inconsistent("model.input_name", "empty"));
        }
        if self.output_name.is_empty() {
            return Err(inconsistent("model.output_name", "empty"));
        }
        if self.input_size == 0 {
            return Err(inconsistent("model.input_size", "zero"));
        }
        if self.channels != 3 {
            return Err(inconsistent(
                "model.channels",
                format!("{} (only 3, RGB, is supported)", self.channels),
            ));
        }
        if self.code_bits != self.embedding_dim {
            return Err(inconsistent(
                "model.code_bits",
                format!(
                    "{} differs from model.embedding_dim {} (one bit per embedding value)",
                    self.code_bits, self.embedding_dim
                ),
            ));
        }
        gallery::format::code_geometry(self.code_bits)
            .map_err(|e| inconsistent("model.code_bits", e.to_string()))?;
        Ok(())
    }
}

impl PreprocessSpec {
    /// ImageNet statistics (what the pretrained backbones expect) with the given sizes.
    pub fn imagenet(resize: u32, crop: u32) -> Self {
        Self {
            resize,
            crop,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            filter: FILTER_TRIANGLE.to_owned(),
        }
    }

    /// Checks the spec on its own: `0 < crop <= resize`, finite means, finite positive
    /// deviations, a known filter. The error names the field.
    pub fn check(&self) -> Result<()> {
        if self.crop == 0 {
            return Err(inconsistent("preprocess.crop", "zero"));
        }
        if self.crop > self.resize {
            return Err(inconsistent(
                "preprocess.crop",
                format!(
                    "{} is larger than preprocess.resize {}",
                    self.crop, self.resize
                ),
            ));
        }
        if let Some(c) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(inconsistent(
                format!("preprocess.mean[{c}]"),
                format!("{} is not finite", self.mean[c]),
            ));
        }
        if let Some(c) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(inconsistent(
                format!("preprocess.std[{c}]"),
                format!("{} is not a finite positive number", self.std[c]),
            ));
        }
        if self.filter != FILTER_TRIANGLE {
            return Err(inconsistent(
                "preprocess.filter",
                format!(
                    "unknown filter {:?} (only {FILTER_TRIANGLE:?} is defined)",
                    self.filter
                ),
            ));
        }
        Ok(())
    }
}

/// A file of a bundle is named by a plain file name: no directories, not the manifest.
fn check_file_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("empty name")
    } else if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        Some("not a plain file name")
    } else if name == MANIFEST_FILE || name.ends_with(".tmp") {
        Some("reserved name")
    } else {
        None
    };
    match problem {
        Some(p) => Err(BundleError::inconsistent(
            format!("files.{name:?}"),
            p.to_owned(),
        )),
        None => Ok(()),
    }
}

/// A JSON value (such as the trainer's evaluation report) as TOML for [`Provenance::metrics`]:
/// nulls, which TOML cannot hold, are dropped (inside arrays too); integers beyond `i64` become
/// floats.
pub fn json_to_toml(value: &serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value as J;
    Some(match value {
        J::Null => return None,
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(a.iter().filter_map(json_to_toml).collect()),
        J::Object(o) => toml::Value::Table(
            o.iter()
                .filter_map(|(k, v)| json_to_toml(v).map(|v| (k.clone(), v)))
                .collect(),
        ),
    })
}

/// The names every complete bundle holds besides the manifest.
pub const BUNDLE_FILES: [&str; 3] = [MODEL_FILE, GALLERY_FILE, LABELS_FILE];

fn inconsistent(field: impl Into<String>, message: impl Into<String>) -> BundleError {
    BundleError::inconsistent(field, message)
}
