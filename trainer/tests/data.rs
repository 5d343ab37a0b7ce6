//! The data layer on tiny fixtures each test writes into a temporary directory.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use trainer::data::{
    Batch, ClassBalancedSampler, DataError, DataSpec, DatasetKind, FASHION_MNIST_DEFAULT_DIR,
    IMAGENET_MEAN, IMAGENET_STD, ImageSource, Loader, LoaderOptions, Preprocess, Split, load,
};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A 6x6 PNG of one colour with a marker pixel, so images tell apart.
fn png(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut img = RgbImage::from_pixel(6, 6, Rgb([shade, 255 - shade, shade / 2]));
    img.put_pixel(0, 0, Rgb([255, 0, 0]));
    img.save(path).unwrap();
}

fn spec(kind: &str, dir: &Path) -> DataSpec {
    format!("{kind}:{}", dir.display()).parse().unwrap()
}

fn paths(split: &Split) -> Vec<String> {
    split
        .samples
        .iter()
        .map(|s| match &s.source {
            ImageSource::File(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
            ImageSource::Grey(_) => "grey".into(),
        })
        .collect()
}

fn expect_err(result: Result<impl std::fmt::Debug, DataError>, needles: &[&str]) {
    let message = result.expect_err("expected an error").to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "error {message:?} should mention {needle:?}"
        );
    }
}

#[test]
fn spec_parses_kinds_and_rejects_bad_ones() {
    let s: DataSpec = "cub:/data/CUB_200_2011".parse().unwrap();
    assert_eq!(
        (s.kind, s.path.as_path(), s.split.as_deref()),
        (DatasetKind::Cub, Path::new("/data/CUB_200_2011"), None)
    );
    for (text, kind) in [
        ("cars196:/c", DatasetKind::Cars196),
        ("sop:/s", DatasetKind::Sop),
        ("inshop:/i", DatasetKind::InShop),
        ("folder:/f", DatasetKind::Folder),
        ("fashion-mnist:/m", DatasetKind::FashionMnist),
    ] {
        assert_eq!(text.parse::<DataSpec>().unwrap().kind, kind);
    }
    let fm: DataSpec = "fashion-mnist".parse().unwrap();
    assert_eq!(fm.path, PathBuf::from(FASHION_MNIST_DEFAULT_DIR));
    expect_err(
        "imagenet:/x".parse::<DataSpec>(),
        &["imagenet", "unknown kind", "cub, cars196"],
    );
    expect_err("cub".parse::<DataSpec>(), &["missing path", "cub:PATH"]);
    expect_err("sop:".parse::<DataSpec>(), &["missing path"]);

    // A split file is for `folder` only.
    let dir = tempfile::tempdir().unwrap();
    let with_split = spec("cub", dir.path()).with_split(Some(dir.path().join("split.txt")));
    expect_err(load(&with_split), &["split file applies to `folder` only"]);
    expect_err(
        load(&spec("sop", &dir.path().join("absent"))),
        &["absent", "not a directory"],
    );
}

#[test]
fn cub_splits_classes_1_to_100_and_101_to_200() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let images = [
        (1, "001.Black_footed_Albatross/a.jpg", 1),
        (2, "100.Green_Violetear/b.jpg", 100),
        (3, "101.White_Pelican/c.jpg", 101),
        (4, "001.Black_footed_Albatross/d.jpg", 1),
        (5, "200.Common_Yellowthroat/e.jpg", 200),
    ];
    let list: String = images
        .iter()
        .map(|(id, p, _)| format!("{id} {p}\n"))
        .collect();
    let labels: String = images
        .iter()
        .map(|(id, _, c)| format!("{id} {c}\n"))
        .collect();
    write(&root.join("images.txt"), &list);
    write(&root.join("image_class_labels.txt"), &labels);
    let d = load(&spec("cub", root)).unwrap();
    assert_eq!(d.name, "cub");
    assert_eq!(paths(&d.train), ["a.jpg", "b.jpg", "d.jpg"]);
    assert_eq!(d.train.labels(), [0, 1, 0]);
    assert_eq!(
        d.train.class_names,
        ["001.Black_footed_Albatross", "100.Green_Violetear"]
    );
    assert_eq!(d.test.labels(), [0, 1]);
    assert_eq!(
        d.test.class_names,
        ["101.White_Pelican", "200.Common_Yellowthroat"]
    );
    let ImageSource::File(first) = &d.train.samples[0].source else {
        panic!("a file")
    };
    assert_eq!(first, &root.join("images/001.Black_footed_Albatross/a.jpg"));
    assert!(d.query_gallery.is_none());

    // classes.txt, when there, names the classes.
    write(
        &root.join("classes.txt"),
        "1 Albatross\n100 Violetear\n101 Pelican\n200 Yellowthroat\n",
    );
    assert_eq!(
        load(&spec("cub", root)).unwrap().test.class_names,
        ["Pelican", "Yellowthroat"]
    );

    // An image without a label, and a malformed line, are named by file and line.
    write(&root.join("images.txt"), &format!("{list}6 x/f.jpg\n"));
    expect_err(
        load(&spec("cub", root)),
        &["images.txt:6", "image id 6 has no line"],
    );
    write(
        &root.join("image_class_labels.txt"),
        &format!("{labels}6 two\n"),
    );
    expect_err(
        load(&spec("cub", root)),
        &["image_class_labels.txt:6", "\"two\" is not a number"],
    );
    write(
        &root.join("image_class_labels.txt"),
        &format!("{labels}6 201\n"),
    );
    expect_err(
        load(&spec("cub", root)),
        &["image_class_labels.txt:6", "outside 1-200"],
    );
}

