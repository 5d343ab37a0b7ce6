//! The manifest: round trip, refusals, and verification of a bundle's files.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bundle::{
    BundleError, FORMAT_VERSION, GALLERY_FILE, LABELS_FILE, MODEL_FILE, Manifest, ModelSpec,
    PreprocessSpec, Provenance, SELFTEST_PATTERN, SelfTest, json_to_toml, sha256_file, to_hex,
};

fn sample_manifest() -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        backbone: "resnet50".into(),
        model: ModelSpec {
            file: MODEL_FILE.into(),
            input_name: "input".into(),
            output_name: "embedding".into(),
            input_size: 224,
            channels: 3,
            embedding_dim: 512,
            code_bits: 512,
            output_l2_normalized: false,
        },
        preprocess: PreprocessSpec::imagenet(256, 224),
        files: BTreeMap::new(),
        provenance: Provenance {
            trainer_version: "0.1.0".into(),
            created_unix: 1_790_000_000,
            dataset: "sop".into(),
            run: "runs/2026-11-27-a".into(),
            epoch: Some(30),
            notes: Some("a note, with \"quotes\"\nand a line".into()),
            metrics: json_to_toml(&serde_json::json!({
                "recall_at_1": 0.781,
                "recall_at": {"1": 0.781, "10": 0.9},
                "nmi": null,
                "per_class": [{"class": 3, "r1": 0.5}],
            })),
        },
        selftest: Some(SelfTest {
            pattern: SELFTEST_PATTERN.into(),
            expected_code: to_hex(&[0xa5; 64]),
            max_hamming: 8,
        }),
    }
}

/// A complete bundle in `dir`: three small files and the manifest listing them.
fn sample_bundle(dir: &Path) -> Manifest {
    fs::write(dir.join(MODEL_FILE), b"not really onnx, but bytes to hash").unwrap();
    fs::write(dir.join(GALLERY_FILE), vec![7u8; 5000]).unwrap();
    fs::write(dir.join(LABELS_FILE), b"id\tsku\tsource\n1\tA\t\n").unwrap();
    let mut m = sample_manifest();
    for name in [MODEL_FILE, GALLERY_FILE, LABELS_FILE] {
        m.record_file(dir, name).unwrap();
    }
    m.write(dir).unwrap();
    m
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample_bundle(dir.path());
    let back = Manifest::read(dir.path()).unwrap();
    assert_eq!(back, m);
    assert!(!dir.path().join("manifest.toml.tmp").exists());
    // The ImageNet statistics are written as people write them, and read back exactly.
    let text = fs::read_to_string(dir.path().join("manifest.toml")).unwrap();
    assert_eq!(back.preprocess.mean, [0.485, 0.456, 0.406]);
    assert!(text.contains("mean = [0.485, 0.456, 0.406]"), "{text}");
    assert!(text.contains("format_version = 1"), "{text}");
    // The JSON null was dropped, the rest kept.
    let metrics = back.provenance.metrics.unwrap();
    assert!(metrics.get("nmi").is_none());
    assert_eq!(metrics["recall_at"]["10"].as_float(), Some(0.9));
    Manifest::open(dir.path()).unwrap();
}

#[test]
fn optional_sections_may_be_absent() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample_manifest();
    m.selftest = None;
    m.provenance.epoch = None;
    m.provenance.metrics = None;
    m.provenance.notes = None;
    m.write(dir.path()).unwrap();
    assert_eq!(Manifest::read(dir.path()).unwrap(), m);
}

#[test]
fn sha256_of_a_known_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("abc");
    fs::write(&p, b"abc").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string(),
            3
        )
    );
    // Larger than the read buffer.
    let big = vec![0u8; 200_000];
    fs::write(&p, &big).unwrap();
    assert_eq!(sha256_file(&p).unwrap().1, 200_000);
}

#[test]
fn unknown_field_refused() {
    let m = sample_manifest();
    let text = m.to_toml().unwrap();
    let with_extra = text.replace("backbone =", "colour = \"blue\"\nbackbone =");
    let err = Manifest::from_toml(&with_extra, "x/manifest.toml").unwrap_err();
    assert!(matches!(err, BundleError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("colour"), "{err}");
    assert!(err.to_string().contains("x/manifest.toml"), "{err}");

    let in_model = text.replace("[model]\n", "[model]\nquantized = true\n");
    assert_ne!(in_model, text);
    let err = Manifest::from_toml(&in_model, "m").unwrap_err();
    assert!(err.to_string().contains("quantized"), "{err}");
}

#[test]
fn newer_format_version_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = sample_manifest()
        .to_toml()
        .unwrap()
        .replace("format_version = 1", "format_version = 2\nnew_field = 5");
    fs::write(dir.path().join("manifest.toml"), text).unwrap();
    let err = Manifest::read(dir.path()).unwrap_err();
    match &err {
        BundleError::UnsupportedVersion {
            found, supported, ..
        } => assert_eq!((*found, *supported), (2, FORMAT_VERSION)),
        other => panic!("expected UnsupportedVersion, got {other}"),
    }
    assert!(err.to_string().contains("version 2"), "{err}");

    let zero = sample_manifest()
        .to_toml()
        .unwrap()
        .replace("format_version = 1", "format_version = 0");
    assert!(matches!(
        Manifest::from_toml(&zero, "m"),
        Err(BundleError::Parse { .. })
    ));
}

