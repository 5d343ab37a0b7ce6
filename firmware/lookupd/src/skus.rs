//! The SKU of every gallery row, compact: all SKUs in one string and an end offset per row, so
//! a million-item catalogue costs its SKUs' text and 4 bytes an item of heap, not a heap
//! string per item. `labels.tsv` is read through a memory map, row by row.

use std::path::Path;

use bundle::{LABELS_FILE, LabelRow};
use gallery::Gallery;

use crate::error::{ApplianceError, Result};

/// SKUs by position: row `i`'s is `text[ends[i - 1]..ends[i]]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SkuTable {
    text: String,
    ends: Vec<u32>,
}

impl SkuTable {
    /// The SKU at `index`.
    pub(crate) fn get(&self, index: usize) -> &str {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.text[start..self.ends[index] as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Appends a SKU; the table holds up to 4 GiB of SKU text.
    pub(crate) fn push(&mut self, sku: &str) -> Result<()> {
        let end = u32::try_from(self.text.len() + sku.len()).map_err(|_| {
            ApplianceError::Request("more than 4 GiB of SKU text: too many items".into())
        })?;
        self.text.push_str(sku);
        self.ends.push(end);
        Ok(())
    }

    fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// The labels as the appliance needs them.
#[derive(Debug)]
pub(crate) struct GalleryLabels {
    /// The SKU of each gallery row.
    pub skus: SkuTable,
    /// The largest id labelled (new items are numbered after it).
    pub max_id: Option<u64>,
}

/// Reads `labels.tsv` of the bundle in `dir`, then `pending` (rows of an enrolment not yet in
/// the file), and gives every gallery row its SKU. Refuses a malformed file (naming the line),
/// a duplicate id, and a gallery item without a label.
pub(crate) fn read(dir: &Path, gallery: &Gallery, pending: &[LabelRow]) -> Result<GalleryLabels> {
    let path = dir.join(LABELS_FILE);
    let file = std::fs::File::open(&path).map_err(|e| ApplianceError::io(&path, e))?;
    // SAFETY: the bundle's files are replaced by rename, never written in place (enrolment
    // writes labels.tsv beside and renames it), so the mapped bytes do not change under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ApplianceError::io(&path, e))?;
    let (mut skus, mut ids, mut lines) = (SkuTable::default(), Vec::new(), Vec::new());
    bundle::parse_rows(&map, &path, |line, id, sku, _source| {
        ids.push(id);
        lines.push(line as u32);
        skus.push(sku).map_err(|e| bundle::BundleError::Labels {
            path: path.clone(),
            line,
            message: e.to_string(),
        })
    })?;
    drop(map);
    for row in pending {
        ids.push(row.id);
        lines.push(0);
        skus.push(&row.sku)?;
    }

    // Label indices by id: finds duplicates, and each gallery item's label.
    let mut by_id: Vec<u32> = (0..ids.len() as u32).collect();
    by_id.sort_unstable_by_key(|&i| ids[i as usize]);
    for pair in by_id.windows(2) {
        let (a, b) = (pair[0] as usize, pair[1] as usize);
        if ids[a] == ids[b] {
            let (first, second) = (lines[a].min(lines[b]), lines[a].max(lines[b]));
            return Err(bundle::BundleError::Labels {
                path,
                line: second as usize,
                message: format!("item {} is already on line {first}", ids[a]),
            }
            .into());
        }
    }
    let max_id = by_id.last().map(|&i| ids[i as usize]);
    drop(lines);

    // The usual case, the labels in gallery order: the table is already right.
    let in_gallery_order =
        ids.len() == gallery.len() && (0..gallery.len()).all(|row| gallery.id(row) == ids[row]);
    let skus = if in_gallery_order {
        skus
    } else {
        let mut by_row = SkuTable::default();
        for row in 0..gallery.len() {
            let id = gallery.id(row);
            let found = by_id
                .binary_search_by_key(&id, |&i| ids[i as usize])
                .map_err(|_| ApplianceError::Unlabelled {
                    path: path.clone(),
                    id,
                })?;
            by_row.push(skus.get(by_id[found] as usize))?;
        }
        by_row
    };
    let mut skus = skus;
    skus.shrink_to_fit();
    Ok(GalleryLabels { skus, max_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_returns_what_was_pushed() {
        let mut t = SkuTable::default();
        for s in ["a", "", "ünï", "4006381333931"] {
            t.push(s).unwrap();
        }
        assert_eq!(t.len(), 4);
        assert_eq!(
            (0..4).map(|i| t.get(i)).collect::<Vec<_>>(),
            ["a", "", "ünï", "4006381333931"]
        );
    }
}