fn cars_fixture(mat: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cars_annos.mat"), mat).unwrap();
    dir
}

#[test]
fn cars196_reads_scipy_mat_files_and_splits_at_98() {
    // Written by scipy (testdata/make_cars_annos.py): UTF-8 chars uncompressed, and uint16
    // chars compressed; classes 1, 99, 98, 196, 1, 150.
    for mat in [
        &include_bytes!("../src/data/testdata/cars_annos_utf8_raw.mat")[..],
        &include_bytes!("../src/data/testdata/cars_annos_u16_z.mat")[..],
    ] {
        let dir = cars_fixture(mat);
        let d = load(&spec("cars196", dir.path())).unwrap();
        assert_eq!(paths(&d.train), ["000001.png", "000003.png", "000005.png"]);
        assert_eq!(d.train.labels(), [0, 1, 0]);
        assert_eq!(
            d.train.class_names,
            ["AM General Hummer SUV 2000", "class 98"]
        );
        assert_eq!(paths(&d.test), ["000002.png", "000004.png", "000006.png"]);
        assert_eq!(d.test.labels(), [0, 2, 1]);
        assert_eq!(d.test.class_names, ["class 99", "class 150", "class 196"]);
        let ImageSource::File(p) = &d.test.samples[0].source else {
            panic!("a file")
        };
        assert_eq!(p, &dir.path().join("car_ims/000002.png"));
    }
    // Garbage and a truncated file are errors naming the file, not panics.
    expect_err(
        load(&spec("cars196", cars_fixture(b"not a mat file").path())),
        &["cars_annos.mat"],
    );
    let whole = include_bytes!("../src/data/testdata/cars_annos_utf8_raw.mat");
    for cut in [100, 200, 1000, whole.len() - 9] {
        expect_err(
            load(&spec("cars196", cars_fixture(&whole[..cut]).path())),
            &["cars_annos.mat"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    expect_err(load(&spec("cars196", dir.path())), &["cars_annos.mat"]);
}

#[test]
fn sop_reads_both_lists_with_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("Ebay_train.txt"),
        "image_id class_id super_class_id path\n1 1 1 bicycle_final/1_0.JPG\n2 1 1 bicycle_final/1_1.JPG\n3 7 2 cabinet_final/7_0.JPG\n",
    );
    write(
        &root.join("Ebay_test.txt"),
        "image_id class_id super_class_id path\n4 11319 1 bicycle_final/11319_0.JPG\n5 11318 1 bicycle_final/11318_0.JPG\n",
    );
    let d = load(&spec("sop", root)).unwrap();
    assert_eq!(d.train.labels(), [0, 0, 1]);
    assert_eq!(d.train.class_names, ["1", "7"]);
    assert_eq!(d.test.labels(), [1, 0]);
    assert_eq!(d.test.class_names, ["11318", "11319"]);
    assert_eq!(paths(&d.test), ["11319_0.JPG", "11318_0.JPG"]);

    write(
        &root.join("Ebay_test.txt"),
        "image_id class_id super_class_id path\n4 11319 1\n",
    );
    expect_err(
        load(&spec("sop", root)),
        &[
            "Ebay_test.txt:2",
            "expected `image_id class_id super_class_id path`",
        ],
    );
}

#[test]
fn inshop_train_and_query_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let text = "7\nimage_name item_id evaluation_status\n\
        img/WOMEN/a/id_00000002/01.jpg id_00000002 train\n\
        img/WOMEN/a/id_00000001/01.jpg id_00000001 train\n\
        img/MEN/b/id_00000005/01.jpg id_00000005 query\n\
        img/MEN/b/id_00000005/02.jpg id_00000005 gallery\n\
        img/MEN/b/id_00000004/01.jpg id_00000004 gallery\n\
        img/MEN/b/id_00000004/02.jpg id_00000004 query\n\
        img/MEN/b/id_00000004/03.jpg id_00000004 gallery\n";
    write(&root.join("list_eval_partition.txt"), text);
    let d = load(&spec("inshop", root)).unwrap();
    assert_eq!(d.train.labels(), [1, 0]);
    assert_eq!(d.train.class_names, ["id_00000001", "id_00000002"]);
    assert_eq!(d.test.class_names, ["id_00000004", "id_00000005"]);
    assert_eq!(d.test.labels(), [1, 1, 0, 0, 0]);
    let qg = d.query_gallery.unwrap();
    assert_eq!(qg.queries, [0, 3]);
    assert_eq!(qg.gallery, [1, 2, 4]);
    let ImageSource::File(p) = &d.test.samples[0].source else {
        panic!("a file")
    };
    assert_eq!(p, &root.join("img/MEN/b/id_00000005/01.jpg"));

    write(
        &root.join("list_eval_partition.txt"),
        &format!("{text}img/x.jpg id_9 validation\n"),
    );
    expect_err(
        load(&spec("inshop", root)),
        &["list_eval_partition.txt:10", "\"validation\""],
    );
}

