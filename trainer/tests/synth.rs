//! `trainer synth`: layout, determinism, distinct products, hard camera shots, argument and
//! output-directory checks, and the folder loader reading the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use trainer::data::{DataSpec, load};
use trainer::synth::{FontChoice, Manifest, SynthError, SynthOptions, synthesize};

const ITEMS: usize = 6;
const VIEWS: usize = 2;
const SIZE: u32 = 64;

fn options(out: &Path, seed: u64, font: FontChoice) -> SynthOptions {
    SynthOptions {
        out: out.to_path_buf(),
        items: ITEMS,
        views: VIEWS,
        seed,
        size: SIZE,
        font,
        progress: false,
    }
}

fn manifest(dir: &Path) -> Manifest {
    serde_json::from_str(&std::fs::read_to_string(dir.join("synth.json")).unwrap()).unwrap()
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// Mean absolute difference per channel, in 0..=255.
fn difference(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn writes_the_documented_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("catalogue");
    let report = synthesize(&options(&out, 7, FontChoice::System)).unwrap();
    assert_eq!(
        (report.items, report.train_items, report.test_items),
        (6, 3, 3)
    );
    assert_eq!(report.images, ITEMS * (VIEWS + 1));

    let m = manifest(&out);
    assert!(m.complete);
    assert_eq!((m.seed, m.items, m.views, m.size), (7, ITEMS, VIEWS, SIZE));
    assert_eq!(m.products.len(), ITEMS);
    let skus: Vec<&str> = m.products.iter().map(|p| p.sku.as_str()).collect();
    let mut sorted = skus.clone();
    sorted.sort();
    assert_eq!(skus, sorted, "SKU order must be item order");

    for (i, sku) in skus.iter().enumerate() {
        assert!(sku.starts_with(&format!("{:04}-", i + 1)), "{sku}");
        let mut files: Vec<String> = std::fs::read_dir(out.join(sku))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["catalogue.png", "view-01.png", "view-02.png"]);
        for file in &files {
            let image = rgb(&out.join(sku).join(file));
            assert_eq!(image.dimensions(), (SIZE, SIZE));
        }
    }

    let split = std::fs::read_to_string(out.join("split.txt")).unwrap();
    let expected: Vec<String> = skus
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {s}", if i < 3 { "train" } else { "test" }))
        .collect();
    assert_eq!(split.lines().collect::<Vec<_>>(), expected);

    let catalogue = std::fs::read_to_string(out.join("catalogue.tsv")).unwrap();
    let lines: Vec<(&str, &str)> = catalogue
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .collect();
    assert_eq!(lines.len(), ITEMS);
    for ((sku, path), expected) in lines.iter().zip(&skus) {
        assert_eq!(sku, expected);
        assert_eq!(*path, format!("{sku}/catalogue.png"));
        assert!(out.join(path).is_file());
    }

    let queries = std::fs::read_to_string(out.join("queries.tsv")).unwrap();
    let lines: Vec<(&str, &str)> = queries
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3 * VIEWS,
        "camera shots of the test items only"
    );
    for (sku, path) in lines {
        assert!(skus[3..].contains(&sku), "{sku} is not a test item");
        assert!(path.starts_with(&format!("{sku}/view-")), "{path}");
        assert!(out.join(path).is_file());
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_products() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    synthesize(&options(&a, 11, FontChoice::System)).unwrap();
    synthesize(&options(&b, 11, FontChoice::System)).unwrap();
    synthesize(&options(&c, 12, FontChoice::System)).unwrap();
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(ta.len(), 4 + ITEMS * (VIEWS + 1));
    assert!(ta == tb, "same seed must give byte-identical files");

    let (ma, mc) = (manifest(&a), manifest(&c));
    assert_ne!(
        ma.products.iter().map(|p| &p.brand).collect::<Vec<_>>(),
        mc.products.iter().map(|p| &p.brand).collect::<Vec<_>>()
    );
    let first = |dir: &Path, m: &Manifest| rgb(&dir.join(&m.products[0].sku).join("catalogue.png"));
    assert!(difference(&first(&a, &ma), &first(&c, &mc)) > 3.0);
}

#[test]
fn products_differ_and_camera_shots_differ_from_the_catalogue() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    synthesize(&SynthOptions {
        items: 12,
        ..options(&out, 3, FontChoice::System)
    })
    .unwrap();
    let m = manifest(&out);
    let shots: Vec<image::RgbImage> = m
        .products
        .iter()
        .map(|p| rgb(&out.join(&p.sku).join("catalogue.png")))
        .collect();
    for i in 0..shots.len() {
        for j in i + 1..shots.len() {
            let d = difference(&shots[i], &shots[j]);
            assert!(
                d > 4.0,
                "catalogue shots of {} and {} differ by only {d:.2}",
                m.products[i].sku,
                m.products[j].sku
            );
        }
    }
    // Catalogue shots are clean: a plain light background in the corners.
    for (shot, p) in shots.iter().zip(&m.products) {
        let corner = shot.get_pixel(1, 1).0;
        assert!(
            corner.iter().all(|&c| c > 220),
            "{}: corner {corner:?}",
            p.sku
        );
    }
    for (shot, p) in shots.iter().zip(&m.products) {
        for v in 1..=VIEWS {
            let view = rgb(&out.join(&p.sku).join(format!("view-{v:02}.png")));
            let d = difference(shot, &view);
            assert!(
                d > 15.0,
                "{} view {v} is too close to its catalogue shot ({d:.2})",
                p.sku
            );
        }
    }
}

