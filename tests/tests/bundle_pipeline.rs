//! From a catalogue folder to a device lookup: train a few steps, export the bundle (checked
//! against burn), build its gallery with the device runtime, and look up catalogue images
//! through `lookupd query`: each finds its own item at Hamming distance 0.

use std::path::Path;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use system_tests::binary;

const CLASSES: usize = 6;
const PER_CLASS: usize = 3;

/// A folder catalogue: one sub-folder per item, a few noisy views of a coloured shape each.
fn make_catalogue(dir: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for class in 0..CLASSES {
        let folder = dir.join(format!("item-{class}"));
        std::fs::create_dir_all(&folder).unwrap();
        let colour = [
            (class * 40 % 256) as u8,
            (255 - class * 35) as u8,
            (class * 90 % 256) as u8,
        ];
        for view in 0..PER_CLASS {
            let (ox, oy) = (rng.random_range(0..16u32), rng.random_range(0..16u32));
            let image = RgbImage::from_fn(80, 80, |x, y| {
                let inside = match class % 3 {
                    0 => (20..50).contains(&(x + ox)) && (20..60).contains(&(y + oy)),
                    1 => {
                        (x as i32 - 40 - ox as i32).pow(2) + (y as i32 - 40 - oy as i32).pow(2)
                            < 400
                    }
                    _ => x + y > 60 + ox && x < 70 - oy,
                };
                let noise = rng.random_range(0..20u8);
                if inside {
                    Rgb(colour.map(|c| c.saturating_add(noise)))
                } else {
                    Rgb([noise, noise, noise])
                }
            });
            image.save(folder.join(format!("view-{view}.png"))).unwrap();
        }
    }
}

fn run(program: &Path, args: &[&str]) -> String {
    system_tests::pipeline::run_tool(program, args).unwrap()
}

#[test]
fn catalogue_images_find_their_own_item_at_distance_zero() {
    let trainer = binary("trainer", "trainer");
    let lookupd = binary("lookupd", "lookupd");
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("catalogue");
    make_catalogue(&catalogue);
    let data = format!("folder:{}", catalogue.display());
    let run_dir = dir.path().join("run");
    let bundle = dir.path().join("bundle");
    system_tests::pipeline::train_briefly(&trainer, &data, &run_dir, 2).unwrap();
    let export = run(
        &trainer,
        &[
            "export",
            run_dir.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    let export: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert!(
        export["relative_difference"].as_f64().unwrap() <= 1e-4,
        "{export}"
    );
    let gallery = run(
        &trainer,
        &[
            "gallery",
            "--bundle",
            bundle.to_str().unwrap(),
            "--data",
            &data,
            "--runtime",
            "cpu",
        ],
    );
    let gallery: serde_json::Value = serde_json::from_str(&gallery).unwrap();
    assert_eq!(gallery["added"], CLASSES * PER_CLASS, "{gallery}");

    for class in 0..CLASSES {
        let image = catalogue.join(format!("item-{class}/view-1.png"));
        let out = run(
            &lookupd,
            &[
                "query",
                "--bundle",
                bundle.to_str().unwrap(),
                "--runtime",
                "cpu",
                "--k",
                "5",
                "--json",
                image.to_str().unwrap(),
            ],
        );
        let report: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let hits = report["hits"].as_array().unwrap();
        // Its own catalogue entry is among the exact matches (identical codes tie at 0).
        let own = hits
            .iter()
            .find(|hit| hit["distance"] == 0 && hit["sku"] == format!("item-{class}"));
        assert!(own.is_some(), "item-{class}/view-1.png: {report}");
        assert_eq!(hits[0]["distance"], 0, "{report}");
    }

    // A new item appended from a list: found at distance 0 under its SKU, and the bundle,
    // its manifest hashes updated, passes the device's self-test.
    let new_image = dir.path().join("new.png");
    RgbImage::from_fn(90, 70, |x, y| Rgb([(x * 3) as u8, 200, (y * 3) as u8]))
        .save(&new_image)
        .unwrap();
    let list = dir.path().join("new.tsv");
    std::fs::write(&list, "new-item\tnew.png\n").unwrap();
    let appended = run(
        &trainer,
        &[
            "gallery",
            "--bundle",
            bundle.to_str().unwrap(),
            "--images",
            list.to_str().unwrap(),
            "--append",
            "--runtime",
            "cpu",
        ],
    );
    let appended: serde_json::Value = serde_json::from_str(&appended).unwrap();
    assert_eq!(appended["added"], 1, "{appended}");
    assert_eq!(appended["items"], CLASSES * PER_CLASS + 1, "{appended}");
    let out = run(
        &lookupd,
        &[
            "query",
            "--bundle",
            bundle.to_str().unwrap(),
            "--runtime",
            "cpu",
            "--json",
            new_image.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(
        report["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|hit| hit["distance"] == 0 && hit["sku"] == "new-item"),
        "{report}"
    );
    run(
        &lookupd,
        &[
            "selftest",
            "--bundle",
            bundle.to_str().unwrap(),
            "--runtime",
            "cpu",
        ],
    );
}