#[test]
fn folder_splits_in_halves_or_by_split_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    for (class, files) in [("d", 1), ("a", 2), ("c", 1), ("b", 3)] {
        for i in 0..files {
            png(&root.join(class).join(format!("{i}.png")), 10);
        }
    }
    write(&root.join("b/notes.txt"), "not an image");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    write(&root.join("README"), "a file, not a class");

    let d = load(&spec("folder", &root)).unwrap();
    assert_eq!(d.name, "folder:shop");
    assert_eq!(d.train.class_names, ["a", "b"]);
    assert_eq!(d.train.labels(), [0, 0, 1, 1, 1]);
    assert_eq!(d.test.class_names, ["c", "d"]);
    assert_eq!(d.test.labels(), [0, 1]);

    let split = dir.path().join("split.txt");
    write(&split, "# chosen by hand\ntrain c\n\ntest a\ntrain d\n");
    let d = load(&spec("folder", &root).with_split(Some(split.clone()))).unwrap();
    assert_eq!(d.train.class_names, ["c", "d"]);
    assert_eq!(d.test.class_names, ["a"]);
    assert_eq!(d.test.len(), 2);

    write(&split, "train c\ntest zebra\n");
    expect_err(
        load(&spec("folder", &root).with_split(Some(split.clone()))),
        &["split.txt:2", "zebra"],
    );
    write(&split, "train c\nvalidate a\n");
    expect_err(
        load(&spec("folder", &root).with_split(Some(split.clone()))),
        &["split.txt:2", "not train or test"],
    );
    write(&split, "train c\ntrain d\n");
    expect_err(
        load(&spec("folder", &root).with_split(Some(split))),
        &["test split has no images"],
    );

    let lone = dir.path().join("lone");
    png(&lone.join("only/0.png"), 1);
    expect_err(load(&spec("folder", &lone)), &["need at least 2"]);
}

/// An IDX file: magic, big-endian sizes, data; gzipped as Fashion-MNIST ships.
fn idx_gz(path: &Path, dims: &[u32], data: &[u8]) {
    let mut raw = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        raw.extend_from_slice(&d.to_be_bytes());
    }
    raw.extend_from_slice(data);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
}

