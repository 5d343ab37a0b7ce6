//! `lookupd query`, `selftest` and `enroll` end to end, through the real binary, on a real
//! bundle (CPU runtime).

mod common;

use std::fs;
use std::process::{Command, Output};

use bundle::{GALLERY_FILE, LABELS_FILE, MODEL_FILE};
use common::cli::{fails, lookupd, ok};
use common::{ITEMS, TestBundle, build_bundle};

fn query_json(b: &TestBundle, images: &[&str]) -> Vec<serde_json::Value> {
    let dir = b.dir_arg();
    let mut args = vec![
        "query",
        "--bundle",
        &dir,
        "--runtime",
        "cpu",
        "--json",
        "--k",
        "3",
    ];
    args.extend_from_slice(images);
    ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn selftest(b: &TestBundle) -> Output {
    lookupd(&["selftest", "--bundle", &b.dir_arg(), "--runtime", "cpu"])
}

#[test]
fn query_names_every_catalogue_image() {
    let b = build_bundle();
    let pngs: Vec<String> = b
        .items
        .iter()
        .map(|i| i.png.to_str().unwrap().to_owned())
        .collect();
    let refs: Vec<&str> = pngs.iter().map(String::as_str).collect();
    let lines = query_json(&b, &refs);
    assert_eq!(lines.len(), ITEMS);
    for (line, item) in lines.iter().zip(&b.items) {
        assert_eq!(line["image"], item.png.to_str().unwrap());
        assert_eq!(line["verdict"], "known");
        let hits = line["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0]["id"], item.id);
        assert_eq!(hits[0]["sku"], item.sku.as_str());
        assert_eq!(hits[0]["distance"], 0);
        for stage in ["preprocess", "infer", "search", "total"] {
            assert!(line["timings_us"][stage].is_u64(), "{line}");
        }
    }

    // Plain text, and the unknown verdict.
    let (_, stranger) = b.new_image(41);
    let text = ok(&[
        "query",
        "--bundle",
        &b.dir_arg(),
        "--runtime",
        "cpu",
        "--max-distance",
        "0",
        &pngs[1],
        stranger.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("known") && lines[0].contains("SKU-1 (id 107) @0"),
        "{text}"
    );
    assert!(lines[1].contains(": unknown: "), "{text}");
}

#[test]
fn enroll_then_query_finds_the_new_item() {
    let b = build_bundle();
    let (_, a) = b.new_image(51);
    let (_, c) = b.new_image(52);
    let (a, c) = (a.to_str().unwrap(), c.to_str().unwrap());
    let out = ok(&[
        "enroll",
        "--bundle",
        &b.dir_arg(),
        "--runtime",
        "cpu",
        "--sku",
        "4006381333931",
        a,
        c,
    ]);
    let max_id = b.items.iter().map(|i| i.id).max().unwrap();
    assert!(
        out.contains(&format!("enrolled as item {}", max_id + 1)),
        "{out}"
    );
    assert!(
        out.contains(&format!("enrolled as item {}", max_id + 2)),
        "{out}"
    );
    let lines = query_json(&b, &[a, c]);
    for (line, id) in lines.iter().zip([max_id + 1, max_id + 2]) {
        assert_eq!(line["hits"][0]["id"], id);
        assert_eq!(line["hits"][0]["distance"], 0);
        assert_eq!(line["hits"][0]["sku"], "4006381333931");
    }
    let labels = fs::read_to_string(b.file(LABELS_FILE)).unwrap();
    assert!(labels.ends_with(&format!("{}\t4006381333931\t{c}\n", max_id + 2)));
    assert!(selftest(&b).status.success());

    // An unreadable image is refused by name, before anything is written.
    let bogus = b.root.path().join("images/bogus.png");
    fs::write(&bogus, b"not an image").unwrap();
    let (_, err) = fails(&[
        "enroll",
        "--bundle",
        &b.dir_arg(),
        "--runtime",
        "cpu",
        "--sku",
        "X",
        bogus.to_str().unwrap(),
    ]);
    assert!(err.contains("bogus.png"), "{err}");
    assert_eq!(fs::read_to_string(b.file(LABELS_FILE)).unwrap(), labels);
}

#[test]
fn selftest_exits_zero_only_when_every_check_holds() {
    let b = build_bundle();
    let out = selftest(&b);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for check in [
        "manifest",
        "files",
        "gallery",
        "labels",
        "model",
        "selftest-code",
    ] {
        assert!(text.contains(&format!("ok   {check}: ")), "{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "selftest",
        "--bundle",
        &b.dir_arg(),
        "--runtime",
        "cpu",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["checks"].as_array().unwrap().len(), 6);

    type Damage = fn(&TestBundle);
    let cases: [(&str, Damage, &str, &str); 4] = [
        (
            "model byte",
            |b| b.flip_byte(MODEL_FILE, 200),
            "FAIL files",
            MODEL_FILE,
        ),
        (
            "gallery byte",
            |b| b.flip_byte(GALLERY_FILE, -3),
            "FAIL gallery",
            GALLERY_FILE,
        ),
        (
            "labels deleted",
            |b| fs::remove_file(b.file(LABELS_FILE)).unwrap(),
            "FAIL labels",
            LABELS_FILE,
        ),
        (
            "wrong expected code",
            |b| {
                let mut m = b.manifest();
                let st = m.selftest.as_mut().unwrap();
                let mut code = bundle::from_hex(&st.expected_code).unwrap();
                code[0] ^= 0xff; // 8 bits off, 2 allowed
                st.expected_code = bundle::to_hex(&code);
                m.write(b.dir()).unwrap();
            },
            "FAIL selftest-code",
            "8 bits from the expected code",
        ),
    ];
    for (what, damage, check, needle) in cases {
        let b = build_bundle();
        damage(&b);
        let out = selftest(&b);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        let line = text
            .lines()
            .find(|l| l.starts_with(check))
            .unwrap_or_else(|| panic!("{what}: no {check:?} line in {text}"));
        assert!(line.contains(needle), "{what}: {line}");
        assert!(text.contains("FAILED"), "{what}: {text}");
    }
}

#[test]
fn query_on_a_missing_or_corrupt_bundle_fails_naming_the_file() {
    let b = build_bundle();
    let png = b.items[0].png.to_str().unwrap().to_owned();
    let query = |dir: &str| {
        let (_, err) = fails(&["query", "--bundle", dir, "--runtime", "cpu", &png]);
        err
    };

    let missing = b.root.path().join("no-such-bundle");
    let err = query(missing.to_str().unwrap());
    assert!(err.contains("no-such-bundle/manifest.toml"), "{err}");

    b.flip_byte(MODEL_FILE, 200);
    let err = query(&b.dir_arg());
    assert!(err.contains(MODEL_FILE) && err.contains("sha256"), "{err}");

    let b = build_bundle();
    b.flip_byte(GALLERY_FILE, 4096);
    let err = query(&b.dir_arg());
    assert!(err.contains(GALLERY_FILE), "{err}");

    let b = build_bundle();
    fs::remove_file(b.file(LABELS_FILE)).unwrap();
    let err = query(&b.dir_arg());
    assert!(
        err.contains(LABELS_FILE) && err.contains("missing"),
        "{err}"
    );

    // A missing image is named too.
    let b = build_bundle();
    let (_, err) = fails(&[
        "query",
        "--bundle",
        &b.dir_arg(),
        "--runtime",
        "cpu",
        "/nonexistent/frame.png",
    ]);
    assert!(err.contains("/nonexistent/frame.png"), "{err}");
}

/// A full disk during an enrolment: an error naming the gallery, and the bundle exactly as it
/// was. The disk is "full" through the file-size limit (`ulimit -f`, SIGXFSZ ignored): every
/// write past 1 KiB fails, as it would with no space left.
#[test]
fn a_full_disk_fails_the_enrolment_and_changes_nothing() {
    let b = build_bundle();
    let (_, png) = b.new_image(31);
    // Every file of the bundle directory (a leftover temporary file counts) and its sha256.
    let snapshot = |b: &TestBundle| -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = fs::read_dir(b.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, bundle::sha256_file(&p).unwrap().0)
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(&b);
    let out = Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_lookupd"))
        .args(["enroll", "--bundle", &b.dir_arg(), "--sku", "NEW"])
        .arg(&png)
        .env("LOOKUPD_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the enrolment succeeded: {stderr}");
    assert!(stderr.contains(GALLERY_FILE), "{stderr}");
    assert_eq!(snapshot(&b), before, "the bundle changed");
    assert!(selftest(&b).status.success());
}
