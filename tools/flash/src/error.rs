use std::path::PathBuf;

/// Everything that can go wrong in packing or deploying. Every variant names the file, member,
/// target or step concerned.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    // The causes are printed in the message, not chained as `source`: anyhow's `{:#}` would
    // print them twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("bundle {path}: {error}")]
    Bundle {
        path: PathBuf,
        error: bundle::BundleError,
    },
    #[error("key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("{path}: already exists; refusing to overwrite a key")]
    KeyExists { path: PathBuf },
    #[error("archive {path}: unsigned (no {member} member where the signature belongs)")]
    Unsigned { path: PathBuf, member: &'static str },
    #[error("archive {path}: the signature does not verify against {key}: {message}")]
    BadSignature {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("archive {path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error("archive {path}: member {member}: {message}")]
    Member {
        path: PathBuf,
        member: String,
        message: String,
    },
    #[error("bad target {spec:?}: {message} (expected dir:PATH or ssh://[user@]host[:port]/PATH)")]
    TargetSpec { spec: String, message: String },
    #[error("target {target}: {message}")]
    Target { target: String, message: String },
    #[error(
        "architecture mismatch: the archive is built for {archive} ({archive_arch}), the target {target} is {target_arch}"
    )]
    WrongArch {
        archive: String,
        archive_arch: String,
        target: String,
        target_arch: String,
    },
    #[error("{message}")]
    Untrusted { message: String },
    #[error("building lookupd: {message}")]
    Build { message: String },
    #[error("lookupd binary {path}: {message}")]
    Binary { path: PathBuf, message: String },
    #[error("target {target}: slot {slot}: {message}")]
    Slot {
        target: String,
        slot: String,
        message: String,
    },
    #[error(
        "target {target}: another deploy or rollback holds its lock ({holder}); waited {waited} s. \
         The lock ends with the process that holds it: try again once that one is done"
    )]
    Locked {
        target: String,
        holder: String,
        waited: f64,
    },
    #[error("target {target}: state.toml: {message}")]
    State { target: String, message: String },
}

/// The crate's result type.
pub type Result<T, E = FlashError> = std::result::Result<T, E>;

impl FlashError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FlashError::Io {
            path: path.into(),
            error: source,
        }
    }
}
