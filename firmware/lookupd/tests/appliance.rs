//! The appliance library on a real bundle (CPU runtime): lookups, enrolment, crash recovery,
//! refusals, and the self-test.

mod common;

use std::fs;

use bundle::{GALLERY_FILE, LABELS_FILE, Labels, MODEL_FILE, Manifest};
use common::{ITEMS, TestBundle, build_bundle, hamming};
use gallery::Gallery;
use image::DynamicImage;
use infer::Backend;
use lookupd::{Appliance, EnrolItem, EnrolStep, JOURNAL_FILE, Verdict, selftest};

/// A hit that outlives the lookup (which borrows the appliance).
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedHit {
    id: u64,
    sku: String,
    distance: u32,
    row: u64,
}

fn owned(found: &lookupd::Lookup<'_>) -> Vec<OwnedHit> {
    found
        .hits()
        .map(|h| OwnedHit {
            id: h.id,
            sku: h.sku.to_string(),
            distance: h.distance,
            row: h.row,
        })
        .collect()
}

fn open(b: &TestBundle) -> Appliance {
    Appliance::open(b.dir(), Backend::Cpu, 1).unwrap()
}

/// `Appliance::open` fails, and the message holds every one of `needles`.
fn refused(b: &TestBundle, needles: &[&str]) {
    let err = Appliance::open(b.dir(), Backend::Cpu, 1)
        .map(|_| ())
        .expect_err("the bundle should be refused")
        .to_string();
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

#[test]
fn labels_in_another_order_than_the_gallery_still_name_each_item() {
    let b = build_bundle();
    // labels.tsv reversed, with a row for an item the gallery does not hold.
    let path = b.file(bundle::LABELS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    lines.push("999\tNOT-IN-GALLERY\t");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut manifest = b.manifest();
    manifest.record_file(b.dir(), bundle::LABELS_FILE).unwrap();
    manifest.write(b.dir()).unwrap();
    let mut a = open(&b);
    for item in &b.items {
        let found = a
            .lookup_image(&DynamicImage::ImageRgb8(item.image.clone()), 1)
            .unwrap();
        let top = found.hit(0).unwrap();
        assert_eq!((top.id, top.sku), (item.id, item.sku.as_str()));
    }
    // Enrolled items are numbered after the largest id labelled, 999.
    let (new, _) = b.new_image(5);
    assert_eq!(
        a.enroll("NEW", &DynamicImage::ImageRgb8(new)).unwrap(),
        1000
    );
}

#[test]
fn every_catalogue_image_finds_itself_at_distance_zero() {
    let b = build_bundle();
    let mut a = open(&b);
    assert_eq!(a.len(), ITEMS);
    assert_eq!(a.backend(), Backend::Cpu);
    for item in &b.items {
        let found = a
            .lookup_rgb8(
                item.image.width(),
                item.image.height(),
                item.image.as_raw(),
                3,
            )
            .unwrap();
        assert_eq!(found.verdict, Verdict::Known);
        assert_eq!(found.hits().len(), 3);
        let top = found.hit(0).unwrap();
        assert_eq!((top.id, top.distance), (item.id, 0), "{}", item.sku);
        assert_eq!(top.sku, item.sku);
        assert_eq!(found.known().unwrap().id, item.id);
        let order: Vec<(u32, u64)> = found.hits().map(|h| (h.distance, h.id)).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        let t = found.timings;
        assert!(t.total >= t.preprocess.max(t.infer).max(t.search), "{t:?}");
        assert_eq!(found.code.len(), 32);
    }
    // The same through `lookup_image`, from an RGBA copy (converted on the way).
    let item = &b.items[2];
    let rgba = DynamicImage::ImageRgb8(item.image.clone()).to_rgba8();
    let found = a
        .lookup_image(&DynamicImage::ImageRgba8(rgba), ITEMS + 10)
        .unwrap();
    assert_eq!(
        (found.hit(0).unwrap().id, found.hit(0).unwrap().distance),
        (item.id, 0)
    );
    assert_eq!(
        found.hits().len(),
        ITEMS,
        "k beyond the gallery gives every item"
    );
}

#[test]
fn the_verdict_is_unknown_beyond_the_maximum_distance() {
    let b = build_bundle();
    let mut a = open(&b);
    let (stranger, _) = b.new_image(77);
    let stranger = DynamicImage::ImageRgb8(stranger);
    let top = owned(&a.lookup_image(&stranger, 1).unwrap())[0].clone();
    assert!(top.distance > 0);
    assert_eq!(a.max_distance(), None);
    assert_eq!(
        a.lookup_image(&stranger, 1).unwrap().verdict,
        Verdict::Known
    );
    a.set_max_distance(Some(top.distance - 1));
    let found = a.lookup_image(&stranger, 1).unwrap();
    assert_eq!(found.verdict, Verdict::Unknown);
    assert!(found.known().is_none());
    assert_eq!(owned(&found)[0], top, "the hits are still reported");
    let mut a = a.with_max_distance(Some(top.distance));
    assert_eq!(
        a.lookup_image(&stranger, 1).unwrap().verdict,
        Verdict::Known
    );
    // A catalogue image stays known at distance 0.
    a.set_max_distance(Some(0));
    let own = DynamicImage::ImageRgb8(b.items[0].image.clone());
    assert_eq!(a.lookup_image(&own, 1).unwrap().verdict, Verdict::Known);
    for k in [0, 1001] {
        let err = a.lookup_image(&own, k).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("k = "), "{err}");
    }
    let err = a.lookup_rgb8(4, 4, &[0; 10], 1).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("preprocessing input"), "{err}");
}

