/// Everything that can be wrong with an evaluation request.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("the embedding dimension must be at least 1")]
    ZeroDimension,
    #[error("{what}: {len} values do not make whole rows of {d}")]
    Ragged {
        what: &'static str,
        len: usize,
        d: usize,
    },
    #[error("{what}: expected {expected}, got {actual}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{what}: index {index} is out of range (there are {len})")]
    IndexOutOfRange {
        what: &'static str,
        index: usize,
        len: usize,
    },
    #[error("{what}: index {index} appears more than once")]
    DuplicateIndex { what: &'static str, index: usize },
    #[error("embedding value at row {row}, column {column} is not finite")]
    NonFinite { row: usize, column: usize },
    #[error("K = 0 asks for no neighbours: every K must be at least 1")]
    ZeroK,
    #[error("k-means with {k} clusters needs at least {k} points, got {points}")]
    TooManyClusters { k: usize, points: usize },
    #[error(
        "binary codes of {bits} bits are wider than the gallery's limit of {max} bits",
        max = gallery::MAX_CODE_BITS
    )]
    CodeTooWide { bits: usize },
    #[error("neighbour list of query {query} holds {len} items, the metrics need {needed}")]
    ShortNeighbourList {
        query: usize,
        len: usize,
        needed: usize,
    },
    #[error(
        "neighbour list of query {query} holds item {item}, which is the query itself or not in the database"
    )]
    NotANeighbour { query: usize, item: usize },
    #[error("neighbour list of query {query} holds item {item} twice")]
    RepeatedNeighbour { query: usize, item: usize },
    #[error("Hamming search through the gallery: {0}")]
    Gallery(#[from] gallery::GalleryError),
    #[error("temporary directory for the evaluation gallery: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("k-means: {0}")]
    KMeans(String),
}

pub type Result<T, E = MetricsError> = std::result::Result<T, E>;
