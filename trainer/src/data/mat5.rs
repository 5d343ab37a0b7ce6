//! A small reader for MATLAB level-5 MAT-files (what `save -v7` and scipy write), enough for
//! Cars196's `cars_annos.mat`: numeric, char, cell and struct arrays, compressed or not.
//!
//! Hand-written because the crates checked do not read that file: `matfile` 0.5 skips struct,
//! cell and char arrays; `matrw` 0.1.4 reads them but rejects headers without
//! "MAT-file, " (scipy's and Octave's), reads char data only as UTF-8/UTF-16 (the format also
//! allows uint16) and panics on several accessors. Every read here is bounds-checked.

use std::io::Read;

use flate2::read::ZlibDecoder;

const HEADER_LEN: usize = 128;
/// Deeper nesting than this is taken as a corrupt file, not recursed into.
const MAX_DEPTH: usize = 32;
/// A compressed variable may not inflate beyond this.
const MAX_INFLATED: u64 = 1 << 30;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;

/// A decoded MATLAB array; elements are in MATLAB's column-major order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// Any numeric or logical class, widened to f64 (the real part only).
    Numeric {
        dims: Vec<usize>,
        data: Vec<f64>,
    },
    Char {
        dims: Vec<usize>,
        chars: Vec<char>,
    },
    Cell {
        dims: Vec<usize>,
        items: Vec<Value>,
    },
    /// `elements[i][f]` is field `fields[f]` of element `i`.
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        elements: Vec<Vec<Value>>,
    },
    /// A zero-length matrix element (MATLAB's `[]`).
    Empty,
    /// Sparse arrays, objects and the like: skipped, not needed here.
    Unsupported {
        class: u8,
    },
}

impl Value {
    /// The text of a char array (rows joined by newlines).
    pub fn as_string(&self) -> Option<String> {
        let Value::Char { dims, chars } = self else {
            return None;
        };
        let rows = dims.first().copied().unwrap_or(1);
        if rows <= 1 || !chars.len().is_multiple_of(rows) {
            return Some(chars.iter().collect());
        }
        let cols = chars.len() / rows;
        let text: Vec<String> = (0..rows)
            .map(|r| (0..cols).map(|c| chars[c * rows + r]).collect())
            .collect();
        Some(text.join("\n"))
    }

    /// The value of a numeric array with exactly one element.
    pub fn as_scalar(&self) -> Option<f64> {
        match self {
            Value::Numeric { data, .. } if data.len() == 1 => Some(data[0]),
            _ => None,
        }
    }
}

/// The named variables of a level-5 MAT-file, in file order.
pub(crate) fn read(bytes: &[u8]) -> Result<Vec<(String, Value)>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than a MAT-file header",
            bytes.len()
        ));
    }
    if bytes.starts_with(b"MATLAB 7.3") {
        return Err("a MAT v7.3 (HDF5) file; save it as -v7 to read it here".into());
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => return Err(format!("not a level-5 MAT-file (endian mark {other:02x?})")),
    };
    let mut vars = Vec::new();
    top_level(&bytes[HEADER_LEN..], big, HEADER_LEN, &mut vars)?;
    Ok(vars)
}

fn top_level(
    buf: &[u8],
    big: bool,
    base: usize,
    vars: &mut Vec<(String, Value)>,
) -> Result<(), String> {
    let mut cur = Cursor { buf, pos: 0, big };
    while cur.pos < buf.len() {
        let at = base + cur.pos;
        let (ty, data) = cur.element().map_err(|e| format!("at byte {at}: {e}"))?;
        match ty {
            MI_MATRIX => {
                let (name, value) =
                    matrix(data, big, 0).map_err(|e| format!("variable at byte {at}: {e}"))?;
                vars.push((name, value));
            }
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                ZlibDecoder::new(data)
                    .take(MAX_INFLATED)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("compressed variable at byte {at}: {e}"))?;
                top_level(&inflated, big, 0, vars)
                    .map_err(|e| format!("in compressed variable at byte {at}: {e}"))?;
            }
            _ => {} // Other top-level elements carry nothing we need.
        }
    }
    Ok(())
}