#[test]
fn fashion_mnist_pools_tiny_idx_files_and_splits_at_5() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 2x3 images whose pixels all equal their pooled index.
    let images =
        |first: u8, n: u8| -> Vec<u8> { (first..first + n).flat_map(|i| [i; 6]).collect() };
    idx_gz(
        &root.join("train-images-idx3-ubyte.gz"),
        &[4, 2, 3],
        &images(0, 4),
    );
    idx_gz(
        &root.join("train-labels-idx1-ubyte.gz"),
        &[4],
        &[0, 5, 9, 4],
    );
    idx_gz(
        &root.join("t10k-images-idx3-ubyte.gz"),
        &[2, 2, 3],
        &images(4, 2),
    );
    idx_gz(&root.join("t10k-labels-idx1-ubyte.gz"), &[2], &[5, 1]);
    let d = load(&spec("fashion-mnist", root)).unwrap();
    assert_eq!(d.train.class_names, ["T-shirt/top", "Trouser", "Coat"]);
    assert_eq!(d.train.labels(), [0, 2, 1]);
    assert_eq!(d.test.class_names, ["Sandal", "Ankle boot"]);
    assert_eq!(d.test.labels(), [0, 1, 0]);
    let firsts: Vec<(u32, u32, u8)> = d
        .train
        .samples
        .iter()
        .chain(&d.test.samples)
        .map(|s| match &s.source {
            ImageSource::Grey(g) => (g.width(), g.height(), g.pixels()[0]),
            ImageSource::File(_) => panic!("in memory"),
        })
        .collect();
    assert_eq!(
        firsts,
        [
            (3, 2, 0),
            (3, 2, 3),
            (3, 2, 5),
            (3, 2, 1),
            (3, 2, 2),
            (3, 2, 4)
        ]
    );
    let DynamicImage::ImageLuma8(g) = d.test.samples[2].source.decode().unwrap() else {
        panic!("grey")
    };
    assert_eq!(g.dimensions(), (3, 2));
    assert!(g.pixels().all(|p| p.0 == [4]));

    // Bad magic, wrong counts, truncation and trailing data are errors naming the file.
    idx_gz(&root.join("t10k-labels-idx1-ubyte.gz"), &[2, 1], &[5, 1]);
    expect_err(
        load(&spec("fashion-mnist", root)),
        &["t10k-labels-idx1-ubyte.gz", "magic"],
    );
    idx_gz(&root.join("t10k-labels-idx1-ubyte.gz"), &[3], &[5, 1, 2]);
    expect_err(
        load(&spec("fashion-mnist", root)),
        &["t10k-images-idx3-ubyte.gz", "2 images", "3 labels"],
    );
    idx_gz(&root.join("t10k-labels-idx1-ubyte.gz"), &[2], &[5]);
    expect_err(
        load(&spec("fashion-mnist", root)),
        &["t10k-labels-idx1-ubyte.gz", "truncated"],
    );
    idx_gz(&root.join("t10k-labels-idx1-ubyte.gz"), &[2], &[5, 1, 0]);
    expect_err(
        load(&spec("fashion-mnist", root)),
        &["t10k-labels-idx1-ubyte.gz", "continues past"],
    );
    idx_gz(&root.join("t10k-labels-idx1-ubyte.gz"), &[2], &[5, 10]);
    expect_err(load(&spec("fashion-mnist", root)), &["label 10"]);
    std::fs::write(
        root.join("t10k-labels-idx1-ubyte.gz"),
        b"\x1f\x8b not really gzip",
    )
    .unwrap();
    expect_err(
        load(&spec("fashion-mnist", root)),
        &["t10k-labels-idx1-ubyte.gz"],
    );
    std::fs::remove_file(root.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    expect_err(
        load(&spec("fashion-mnist", root)),
        &["t10k-labels-idx1-ubyte"],
    );
}

