//! Enrolment: new items appended to the bundle on the device, crash-safely.
//!
//! An enrolment changes three files, each of which can be replaced or extended atomically on
//! its own, but not together: the gallery (`Gallery::append`), `labels.tsv` (written beside and
//! renamed) and `manifest.toml` (the same), whose hashes cover the other two. A crash between
//! two of these writes would leave files whose hashes the manifest does not record, and a bundle
//! that refuses to open. So an enrolment is journalled (a redo log of one entry):
//!
//! 1. **journal**: `enroll.journal` is written atomically: the new items (id, SKU, source,
//!    code), the gallery's committed state before (item count and section checksums), the
//!    labels' size and sha256 before (equal to the manifest's entry), and the exact bytes to
//!    append to `labels.tsv`;
//! 2. **gallery**: the codes are appended (`Gallery::append`, itself crash-safe); from here on
//!    the enrolment is committed and the lookups of this process see the new items;
//! 3. **labels**: `labels.tsv` is rewritten with the rows appended (atomic rename);
//! 4. **manifest**: the sha256 and size of `gallery.gal` and `labels.tsv` are recorded and the
//!    manifest is rewritten (atomic rename);
//! 5. the journal is removed.
//!
//! [`crate::Appliance::open`] looks for a journal before it verifies anything. With the manifest
//! of before (its entries equal the journal's "before"), every other file must verify as
//! usual, the gallery must hold either the state before (the same count and checksums) or
//! exactly that plus the journalled items (count, ids, codes, and checksums that extend the
//! ones before), and the labels either the bytes before or those plus the journalled suffix;
//! then the missing steps are redone and the journal removed. With a newer manifest (the crash
//! came after step 4) the bundle must verify as it is, and the journal is removed. Anything
//! else is refused with a message naming the file. A crash at any instant therefore leaves a
//! bundle that opens, without the items (crash before step 1 completed) or with all of them.
//! `lookupd selftest` performs the same inspection without writing, and passes on a bundle
//! whose pending enrolment the next open will complete.
//!
//! The manifest's hash of the gallery is recomputed by each enrolment: it reads the whole
//! gallery file (about a second per 256 MB on a small device).

use std::fs;
use std::path::{Path, PathBuf};

use bundle::{BundleError, FileEntry, GALLERY_FILE, LABELS_FILE, LabelRow, Labels, Manifest};
use gallery::Gallery;
use image::DynamicImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::appliance::Appliance;
use crate::error::{ApplianceError, Result};
use crate::parts;
use crate::skus;

/// File name of the enrolment journal inside a bundle (not listed in the manifest).
pub const JOURNAL_FILE: &str = "enroll.journal";

/// The journal format this build writes and reads.
const JOURNAL_VERSION: u32 = 1;

/// One image to enrol.
#[derive(Clone, Copy, Debug)]
pub struct EnrolItem<'a> {
    /// The SKU or product name the item is to be reported as.
    pub sku: &'a str,
    /// Where it came from (an image path, a note), for `labels.tsv`; may be empty.
    pub source: &'a str,
    /// The photograph.
    pub image: &'a DynamicImage,
}

