//! IDX files (the MNIST family's format): a magic `00 00 08 NDIM`, NDIM big-endian u32 sizes,
//! then the u8 data; read gzipped (as shipped) or plain.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::GzDecoder;

use super::{DataError, GreyImage};

/// Never reserve more than this up front on the word of a header: a corrupt size must not
/// allocate gigabytes before the data runs out.
const MAX_RESERVE: usize = 64 << 20;

/// Images of several IDX pairs, concatenated into one shared buffer.
pub(crate) struct Pooled {
    pub pixels: Arc<[u8]>,
    pub width: u32,
    pub height: u32,
    pub labels: Vec<u8>,
}

impl Pooled {
    pub fn image(&self, i: usize) -> GreyImage {
        let len = self.width as usize * self.height as usize;
        GreyImage::new(self.pixels.clone(), i * len, self.width, self.height)
            .expect("read_pooled checked that every image lies inside the buffer")
    }
}

/// `{prefix}-images-idx3-ubyte[.gz]` and `{prefix}-labels-idx1-ubyte[.gz]` for each prefix,
/// pooled in order; all images must share one size.
pub(crate) fn read_pooled(dir: &Path, prefixes: &[&str]) -> Result<Pooled, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    for prefix in prefixes {
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let before = labels.len();
        let dims = read_into(&labels_path, 1, &mut labels)?;
        let count = dims[0];
        let dims = read_into(&images_path, 3, &mut pixels)?;
        if dims[0] != count {
            return Err(DataError::format(
                &images_path,
                format!(
                    "{} images but {} has {count} labels",
                    dims[0],
                    labels_path.display()
                ),
            ));
        }
        let (h, w) = (dims[1], dims[2]);
        if h == 0 || w == 0 {
            return Err(DataError::format(&images_path, "images of size zero"));
        }
        if size.is_some_and(|s| s != (w, h)) {
            return Err(DataError::format(
                &images_path,
                format!("{w}x{h} images differ from the other files'"),
            ));
        }
        size = Some((w, h));
        debug_assert_eq!(labels.len() - before, count as usize);
    }
    let (width, height) = size.unwrap_or((0, 0));
    Ok(Pooled {
        pixels: pixels.into(),
        width,
        height,
        labels,
    })
}

/// The gzipped file if present, else the plain one.
fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{stem}.gz"));
    let plain = dir.join(stem);
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else {
        Err(DataError::io(
            &gz,
            std::io::Error::new(ErrorKind::NotFound, "missing (nor is the plain file there)"),
        ))
    }
}

/// Appends the data of a `ndim`-dimensional u8 IDX file to `out`; returns its sizes.
fn read_into(path: &Path, ndim: u8, out: &mut Vec<u8>) -> Result<Vec<u32>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let io = |e: std::io::Error| {
        if e.kind() == ErrorKind::UnexpectedEof {
            DataError::format(path, "truncated header")
        } else {
            DataError::io(path, e)
        }
    };
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(io)?;
    if magic != [0, 0, 0x08, ndim] {
        return Err(DataError::format(
            path,
            format!(
                "IDX magic {magic:02x?}; expected [00, 00, 08, {ndim:02x}] (u8 data, {ndim} dimension(s))"
            ),
        ));
    }
    let mut dims = Vec::with_capacity(ndim as usize);
    for _ in 0..ndim {
        let mut b = [0u8; 4];
        reader.read_exact(&mut b).map_err(io)?;
        dims.push(u32::from_be_bytes(b));
    }
    let len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| DataError::format(path, format!("sizes {dims:?} overflow")))?;
    out.reserve(len.min(MAX_RESERVE));
    let start = out.len();
    reader
        .by_ref()
        .take(len as u64)
        .read_to_end(out)
        .map_err(|e| DataError::io(path, e))?;
    let got = out.len() - start;
    if got != len {
        return Err(DataError::format(
            path,
            format!("truncated: sizes {dims:?} need {len} bytes of data, found {got}"),
        ));
    }
    // Reading on to the end also makes the gzip decoder check its CRC.
    let mut rest = [0u8; 1];
    match reader.read(&mut rest).map_err(|e| DataError::io(path, e))? {
        0 => Ok(dims),
        _ => Err(DataError::format(
            path,
            format!("data continues past the {len} bytes that sizes {dims:?} give"),
        )),
    }
}