#[test]
fn an_enrolled_item_is_found_at_once_and_after_reopening() {
    let b = build_bundle();
    let mut a = open(&b);
    let (new, _) = b.new_image(5);
    let new = DynamicImage::ImageRgb8(new);
    let max_id = b.items.iter().map(|i| i.id).max().unwrap();
    let id = a.enroll("NEW-SKU", &new).unwrap();
    assert_eq!(id, max_id + 1);
    assert_eq!(a.len(), ITEMS + 1);
    let found = a.lookup_image(&new, 2).unwrap();
    assert_eq!(
        (found.hit(0).unwrap().id, found.hit(0).unwrap().distance),
        (id, 0)
    );
    assert_eq!(found.hit(0).unwrap().sku, "NEW-SKU");
    // The bundle verifies as it is, with no journal left.
    Manifest::open(b.dir()).unwrap();
    assert!(!b.file(JOURNAL_FILE).exists());
    let labels = Labels::read(b.file(LABELS_FILE)).unwrap();
    assert_eq!(labels.get(id).unwrap().sku, "NEW-SKU");
    // Old items are still found.
    let old = DynamicImage::ImageRgb8(b.items[4].image.clone());
    assert_eq!(
        a.lookup_image(&old, 1).unwrap().hit(0).unwrap().id,
        b.items[4].id
    );

    // Two more at once, after reopening.
    drop(a);
    let mut a = open(&b);
    let found = a.lookup_image(&new, 1).unwrap();
    assert_eq!(
        (found.hit(0).unwrap().id, found.hit(0).unwrap().distance),
        (id, 0)
    );
    let (x, _) = b.new_image(6);
    let (y, _) = b.new_image(7);
    let (x, y) = (DynamicImage::ImageRgb8(x), DynamicImage::ImageRgb8(y));
    let ids = a
        .enroll_items(&[
            EnrolItem {
                sku: "X",
                source: "x.png",
                image: &x,
            },
            EnrolItem {
                sku: "Y",
                source: "",
                image: &y,
            },
        ])
        .unwrap();
    assert_eq!(ids, [id + 1, id + 2]);
    for (image, id, sku) in [(&x, id + 1, "X"), (&y, id + 2, "Y")] {
        let hit = owned(&a.lookup_image(image, 1).unwrap())[0].clone();
        assert_eq!((hit.id, hit.distance, &*hit.sku), (id, 0, sku));
    }
    drop(a);
    let report = selftest(b.dir(), Backend::Cpu);
    assert!(report.passed(), "{report:#?}");
    assert_eq!(open(&b).len(), ITEMS + 3);

    // A SKU that labels.tsv cannot hold is refused before anything is written.
    let mut a = open(&b);
    let before = fs::read(b.file(GALLERY_FILE)).unwrap();
    let err = a.enroll("bad\tsku", &x).unwrap_err().to_string();
    assert!(err.contains("sku"), "{err}");
    assert_eq!(fs::read(b.file(GALLERY_FILE)).unwrap(), before);
    assert!(!b.file(JOURNAL_FILE).exists());
}