#[test]
fn fashion_mnist_real_files_when_installed() {
    let dir = Path::new(FASHION_MNIST_DEFAULT_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        eprintln!(
            "skipped: no Fashion-MNIST in {} (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let d = load(&"fashion-mnist".parse().unwrap()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (35_000, 35_000));
    assert_eq!(
        d.train.class_names,
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    );
    assert_eq!(
        d.test.class_names,
        ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    );
    let ImageSource::Grey(g) = &d.test.samples[0].source else {
        panic!("in memory")
    };
    assert_eq!((g.width(), g.height()), (28, 28));
    let mut out = vec![0.0; 3 * 32 * 32];
    Preprocess::new(32, 36)
        .unwrap()
        .eval(&d.test.samples[0].source.decode().unwrap(), &mut out)
        .unwrap();
}

#[test]
fn sampler_draws_distinct_classes_with_fixed_images_each() {
    // 10 classes of 1 to 10 images, interleaved.
    let labels: Vec<usize> = (0..10)
        .flat_map(|c| vec![c; c + 1])
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut s = ClassBalancedSampler::new(&labels, 12, 3, 7).unwrap();
    assert_eq!(s.batches_per_epoch(), 55 / 12);
    for _ in 0..50 {
        let batch = s.next_batch();
        assert_eq!(batch.len(), 12);
        let classes: Vec<usize> = batch.chunks(3).map(|c| labels[c[0]]).collect();
        for chunk in batch.chunks(3) {
            assert!(
                chunk.iter().all(|&i| labels[i] == labels[chunk[0]]),
                "one class per group: {batch:?}"
            );
        }
        assert_eq!(
            classes.iter().collect::<BTreeSet<_>>().len(),
            4,
            "distinct classes: {classes:?}"
        );
    }
    assert_eq!(s.step(), 50);

    expect_err(ClassBalancedSampler::new(&labels, 10, 3, 0), &["multiple"]);
    expect_err(ClassBalancedSampler::new(&labels, 0, 3, 0), &["multiple"]);
    expect_err(
        ClassBalancedSampler::new(&labels, 33, 3, 0),
        &["needs 11 classes", "have 10"],
    );
    expect_err(
        ClassBalancedSampler::new(&[], 3, 3, 0),
        &["needs 1 classes"],
    );
}

#[test]
fn sampler_is_deterministic_and_resumable() {
    let labels: Vec<usize> = (0..300).map(|i| i % 30).collect();
    let run = |seed| {
        let mut s = ClassBalancedSampler::new(&labels, 10, 5, seed).unwrap();
        (0..8).map(|_| s.next_batch()).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let whole = run(1);
    let mut resumed = ClassBalancedSampler::new(&labels, 10, 5, 1).unwrap();
    resumed.set_step(5);
    assert_eq!(resumed.next_batch(), whole[5]);
    resumed.skip(1);
    assert_eq!(resumed.next_batch(), whole[7]);
    assert_eq!(resumed.batch_at(3), whole[3]);
    // Draws with replacement: a class of one image fills its group with that image.
    let mut one = ClassBalancedSampler::new(&[0, 1], 4, 2, 0).unwrap();
    let mut b = one.next_batch();
    b.sort();
    assert_eq!(b, [0, 0, 1, 1]);
}

/// A 4x4 image whose pixel (x, y) is (40x + 1, 40y + 2, 10x + 10y + 3).
fn gradient() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(4, 4, |x, y| {
        Rgb([40 * x as u8 + 1, 40 * y as u8 + 2, 10 * (x + y) as u8 + 3])
    }))
}

#[test]
fn preprocess_normalises_crops_and_flips() {
    let p = Preprocess {
        image_size: 2,
        resize: 4,
        ..Preprocess::default()
    };
    assert_eq!(Preprocess::default().out_len(), 3 * 224 * 224);
    assert_eq!(p.out_len(), 12);
    let mut out = vec![0.0f32; 12];
    // Already 4x4, so no resampling: the centre crop starts at (1, 1).
    p.eval(&gradient(), &mut out).unwrap();
    let by_hand = |v: f32, c: usize| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    // Red plane, (0, 0) of the crop = pixel (1, 1): red 41.
    assert!(
        (out[0] - by_hand(41.0, 0)).abs() < 1e-5,
        "{} vs {}",
        out[0],
        by_hand(41.0, 0)
    );
    assert!((out[0] - (41.0 / 255.0 - 0.485) / 0.229).abs() < 1e-5);
    // Green plane, crop (1, 0) = pixel (2, 1): green 42. Blue plane, crop (1, 1) = pixel (2, 2): blue 43.
    assert!((out[4 + 1] - by_hand(42.0, 1)).abs() < 1e-5);
    assert!((out[8 + 3] - by_hand(43.0, 2)).abs() < 1e-5);

    // A flip mirrors every row of every plane.
    let mut flipped = vec![0.0f32; 12];
    p.apply(&gradient(), (1, 1), true, &mut flipped).unwrap();
    for plane in 0..3 {
        for y in 0..2 {
            for x in 0..2 {
                assert_eq!(
                    flipped[plane * 4 + y * 2 + x],
                    out[plane * 4 + y * 2 + (1 - x)]
                );
            }
        }
    }
    assert_ne!(flipped, out);

    // Grey becomes three equal channels (before normalisation).
    let grey =
        DynamicImage::ImageLuma8(GrayImage::from_fn(4, 4, |x, y| Luma([(x * 50 + y) as u8])));
    p.eval(&grey, &mut out).unwrap();
    for i in 0..4 {
        let raw: Vec<f32> = (0..3)
            .map(|c| out[c * 4 + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c])
            .collect();
        assert!(
            (raw[0] - raw[1]).abs() < 1e-6 && (raw[1] - raw[2]).abs() < 1e-6,
            "{raw:?}"
        );
    }

    // Resizing a flat image keeps it flat; any size goes to the square.
    let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(13, 7, Rgb([200, 100, 50])));
    let big = Preprocess {
        image_size: 5,
        resize: 9,
        ..Preprocess::default()
    };
    let mut out = vec![0.0f32; big.out_len()];
    big.train(&flat, &mut StdRng::seed_from_u64(1), &mut out)
        .unwrap();
    assert!(
        out[..25]
            .iter()
            .all(|&v| (v - by_hand(200.0, 0)).abs() < 1e-5)
    );
    assert!(
        out[50..]
            .iter()
            .all(|&v| (v - by_hand(50.0, 2)).abs() < 1e-5)
    );

    // Bad sizes are errors, not panics.
    expect_err(
        p.eval(&gradient(), &mut [0.0; 11]),
        &["11 floats, expected 12"],
    );
    expect_err(Preprocess::new(300, 256), &["between 1 and the resize 256"]);
    expect_err(
        p.apply(&gradient(), (3, 0), false, &mut [0.0; 12]),
        &["crop"],
    );
    expect_err(
        p.eval(&DynamicImage::new_rgb8(0, 0), &mut [0.0; 12]),
        &["zero size"],
    );
}

