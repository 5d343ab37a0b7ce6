//! Reading and writing the .npy arrays the gallery commands exchange with other tools.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::WriterBuilder;

/// A 2-D uint8 array (a 1-D one is read as a single row): (rows, columns, data).
pub fn read_u8_matrix(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    let (rows, cols) = match shape[..] {
        [cols] => (1, cols as usize),
        [rows, cols] => (rows as usize, cols as usize),
        _ => bail!(
            "{}: expected a 2-D array, got shape {shape:?}",
            path.display()
        ),
    };
    if npy.order() != npyz::Order::C {
        bail!("{}: expected a C-order (row-major) array", path.display());
    }
    let dtype = npy.dtype();
    let data: Vec<u8> = npy
        .into_vec()
        .with_context(|| format!("{}: expected dtype uint8, found {dtype:?}", path.display()))?;
    Ok((rows, cols, data))
}

/// A 1-D uint64 array.
pub fn read_u64_vec(path: &Path) -> Result<Vec<u64>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    if shape.len() != 1 {
        bail!(
            "{}: expected a 1-D array, got shape {shape:?}",
            path.display()
        );
    }
    let dtype = npy.dtype();
    npy.into_vec()
        .with_context(|| format!("{}: expected dtype uint64, found {dtype:?}", path.display()))
}

pub fn write_u8_matrix(path: &Path, rows: usize, cols: usize, data: &[u8]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(BufWriter::new(file))
        .begin_nd()
        .with_context(|| format!("writing {}", path.display()))?;
    w.extend(data.iter().copied())
        .and_then(|()| w.finish())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn write_u64_vec(path: &Path, data: impl IntoIterator<Item = u64>) -> Result<()> {
    npyz::to_file_1d(path, data).with_context(|| format!("writing {}", path.display()))
}

/// A float32 array of any rank: (shape, data in C order).
pub fn read_f32_array(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C {
        bail!("{}: expected a C-order (row-major) array", path.display());
    }
    let dtype = npy.dtype();
    let data: Vec<f32> = npy.into_vec().with_context(|| {
        format!(
            "{}: expected dtype float32, found {dtype:?}",
            path.display()
        )
    })?;
    Ok((shape, data))
}

pub fn write_f32_array(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .with_context(|| format!("writing {}", path.display()))?;
    w.extend(data.iter().copied())
        .and_then(|()| w.finish())
        .with_context(|| format!("writing {}", path.display()))
}
