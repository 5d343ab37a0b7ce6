//! Creating, opening and appending to gallery files.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Serialize;

use crate::error::{GalleryError, IoContext, Result};
use crate::format::{
    self, CODES_OFFSET, HEADER_SLOT_BYTES, HEADER_SLOTS, Header, MAGIC, SlotState, VERSION,
};

/// An open, validated gallery file. Codes stay in the memory-mapped file; nothing is copied.
#[derive(Debug)]
pub struct Gallery {
    path: PathBuf,
    map: Mmap,
    header: Header,
    current_slot: usize,
    slots: [SlotState; HEADER_SLOTS],
}

/// What `lookupd gallery info` prints.
#[derive(Clone, Debug, Serialize)]
pub struct GalleryInfo {
    pub path: PathBuf,
    pub format_version: u16,
    pub generation: u64,
    pub code_bits: u32,
    pub items: u64,
    pub capacity: u64,
    pub file_bytes: u64,
    pub model_hash: String,
    pub codes_crc32c: String,
    pub ids_crc32c: String,
    /// Each header copy's state; a damaged copy beside a valid one is rewritten by the next append.
    pub header_copies: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()))
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn check_batch(header: &Header, codes: &[u8], ids: &[u64]) -> Result<()> {
    let expected = ids.len() * header.code_bytes();
    if codes.len() != expected {
        return Err(GalleryError::BadLength {
            what: "codes for the given ids",
            expected,
            actual: codes.len(),
        });
    }
    Ok(())
}