/// A power cut after each step of an enrolment leaves a bundle that the self-test accepts and
/// that opens with the enrolment complete.
#[test]
fn an_interrupted_enrolment_is_completed_by_the_next_open() {
    for step in [
        EnrolStep::Journal,
        EnrolStep::Gallery,
        EnrolStep::Labels,
        EnrolStep::Manifest,
    ] {
        let b = build_bundle();
        let (new, _) = b.new_image(11);
        let new = DynamicImage::ImageRgb8(new);
        let mut a = open(&b);
        let items = [EnrolItem {
            sku: "LATE",
            source: "power cut",
            image: &new,
        }];
        let ids = a.enroll_interrupted(&items, step).unwrap();
        drop(a);
        assert!(b.file(JOURNAL_FILE).exists(), "{step:?}");
        // Between the gallery and the manifest the hashes do not match the files...
        let plain = Manifest::open(b.dir());
        assert_eq!(
            plain.is_err(),
            matches!(step, EnrolStep::Gallery | EnrolStep::Labels),
            "{step:?}: {plain:?}"
        );
        // ...yet the self-test accepts the bundle and says what is pending.
        let report = selftest(b.dir(), Backend::Cpu);
        assert!(report.passed(), "{step:?}: {report:#?}");
        let files = report.check("files").unwrap();
        assert!(files.detail.contains(&format!("{:?}", ids)), "{files:?}");
        // Opening completes the enrolment.
        let mut a = open(&b);
        assert!(!b.file(JOURNAL_FILE).exists(), "{step:?}");
        Manifest::open(b.dir()).unwrap();
        assert_eq!(a.len(), ITEMS + 1, "{step:?}");
        let hit = owned(&a.lookup_image(&new, 1).unwrap())[0].clone();
        assert_eq!((hit.id, hit.distance, &*hit.sku), (ids[0], 0, "LATE"));
        assert_eq!(Labels::read(b.file(LABELS_FILE)).unwrap().len(), ITEMS + 1);
        drop(a);
        assert_eq!(open(&b).len(), ITEMS + 1, "{step:?}: completed once only");
    }
}

/// An enrolment that failed part way in a running appliance: its lookups already see the item,
/// and the next enrolment completes the first before its own.
#[test]
fn a_failed_enrolment_is_completed_by_the_next_one() {
    let b = build_bundle();
    let (x, _) = b.new_image(21);
    let (y, _) = b.new_image(22);
    let (x, y) = (DynamicImage::ImageRgb8(x), DynamicImage::ImageRgb8(y));
    let mut a = open(&b);
    let first = a
        .enroll_interrupted(
            &[EnrolItem {
                sku: "X",
                source: "",
                image: &x,
            }],
            EnrolStep::Gallery,
        )
        .unwrap()[0];
    let hit = owned(&a.lookup_image(&x, 1).unwrap())[0].clone();
    assert_eq!((hit.id, hit.distance), (first, 0));
    let second = a.enroll("Y", &y).unwrap();
    assert_eq!(second, first + 1);
    assert!(!b.file(JOURNAL_FILE).exists());
    Manifest::open(b.dir()).unwrap();
    drop(a);
    let mut a = open(&b);
    assert_eq!(a.len(), ITEMS + 2);
    for (image, id) in [(&x, first), (&y, second)] {
        let hit = owned(&a.lookup_image(image, 1).unwrap())[0].clone();
        assert_eq!((hit.id, hit.distance), (id, 0));
    }
}

#[test]
fn a_journal_the_files_do_not_match_is_refused() {
    let b = build_bundle();
    let (new, _) = b.new_image(31);
    let new = DynamicImage::ImageRgb8(new);
    let mut a = open(&b);
    a.enroll_interrupted(
        &[EnrolItem {
            sku: "Z",
            source: "",
            image: &new,
        }],
        EnrolStep::Gallery,
    )
    .unwrap();
    drop(a);
    // Someone rewrote the labels meanwhile: neither the state before nor after.
    fs::write(b.file(LABELS_FILE), "id\tsku\tsource\n1\tA\t\n").unwrap();
    refused(&b, &[LABELS_FILE, JOURNAL_FILE]);
    assert!(!selftest(b.dir(), Backend::Cpu).passed());

    let b = build_bundle();
    fs::write(b.file(JOURNAL_FILE), b"{ garbled").unwrap();
    refused(&b, &[JOURNAL_FILE, "unreadable"]);
}

