//! The one error type of the appliance library: each variant names the file or request concerned.

use std::path::PathBuf;

use bundle::BundleError;
use gallery::GalleryError;
use infer::InferError;

/// Everything that keeps a bundle from opening, or a lookup or enrolment from completing.
///
/// The message of every variant about a bundle names the file (`.../model.onnx: ...`), so a
/// device that refuses to start says which file to replace.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    /// The manifest, a file's size or hash, the labels, or the preprocessing of an image: the
    /// bundle crate's errors already name the file, field or line.
    #[error("{0}")]
    Bundle(BundleError),

    /// The gallery file cannot be opened or fails its validation.
    #[error("{path}: {error}")]
    Gallery { path: PathBuf, error: GalleryError },

    /// The gallery is valid but does not belong to this bundle's model.
    #[error("{path}: {message}")]
    GalleryMismatch { path: PathBuf, message: String },

    /// The model cannot be loaded by the runtime.
    #[error("{path}: {error}")]
    Model { path: PathBuf, error: InferError },

    /// The model loads but its interface differs from the manifest's.
    #[error("{path}: {message}")]
    ModelMismatch { path: PathBuf, message: String },

    /// A gallery item has no row in `labels.tsv`.
    #[error("{path}: gallery item {id} has no label")]
    Unlabelled { path: PathBuf, id: u64 },

    /// The enrolment journal is unreadable, or the files do not match what it describes.
    #[error("{path}: {message}")]
    Journal { path: PathBuf, message: String },

    /// Reading or writing a file of the bundle.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The model failed on a frame.
    #[error("running the model: {0}")]
    Infer(InferError),

    /// The gallery search failed (a bad `k`, for one).
    #[error("searching the gallery: {0}")]
    Search(GalleryError),

    /// A camera frame that cannot be converted (truncated, corrupt, unsupported format).
    #[error("{0}")]
    Frame(String),

    /// A setting of the run configuration is invalid (the message names it).
    #[error("{0}")]
    Config(String),

    /// A request that cannot be served (the message says why).
    #[error("{0}")]
    Request(String),
}

// By hand rather than `#[from]`: a `BundleError` already prints its cause, and a source chain
// would make `anyhow` print it twice.
impl From<BundleError> for ApplianceError {
    fn from(e: BundleError) -> Self {
        ApplianceError::Bundle(e)
    }
}

/// The library's result type.
pub type Result<T, E = ApplianceError> = std::result::Result<T, E>;

impl ApplianceError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        ApplianceError::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn journal(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ApplianceError::Journal {
            path: path.into(),
            message: message.into(),
        }
    }
}