/// Writes a complete gallery file at a temporary path and renames it over `path`, so `path`
/// holds either its old content or the new file, never a partial one.
fn write_whole_file(
    path: &Path,
    mut header: Header,
    old_rows: &[u8],
    old_ids: &[u8],
    codes: &[u8],
    ids: &[u64],
) -> Result<()> {
    let (row_bytes, code_bytes) = (header.row_bytes(), header.code_bytes());
    let tmp = temp_path(path);
    let written = (|| -> Result<()> {
        let file = File::create(&tmp).at(&tmp)?;
        let ids_end = header.ids_offset + header.capacity * 8;
        file.set_len(ids_end).at(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.seek(SeekFrom::Start(header.codes_offset)).at(&tmp)?;
        out.write_all(old_rows).at(&tmp)?;
        let mut crc = crc32c::crc32c(old_rows);
        let mut row = vec![0u8; row_bytes];
        for code in codes.chunks_exact(code_bytes) {
            row[..code_bytes].copy_from_slice(code);
            out.write_all(&row).at(&tmp)?;
            crc = crc32c::crc32c_append(crc, &row);
        }
        header.codes_crc32c = crc;
        out.seek(SeekFrom::Start(header.ids_offset)).at(&tmp)?;
        out.write_all(old_ids).at(&tmp)?;
        let mut crc = crc32c::crc32c(old_ids);
        for id in ids {
            let le = id.to_le_bytes();
            out.write_all(&le).at(&tmp)?;
            crc = crc32c::crc32c_append(crc, &le);
        }
        header.ids_crc32c = crc;
        let slot = header.encode_slot();
        for i in 0..HEADER_SLOTS {
            out.seek(SeekFrom::Start((i * HEADER_SLOT_BYTES) as u64))
                .at(&tmp)?;
            out.write_all(&slot).at(&tmp)?;
        }
        out.flush().at(&tmp)?;
        drop(out);
        file.sync_all().at(&tmp)?;
        Ok(())
    })();
    if let Err(e) = written {
        // A full disk, say: leave nothing behind but the intact old file.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).at(path)?;
    sync_parent_dir(path)
}

impl Gallery {
    /// Creates (or atomically replaces) a gallery holding `codes` (`ids.len()` codes of
    /// `code_bits / 8` bytes each, back to back, in the documented bit order) with their ids.
    pub fn create(
        path: impl AsRef<Path>,
        code_bits: u32,
        model_hash: [u8; 32],
        codes: &[u8],
        ids: &[u64],
    ) -> Result<Gallery> {
        let path = path.as_ref();
        format::code_geometry(code_bits)?;
        let capacity = ids.len() as u64;
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            generation: 1,
            code_bits,
            item_count: capacity,
            capacity,
            codes_offset: CODES_OFFSET,
            ids_offset: 0,
            model_hash,
            codes_crc32c: 0,
            ids_crc32c: 0,
        };
        let header = Header {
            ids_offset: CODES_OFFSET + capacity * header.row_bytes() as u64,
            ..header
        };
        check_batch(&header, codes, ids)?;
        write_whole_file(path, header, &[], &[], codes, ids)?;
        Gallery::open(path)
    }

    /// Opens and validates the whole file (headers, geometry, checksums, padding).
    pub fn open(path: impl AsRef<Path>) -> Result<Gallery> {
        let path = path.as_ref();
        let file = File::open(path).at(path)?;
        // SAFETY: the mapping is read-only. The only writer of a gallery file is `append`, which
        // writes rows beyond the committed count before publishing them, and replaces the file
        // by rename (the old mapping keeps the old inode) when it must grow.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let checked = format::validate(&map)?;
        Ok(Gallery {
            path: path.to_path_buf(),
            map,
            header: checked.header,
            current_slot: checked.current_slot,
            slots: checked.slots,
        })
    }

    /// Appends items. When this returns Ok, they are durable: a crash at any later instant keeps
    /// them, and a crash during the call leaves the file as it was before the call or after it.
    ///
    /// Order of writes: new rows and ids go into reserved room past the committed count and are
    /// synced; then one header copy is rewritten with the new count and checksums and synced (the
    /// commit point); then the other copy. A torn header write leaves the other copy intact.
    /// Without room, the whole file is rewritten beside it and renamed over it.
    pub fn append(&mut self, codes: &[u8], ids: &[u64]) -> Result<()> {
        check_batch(&self.header, codes, ids)?;
        if ids.is_empty() {
            return Ok(());
        }
        let h = &self.header;
        let needed = h.item_count + ids.len() as u64;
        if needed > h.capacity {
            return self.grow_with(codes, ids, needed);
        }
        let path = &self.path;
        let file = OpenOptions::new().write(true).open(path).at(path)?;
        let (row_bytes, code_bytes) = (h.row_bytes(), h.code_bytes());
        let mut rows = vec![0u8; ids.len() * row_bytes];
        for (row, code) in rows
            .chunks_exact_mut(row_bytes)
            .zip(codes.chunks_exact(code_bytes))
        {
            row[..code_bytes].copy_from_slice(code);
        }
        let ids_le: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        let n = h.item_count;
        file.write_all_at(&rows, h.codes_offset + n * row_bytes as u64)
            .at(path)?;
        file.write_all_at(&ids_le, h.ids_offset + n * 8).at(path)?;
        file.sync_data().at(path)?;
        let header = Header {
            generation: h.generation + 1,
            item_count: needed,
            codes_crc32c: crc32c::crc32c_append(h.codes_crc32c, &rows),
            ids_crc32c: crc32c::crc32c_append(h.ids_crc32c, &ids_le),
            ..h.clone()
        };
        let slot = header.encode_slot();
        let first = 1 - self.current_slot;
        for i in [first, self.current_slot] {
            file.write_all_at(&slot, (i * HEADER_SLOT_BYTES) as u64)
                .at(path)?;
            file.sync_data().at(path)?;
        }
        // The mapping is shared and the file did not change length: it already shows the rows.
        self.header = header.clone();
        // Both copies are equal now; validation picks copy 0 on a tie.
        self.current_slot = 0;
        self.slots = [SlotState::Valid(header.clone()), SlotState::Valid(header)];
        Ok(())
    }

    fn grow_with(&mut self, codes: &[u8], ids: &[u64], needed: u64) -> Result<()> {
        let h = &self.header;
        let capacity = needed.max(h.capacity + h.capacity / 2).max(64);
        let header = Header {
            generation: h.generation + 1,
            item_count: needed,
            capacity,
            codes_offset: CODES_OFFSET,
            ids_offset: CODES_OFFSET + capacity * h.row_bytes() as u64,
            ..h.clone()
        };
        let (rows, old_ids) = format::committed_ranges(h);
        write_whole_file(
            &self.path,
            header,
            &self.map[rows],
            &self.map[old_ids],
            codes,
            ids,
        )?;
        *self = Gallery::open(&self.path)?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// Committed items.
    pub fn len(&self) -> usize {
        self.header.item_count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn code_bits(&self) -> u32 {
        self.header.code_bits
    }
    /// Bytes of one code (without row padding).
    pub fn code_bytes(&self) -> usize {
        self.header.code_bytes()
    }
    pub fn model_hash(&self) -> &[u8; 32] {
        &self.header.model_hash
    }

    /// The code of row `row` (panics if `row >= len()`, like slice indexing).
    pub fn code(&self, row: usize) -> &[u8] {
        assert!(row < self.len(), "row {row} out of range");
        let start = self.header.codes_offset as usize + row * self.header.row_bytes();
        &self.map[start..start + self.code_bytes()]
    }

    /// The item id of row `row` (panics if `row >= len()`, like slice indexing).
    pub fn id(&self, row: usize) -> u64 {
        assert!(row < self.len(), "row {row} out of range");
        let start = self.header.ids_offset as usize + row * 8;
        u64::from_le_bytes(self.map[start..start + 8].try_into().expect("8 bytes"))
    }

    /// The committed rows as 64-bit words, `row_words()` per row, straight from the mapping.
    pub(crate) fn row_words_slice(&self) -> &[u64] {
        let (rows, _) = format::committed_ranges(&self.header);
        // The mapping is page-aligned and the code matrix 64-byte aligned (validated).
        bytemuck::cast_slice(&self.map[rows])
    }

    pub(crate) fn ids_bytes(&self) -> &[u8] {
        let (_, ids) = format::committed_ranges(&self.header);
        &self.map[ids]
    }

    pub fn info(&self) -> GalleryInfo {
        let h = &self.header;
        GalleryInfo {
            path: self.path.clone(),
            format_version: h.version,
            generation: h.generation,
            code_bits: h.code_bits,
            items: h.item_count,
            capacity: h.capacity,
            file_bytes: self.map.len() as u64,
            model_hash: hex(&h.model_hash),
            codes_crc32c: format!("{:08x}", h.codes_crc32c),
            ids_crc32c: format!("{:08x}", h.ids_crc32c),
            header_copies: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let current = if i == self.current_slot {
                        ", current"
                    } else {
                        ""
                    };
                    format!("{}{current}", s.describe())
                })
                .collect(),
        }
    }
}