#[test]
fn verify_catches_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample_bundle(dir.path());
    fs::remove_file(dir.path().join(GALLERY_FILE)).unwrap();
    let err = m.verify(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::MissingFile { path } if path.ends_with(GALLERY_FILE)),
        "{err}"
    );
    assert!(err.to_string().contains("gallery.gal"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn verify_catches_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample_bundle(dir.path());
    let p = dir.path().join(GALLERY_FILE);
    let mut bytes = fs::read(&p).unwrap();
    bytes[1234] ^= 0x10;
    fs::write(&p, &bytes).unwrap();
    let err = Manifest::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    match &err {
        BundleError::HashMismatch {
            path,
            expected,
            actual,
        } => {
            assert!(path.ends_with(GALLERY_FILE));
            assert_eq!(expected, &m.files[GALLERY_FILE].sha256);
            assert_eq!(actual, &sha256_file(&p).unwrap().0);
            assert!(
                msg.contains(expected.as_str()) && msg.contains(actual.as_str()),
                "{msg}"
            );
        }
        other => panic!("expected HashMismatch, got {other}"),
    }
    assert!(msg.contains("gallery.gal"), "{msg}");
}

#[test]
fn verify_catches_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample_bundle(dir.path());
    let p = dir.path().join(MODEL_FILE);
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    let err = m.verify(dir.path()).unwrap_err();
    match &err {
        BundleError::SizeMismatch {
            path,
            expected,
            actual,
        } => {
            assert!(path.ends_with(MODEL_FILE));
            assert_eq!(
                (*expected, *actual),
                (bytes.len() as u64, bytes.len() as u64 - 3)
            );
        }
        other => panic!("expected SizeMismatch, got {other}"),
    }
    assert!(err.to_string().contains("model.onnx"), "{err}");
}

#[test]
fn verify_requires_the_model_to_be_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample_bundle(dir.path());
    m.files.remove(MODEL_FILE);
    let err = m.verify(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::NotListed { name, .. } if name == MODEL_FILE),
        "{err}"
    );
}

/// Each inconsistent spec is refused by `verify`, naming the field.
#[test]
fn verify_catches_an_inconsistent_spec() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_bundle(dir.path());
    good.verify(dir.path()).unwrap();
    type Edit = fn(&mut Manifest);
    let cases: &[(&str, Edit)] = &[
        ("preprocess.crop", |m| m.preprocess.crop = 200),
        ("preprocess.crop", |m| {
            m.preprocess.crop = 300;
            m.model.input_size = 300;
        }),
        ("model.code_bits", |m| m.model.code_bits = 256),
        ("model.code_bits", |m| {
            m.model.code_bits = 36;
            m.model.embedding_dim = 36;
        }),
        ("model.code_bits", |m| {
            m.model.code_bits = 8192;
            m.model.embedding_dim = 8192;
        }),
        ("model.code_bits", |m| {
            m.model.code_bits = 100;
            m.model.embedding_dim = 100;
        }),
        ("model.channels", |m| m.model.channels = 1),
        ("preprocess.std[1]", |m| m.preprocess.std[1] = 0.0),
        ("preprocess.std[2]", |m| m.preprocess.std[2] = f32::NAN),
        ("preprocess.mean[0]", |m| {
            m.preprocess.mean[0] = f32::INFINITY
        }),
        ("preprocess.filter", |m| {
            m.preprocess.filter = "lanczos3".into()
        }),
        ("selftest.expected_code", |m| {
            m.selftest.as_mut().unwrap().expected_code = "abcd".into()
        }),
        ("selftest.pattern", |m| {
            m.selftest.as_mut().unwrap().pattern = "mandrill".into()
        }),
        ("files.\"../etc/passwd\"", |m| {
            let e = m.files[MODEL_FILE].clone();
            m.files.insert("../etc/passwd".into(), e);
        }),
        ("files.\"labels.tsv\".sha256", |m| {
            m.files.get_mut(LABELS_FILE).unwrap().sha256 = "ABC".into()
        }),
    ];
    for (field, edit) in cases {
        let mut m = good.clone();
        edit(&mut m);
        let err = m.verify(dir.path()).unwrap_err();
        match &err {
            BundleError::Inconsistent { field: f, .. } => assert_eq!(f, field, "{err}"),
            other => panic!("{field}: expected Inconsistent, got {other}"),
        }
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn selftest_distance() {
    let st = sample_manifest().selftest.unwrap();
    let mut code = vec![0xa5u8; 64];
    assert_eq!(st.check(&code).unwrap(), 0);
    code[3] ^= 0b0110_0001;
    assert_eq!(st.check(&code).unwrap(), 3);
    code[60] = !code[60];
    assert_eq!(st.distance(&code).unwrap(), 11);
    assert!(st.check(&code).is_err());
    assert!(st.distance(&code[..8]).is_err());
}

#[test]
fn hex_round_trip() {
    let bytes: Vec<u8> = (0..=255).collect();
    let h = to_hex(&bytes);
    assert_eq!(&h[..8], "00010203");
    assert_eq!(bundle::from_hex(&h).unwrap(), bytes);
    assert_eq!(bundle::from_hex("ABff").unwrap(), vec![0xab, 0xff]);
    assert!(bundle::from_hex("abc").is_err());
    let err = bundle::from_hex("12g4").unwrap_err();
    assert!(err.to_string().contains("'g'"), "{err}");
}