#[test]
fn a_bad_bundle_is_refused_naming_the_file() {
    // No manifest.
    let b = build_bundle();
    fs::remove_file(b.file("manifest.toml")).unwrap();
    refused(&b, &["manifest.toml"]);

    // One byte of the model.
    let b = build_bundle();
    b.flip_byte(MODEL_FILE, 200);
    refused(&b, &[MODEL_FILE, "sha256"]);

    // One byte of the gallery.
    let b = build_bundle();
    b.flip_byte(GALLERY_FILE, 4096);
    refused(&b, &[GALLERY_FILE, "sha256"]);

    // The labels deleted.
    let b = build_bundle();
    fs::remove_file(b.file(LABELS_FILE)).unwrap();
    refused(&b, &[LABELS_FILE, "missing"]);

    // The gallery not listed in the manifest.
    let b = build_bundle();
    let mut m = b.manifest();
    m.files.remove(GALLERY_FILE);
    m.write(b.dir()).unwrap();
    refused(&b, &[GALLERY_FILE, "not listed"]);

    // A gallery built for another model, with matching hashes.
    let b = build_bundle();
    let g = Gallery::open(b.file(GALLERY_FILE)).unwrap();
    let codes: Vec<u8> = (0..g.len()).flat_map(|r| g.code(r).to_vec()).collect();
    let ids: Vec<u64> = (0..g.len()).map(|r| g.id(r)).collect();
    drop(g);
    Gallery::create(b.file(GALLERY_FILE), 256, [7; 32], &codes, &ids).unwrap();
    let mut m = b.manifest();
    m.record_file(b.dir(), GALLERY_FILE).unwrap();
    m.write(b.dir()).unwrap();
    refused(&b, &[GALLERY_FILE, "another model"]);

    // A gallery of another code width.
    let b = build_bundle();
    let mut m = b.manifest();
    let hash: [u8; 32] = bundle::from_hex(&m.files[MODEL_FILE].sha256)
        .unwrap()
        .try_into()
        .unwrap();
    Gallery::create(b.file(GALLERY_FILE), 512, hash, &[0; 64], &[100]).unwrap();
    m.record_file(b.dir(), GALLERY_FILE).unwrap();
    m.write(b.dir()).unwrap();
    refused(&b, &[GALLERY_FILE, "512 bits", "code_bits is 256"]);

    // An item without a label.
    let b = build_bundle();
    let labels = Labels::read(b.file(LABELS_FILE)).unwrap();
    let kept = Labels::from_rows(labels.rows()[1..].iter().cloned()).unwrap();
    kept.write(b.file(LABELS_FILE)).unwrap();
    let mut m = b.manifest();
    m.record_file(b.dir(), LABELS_FILE).unwrap();
    m.write(b.dir()).unwrap();
    refused(&b, &[LABELS_FILE, "item 100 has no label"]);

    // A manifest whose embedding width is not the model's.
    let b = build_bundle();
    let mut m = b.manifest();
    m.model.embedding_dim = 128;
    m.model.code_bits = 128;
    m.selftest = None;
    m.write(b.dir()).unwrap();
    refused(&b, &[GALLERY_FILE, "code_bits is 128"]);
    // ...even with a gallery of that width.
    let hash: [u8; 32] = bundle::from_hex(&m.files[MODEL_FILE].sha256)
        .unwrap()
        .try_into()
        .unwrap();
    Gallery::create(b.file(GALLERY_FILE), 128, hash, &[0; 16], &[100]).unwrap();
    let labels = Labels::read(b.file(LABELS_FILE)).unwrap();
    Labels::from_rows(labels.rows()[..1].iter().cloned())
        .unwrap()
        .write(b.file(LABELS_FILE))
        .unwrap();
    m.record_file(b.dir(), GALLERY_FILE).unwrap();
    m.record_file(b.dir(), LABELS_FILE).unwrap();
    m.write(b.dir()).unwrap();
    refused(
        &b,
        &[MODEL_FILE, "output of 256 values", "embedding_dim is 128"],
    );
}