/// The content of one miMATRIX element: its name and value.
fn matrix(buf: &[u8], big: bool, depth: usize) -> Result<(String, Value), String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
    }
    if buf.is_empty() {
        return Ok((String::new(), Value::Empty));
    }
    let mut cur = Cursor { buf, pos: 0, big };
    let (ty, flags) = cur.element()?;
    if ty != MI_UINT32 || flags.len() < 8 {
        return Err("array flags missing".into());
    }
    let class = (cur.u32_at(flags, 0) & 0xff) as u8;
    let (ty, dims_raw) = cur.element()?;
    if ty != MI_INT32 {
        return Err("array dimensions missing".into());
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|c| {
            usize::try_from(cur.u32_at(c, 0) as i32).map_err(|_| "negative dimension".to_string())
        })
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let (_, name) = cur.element()?;
    let name = String::from_utf8_lossy(name)
        .trim_end_matches('\0')
        .to_string();

    let value = match class {
        MX_CELL => {
            cur.room_for(count, &name)?;
            let mut items = Vec::with_capacity(count.min(1 << 16));
            for i in 0..count {
                items.push(
                    sub_matrix(&mut cur, depth)
                        .map_err(|e| format!("{name}: cell {}: {e}", i + 1))?,
                );
            }
            Value::Cell { dims, items }
        }
        MX_STRUCT => {
            let (_, len_raw) = cur.element()?;
            if len_raw.len() < 4 {
                return Err(format!("{name}: field name length missing"));
            }
            let name_len = cur.u32_at(len_raw, 0) as usize;
            let (_, names_raw) = cur.element()?;
            let fields: Vec<String> = if name_len == 0 {
                Vec::new()
            } else {
                names_raw
                    .chunks(name_len)
                    .map(|n| {
                        String::from_utf8_lossy(n)
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .collect()
            };
            // A struct without fields keeps no elements: there is nothing in them to read.
            let count = if fields.is_empty() { 0 } else { count };
            cur.room_for(count.saturating_mul(fields.len()), &name)?;
            let mut elements = Vec::with_capacity(count.min(1 << 16));
            for i in 0..count {
                let mut element = Vec::with_capacity(fields.len());
                for f in &fields {
                    element.push(
                        sub_matrix(&mut cur, depth)
                            .map_err(|e| format!("{name}({}).{f}: {e}", i + 1))?,
                    );
                }
                elements.push(element);
            }
            Value::Struct {
                dims,
                fields,
                elements,
            }
        }
        MX_CHAR => {
            let (ty, data) = cur.element()?;
            Value::Char {
                dims,
                chars: chars(&cur, ty, data).map_err(|e| format!("{name}: {e}"))?,
            }
        }
        6..=15 => {
            let (ty, data) = cur.element()?;
            let data = numbers(&cur, ty, data).map_err(|e| format!("{name}: {e}"))?;
            if data.len() != count {
                return Err(format!(
                    "{name}: {} values for dimensions {dims:?}",
                    data.len()
                ));
            }
            Value::Numeric { dims, data }
        }
        other => Value::Unsupported { class: other },
    };
    Ok((name, value))
}

fn sub_matrix(cur: &mut Cursor<'_>, depth: usize) -> Result<Value, String> {
    let (ty, data) = cur.element()?;
    if ty != MI_MATRIX {
        return Err(format!("expected a matrix element, found type {ty}"));
    }
    Ok(matrix(data, cur.big, depth + 1)?.1)
}

fn numbers(cur: &Cursor<'_>, ty: u32, data: &[u8]) -> Result<Vec<f64>, String> {
    let width = match ty {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        other => return Err(format!("numeric data of type {other}")),
    };
    if !data.len().is_multiple_of(width) {
        return Err(format!("{} bytes of {width}-byte values", data.len()));
    }
    Ok(data
        .chunks_exact(width)
        .map(|c| match ty {
            MI_INT8 => c[0] as i8 as f64,
            MI_UINT8 => c[0] as f64,
            MI_INT16 => cur.u16_at(c) as i16 as f64,
            MI_UINT16 => cur.u16_at(c) as f64,
            MI_INT32 => cur.u32_at(c, 0) as i32 as f64,
            MI_UINT32 => cur.u32_at(c, 0) as f64,
            MI_SINGLE => f32::from_bits(cur.u32_at(c, 0)) as f64,
            MI_DOUBLE => f64::from_bits(cur.u64_at(c)),
            MI_INT64 => cur.u64_at(c) as i64 as f64,
            _ => cur.u64_at(c) as f64,
        })
        .collect())
}

fn chars(cur: &Cursor<'_>, ty: u32, data: &[u8]) -> Result<Vec<char>, String> {
    match ty {
        MI_UTF8 => Ok(String::from_utf8_lossy(data).chars().collect()),
        // Single bytes: Latin-1.
        MI_INT8 | MI_UINT8 => Ok(data.iter().map(|&b| b as char).collect()),
        MI_UINT16 | MI_UTF16 => {
            let units = data.chunks_exact(2).map(|c| cur.u16_at(c));
            Ok(char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect())
        }
        MI_UTF32 | MI_UINT32 => Ok(data
            .chunks_exact(4)
            .map(|c| char::from_u32(cur.u32_at(c, 0)).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()),
        other => Err(format!("char data of type {other}")),
    }
}

/// Walks data elements (tag + data, padded to 8 bytes) inside one buffer.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Cursor<'a> {
    fn u16_at(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    fn u64_at(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }

    /// Fails when `n` sub-elements (8 bytes each at least) cannot fit in what is left, so a
    /// corrupt count is not looped over.
    fn room_for(&self, n: usize, name: &str) -> Result<(), String> {
        let left = self.buf.len().saturating_sub(self.pos);
        if n > left / 8 {
            return Err(format!("{name}: {n} entries cannot fit in {left} bytes"));
        }
        Ok(())
    }

    /// The next element's type and data.
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        let buf = self.buf;
        let tag = buf.get(self.pos..self.pos + 8).ok_or_else(|| {
            format!(
                "truncated: element tag at offset {} runs past the end",
                self.pos
            )
        })?;
        let first = self.u32_at(tag, 0);
        if first >> 16 != 0 {
            // Small data element: type and size share the first word, data the second.
            let (ty, len) = (first & 0xffff, (first >> 16) as usize);
            if len > 4 {
                return Err(format!("small element of {len} bytes"));
            }
            self.pos += 8;
            return Ok((ty, &tag[4..4 + len]));
        }
        let len = self.u32_at(tag, 4) as usize;
        let start = self.pos + 8;
        let data = start
            .checked_add(len)
            .and_then(|end| buf.get(start..end))
            .ok_or_else(|| {
                format!(
                    "truncated: element at offset {} claims {len} bytes",
                    self.pos
                )
            })?;
        // Compressed elements are not padded; the rest are, to 8 bytes.
        let padded = if first == MI_COMPRESSED {
            len
        } else {
            len.div_ceil(8) * 8
        };
        self.pos = (start + padded).min(buf.len());
        Ok((first, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(read(b"short").is_err());
        assert!(read(&[0u8; 200]).is_err());
        let mut bytes = vec![b' '; 128];
        bytes[126..128].copy_from_slice(b"IM");
        assert_eq!(read(&bytes).unwrap(), vec![]);
        // A matrix tag that claims more bytes than there are.
        bytes.extend_from_slice(&[14, 0, 0, 0, 0, 1, 0, 0]);
        assert!(read(&bytes).unwrap_err().contains("truncated"));
    }
}