/// The steps of an enrolment, in order (see the module documentation); used by tests to stop an
/// enrolment after a step, as a crash would.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnrolStep {
    Journal,
    Gallery,
    Labels,
    Manifest,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    version: u32,
    items: Vec<JournalItem>,
    gallery_before: GalleryBefore,
    labels_before: FileEntry,
    /// Appended to the labels' bytes before.
    labels_suffix: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalItem {
    id: u64,
    sku: String,
    source: String,
    /// Packed code, hex.
    code: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GalleryBefore {
    /// The manifest's entry for the gallery.
    file: FileEntry,
    items: u64,
    codes_crc32c: u32,
    ids_crc32c: u32,
}

/// What the inspection of a bundle with a journal found.
#[derive(Debug)]
pub(crate) enum Pending {
    /// The manifest already records the enrolment; only the journal is left to remove.
    Committed { ids: Vec<u64> },
    /// The manifest is the one from before; the gallery, and the labels after it, may already
    /// hold the items.
    Incomplete {
        journal: Journal,
        gallery_done: bool,
        labels_done: bool,
    },
}

impl Pending {
    /// Ids of the enrolment.
    pub(crate) fn ids(&self) -> Vec<u64> {
        match self {
            Pending::Committed { ids } => ids.clone(),
            Pending::Incomplete { journal, .. } => journal.items.iter().map(|i| i.id).collect(),
        }
    }

    /// Label rows of items the gallery may hold but `labels.tsv` does not yet.
    pub(crate) fn unwritten_labels(&self) -> Vec<LabelRow> {
        match self {
            Pending::Incomplete {
                journal,
                labels_done: false,
                ..
            } => journal.rows(),
            _ => Vec::new(),
        }
    }

    /// One line for people.
    pub(crate) fn describe(&self) -> String {
        let ids = self.ids();
        match self {
            Pending::Committed { .. } => {
                format!("the enrolment of items {ids:?} is complete; its journal is left to remove")
            }
            Pending::Incomplete {
                gallery_done,
                labels_done,
                ..
            } => format!(
                "an interrupted enrolment of items {ids:?} is pending (gallery {}, labels {}, manifest not yet): the next open completes it",
                if *gallery_done { "written" } else { "not yet" },
                if *labels_done { "written" } else { "not yet" },
            ),
        }
    }
}

impl Journal {
    fn path(dir: &Path) -> PathBuf {
        dir.join(JOURNAL_FILE)
    }

    /// The journal of `dir`, if there is one.
    fn read(dir: &Path) -> Result<Option<Journal>> {
        let path = Self::path(dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ApplianceError::io(path, e)),
        };
        let journal: Journal = serde_json::from_slice(&bytes)
            .map_err(|e| ApplianceError::journal(&path, format!("unreadable: {e}")))?;
        if journal.version != JOURNAL_VERSION {
            return Err(ApplianceError::journal(
                &path,
                format!(
                    "journal version {}, this build reads {JOURNAL_VERSION}",
                    journal.version
                ),
            ));
        }
        if journal.items.is_empty() {
            return Err(ApplianceError::journal(&path, "no items"));
        }
        Ok(Some(journal))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("a journal always serialises");
        bundle::write_atomic(Self::path(dir), &text)?;
        Ok(())
    }

    fn rows(&self) -> Vec<LabelRow> {
        self.items
            .iter()
            .map(|i| LabelRow {
                id: i.id,
                sku: i.sku.clone(),
                source: i.source.clone(),
            })
            .collect()
    }

    /// The codes back to back and the ids; every code must have `code_bytes` bytes.
    fn codes(&self, dir: &Path, code_bytes: usize) -> Result<(Vec<u8>, Vec<u64>)> {
        let mut codes = Vec::with_capacity(self.items.len() * code_bytes);
        for item in &self.items {
            let code = bundle::from_hex(&item.code)
                .map_err(|e| ApplianceError::journal(Self::path(dir), e.to_string()))?;
            if code.len() != code_bytes {
                return Err(ApplianceError::journal(
                    Self::path(dir),
                    format!(
                        "item {}: a code of {} bytes, the gallery's have {code_bytes}",
                        item.id,
                        code.len()
                    ),
                ));
            }
            codes.extend_from_slice(&code);
        }
        Ok((codes, self.items.iter().map(|i| i.id).collect()))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    bundle::to_hex(&Sha256::digest(bytes))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ApplianceError::io(dir, e))
}

fn remove_journal(dir: &Path) -> Result<()> {
    let path = Journal::path(dir);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApplianceError::io(path, e)),
    }
    sync_dir(dir)
}

/// Records the gallery's and the labels' hashes in the manifest and writes it atomically.
fn commit_manifest(dir: &Path, manifest: &mut Manifest) -> Result<()> {
    manifest.record_file(dir, GALLERY_FILE)?;
    manifest.record_file(dir, LABELS_FILE)?;
    manifest.write(dir)?;
    Ok(())
}

