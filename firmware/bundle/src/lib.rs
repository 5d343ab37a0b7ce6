//! The bundle: the one interface between the workstation and the device.
//!
//! A bundle is a directory holding
//!
//! * `manifest.toml` ([`Manifest`]): format version, the model's interface ([`ModelSpec`]), the
//!   preprocessing ([`PreprocessSpec`]), size and sha256 of every other file, provenance, and an
//!   optional self-test;
//! * `model.onnx`: the backbone, input NCHW float32;
//! * `gallery.gal`: the codes of the catalogue (the `gallery` crate's file);
//! * `labels.tsv` ([`Labels`]): what each gallery item id names.
//!
//! The trainer writes bundles, `lookupd` reads them on the device and `flash` deploys them.
//! Anything the device needs to interpret the model comes from the manifest, never from a guess;
//! the preprocessing is implemented once, here ([`PreprocessSpec::apply_rgb8`], [`Preprocessor`]),
//! and used by both sides.
//!
//! This crate knows nothing of training, and runs no model.

mod error;
mod fsutil;
mod hex;
mod labels;
mod manifest;
mod preprocess;
mod selftest;

pub use error::{BundleError, Result};
pub use fsutil::{sha256_file, write_atomic};
pub use hex::{from_hex, to_hex};
pub use labels::{LABELS_HEADER, LabelRow, Labels, parse_rows};
pub use manifest::{
    BUNDLE_FILES, FILTER_TRIANGLE, FORMAT_VERSION, FileEntry, Manifest, ModelSpec, PreprocessSpec,
    Provenance, SelfTest, json_to_toml,
};
pub use preprocess::Preprocessor;
pub use selftest::{SELFTEST_PATTERN, SELFTEST_SIDE, selftest_pattern};

/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// File name of the model inside a bundle (the manifest's `model.file`).
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the gallery inside a bundle.
pub const GALLERY_FILE: &str = "gallery.gal";
/// File name of the labels inside a bundle.
pub const LABELS_FILE: &str = "labels.tsv";
