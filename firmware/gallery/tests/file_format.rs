//! The gallery file: round trips, appends, and every kind of bad file refused by name.

use gallery::format::{CODES_OFFSET, HEADER_SLOT_BYTES, VERSION};
use gallery::{Gallery, GalleryError, Header, SlotState};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::{Path, PathBuf};

fn random_codes(rng: &mut StdRng, n: usize, bits: u32) -> Vec<u8> {
    (0..n * bits as usize / 8).map(|_| rng.random()).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    codes: Vec<u8>,
    ids: Vec<u64>,
}

fn fixture(n: usize, bits: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.gal");
    let mut rng = StdRng::seed_from_u64(bits as u64 * 31 + n as u64);
    let codes = random_codes(&mut rng, n, bits);
    let ids: Vec<u64> = (0..n as u64).map(|i| i * 7 + 1000).collect();
    Gallery::create(&path, bits, [7u8; 32], &codes, &ids).unwrap();
    Fixture {
        _dir: dir,
        path,
        codes,
        ids,
    }
}

fn assert_contents(g: &Gallery, codes: &[u8], ids: &[u64]) {
    assert_eq!(g.len(), ids.len());
    let cb = g.code_bytes();
    for (row, id) in ids.iter().enumerate() {
        assert_eq!(g.id(row), *id, "id of row {row}");
        assert_eq!(
            g.code(row),
            &codes[row * cb..(row + 1) * cb],
            "code of row {row}"
        );
    }
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn current_header(path: &Path) -> Header {
    match Header::decode_slot(&std::fs::read(path).unwrap()[..HEADER_SLOT_BYTES]) {
        SlotState::Valid(h) => h,
        other => panic!("header copy 0 is {other:?}"),
    }
}

/// Writes `header` into both copies, with valid checksums (a well-formed but lying header).
fn write_header(path: &Path, header: &Header) {
    let slot = header.encode_slot();
    rewrite(path, |b| {
        b[..HEADER_SLOT_BYTES].copy_from_slice(&slot);
        b[HEADER_SLOT_BYTES..2 * HEADER_SLOT_BYTES].copy_from_slice(&slot);
    });
}

fn open_err(path: &Path) -> GalleryError {
    Gallery::open(path).expect_err("the file must be refused")
}

#[test]
fn round_trip_every_width_class() {
    for bits in [64, 72, 128, 200, 256, 512, 768, 1000, 2048, 4096] {
        let f = fixture(33, bits);
        let g = Gallery::open(&f.path).unwrap();
        assert_eq!(g.code_bits(), bits);
        assert_eq!(g.model_hash(), &[7u8; 32]);
        assert_contents(&g, &f.codes, &f.ids);
    }
}

#[test]
fn empty_gallery_then_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gal");
    let mut g = Gallery::create(&path, 256, [0; 32], &[], &[]).unwrap();
    assert!(g.is_empty());
    let mut rng = StdRng::seed_from_u64(1);
    let mut all_codes = Vec::new();
    let mut all_ids = Vec::new();
    // Enough appends to grow the file several times and to append in place in between.
    for round in 0..40u64 {
        let n = (round % 5) as usize + 1;
        let codes = random_codes(&mut rng, n, 256);
        let ids: Vec<u64> = (0..n as u64).map(|i| round * 100 + i).collect();
        g.append(&codes, &ids).unwrap();
        all_codes.extend_from_slice(&codes);
        all_ids.extend_from_slice(&ids);
        assert_contents(&g, &all_codes, &all_ids);
    }
    assert_contents(&Gallery::open(&path).unwrap(), &all_codes, &all_ids);
    assert!(g.header().capacity >= all_ids.len() as u64);
}

#[test]
fn append_rejects_mismatched_lengths_and_keeps_data() {
    let f = fixture(10, 128);
    let mut g = Gallery::open(&f.path).unwrap();
    let err = g.append(&[0u8; 15], &[1]).unwrap_err();
    assert!(matches!(err, GalleryError::BadLength { .. }), "{err}");
    g.append(&[], &[]).unwrap();
    assert_contents(&Gallery::open(&f.path).unwrap(), &f.codes, &f.ids);
}

#[test]
fn bad_code_widths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [0, 8, 56, 60, 100, 4104, 8192] {
        let err = Gallery::create(dir.path().join("x.gal"), bits, [0; 32], &[], &[]).unwrap_err();
        assert!(
            matches!(err, GalleryError::BadCodeBits(b) if b == bits),
            "{bits}: {err}"
        );
    }
}

