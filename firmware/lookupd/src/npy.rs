//! Reading and writing the .npy arrays lookupd exchanges with other tools.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::{AutoSerialize, DType, Deserialize, TypeChar, WriterBuilder};

/// The element type an array must have: its numpy name (for errors), kind and bytes.
struct Element(&'static str, TypeChar, u64);

const UINT8: Element = Element("uint8", TypeChar::Uint, 1);
const UINT64: Element = Element("uint64", TypeChar::Uint, 8);
const FLOAT32: Element = Element("float32", TypeChar::Float, 4);

/// An array of any rank in C order: (shape, data).
fn read_array<T: Deserialize>(path: &Path, want: Element) -> Result<(Vec<usize>, Vec<T>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C {
        bail!("{}: expected a C-order (row-major) array", path.display());
    }
    let found = npy.dtype();
    let Element(name, kind, bytes) = want;
    let data = npy.into_vec().with_context(|| match &found {
        // The type is right (either byte order): the data is what failed.
        DType::Plain(t) if t.type_char() == kind && t.size_field() == bytes => format!(
            "{}: a {name} array of shape {shape:?} whose data is shorter than its header says, \
             or unreadable",
            path.display()
        ),
        _ => format!(
            "{}: expected dtype {name}, found {}",
            path.display(),
            found.descr()
        ),
    })?;
    Ok((shape, data))
}

fn write_array<T: AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
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

/// A 2-D uint8 array (a 1-D one is read as a single row): (rows, columns, data).
pub fn read_u8_matrix(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let (shape, data) = read_array(path, UINT8)?;
    let (rows, cols) = match shape[..] {
        [cols] => (1, cols),
        [rows, cols] => (rows, cols),
        _ => bail!(
            "{}: expected a 2-D array, got shape {shape:?}",
            path.display()
        ),
    };
    Ok((rows, cols, data))
}

/// A 1-D uint64 array.
pub fn read_u64_vec(path: &Path) -> Result<Vec<u64>> {
    let (shape, data) = read_array(path, UINT64)?;
    if shape.len() != 1 {
        bail!(
            "{}: expected a 1-D array, got shape {shape:?}",
            path.display()
        );
    }
    Ok(data)
}

/// A float32 array of any rank: (shape, data in C order).
pub fn read_f32_array(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    read_array(path, FLOAT32)
}

pub fn write_u8_matrix(path: &Path, rows: usize, cols: usize, data: &[u8]) -> Result<()> {
    write_array(path, &[rows, cols], data)
}

pub fn write_u64_vec(path: &Path, data: &[u64]) -> Result<()> {
    write_array(path, &[data.len()], data)
}

pub fn write_f32_array(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_array(path, shape, data)
}