#[test]
fn without_a_font_names_are_bar_patterns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bars");
    let report = synthesize(&options(&out, 7, FontChoice::Bars)).unwrap();
    assert!(report.glyphs.contains("bar"), "{}", report.glyphs);
    assert_eq!(tree(&out).len(), 4 + ITEMS * (VIEWS + 1));

    let missing = synthesize(&options(
        &tmp.path().join("x"),
        7,
        FontChoice::File(tmp.path().join("no-such-font.ttf")),
    ));
    let message = missing
        .expect_err("a missing font file is an error")
        .to_string();
    assert!(message.contains("no-such-font.ttf"), "{message}");
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let cases: [(SynthOptions, &str); 5] = [
        (
            SynthOptions {
                items: 1,
                ..options(&out, 0, FontChoice::Bars)
            },
            "--items",
        ),
        (
            SynthOptions {
                items: 0,
                ..options(&out, 0, FontChoice::Bars)
            },
            "--items",
        ),
        (
            SynthOptions {
                views: 0,
                ..options(&out, 0, FontChoice::Bars)
            },
            "--views",
        ),
        (
            SynthOptions {
                size: 8,
                ..options(&out, 0, FontChoice::Bars)
            },
            "--size",
        ),
        (
            SynthOptions {
                size: 100_000,
                ..options(&out, 0, FontChoice::Bars)
            },
            "--size",
        ),
    ];
    for (o, needle) in cases {
        let error = synthesize(&o).expect_err("must be refused");
        assert!(matches!(error, SynthError::Argument(_)), "{error:?}");
        assert!(error.to_string().contains(needle), "{error}");
    }
    assert!(!out.exists(), "nothing is written for bad arguments");

    // A file where the directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let error = synthesize(&options(&file, 0, FontChoice::Bars)).unwrap_err();
    assert!(error.to_string().contains("not a directory"), "{error}");
}

#[test]
fn refuses_foreign_directories_and_replaces_its_own_output() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "precious").unwrap();
    let error = synthesize(&options(&foreign, 0, FontChoice::Bars)).unwrap_err();
    assert!(matches!(error, SynthError::OutDir { .. }), "{error:?}");
    assert!(error.to_string().contains("not empty"), "{error}");
    assert!(foreign.join("thesis.tex").exists());

    // A previous output is replaced, and items it had beyond the new count disappear.
    let out = tmp.path().join("out");
    synthesize(&options(&out, 0, FontChoice::Bars)).unwrap();
    synthesize(&SynthOptions {
        items: 4,
        ..options(&out, 1, FontChoice::Bars)
    })
    .unwrap();
    let m = manifest(&out);
    assert_eq!((m.items, m.seed), (4, 1));
    let dirs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(dirs, 4);

    // ...but not if someone put their own file into it.
    std::fs::write(out.join(&m.products[0].sku).join("notes.txt"), "mine").unwrap();
    let error = synthesize(&options(&out, 2, FontChoice::Bars)).unwrap_err();
    assert!(error.to_string().contains("notes.txt"), "{error}");
    assert_eq!(manifest(&out).seed, 1, "nothing was deleted");
}

#[test]
fn the_folder_loader_reads_it_with_the_split() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    synthesize(&SynthOptions {
        items: 5,
        ..options(&out, 5, FontChoice::Bars)
    })
    .unwrap();
    let m = manifest(&out);
    let skus: Vec<String> = m.products.iter().map(|p| p.sku.clone()).collect();
    let spec: DataSpec = format!("folder:{}", out.display()).parse().unwrap();
    for spec in [spec.clone().with_split(Some(out.join("split.txt"))), spec] {
        let dataset = load(&spec).unwrap();
        assert_eq!(dataset.train.class_names, skus[..3], "{spec:?}");
        assert_eq!(dataset.test.class_names, skus[3..], "{spec:?}");
        assert_eq!(dataset.train.len(), 3 * (VIEWS + 1));
        assert_eq!(dataset.test.len(), 2 * (VIEWS + 1));
    }
}

#[test]
fn the_command_line_reports_and_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_trainer");
    let out = tmp.path().join("cli");
    let run = Command::new(exe)
        .args(["synth", "--items", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--items must be between 2"), "{stderr}");

    let run = Command::new(exe)
        .args([
            "synth",
            "--items",
            "2",
            "--views",
            "1",
            "--size",
            "48",
            "--json",
            "--no-font",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["items"], 2);
    assert_eq!(report["images"], 4);
    assert_eq!(report["test_items"], 1);
}