#[test]
fn truncated_files_are_refused() {
    let f = fixture(50, 512);
    let full = std::fs::read(&f.path).unwrap();
    // Inside the header, inside the codes, inside the ids, one byte short.
    for len in [0usize, 5, 300, 4096 + 100, full.len() - 200, full.len() - 1] {
        std::fs::write(&f.path, &full[..len]).unwrap();
        let err = open_err(&f.path);
        let ok = match len {
            0 => matches!(err, GalleryError::Foreign),
            _ => matches!(err, GalleryError::Truncated { .. }),
        };
        assert!(ok, "length {len}: {err}");
        if len > 0 {
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }
}

#[test]
fn corrupt_codes_and_ids_are_refused() {
    let f = fixture(64, 256);
    let h = current_header(&f.path);
    let original = std::fs::read(&f.path).unwrap();
    let code_byte = h.codes_offset as usize + 5 * h.row_bytes() + 3;
    rewrite(&f.path, |b| b[code_byte] ^= 0x10);
    let err = open_err(&f.path);
    assert!(
        matches!(
            err,
            GalleryError::ChecksumMismatch {
                section: "codes",
                ..
            }
        ),
        "{err}"
    );
    std::fs::write(&f.path, &original).unwrap();
    let id_byte = h.ids_offset as usize + 8 * 63;
    rewrite(&f.path, |b| b[id_byte] ^= 0x01);
    let err = open_err(&f.path);
    assert!(
        matches!(err, GalleryError::ChecksumMismatch { section: "ids", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ids section is corrupt"), "{err}");
}

#[test]
fn corrupt_headers_are_refused_unless_one_copy_is_intact() {
    let f = fixture(20, 128);
    let original = std::fs::read(&f.path).unwrap();
    // One damaged copy: the other serves, the data is all there, and info says so.
    rewrite(&f.path, |b| b[HEADER_SLOT_BYTES + 20] ^= 0xff);
    let g = Gallery::open(&f.path).unwrap();
    assert_contents(&g, &f.codes, &f.ids);
    assert!(
        g.info().header_copies[1].contains("corrupt"),
        "{:?}",
        g.info()
    );
    // Both damaged: refused.
    rewrite(&f.path, |b| b[20] ^= 0xff);
    let err = open_err(&f.path);
    assert!(matches!(err, GalleryError::HeaderCorrupt(_)), "{err}");
    // The next append repairs a damaged copy.
    std::fs::write(&f.path, &original).unwrap();
    rewrite(&f.path, |b| b[30] ^= 0x55);
    let mut g = Gallery::open(&f.path).unwrap();
    g.append(&[1u8; 16], &[5]).unwrap();
    let g = Gallery::open(&f.path).unwrap();
    assert!(
        g.info()
            .header_copies
            .iter()
            .all(|c| c.starts_with("valid"))
    );
    assert_eq!(g.len(), 21);
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.gal");
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".repeat(100);
    for bytes in [png, vec![0u8; 10_000], vec![0xffu8; 600], b"hello".to_vec()] {
        std::fs::write(&path, &bytes).unwrap();
        let err = open_err(&path);
        assert!(matches!(err, GalleryError::Foreign), "{err}");
        assert!(err.to_string().contains("not a gallery"), "{err}");
    }
}

#[test]
fn other_versions_are_refused() {
    let f = fixture(4, 64);
    let h = current_header(&f.path);
    write_header(
        &f.path,
        &Header {
            version: VERSION + 1,
            ..h
        },
    );
    let err = open_err(&f.path);
    assert!(
        matches!(err, GalleryError::UnsupportedVersion { found, .. } if found == VERSION + 1),
        "{err}"
    );
}

#[test]
fn misaligned_sections_are_refused() {
    let f = fixture(4, 64);
    let h = current_header(&f.path);
    write_header(
        &f.path,
        &Header {
            codes_offset: CODES_OFFSET + 8,
            ..h.clone()
        },
    );
    let err = open_err(&f.path);
    assert!(
        matches!(
            err,
            GalleryError::Misaligned {
                section: "codes",
                ..
            }
        ),
        "{err}"
    );
    write_header(
        &f.path,
        &Header {
            ids_offset: h.ids_offset + 4,
            ..h
        },
    );
    let err = open_err(&f.path);
    assert!(
        matches!(err, GalleryError::Misaligned { section: "ids", .. }),
        "{err}"
    );
}

#[test]
fn inconsistent_headers_are_refused() {
    let f = fixture(8, 128);
    let h = current_header(&f.path);
    let cases = [
        Header {
            item_count: h.capacity + 1,
            ..h.clone()
        },
        Header {
            code_bits: 100,
            ..h.clone()
        },
        Header {
            ids_offset: h.codes_offset,
            ..h.clone()
        },
        Header {
            capacity: u64::MAX / 2,
            ..h.clone()
        },
        Header {
            codes_offset: 64,
            ..h.clone()
        },
    ];
    for bad in cases {
        write_header(&f.path, &bad);
        let err = open_err(&f.path);
        assert!(
            matches!(
                err,
                GalleryError::HeaderInvalid(_) | GalleryError::Truncated { .. }
            ),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn set_padding_bits_are_refused() {
    // 72-bit codes occupy 9 of the 16 bytes of a row: the other 7 must be zero.
    let f = fixture(6, 72);
    let h = current_header(&f.path);
    let at = h.codes_offset as usize + 2 * h.row_bytes() + 12;
    rewrite(&f.path, |b| b[at] = 1);
    let bytes = std::fs::read(&f.path).unwrap();
    let (start, end) = (
        h.codes_offset as usize,
        h.codes_offset as usize + 6 * h.row_bytes(),
    );
    write_header(
        &f.path,
        &Header {
            codes_crc32c: crc32c::crc32c(&bytes[start..end]),
            ..h
        },
    );
    let err = open_err(&f.path);
    assert!(
        matches!(err, GalleryError::DirtyPadding { row: 2, .. }),
        "{err}"
    );
}
