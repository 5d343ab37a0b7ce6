//! The data layer: the standard class-disjoint splits of the metric-learning datasets, the
//! training and evaluation preprocessing, the class-balanced sampler and a background loader
//! that decodes and augments batches while the model trains.
//!
//! Everything here reports bad input as a [`DataError`] naming the file (and line) at fault;
//! nothing panics on a malformed list, a corrupt image or a truncated archive.

mod datasets;
mod idx;
mod loader;
mod mat5;
mod preprocess;
mod sampler;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use image::{DynamicImage, GrayImage};

pub use datasets::{FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_DIR, load};
pub use loader::{Batch, Loader, LoaderOptions};
pub use preprocess::{IMAGENET_MEAN, IMAGENET_STD, Preprocess};
pub use sampler::ClassBalancedSampler;

/// Everything that can go wrong while reading a dataset or building its batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A `KIND:PATH` string that does not name a dataset.
    #[error("bad dataset spec {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    /// A file or directory that could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a text list that does not parse (lines count from 1).
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A binary file (IDX, MAT) or a whole list whose content is wrong.
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// An image that could not be decoded.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// Bad arguments to the sampler, the preprocessing or the loader.
    #[error("{0}")]
    Config(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn line(path: &Path, line: usize, reason: impl Into<String>) -> Self {
        Self::Line {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
    pub(crate) fn format(path: &Path, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The dataset layouts `load` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// CUB-200-2011: classes 1-100 train, 101-200 test.
    Cub,
    /// Cars196: classes 1-98 train, 99-196 test.
    Cars196,
    /// Stanford Online Products: Ebay_train.txt / Ebay_test.txt.
    Sop,
    /// In-Shop Clothes: train, and query vs gallery for the test.
    InShop,
    /// One sub-folder per class; classes split by a split file or in halves.
    Folder,
    /// The four IDX files; all 70,000 images pooled, classes 0-4 train, 5-9 test.
    FashionMnist,
}

impl DatasetKind {
    /// Every kind, in the order the spec error lists them.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Cub,
        DatasetKind::Cars196,
        DatasetKind::Sop,
        DatasetKind::InShop,
        DatasetKind::Folder,
        DatasetKind::FashionMnist,
    ];

    /// The name used in a spec (`cub`, `cars196`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cub => "cub",
            DatasetKind::Cars196 => "cars196",
            DatasetKind::Sop => "sop",
            DatasetKind::InShop => "inshop",
            DatasetKind::Folder => "folder",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which dataset to load and where: parsed from `KIND:PATH`.
///
/// `fashion-mnist` alone (no path) means [`FASHION_MNIST_DEFAULT_DIR`], where Debian's
/// `dataset-fashion-mnist` installs it; every other kind needs a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    pub kind: DatasetKind,
    pub path: PathBuf,
    /// Only for `folder`: a text file of `train CLASS` / `test CLASS` lines.
    pub split: Option<PathBuf>,
}

impl DataSpec {
    /// The same spec with a class split file (meaningful for `folder` only; `load` refuses it
    /// for the other kinds, whose split is fixed by the protocol).
    pub fn with_split(mut self, split: Option<PathBuf>) -> Self {
        self.split = split;
        self
    }
}

impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        let err = |reason: String| DataError::Spec {
            spec: s.to_string(),
            reason,
        };
        let (kind_str, path) = match s.split_once(':') {
            Some((k, p)) => (k.trim(), p.trim()),
            None => (s.trim(), ""),
        };
        let kind = DatasetKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(kind_str))
            .ok_or_else(|| {
                let known: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
                err(format!(
                    "unknown kind {kind_str:?}; expected one of {}",
                    known.join(", ")
                ))
            })?;
        let path = if path.is_empty() {
            if kind == DatasetKind::FashionMnist {
                PathBuf::from(FASHION_MNIST_DEFAULT_DIR)
            } else {
                return Err(err(format!("missing path: write {kind}:PATH")));
            }
        } else {
            PathBuf::from(path)
        };
        Ok(DataSpec {
            kind,
            path,
            split: None,
        })
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.path.display())
    }
}

/// A grey image held inside a shared pixel buffer, so that 70,000 Fashion-MNIST samples cost
/// one allocation rather than one each.
#[derive(Clone)]
pub struct GreyImage {
    pixels: Arc<[u8]>,
    offset: usize,
    width: u32,
    height: u32,
}

impl GreyImage {
    /// `None` when the image would reach past the end of `pixels`.
    pub fn new(pixels: Arc<[u8]>, offset: usize, width: u32, height: u32) -> Option<Self> {
        let len = (width as usize).checked_mul(height as usize)?;
        (offset.checked_add(len)? <= pixels.len()).then_some(Self {
            pixels,
            offset,
            width,
            height,
        })
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Row-major pixels.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels[self.offset..self.offset + self.width as usize * self.height as usize]
    }
}

impl fmt::Debug for GreyImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GreyImage({}x{} at {})",
            self.width, self.height, self.offset
        )
    }
}

/// Where a sample's pixels come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    File(PathBuf),
    Grey(GreyImage),
}

impl ImageSource {
    /// Decodes the image (format guessed from the content, not the extension).
    pub fn decode(&self) -> Result<DynamicImage, DataError> {
        match self {
            ImageSource::File(path) => {
                let reader = image::ImageReader::open(path)
                    .map_err(|e| DataError::io(path, e))?
                    .with_guessed_format()
                    .map_err(|e| DataError::io(path, e))?;
                reader.decode().map_err(|e| DataError::Image {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            }
            ImageSource::Grey(g) => GrayImage::from_raw(g.width, g.height, g.pixels().to_vec())
                .map(DynamicImage::ImageLuma8)
                .ok_or_else(|| DataError::Config(format!("{g:?}: buffer too short"))),
        }
    }

    /// How to name this image in a message.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::File(path) => path.display().to_string(),
            ImageSource::Grey(g) => format!("in-memory {g:?}"),
        }
    }
}

/// One image and its dense label within its split.
#[derive(Debug, Clone)]
pub struct Sample {
    pub source: ImageSource,
    pub label: usize,
}

/// The samples of one side of the class-disjoint protocol; labels run densely over
/// `0..class_names.len()`.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub samples: Vec<Sample>,
    pub class_names: Vec<String>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
    /// The labels in sample order (what the sampler and the metrics take).
    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|s| s.label).collect()
    }
}

/// In-Shop's retrieval protocol: queries are searched against the gallery only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryGallery {
    /// Indices into the test split's samples.
    pub queries: Vec<usize>,
    /// Indices into the test split's samples.
    pub gallery: Vec<usize>,
}

/// A loaded dataset: train and test classes are disjoint.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    pub test: Split,
    /// `Some` for In-Shop only; the other datasets search the test split against itself.
    pub query_gallery: Option<QueryGallery>,
}