/// Reads the manifest of `dir` and verifies the bundle without writing anything, taking a
/// pending enrolment into account (see the module documentation). Returns the manifest as on
/// disk and what is pending.
pub(crate) fn inspect(dir: &Path) -> Result<(Manifest, Option<Pending>)> {
    let manifest = Manifest::read(dir)?;
    let Some(journal) = Journal::read(dir)? else {
        manifest.verify(dir)?;
        return Ok((manifest, None));
    };
    let old_manifest = manifest.files.get(GALLERY_FILE) == Some(&journal.gallery_before.file)
        && manifest.files.get(LABELS_FILE) == Some(&journal.labels_before);
    if !old_manifest {
        manifest.verify(dir)?;
        let ids = journal.items.iter().map(|i| i.id).collect();
        return Ok((manifest, Some(Pending::Committed { ids })));
    }
    // Everything but the two files the enrolment writes verifies as usual.
    let mut rest = manifest.clone();
    rest.files.remove(GALLERY_FILE);
    rest.files.remove(LABELS_FILE);
    rest.verify(dir)?;
    let gallery_done = gallery_state(dir, &journal)?;
    let labels_done = labels_state(dir, &journal)?;
    if labels_done && !gallery_done {
        return Err(ApplianceError::journal(
            dir.join(LABELS_FILE),
            format!(
                "holds the rows of the interrupted enrolment ({JOURNAL_FILE}) but {GALLERY_FILE} does not hold its codes"
            ),
        ));
    }
    Ok((
        manifest,
        Some(Pending::Incomplete {
            journal,
            gallery_done,
            labels_done,
        }),
    ))
}

/// Whether the gallery holds the journalled items (`false`: it holds the state before them).
fn gallery_state(dir: &Path, journal: &Journal) -> Result<bool> {
    let path = dir.join(GALLERY_FILE);
    let gallery = Gallery::open(&path).map_err(|error| ApplianceError::Gallery {
        path: path.clone(),
        error,
    })?;
    let h = gallery.header();
    let before = &journal.gallery_before;
    if h.item_count == before.items
        && h.codes_crc32c == before.codes_crc32c
        && h.ids_crc32c == before.ids_crc32c
    {
        return Ok(false);
    }
    let (codes, ids) = journal.codes(dir, h.code_bytes())?;
    let mut rows = vec![0u8; ids.len() * h.row_bytes()];
    for (row, code) in rows
        .chunks_exact_mut(h.row_bytes())
        .zip(codes.chunks_exact(h.code_bytes()))
    {
        row[..code.len()].copy_from_slice(code);
    }
    let ids_le: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    let first = before.items as usize;
    let after = h.item_count == before.items + ids.len() as u64
        && h.codes_crc32c == crc32c::crc32c_append(before.codes_crc32c, &rows)
        && h.ids_crc32c == crc32c::crc32c_append(before.ids_crc32c, &ids_le)
        && ids
            .iter()
            .zip(codes.chunks_exact(h.code_bytes()))
            .enumerate()
            .all(|(i, (&id, code))| gallery.id(first + i) == id && gallery.code(first + i) == code);
    if after {
        return Ok(true);
    }
    Err(ApplianceError::journal(
        path,
        format!(
            "holds {} items, neither the {} before the interrupted enrolment of {JOURNAL_FILE} nor exactly those and its {} items",
            h.item_count,
            before.items,
            ids.len()
        ),
    ))
}

/// Whether `labels.tsv` holds the journalled rows (`false`: it holds the bytes before them).
fn labels_state(dir: &Path, journal: &Journal) -> Result<bool> {
    let path = dir.join(LABELS_FILE);
    let bytes = fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BundleError::MissingFile { path: path.clone() }.into(),
        _ => ApplianceError::io(&path, e),
    })?;
    let before = &journal.labels_before;
    let matches = |b: &[u8]| b.len() as u64 == before.bytes && sha256_hex(b) == before.sha256;
    if matches(&bytes) {
        return Ok(false);
    }
    let suffix = journal.labels_suffix.as_bytes();
    if bytes.ends_with(suffix) && matches(&bytes[..bytes.len() - suffix.len()]) {
        return Ok(true);
    }
    Err(ApplianceError::journal(
        path,
        format!(
            "neither the labels before the interrupted enrolment of {JOURNAL_FILE} (sha256 {}) nor those and its rows",
            before.sha256
        ),
    ))
}

