use std::path::PathBuf;

/// Everything that can be wrong with a gallery file or a request made of it.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a gallery file: it does not start with the gallery magic bytes")]
    Foreign,
    #[error(
        "gallery format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("gallery header is corrupt: {0}")]
    HeaderCorrupt(String),
    #[error("gallery header is invalid: {0}")]
    HeaderInvalid(String),
    #[error(
        "gallery section {section} is misaligned: offset {offset} is not a multiple of {required}"
    )]
    Misaligned {
        section: &'static str,
        offset: u64,
        required: u64,
    },
    #[error("gallery file is truncated: the header needs {needed} bytes, the file has {actual}")]
    Truncated { needed: u64, actual: u64 },
    #[error(
        "gallery {section} section is corrupt: checksum {actual:08x}, header says {expected:08x}"
    )]
    ChecksumMismatch {
        section: &'static str,
        expected: u32,
        actual: u32,
    },
    #[error("gallery code row {row} has bits set in its padding (beyond bit {code_bits})")]
    DirtyPadding { row: u64, code_bits: u32 },
    #[error("code width {0} bits is not supported: it must be a multiple of 8 from 64 to 4096")]
    BadCodeBits(u32),
    #[error("{what}: expected {expected} bytes, got {actual}")]
    BadLength {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("k = {0} is out of range: it must be from 1 to {max}", max = crate::MAX_K)]
    BadK(usize),
    #[error("gallery is too large: {0}")]
    TooLarge(String),
    #[error("kernel {name:?} is not available on this CPU (available: {available})")]
    KernelUnavailable { name: String, available: String },
    #[error("could not start the search threads: {0}")]
    ThreadPool(String),
}

pub type Result<T, E = GalleryError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| GalleryError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
