//! The on-disk layout of a gallery file and its complete validation.
//!
//! ```text
//! offset 0     header copy 0  (256 bytes: postcard-encoded `Header`, then its CRC-32C, zero fill)
//! offset 256   header copy 1  (same layout; the copy with the higher generation is current)
//! offset 4096  code matrix    (`capacity` rows of `row_bytes`, row-major, 64-byte aligned)
//! ids_offset   item ids       (`capacity` little-endian u64)
//! ```
//!
//! Bit order: bit `i` of a code is bit `i % 8` (least significant first) of byte `i / 8`.
//! Each row is padded with zero bytes to a whole number of 64-bit words. Only the first
//! `item_count` rows and ids are committed; the rest is reserved room for appends.

use serde::{Deserialize, Serialize};

use crate::error::{GalleryError, Result};

/// The first bytes of every gallery file (and of each header copy).
pub const MAGIC: [u8; 8] = *b"LKUPGAL\n";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// Size of one header copy.
pub const HEADER_SLOT_BYTES: usize = 256;
/// Two copies: an update rewrites one while the other stays intact.
pub const HEADER_SLOTS: usize = 2;
/// Where the code matrix starts in files this build writes (page-aligned).
pub const CODES_OFFSET: u64 = 4096;
/// Required alignment of the code matrix.
pub const CODES_ALIGN: u64 = 64;
/// Smallest and largest supported code widths, in bits.
pub const MIN_CODE_BITS: u32 = 64;
pub const MAX_CODE_BITS: u32 = 4096;

/// The header, postcard-encoded at the start of each header copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u16,
    /// Incremented by every commit; the copy with the higher value is current.
    pub generation: u64,
    pub code_bits: u32,
    /// Committed items.
    pub item_count: u64,
    /// Rows reserved in the file (item_count <= capacity).
    pub capacity: u64,
    pub codes_offset: u64,
    pub ids_offset: u64,
    /// Hash of the model that produced the codes (sha256 of model.onnx by convention).
    pub model_hash: [u8; 32],
    /// CRC-32C of the committed rows of the code matrix (item_count * row_bytes bytes).
    pub codes_crc32c: u32,
    /// CRC-32C of the committed ids (item_count * 8 bytes).
    pub ids_crc32c: u32,
}

/// The part of the header that every version keeps in place, read before the rest.
#[derive(Deserialize)]
struct Preamble {
    magic: [u8; 8],
    version: u16,
}

/// What was found in one header copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    Valid(Header),
    Foreign,
    WrongVersion(u16),
    Corrupt(String),
}

impl SlotState {
    pub fn describe(&self) -> String {
        match self {
            SlotState::Valid(h) => format!("valid (generation {})", h.generation),
            SlotState::Foreign => "no gallery magic".into(),
            SlotState::WrongVersion(v) => format!("format version {v}"),
            SlotState::Corrupt(why) => format!("corrupt: {why}"),
        }
    }
}

/// Checks a code width and returns (bytes per code, 64-bit words per padded row).
pub fn code_geometry(code_bits: u32) -> Result<(usize, usize)> {
    if !(MIN_CODE_BITS..=MAX_CODE_BITS).contains(&code_bits) || !code_bits.is_multiple_of(8) {
        return Err(GalleryError::BadCodeBits(code_bits));
    }
    Ok(((code_bits / 8) as usize, code_bits.div_ceil(64) as usize))
}

impl Header {
    pub fn code_bytes(&self) -> usize {
        (self.code_bits / 8) as usize
    }
    pub fn row_words(&self) -> usize {
        self.code_bits.div_ceil(64) as usize
    }
    pub fn row_bytes(&self) -> usize {
        self.row_words() * 8
    }

    /// The header copy as written to disk.
    pub fn encode_slot(&self) -> [u8; HEADER_SLOT_BYTES] {
        let mut slot = [0u8; HEADER_SLOT_BYTES];
        let used = postcard::to_slice(self, &mut slot[..HEADER_SLOT_BYTES - 4])
            .expect("a header always fits its slot")
            .len();
        let crc = crc32c::crc32c(&slot[..used]);
        slot[used..used + 4].copy_from_slice(&crc.to_le_bytes());
        slot
    }

    pub fn decode_slot(slot: &[u8]) -> SlotState {
        if slot.len() < MAGIC.len() || slot[..MAGIC.len()] != MAGIC {
            return SlotState::Foreign;
        }
        match postcard::take_from_bytes::<Preamble>(slot) {
            Ok((pre, _)) if pre.magic == MAGIC && pre.version != VERSION => {
                return SlotState::WrongVersion(pre.version);
            }
            Ok(_) => {}
            Err(e) => return SlotState::Corrupt(format!("undecodable ({e})")),
        }
        let (header, rest) = match postcard::take_from_bytes::<Header>(slot) {
            Ok(v) => v,
            Err(e) => return SlotState::Corrupt(format!("undecodable ({e})")),
        };
        let used = slot.len() - rest.len();
        let Some(stored) = rest.get(..4) else {
            return SlotState::Corrupt("no room for its checksum".into());
        };
        let stored = u32::from_le_bytes(stored.try_into().expect("4 bytes"));
        let actual = crc32c::crc32c(&slot[..used]);
        if stored != actual {
            return SlotState::Corrupt(format!("checksum {actual:08x}, stored {stored:08x}"));
        }
        SlotState::Valid(header)
    }
}

/// A file that passed every check.
#[derive(Clone, Debug)]
pub struct Validated {
    pub header: Header,
    /// Which copy is current.
    pub current_slot: usize,
    /// What each header copy held: a damaged copy beside a valid one is repaired by the next commit.
    pub slots: [SlotState; HEADER_SLOTS],
}