#[test]
fn train_crops_and_flips_vary_with_the_rng() {
    let p = Preprocess {
        image_size: 2,
        resize: 4,
        ..Preprocess::default()
    };
    let mut seen = BTreeSet::new();
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let mut out = vec![0.0f32; 12];
        p.train(&gradient(), &mut rng, &mut out).unwrap();
        seen.insert(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    // 3 x 3 crop positions, flipped or not.
    assert_eq!(seen.len(), 18);
}

/// A folder dataset of 3 training classes x 3 images plus, in class `a`, a corrupt `.png`.
fn loader_fixture() -> (tempfile::TempDir, Arc<Split>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let mut shade = 0;
    for class in ["a", "b", "c", "z"] {
        for i in 0..3 {
            shade += 20;
            png(&root.join(class).join(format!("{i}.png")), shade);
        }
    }
    write(&root.join("a/0_corrupt.png"), "this is not a png");
    write(
        &dir.path().join("split.txt"),
        "train a\ntrain b\ntrain c\ntest z\n",
    );
    let d = load(&spec("folder", &root).with_split(Some(dir.path().join("split.txt")))).unwrap();
    (dir, Arc::new(d.train))
}

fn small() -> Preprocess {
    Preprocess {
        image_size: 4,
        resize: 6,
        ..Preprocess::default()
    }
}

fn collect(loader: Loader, n: usize) -> Vec<Batch> {
    loader.take(n).collect()
}

#[test]
fn eval_loader_keeps_order_and_skips_a_corrupt_image() {
    let (_dir, split) = loader_fixture();
    assert_eq!(split.class_names, ["a", "b", "c"]);
    assert_eq!(split.len(), 10);
    let corrupt = paths(&split)
        .iter()
        .position(|p| p == "0_corrupt.png")
        .unwrap();
    assert_eq!(corrupt, 1);
    let batches = collect(
        Loader::eval(split.clone(), small(), 4, LoaderOptions::default()).unwrap(),
        10,
    );
    assert_eq!(batches.len(), 3);
    assert_eq!(
        batches.iter().map(|b| b.step).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(batches[0].indices, [0, 2, 3]);
    assert_eq!(batches[1].indices, [4, 5, 6, 7]);
    assert_eq!(batches[2].indices, [8, 9]);
    let len = small().out_len();
    for b in &batches {
        assert_eq!(b.images.len(), b.len() * len);
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], split.samples[i].label);
            let mut expected = vec![0.0f32; len];
            small()
                .eval(&split.samples[i].source.decode().unwrap(), &mut expected)
                .unwrap();
            assert_eq!(
                &b.images[k * len..(k + 1) * len],
                &expected[..],
                "image {i}"
            );
        }
    }
    expect_err(
        Loader::eval(split, small(), 0, LoaderOptions::default()),
        &["batch size"],
    );
}