/// Completes an enrolment that a crash interrupted, if the bundle holds one; does nothing
/// otherwise. Refuses (naming the file) when the files are not in a state an interrupted
/// enrolment leaves.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    if !Journal::path(dir).exists() {
        return Ok(());
    }
    let (mut manifest, pending) = inspect(dir)?;
    let Some(pending) = pending else {
        return Ok(());
    };
    tracing::warn!(bundle = %dir.display(), "{}", pending.describe());
    if let Pending::Incomplete {
        journal,
        gallery_done,
        labels_done,
    } = pending
    {
        if !gallery_done {
            let path = dir.join(GALLERY_FILE);
            let gallery_err = |error| ApplianceError::Gallery {
                path: path.clone(),
                error,
            };
            let mut gallery = Gallery::open(&path).map_err(gallery_err)?;
            let (codes, ids) = journal.codes(dir, gallery.code_bytes())?;
            gallery.append(&codes, &ids).map_err(gallery_err)?;
        }
        if !labels_done {
            let path = dir.join(LABELS_FILE);
            let mut bytes = fs::read(&path).map_err(|e| ApplianceError::io(&path, e))?;
            bytes.extend_from_slice(journal.labels_suffix.as_bytes());
            bundle::write_atomic(&path, &bytes)?;
        }
        commit_manifest(dir, &mut manifest)?;
    }
    remove_journal(dir)?;
    tracing::info!(bundle = %dir.display(), "the interrupted enrolment is complete");
    Ok(())
}

impl Appliance {
    /// Enrols one photograph as a new item named `sku` (source "enrolled on the device");
    /// returns its id. See [`Appliance::enroll_items`].
    pub fn enroll(&mut self, sku: &str, image: &DynamicImage) -> Result<u64> {
        let ids = self.enroll_items(&[EnrolItem {
            sku,
            source: "enrolled on the device",
            image,
        }])?;
        Ok(ids[0])
    }

