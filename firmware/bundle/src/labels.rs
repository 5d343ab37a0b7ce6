//! `labels.tsv`: what each gallery item id names.
//!
//! ```text
//! id<TAB>sku<TAB>source
//! 17<TAB>4006381333931<TAB>catalogue/2024-05/4006381333931.jpg
//! ```
//!
//! UTF-8, `\n` line ends, a header line, then one row per item: the id (decimal u64, as in the
//! gallery), the SKU or product name (not empty), and where the item came from (may be empty).
//! Fields never hold a tab, a line feed or a carriage return. Ids are unique.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::error::{BundleError, Result};
use crate::fsutil::write_atomic;

/// The header line of `labels.tsv`.
pub const LABELS_HEADER: &str = "id\tsku\tsource";

/// One item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRow {
    /// The item's id in the gallery.
    pub id: u64,
    /// Its SKU or product name.
    pub sku: String,
    /// Where it came from (catalogue image path, dataset and class...), free text.
    pub source: String,
}

/// The rows of `labels.tsv`, in file order, with a lookup by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    rows: Vec<LabelRow>,
    by_id: HashMap<u64, usize>,
}

impl Labels {
    /// No rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Labels from rows; refuses a duplicate id or a field that cannot be written.
    pub fn from_rows(rows: impl IntoIterator<Item = LabelRow>) -> Result<Self> {
        let mut labels = Self::new();
        for row in rows {
            labels.push(row)?;
        }
        Ok(labels)
    }

    /// Appends a row; refuses a duplicate id, an empty SKU, or a tab, line feed or carriage
    /// return in a field.
    pub fn push(&mut self, row: LabelRow) -> Result<()> {
        check_field(row.id, "sku", &row.sku)?;
        check_field(row.id, "source", &row.source)?;
        if row.sku.is_empty() {
            return Err(BundleError::LabelField {
                id: row.id,
                field: "sku",
                message: "empty".into(),
            });
        }
        if self.by_id.contains_key(&row.id) {
            return Err(BundleError::LabelField {
                id: row.id,
                field: "id",
                message: "already present".into(),
            });
        }
        self.by_id.insert(row.id, self.rows.len());
        self.rows.push(row);
        Ok(())
    }

    /// The row of item `id`.
    pub fn get(&self, id: u64) -> Option<&LabelRow> {
        self.by_id.get(&id).map(|&i| &self.rows[i])
    }

    /// The rows, in file order.
    pub fn rows(&self) -> &[LabelRow] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Reads `labels.tsv` at `path`; errors name the line (1-based).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| BundleError::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parses the bytes of a `labels.tsv`; `path` only names the source in errors.
    pub fn parse(bytes: &[u8], path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut labels = Self::new();
        let mut line_of: HashMap<u64, usize> = HashMap::new();
        parse_rows(bytes, path, |n, id, sku, source| {
            if let Some(first) = line_of.insert(id, n) {
                return Err(labels_error(
                    path,
                    n,
                    format!("item {id} is already on line {first}"),
                ));
            }
            labels
                .push(LabelRow {
                    id,
                    sku: sku.to_owned(),
                    source: source.to_owned(),
                })
                .map_err(|e| labels_error(path, n, e.to_string()))
        })?;
        Ok(labels)
    }

    /// The file's text: the header, then one line per row, each ending in `\n`.
    pub fn to_tsv(&self) -> String {
        let mut s = String::with_capacity(32 * (self.rows.len() + 1));
        s.push_str(LABELS_HEADER);
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("{}\t{}\t{}\n", r.id, r.sku, r.source));
        }
        s
    }

    /// Writes the file at `path` atomically (`<path>.tmp`, fsync, rename, fsync of the directory).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, self.to_tsv().as_bytes())
    }
}

fn labels_error(path: &Path, line: usize, message: String) -> BundleError {
    BundleError::Labels {
        path: path.to_owned(),
        line,
        message,
    }
}

/// Checks the bytes of a `labels.tsv` row by row without keeping them: the header, UTF-8, line
/// ends, three fields, a decimal id, a non-empty SKU. Calls `row(line, id, sku, source)` for each
/// row (1-based line numbers); uniqueness of ids is the caller's to check. Errors name the line.
///
/// A device with a million items reads its labels this way, into a compact table.
pub fn parse_rows(
    bytes: &[u8],
    path: impl AsRef<Path>,
    mut row: impl FnMut(usize, u64, &str, &str) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let err = |line: usize, message: String| labels_error(path, line, message);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        err(line, "not UTF-8".into())
    })?;
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = body.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, LABELS_HEADER)) => {}
        Some((n, other)) if !(n == 1 && other.is_empty() && text.is_empty()) => {
            return Err(err(
                n,
                format!("header is {other:?}, expected {LABELS_HEADER:?}"),
            ));
        }
        _ => return Err(err(1, "empty file: no header line".into())),
    }
    for (n, line) in lines {
        if line.contains('\r') {
            return Err(err(
                n,
                "carriage return (the file must use \\n line ends)".into(),
            ));
        }
        let mut fields = line.split('\t');
        let (Some(id), Some(sku), Some(source), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(err(
                n,
                format!(
                    "{} tab-separated fields, expected 3 (id, sku, source)",
                    line.split('\t').count()
                ),
            ));
        };
        let id: u64 = id
            .parse()
            .map_err(|_| err(n, format!("id {id:?} is not a decimal u64")))?;
        if sku.is_empty() {
            return Err(err(n, format!("item {id} has an empty sku")));
        }
        row(n, id, sku, source)?;
    }
    Ok(())
}

fn check_field(id: u64, field: &'static str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| matches!(c, '\t' | '\n' | '\r')) {
        return Err(BundleError::LabelField {
            id,
            field,
            message: format!("contains {c:?}, which labels.tsv cannot hold"),
        });
    }
    Ok(())
}