#[test]
fn train_loader_is_deterministic_whatever_the_threads() {
    let (_dir, split) = loader_fixture();
    let run = |threads, step| {
        let mut sampler = ClassBalancedSampler::new(&split.labels(), 6, 2, 11).unwrap();
        sampler.set_step(step);
        let opts = LoaderOptions {
            prefetch: 2,
            threads: Some(threads),
        };
        collect(
            Loader::train(split.clone(), sampler, small(), 5, opts).unwrap(),
            6,
        )
    };
    let one = run(1, 0);
    let four = run(4, 0);
    assert_eq!(one.len(), 6);
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(
            (a.step, &a.indices, &a.labels),
            (b.step, &b.indices, &b.labels)
        );
        assert_eq!(a.images, b.images);
    }
    // Resumed at step 3, the loader makes what the uninterrupted run made from step 3 on.
    let resumed = run(2, 3);
    let from3: Vec<&Batch> = one.iter().filter(|b| b.step >= 3).collect();
    for (a, b) in from3.iter().zip(&resumed) {
        assert_eq!(
            (a.step, &a.indices, &a.images),
            (b.step, &b.indices, &b.images)
        );
    }
    // Another augmentation seed: the same draws, other views of them.
    let sampler = ClassBalancedSampler::new(&split.labels(), 6, 2, 11).unwrap();
    let other = collect(
        Loader::train(split.clone(), sampler, small(), 6, LoaderOptions::default()).unwrap(),
        1,
    );
    assert_eq!(
        (other[0].step, &other[0].indices),
        (one[0].step, &one[0].indices)
    );
    assert_ne!(other[0].images, one[0].images);
}

#[test]
fn train_loader_skips_corrupt_images_and_unreadable_batches() {
    let (_dir, split) = loader_fixture();
    let len = small().out_len();
    let sampler = ClassBalancedSampler::new(&split.labels(), 6, 2, 0).unwrap();
    let mut seen_short = false;
    for b in collect(
        Loader::train(
            split.clone(),
            sampler.clone(),
            small(),
            1,
            LoaderOptions::default(),
        )
        .unwrap(),
        40,
    ) {
        let drawn = sampler.batch_at(b.step);
        let kept: Vec<usize> = drawn.iter().copied().filter(|&i| i != 1).collect();
        assert_eq!(b.indices, kept, "step {}", b.step);
        assert_eq!(b.images.len(), kept.len() * len);
        seen_short |= kept.len() < drawn.len();
        assert!(b.images.iter().all(|v| v.is_finite()));
    }
    assert!(seen_short, "the corrupt image was drawn in 40 batches");

    // A class whose only image is corrupt: its batches are skipped, the stream goes on.
    let pick = |i: usize, label| trainer::data::Sample {
        source: split.samples[i].source.clone(),
        label,
    };
    let bad = Split {
        samples: vec![pick(1, 0), pick(4, 1), pick(7, 2)],
        class_names: split.class_names.clone(),
    };
    let sampler = ClassBalancedSampler::new(&bad.labels(), 2, 2, 0).unwrap();
    let batches = collect(
        Loader::train(Arc::new(bad), sampler, small(), 1, LoaderOptions::default()).unwrap(),
        10,
    );
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.labels != [0, 0] && b.len() == 2));
    assert!(batches.windows(2).all(|w| w[0].step < w[1].step));
    assert!(batches.last().unwrap().step > 9, "some steps were skipped");
}

/// Collects what `tracing` prints, from every thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_corrupt_image_is_reported_once_by_path() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The only test here that sets it: the loader logs from its own threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (dir, split) = loader_fixture();
    let sampler = ClassBalancedSampler::new(&split.labels(), 6, 2, 0).unwrap();
    let drawn = (0..40)
        .filter(|&s| sampler.batch_at(s).contains(&1))
        .count();
    assert!(
        drawn > 1,
        "the corrupt image is drawn in several of the 40 batches"
    );
    let loader = Loader::train(split, sampler, small(), 1, LoaderOptions::default()).unwrap();
    assert_eq!(collect(loader, 40).len(), 40);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let corrupt = dir.path().join("ds/a/0_corrupt.png").display().to_string();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&corrupt)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("image skipped"),
        "{}",
        lines[0]
    );
}