    /// Enrols photographs as new items, in one journalled step (see the module documentation):
    /// each is embedded, given the id after the largest one labelled so far, appended to the
    /// gallery and to `labels.tsv`, and the manifest's hashes are updated, so the bundle still
    /// verifies and the next lookup finds them. When this returns `Ok` the items are durable.
    /// When it fails after the gallery append, the lookups already see the items and the next
    /// open (or enrolment) completes the files.
    pub fn enroll_items(&mut self, items: &[EnrolItem<'_>]) -> Result<Vec<u64>> {
        self.enroll_until(items, None)
    }

    /// [`Appliance::enroll_items`] stopped after `step`, as a power cut would stop it.
    #[doc(hidden)]
    pub fn enroll_interrupted(
        &mut self,
        items: &[EnrolItem<'_>],
        step: EnrolStep,
    ) -> Result<Vec<u64>> {
        self.enroll_until(items, Some(step))
    }

    fn enroll_until(
        &mut self,
        items: &[EnrolItem<'_>],
        stop: Option<EnrolStep>,
    ) -> Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if Journal::path(&self.dir).exists() {
            // An earlier enrolment of this process failed part way: complete it first.
            recover(&self.dir)?;
            self.reload()?;
        }
        let first = match self.max_id {
            None => 0,
            Some(max) => max.checked_add(1).ok_or_else(|| {
                ApplianceError::Request(format!("no id left after {max} for a new item"))
            })?,
        };
        let mut rows = Vec::with_capacity(items.len());
        let mut check = Labels::new();
        for (i, item) in items.iter().enumerate() {
            let row = LabelRow {
                id: first + i as u64,
                sku: item.sku.to_owned(),
                source: item.source.to_owned(),
            };
            check.push(row.clone())?;
            rows.push(row);
        }
        let code_bytes = self.code.len();
        let mut codes = Vec::with_capacity(items.len() * code_bytes);
        for item in items {
            self.embed_image(item.image)?;
            codes.extend_from_slice(&self.code);
        }
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();

        // The labels on disk must be the ones the manifest records: they are what is extended.
        let labels_path = self.dir.join(LABELS_FILE);
        let labels_before =
            fs::read(&labels_path).map_err(|e| ApplianceError::io(&labels_path, e))?;
        let labels_entry = self.manifest.files[LABELS_FILE].clone();
        let actual = sha256_hex(&labels_before);
        if actual != labels_entry.sha256 {
            return Err(BundleError::HashMismatch {
                path: labels_path,
                expected: labels_entry.sha256,
                actual,
            }
            .into());
        }
        let mut suffix = String::new();
        if !labels_before.ends_with(b"\n") {
            suffix.push('\n');
        }
        for r in &rows {
            suffix.push_str(&format!("{}\t{}\t{}\n", r.id, r.sku, r.source));
        }
        let h = self.gallery.header();
        let journal = Journal {
            version: JOURNAL_VERSION,
            items: rows
                .iter()
                .zip(codes.chunks_exact(code_bytes))
                .map(|(r, code)| JournalItem {
                    id: r.id,
                    sku: r.sku.clone(),
                    source: r.source.clone(),
                    code: bundle::to_hex(code),
                })
                .collect(),
            gallery_before: GalleryBefore {
                file: self.manifest.files[GALLERY_FILE].clone(),
                items: h.item_count,
                codes_crc32c: h.codes_crc32c,
                ids_crc32c: h.ids_crc32c,
            },
            labels_before: labels_entry,
            labels_suffix: suffix,
        };

        journal.write(&self.dir)?;
        if stop == Some(EnrolStep::Journal) {
            return Ok(ids);
        }
        let gallery_path = self.gallery.path().to_path_buf();
        let items_before = self.gallery.len();
        if let Err(error) = self.gallery.append(&codes, &ids) {
            // A full disk, say. If the file still holds what it held, nothing was committed: the
            // enrolment is abandoned (journal removed) and the bundle stays exactly as it was.
            // Otherwise the append got past its commit point and the journal completes it.
            if Gallery::open(&gallery_path).is_ok_and(|g| g.len() == items_before) {
                let _ = remove_journal(&self.dir);
            }
            return Err(ApplianceError::Gallery {
                path: gallery_path,
                error,
            });
        }
        // Committed: lookups see the items from now on.
        for row in &rows {
            self.skus.push(&row.sku)?;
        }
        self.max_id = ids.last().copied().or(self.max_id);
        if stop == Some(EnrolStep::Gallery) {
            return Ok(ids);
        }
        let mut bytes = labels_before;
        bytes.extend_from_slice(journal.labels_suffix.as_bytes());
        bundle::write_atomic(&labels_path, &bytes)?;
        if stop == Some(EnrolStep::Labels) {
            return Ok(ids);
        }
        commit_manifest(&self.dir, &mut self.manifest)?;
        if stop == Some(EnrolStep::Manifest) {
            return Ok(ids);
        }
        remove_journal(&self.dir)?;
        tracing::info!(ids = ?ids, items = self.gallery.len(), "enrolled");
        Ok(ids)
    }

    /// Reads the manifest, the gallery and the labels again (after a recovery).
    fn reload(&mut self) -> Result<()> {
        let manifest = Manifest::open(&self.dir)?;
        parts::require_listed(&self.dir, &manifest)?;
        if manifest.model != self.manifest.model
            || manifest.files[&manifest.model.file]
                != self.manifest.files[&self.manifest.model.file]
        {
            return Err(ApplianceError::Request(format!(
                "{}: the bundle's model changed under the running appliance; open it again",
                Manifest::path_in(&self.dir).display()
            )));
        }
        let model_hash = parts::model_hash(&self.dir, &manifest)?;
        let gallery = parts::open_gallery(&self.dir, &manifest, &model_hash)?;
        let labels = skus::read(&self.dir, &gallery, &[])?;
        self.manifest = manifest;
        self.gallery = gallery;
        self.skus = labels.skus;
        self.max_id = labels.max_id;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_through_json() {
        let j = Journal {
            version: JOURNAL_VERSION,
            items: vec![JournalItem {
                id: 7,
                sku: "A".into(),
                source: "x.png".into(),
                code: "00ff".into(),
            }],
            gallery_before: GalleryBefore {
                file: FileEntry {
                    sha256: "0".repeat(64),
                    bytes: 4096,
                },
                items: 3,
                codes_crc32c: 1,
                ids_crc32c: 2,
            },
            labels_before: FileEntry {
                sha256: "1".repeat(64),
                bytes: 20,
            },
            labels_suffix: "7\tA\tx.png\n".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        j.write(dir.path()).unwrap();
        let back = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(back.rows(), j.rows());
        assert_eq!(back.labels_suffix, j.labels_suffix);
        let (codes, ids) = back.codes(dir.path(), 2).unwrap();
        assert_eq!((codes, ids), (vec![0, 255], vec![7]));
        let err = back.codes(dir.path(), 4).unwrap_err().to_string();
        assert!(
            err.contains(JOURNAL_FILE) && err.contains("2 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_garbled_journal_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JOURNAL_FILE), b"{not json").unwrap();
        let err = Journal::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(JOURNAL_FILE) && err.contains("unreadable"),
            "{err}"
        );
    }
}
