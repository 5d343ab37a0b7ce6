use std::path::PathBuf;

/// Everything that can be wrong with a bundle, one of its files, or a request made of it.
/// Every variant names the file, field or line concerned.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid manifest: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: cannot be written: {message}")]
    Serialize { path: PathBuf, message: String },
    #[error(
        "{path}: bundle format version {found} is not supported (this build reads versions 1 to {supported}); update the device software"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: listed in the manifest but missing")]
    MissingFile { path: PathBuf },
    #[error("{path}: size {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: sha256 {actual}, the manifest says {expected}")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: required file {name:?} is not listed in the manifest's [files]")]
    NotListed { path: PathBuf, name: String },
    #[error("manifest field {field}: {message}")]
    Inconsistent { field: String, message: String },
    #[error("{path}:{line}: {message}")]
    Labels {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("label {id}, field {field}: {message}")]
    LabelField {
        id: u64,
        field: &'static str,
        message: String,
    },
    #[error("{what}: not valid hex: {message}")]
    Hex { what: String, message: String },
    #[error("preprocessing {what}: {message}")]
    Preprocess { what: &'static str, message: String },
}

/// The crate's result type.
pub type Result<T, E = BundleError> = std::result::Result<T, E>;

impl BundleError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BundleError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn inconsistent(field: impl Into<String>, message: impl Into<String>) -> Self {
        BundleError::Inconsistent {
            field: field.into(),
            message: message.into(),
        }
    }
}
