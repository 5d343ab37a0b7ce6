//! `trainer gallery` decodes a chunk of images in parallel while the device runtime embeds the
//! chunk before: every image must still get its own code, id and SKU, in catalogue order,
//! across chunk boundaries and around images that do not decode.

use bundle::Labels;
use gallery::Gallery;
use trainer::publish::{Catalogue, build_gallery};

#[test]
fn a_gallery_built_in_parallel_chunks_keeps_each_image_its_own_code_in_order() {
    let bundle = test_bundle::build_bundle();
    let manifest = bundle.manifest();
    let images = tempfile::tempdir().unwrap();
    // More than two chunks of 64, odd sizes, and two files that are not images.
    let count = 150;
    let corrupt = [3, 70];
    let mut list = String::new();
    let mut want = Vec::new();
    for i in 0..count {
        let path = images.path().join(format!("{i:03}.png"));
        if corrupt.contains(&i) {
            std::fs::write(&path, b"not an image").unwrap();
        } else {
            let image = test_bundle::noise_image(1000 + i as u64, 9 + i % 7, 11 + i % 5);
            image.save(&path).unwrap();
            want.push((
                format!("sku-{i}"),
                test_bundle::code_of(&bundle.file("model.onnx"), &manifest, &image),
            ));
        }
        list.push_str(&format!("sku-{i}\t{}\n", path.display()));
    }
    let tsv = images.path().join("catalogue.tsv");
    std::fs::write(&tsv, list).unwrap();

    let report = build_gallery(
        &bundle.dir(),
        &Catalogue::List(tsv),
        false,
        infer::Backend::Cpu,
    )
    .unwrap();
    assert_eq!(report.added, count as usize - corrupt.len());
    let skipped: Vec<String> = corrupt
        .iter()
        .map(|i| {
            images
                .path()
                .join(format!("{i:03}.png"))
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(report.skipped, skipped);

    let gallery = Gallery::open(bundle.file("gallery.gal")).unwrap();
    let labels = Labels::read(bundle.file("labels.tsv")).unwrap();
    assert_eq!(gallery.len(), want.len());
    assert_eq!(labels.len(), want.len());
    for (row, ((sku, code), label)) in want.iter().zip(labels.rows()).enumerate() {
        assert_eq!(gallery.id(row), row as u64);
        assert_eq!(label.id, row as u64);
        assert_eq!(&label.sku, sku, "row {row}");
        assert_eq!(gallery.code(row), code.as_slice(), "row {row} ({sku})");
    }
}