fn overflow(what: &str) -> GalleryError {
    GalleryError::HeaderInvalid(format!("{what} overflows"))
}

/// Validates the whole file: both header copies, the geometry, both section checksums and the
/// zero padding of every committed row. Nothing else is trusted before this passes.
pub fn validate(bytes: &[u8]) -> Result<Validated> {
    let header_region = HEADER_SLOT_BYTES * HEADER_SLOTS;
    if bytes.len() < header_region {
        let prefix = bytes.len().min(MAGIC.len());
        if bytes[..prefix] != MAGIC[..prefix] || bytes.is_empty() {
            return Err(GalleryError::Foreign);
        }
        return Err(GalleryError::Truncated {
            needed: header_region as u64,
            actual: bytes.len() as u64,
        });
    }
    let slots: [SlotState; HEADER_SLOTS] = std::array::from_fn(|i| {
        Header::decode_slot(&bytes[i * HEADER_SLOT_BYTES..(i + 1) * HEADER_SLOT_BYTES])
    });
    let current = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            SlotState::Valid(h) => Some((i, h.clone())),
            _ => None,
        })
        .max_by_key(|(i, h)| (h.generation, std::cmp::Reverse(*i)));
    let Some((current_slot, header)) = current else {
        if slots.iter().all(|s| *s == SlotState::Foreign) {
            return Err(GalleryError::Foreign);
        }
        if let Some(found) = slots.iter().find_map(|s| match s {
            SlotState::WrongVersion(v) => Some(*v),
            _ => None,
        }) {
            return Err(GalleryError::UnsupportedVersion {
                found,
                supported: VERSION,
            });
        }
        let why: Vec<String> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| format!("copy {i}: {}", s.describe()))
            .collect();
        return Err(GalleryError::HeaderCorrupt(why.join("; ")));
    };
    check_geometry(&header, bytes.len() as u64)?;
    check_sections(&header, bytes)?;
    Ok(Validated {
        header,
        current_slot,
        slots,
    })
}

fn check_geometry(h: &Header, file_len: u64) -> Result<()> {
    code_geometry(h.code_bits)
        .map_err(|_| GalleryError::HeaderInvalid(format!("code width {} bits", h.code_bits)))?;
    if h.item_count > h.capacity {
        return Err(GalleryError::HeaderInvalid(format!(
            "item count {} exceeds capacity {}",
            h.item_count, h.capacity
        )));
    }
    if !h.codes_offset.is_multiple_of(CODES_ALIGN) {
        return Err(GalleryError::Misaligned {
            section: "codes",
            offset: h.codes_offset,
            required: CODES_ALIGN,
        });
    }
    if !h.ids_offset.is_multiple_of(8) {
        return Err(GalleryError::Misaligned {
            section: "ids",
            offset: h.ids_offset,
            required: 8,
        });
    }
    if h.codes_offset < (HEADER_SLOT_BYTES * HEADER_SLOTS) as u64 {
        return Err(GalleryError::HeaderInvalid(format!(
            "codes offset {} overlaps the header",
            h.codes_offset
        )));
    }
    let codes_end = h
        .capacity
        .checked_mul(h.row_bytes() as u64)
        .and_then(|n| n.checked_add(h.codes_offset))
        .ok_or_else(|| overflow("code matrix size"))?;
    if h.ids_offset < codes_end {
        return Err(GalleryError::HeaderInvalid(format!(
            "ids offset {} overlaps the code matrix (ends at {codes_end})",
            h.ids_offset
        )));
    }
    let ids_end = h
        .capacity
        .checked_mul(8)
        .and_then(|n| n.checked_add(h.ids_offset))
        .ok_or_else(|| overflow("id section size"))?;
    if file_len < ids_end {
        return Err(GalleryError::Truncated {
            needed: ids_end,
            actual: file_len,
        });
    }
    if usize::try_from(ids_end).is_err() {
        return Err(GalleryError::TooLarge(format!(
            "{ids_end} bytes do not fit this machine's address space"
        )));
    }
    Ok(())
}

/// Byte ranges of the committed rows and ids (geometry already checked).
pub(crate) fn committed_ranges(h: &Header) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let codes = h.codes_offset as usize;
    let ids = h.ids_offset as usize;
    let n = h.item_count as usize;
    (codes..codes + n * h.row_bytes(), ids..ids + n * 8)
}

fn check_sections(h: &Header, bytes: &[u8]) -> Result<()> {
    let (codes, ids) = committed_ranges(h);
    let actual = crc32c::crc32c(&bytes[codes.clone()]);
    if actual != h.codes_crc32c {
        return Err(GalleryError::ChecksumMismatch {
            section: "codes",
            expected: h.codes_crc32c,
            actual,
        });
    }
    let actual = crc32c::crc32c(&bytes[ids]);
    if actual != h.ids_crc32c {
        return Err(GalleryError::ChecksumMismatch {
            section: "ids",
            expected: h.ids_crc32c,
            actual,
        });
    }
    // A padded row must be zero beyond the code, or distances would count the padding.
    let (code_bytes, row_bytes) = (h.code_bytes(), h.row_bytes());
    if code_bytes != row_bytes {
        for (row, r) in bytes[codes].chunks_exact(row_bytes).enumerate() {
            if r[code_bytes..].iter().any(|&b| b != 0) {
                return Err(GalleryError::DirtyPadding {
                    row: row as u64,
                    code_bits: h.code_bits,
                });
            }
        }
    }
    Ok(())
}