#[test]
fn the_selftest_passes_on_a_good_bundle_and_names_each_failure() {
    let names = [
        "manifest",
        "files",
        "gallery",
        "labels",
        "model",
        "selftest-code",
    ];
    let b = build_bundle();
    let report = selftest(b.dir(), Backend::Cpu);
    assert!(report.passed(), "{report:#?}");
    let ran: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(ran, names);
    assert_eq!(report.backend.as_deref(), Some("cpu"));
    assert!(
        report
            .check("selftest-code")
            .unwrap()
            .detail
            .contains("0 bits")
    );

    // Each damage: the checks that must fail, and what their detail must name.
    struct Case {
        what: &'static str,
        damage: fn(&TestBundle),
        /// (check that must fail, what its detail must say)
        expected: &'static [(&'static str, &'static str)],
    }
    fn wrong_expected_code(b: &TestBundle) {
        let mut m = b.manifest();
        let st = m.selftest.as_mut().unwrap();
        let flipped: Vec<u8> = bundle::from_hex(&st.expected_code)
            .unwrap()
            .iter()
            .map(|x| !x)
            .collect();
        st.expected_code = bundle::to_hex(&flipped);
        m.write(b.dir()).unwrap();
    }
    fn no_selftest(b: &TestBundle) {
        let mut m = b.manifest();
        m.selftest = None;
        m.write(b.dir()).unwrap();
    }
    let cases = [
        Case {
            what: "model byte",
            damage: |b| b.flip_byte(MODEL_FILE, 200),
            expected: &[("files", MODEL_FILE)],
        },
        Case {
            what: "gallery byte",
            damage: |b| b.flip_byte(GALLERY_FILE, 4096),
            expected: &[("files", GALLERY_FILE), ("gallery", "checksum")],
        },
        Case {
            what: "labels deleted",
            damage: |b| fs::remove_file(b.file(LABELS_FILE)).unwrap(),
            expected: &[("files", LABELS_FILE), ("labels", LABELS_FILE)],
        },
        Case {
            what: "wrong expected code",
            damage: wrong_expected_code,
            expected: &[("selftest-code", "256 bits from the expected code")],
        },
        Case {
            what: "no selftest",
            damage: no_selftest,
            expected: &[("selftest-code", "no [selftest]")],
        },
    ];
    for Case {
        what,
        damage,
        expected,
    } in cases
    {
        let b = build_bundle();
        damage(&b);
        let report = selftest(b.dir(), Backend::Cpu);
        assert!(!report.passed(), "{what}: {report:#?}");
        for (check, needle) in expected {
            let c = report.check(check).unwrap();
            assert!(
                !c.ok && c.detail.contains(needle),
                "{what}: check {check} should fail naming {needle:?}: {c:?}"
            );
        }
        if what == "wrong expected code" || what == "no selftest" {
            let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
            assert_eq!(failed, ["selftest-code"], "{what}");
        }
    }

    // Without a manifest only the manifest check runs.
    let b = build_bundle();
    fs::remove_file(b.file("manifest.toml")).unwrap();
    let report = selftest(b.dir(), Backend::Cpu);
    assert_eq!(report.checks.len(), 1);
    assert!(!report.passed() && report.checks[0].detail.contains("manifest.toml"));
}

/// The codes the appliance computes are those infer computes on the same preprocessing.
#[test]
fn the_code_of_a_lookup_is_the_code_infer_computes() {
    let b = build_bundle();
    let mut a = open(&b);
    let (img, _) = b.new_image(3);
    let want = common::code_of(&b.file(MODEL_FILE), &b.manifest(), &img);
    let found = a.lookup_image(&DynamicImage::ImageRgb8(img), 1).unwrap();
    assert_eq!(found.code, want.as_slice());
    assert_eq!(hamming(found.code, &want), 0);
}

/// A bundle with an empty catalogue opens, names nothing, and enrols from id 0.
#[test]
fn an_empty_gallery_knows_nothing_until_an_enrolment() {
    let b = build_bundle();
    let mut m = b.manifest();
    let hash: [u8; 32] = bundle::from_hex(&m.files[MODEL_FILE].sha256)
        .unwrap()
        .try_into()
        .unwrap();
    Gallery::create(b.file(GALLERY_FILE), 256, hash, &[], &[]).unwrap();
    Labels::new().write(b.file(LABELS_FILE)).unwrap();
    m.record_file(b.dir(), GALLERY_FILE).unwrap();
    m.record_file(b.dir(), LABELS_FILE).unwrap();
    m.write(b.dir()).unwrap();
    assert!(selftest(b.dir(), Backend::Cpu).passed());

    let mut a = open(&b);
    assert!(a.is_empty());
    let first = DynamicImage::ImageRgb8(b.items[0].image.clone());
    let found = a.lookup_image(&first, 5).unwrap();
    assert_eq!(found.hits().len(), 0);
    assert_eq!(found.verdict, Verdict::Unknown);
    assert_eq!(a.enroll("FIRST", &first).unwrap(), 0);
    let hit = owned(&a.lookup_image(&first, 5).unwrap());
    assert_eq!(hit.len(), 1);
    assert_eq!((hit[0].id, hit[0].distance, &*hit[0].sku), (0, 0, "FIRST"));
    drop(a);
    assert_eq!(open(&b).len(), 1);
}
