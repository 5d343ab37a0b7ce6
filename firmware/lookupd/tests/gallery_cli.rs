//! `lookupd gallery ...` end to end, through the real binary.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{fails_with, lookupd, ok, write_npy};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn read_u8(path: &Path) -> (Vec<u64>, Vec<u8>) {
    let npy = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    (npy.shape().to_vec(), npy.into_vec().unwrap())
}

struct Setup {
    dir: tempfile::TempDir,
    codes: Vec<u8>,
}

impl Setup {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_string()
    }
}

/// 300 codes of 256 bits, ids 1000 + 3 * row, queries = the first 4 codes.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let codes: Vec<u8> = (0..300 * 32).map(|_| rng.random()).collect();
    let s = Setup { dir, codes };
    write_npy(&s.p("codes.npy"), &[300, 32], &s.codes);
    write_npy(&s.p("queries.npy"), &[4, 32], &s.codes[..4 * 32]);
    npyz::to_file_1d(s.p("ids.npy"), (0..300u64).map(|r| 1000 + 3 * r)).unwrap();
    ok(&[
        "gallery",
        "import",
        "--codes",
        &s.s("codes.npy"),
        "--ids",
        &s.s("ids.npy"),
        "--out",
        &s.s("g.gal"),
    ]);
    s
}

#[test]
fn import_info_export_round_trip() {
    let s = setup();
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["gallery", "info", &s.s("g.gal")])).unwrap();
    assert_eq!(info["items"], 300);
    assert_eq!(info["code_bits"], 256);
    ok(&[
        "gallery",
        "export",
        &s.s("g.gal"),
        "--codes",
        &s.s("out.npy"),
        "--ids",
        &s.s("out_ids.npy"),
    ]);
    let (shape, data) = read_u8(&s.p("out.npy"));
    assert_eq!(shape, [300, 32]);
    assert_eq!(data, s.codes);
    let ids: Vec<u64> = npyz::NpyFile::new(std::fs::File::open(s.p("out_ids.npy")).unwrap())
        .unwrap()
        .into_vec()
        .unwrap();
    assert_eq!(ids, (0..300u64).map(|r| 1000 + 3 * r).collect::<Vec<_>>());
}

#[test]
fn search_prints_json_in_query_order() {
    let s = setup();
    let out = ok(&[
        "gallery",
        "search",
        &s.s("g.gal"),
        "--queries",
        &s.s("queries.npy"),
        "--k",
        "3",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4);
    for (i, q) in arr.iter().enumerate() {
        assert_eq!(q["query"], i);
        let hits = q["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 3);
        // Each query is a gallery code: it finds itself first, at distance 0.
        assert_eq!(hits[0]["id"], 1000 + 3 * i as u64);
        assert_eq!(hits[0]["distance"], 0);
        assert!(hits[1]["distance"].as_u64() <= hits[2]["distance"].as_u64());
    }
    // With a distance bound only the exact match remains (random codes are ~128 apart).
    let out = ok(&[
        "gallery",
        "search",
        &s.s("g.gal"),
        "--queries",
        &s.s("queries.npy"),
        "--k",
        "3",
        "--max-distance",
        "10",
        "--json",
        "--kernel",
        "portable",
        "--threads",
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[2]["hits"].as_array().unwrap().len(), 1);
}

#[test]
fn bench_prints_the_promised_fields() {
    let s = setup();
    for batch in ["1", "2"] {
        let out = ok(&[
            "gallery",
            "bench",
            &s.s("g.gal"),
            "--queries",
            &s.s("queries.npy"),
            "--k",
            "5",
            "--batch",
            batch,
            "--threads",
            "2",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for key in [
            "ms_per_query",
            "threads",
            "batch",
            "items",
            "bits",
            "kernel",
            "gb_per_s",
        ] {
            assert!(v.get(key).is_some(), "bench output lacks {key}: {out}");
        }
        assert_eq!(v["items"], 300);
        assert_eq!(v["threads"], 2);
        assert!(v["ms_per_query"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn verify_passes_good_and_fails_damaged_files() {
    let s = setup();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["gallery", "verify", &s.s("g.gal")])).unwrap();
    assert_eq!(v["ok"], true);
    let mut bytes = std::fs::read(s.p("g.gal")).unwrap();
    bytes[4096 + 77] ^= 4;
    std::fs::write(s.p("bad.gal"), &bytes).unwrap();
    let out = lookupd(&["gallery", "verify", &s.s("bad.gal")]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("codes section is corrupt"),
        "{v}"
    );
}

#[test]
fn bad_inputs_get_clear_errors() {
    let s = setup();
    // A command line as words; a word that names a file (`*.npy`, `*.gal`) is that file in the
    // setup's folder.
    let args = |words: &str| -> Vec<String> {
        words
            .split_whitespace()
            .map(|w| {
                if w.ends_with(".npy") || w.ends_with(".gal") {
                    s.s(w)
                } else {
                    w.to_owned()
                }
            })
            .collect()
    };
    let fails_with_words = |words: &str, needle: &str| {
        let args = args(words);
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    };
    npyz::to_file_1d(s.p("floats.npy"), [1.0f32, 2.0]).unwrap();
    std::fs::write(s.p("junk.npy"), b"junk").unwrap();
    // 5 bytes = 40 bits: a width the gallery cannot hold.
    write_npy(&s.p("narrow.npy"), &[2, 5], &[0u8; 10]);
    npyz::to_file_1d(s.p("few_ids.npy"), [1u64, 2]).unwrap();
    write_npy(&s.p("q16.npy"), &[1, 16], &[0u8; 16]);
    for (words, needle) in [
        ("gallery info nope.gal", "nope.gal"),
        ("gallery info codes.npy", "not a gallery file"),
        ("gallery import --codes floats.npy --out x.gal", "uint8"),
        ("gallery import --codes junk.npy --out x.gal", "junk.npy"),
        ("gallery import --codes narrow.npy --out x.gal", "40 bits"),
        (
            "gallery import --codes codes.npy --ids few_ids.npy --out x.gal",
            "2 ids for 300 codes",
        ),
        ("gallery search g.gal --queries q16.npy --json", "16 bytes"),
        ("gallery search g.gal --queries queries.npy --k 0", "k = 0"),
        (
            "gallery search g.gal --queries queries.npy --kernel sse9",
            "sse9",
        ),
    ] {
        fails_with_words(words, needle);
    }
    // A failed import leaves an existing gallery untouched.
    let before = std::fs::read(s.p("g.gal")).unwrap();
    fails_with_words("gallery import --codes narrow.npy --out g.gal", "40 bits");
    assert_eq!(std::fs::read(s.p("g.gal")).unwrap(), before);
}
