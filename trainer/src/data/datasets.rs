//! Readers for each dataset layout and its standard class-disjoint split.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{DataError, DataSpec, Dataset, DatasetKind, ImageSource, QueryGallery, Sample, Split};
use super::{idx, mat5};

/// Where Debian's `dataset-fashion-mnist` package puts the IDX files.
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by IDX label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// File extensions a `folder` dataset takes as images (what the `image` build here decodes).
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Reads the dataset `spec` names, with its standard class-disjoint train/test split.
pub fn load(spec: &DataSpec) -> Result<Dataset, DataError> {
    if spec.split.is_some() && spec.kind != DatasetKind::Folder {
        return Err(DataError::Spec {
            spec: spec.to_string(),
            reason: format!(
                "a split file applies to `folder` only; {} has a fixed split",
                spec.kind
            ),
        });
    }
    let root = spec.path.as_path();
    if !root.is_dir() {
        return Err(DataError::format(root, "not a directory"));
    }
    match spec.kind {
        DatasetKind::Cub => load_cub(root),
        DatasetKind::Cars196 => load_cars196(root),
        DatasetKind::Sop => load_sop(root),
        DatasetKind::InShop => load_inshop(root),
        DatasetKind::Folder => load_folder(root, spec.split.as_deref()),
        DatasetKind::FashionMnist => load_fashion_mnist(root),
    }
}

/// Dense labels in the order of the original class keys; samples keep their file order.
fn build_split<K: Ord + Clone>(
    items: Vec<(ImageSource, K)>,
    mut name_of: impl FnMut(&K) -> String,
) -> Split {
    let mut dense: BTreeMap<K, usize> = items.iter().map(|(_, k)| (k.clone(), 0)).collect();
    let mut class_names = Vec::with_capacity(dense.len());
    for (i, (k, label)) in dense.iter_mut().enumerate() {
        *label = i;
        class_names.push(name_of(k));
    }
    let samples = items
        .into_iter()
        .map(|(source, k)| Sample {
            source,
            label: dense[&k],
        })
        .collect();
    Split {
        samples,
        class_names,
    }
}

fn read_text(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// Non-blank lines with their 1-based numbers, from line `skip + 1` on.
fn lines(text: &str, skip: usize) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .skip(skip)
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

fn parse_num<T: std::str::FromStr>(
    path: &Path,
    line: usize,
    what: &str,
    s: &str,
) -> Result<T, DataError> {
    s.parse()
        .map_err(|_| DataError::line(path, line, format!("{what} {s:?} is not a number")))
}

/// `FIRST REST` where REST may hold spaces (a path).
fn split_first<'a>(
    path: &Path,
    line: usize,
    l: &'a str,
    expected: &str,
) -> Result<(&'a str, &'a str), DataError> {
    l.split_once(char::is_whitespace)
        .map(|(a, b)| (a, b.trim()))
        .filter(|(_, b)| !b.is_empty())
        .ok_or_else(|| DataError::line(path, line, format!("expected `{expected}`, got {l:?}")))
}

fn fail_if_empty(dataset: &Dataset, root: &Path) -> Result<(), DataError> {
    for (side, split) in [("train", &dataset.train), ("test", &dataset.test)] {
        if split.is_empty() {
            return Err(DataError::format(
                root,
                format!("the {side} split has no images"),
            ));
        }
    }
    Ok(())
}

/// CUB-200-2011: `images.txt` (id path, under `images/`), `image_class_labels.txt` (id class),
/// optionally `classes.txt` for the names; classes 1-100 train, 101-200 test.
fn load_cub(root: &Path) -> Result<Dataset, DataError> {
    let labels_path = root.join("image_class_labels.txt");
    let labels_text = read_text(&labels_path)?;
    let mut class_of: HashMap<u64, u32> = HashMap::new();
    for (n, l) in lines(&labels_text, 0) {
        let (id, class) = split_first(&labels_path, n, l, "IMAGE_ID CLASS_ID")?;
        let id: u64 = parse_num(&labels_path, n, "image id", id)?;
        let class: u32 = parse_num(&labels_path, n, "class id", class)?;
        if !(1..=200).contains(&class) {
            return Err(DataError::line(
                &labels_path,
                n,
                format!("class {class} is outside 1-200"),
            ));
        }
        if class_of.insert(id, class).is_some() {
            return Err(DataError::line(
                &labels_path,
                n,
                format!("image id {id} labelled twice"),
            ));
        }
    }

    let names_path = root.join("classes.txt");
    let mut names: HashMap<u32, String> = HashMap::new();
    if names_path.exists() {
        let text = read_text(&names_path)?;
        for (n, l) in lines(&text, 0) {
            let (id, name) = split_first(&names_path, n, l, "CLASS_ID NAME")?;
            names.insert(parse_num(&names_path, n, "class id", id)?, name.to_string());
        }
    }

    let images_path = root.join("images.txt");
    let images_text = read_text(&images_path)?;
    let mut seen = HashSet::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (n, l) in lines(&images_text, 0) {
        let (id, rel) = split_first(&images_path, n, l, "IMAGE_ID PATH")?;
        let id: u64 = parse_num(&images_path, n, "image id", id)?;
        if !seen.insert(id) {
            return Err(DataError::line(
                &images_path,
                n,
                format!("image id {id} listed twice"),
            ));
        }
        let class = *class_of.get(&id).ok_or_else(|| {
            DataError::line(
                &images_path,
                n,
                format!("image id {id} has no line in {}", labels_path.display()),
            )
        })?;
        // Without classes.txt, CUB's folder names (`001.Black_footed_Albatross/...`) name the class.
        if let Entry::Vacant(slot) = names.entry(class)
            && let Some(dir) = Path::new(rel)
                .parent()
                .and_then(|p| p.to_str())
                .filter(|d| !d.is_empty())
        {
            slot.insert(dir.to_string());
        }
        let item = (ImageSource::File(root.join("images").join(rel)), class);
        if class <= 100 {
            train.push(item)
        } else {
            test.push(item)
        }
    }
    let mut name = |c: &u32| {
        names
            .get(c)
            .cloned()
            .unwrap_or_else(|| format!("class {c}"))
    };
    let dataset = Dataset {
        name: "cub".into(),
        train: build_split(train, &mut name),
        test: build_split(test, &mut name),
        query_gallery: None,
    };
    fail_if_empty(&dataset, root)?;
    Ok(dataset)
}

/// Cars196: `cars_annos.mat` (`annotations` struct array with `relative_im_path` and a 1-based
/// `class`; `class_names` cell); classes 1-98 train, 99-196 test.
fn load_cars196(root: &Path) -> Result<Dataset, DataError> {
    let path = root.join("cars_annos.mat");
    let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
    let vars = mat5::read(&bytes).map_err(|e| DataError::format(&path, e))?;
    let find = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v);

    let annotations =
        find("annotations").ok_or_else(|| DataError::format(&path, "no variable `annotations`"))?;
    let mat5::Value::Struct {
        fields, elements, ..
    } = annotations
    else {
        return Err(DataError::format(
            &path,
            "`annotations` is not a struct array",
        ));
    };
    let field = |name: &str| {
        fields
            .iter()
            .position(|f| f == name)
            .ok_or_else(|| DataError::format(&path, format!("`annotations` has no field `{name}`")))
    };
    let (path_field, class_field) = (field("relative_im_path")?, field("class")?);

    let names: Vec<String> = match find("class_names") {
        Some(mat5::Value::Cell { items, .. }) => items
            .iter()
            .map(|v| v.as_string().unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };

    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, element) in elements.iter().enumerate() {
        let at = |what: &str| DataError::format(&path, format!("annotations({}): {what}", i + 1));
        let rel = element[path_field]
            .as_string()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at("relative_im_path is not a string"))?;
        let class = element[class_field]
            .as_scalar()
            .ok_or_else(|| at("class is not a number"))?;
        if class.fract() != 0.0 || !(1.0..=196.0).contains(&class) {
            return Err(at(&format!("class {class} is not an integer in 1-196")));
        }
        let class = class as u32;
        let item = (ImageSource::File(root.join(&rel)), class);
        if class <= 98 {
            train.push(item)
        } else {
            test.push(item)
        }
    }
    let mut name = |c: &u32| {
        names
            .get(*c as usize - 1)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("class {c}"))
    };
    let dataset = Dataset {
        name: "cars196".into(),
        train: build_split(train, &mut name),
        test: build_split(test, &mut name),
        query_gallery: None,
    };
    fail_if_empty(&dataset, root)?;
    Ok(dataset)
}

/// One of SOP's `Ebay_*.txt`: a header line, then `image_id class_id super_class_id path`.
fn read_sop_list(root: &Path, file: &str) -> Result<Split, DataError> {
    let path = root.join(file);
    let text = read_text(&path)?;
    let mut items = Vec::new();
    for (n, l) in lines(&text, 1) {
        let parts: Vec<&str> = l.splitn(4, char::is_whitespace).collect();
        let [_, class, _, rel] = parts[..] else {
            return Err(DataError::line(
                &path,
                n,
                format!("expected `image_id class_id super_class_id path`, got {l:?}"),
            ));
        };
        let class: u64 = parse_num(&path, n, "class id", class)?;
        items.push((ImageSource::File(root.join(rel.trim())), class));
    }
    Ok(build_split(items, |c| c.to_string()))
}

/// Stanford Online Products: `Ebay_train.txt` and `Ebay_test.txt`.
fn load_sop(root: &Path) -> Result<Dataset, DataError> {
    let dataset = Dataset {
        name: "sop".into(),
        train: read_sop_list(root, "Ebay_train.txt")?,
        test: read_sop_list(root, "Ebay_test.txt")?,
        query_gallery: None,
    };
    fail_if_empty(&dataset, root)?;
    Ok(dataset)
}

/// In-Shop Clothes: `list_eval_partition.txt` (a count line and a header line, then
/// `image_name item_id status`); train = `train`, test = `query` + `gallery`.
fn load_inshop(root: &Path) -> Result<Dataset, DataError> {
    let path = root.join("list_eval_partition.txt");
    let text = read_text(&path)?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut query_gallery = QueryGallery::default();
    for (n, l) in lines(&text, 2) {
        let parts: Vec<&str> = l.split_whitespace().collect();
        let [image, item, status] = parts[..] else {
            return Err(DataError::line(
                &path,
                n,
                format!("expected `image_name item_id status`, got {l:?}"),
            ));
        };
        let entry = (ImageSource::File(root.join(image)), item.to_string());
        match status {
            "train" => train.push(entry),
            "query" | "gallery" => {
                let side = if status == "query" {
                    &mut query_gallery.queries
                } else {
                    &mut query_gallery.gallery
                };
                side.push(test.len());
                test.push(entry);
            }
            other => {
                return Err(DataError::line(
                    &path,
                    n,
                    format!("status {other:?} is not train, query or gallery"),
                ));
            }
        }
    }
    let dataset = Dataset {
        name: "inshop".into(),
        train: build_split(train, |c| c.clone()),
        test: build_split(test, |c| c.clone()),
        query_gallery: Some(query_gallery),
    };
    fail_if_empty(&dataset, root)?;
    if dataset
        .query_gallery
        .as_ref()
        .is_some_and(|qg| qg.queries.is_empty() || qg.gallery.is_empty())
    {
        return Err(DataError::format(
            &path,
            "the test split needs both query and gallery images",
        ));
    }
    Ok(dataset)
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The image files directly inside `dir`, sorted by name.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if is_image && !is_hidden(&name.to_string_lossy()) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One sub-folder per class. With `split_file`, its `train CLASS` / `test CLASS` lines choose
/// the sides (classes it does not name are left out); without, the first half of the classes
/// by sorted name trains and the rest test (train takes the odd one out).
fn load_folder(root: &Path, split_file: Option<&Path>) -> Result<Dataset, DataError> {
    let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| DataError::io(root, e))? {
        let entry = entry.map_err(|e| DataError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name) || !entry.path().is_dir() {
            continue;
        }
        let images = list_images(&entry.path())?;
        if images.is_empty() {
            tracing::warn!(
                "{}: no images (jpg, jpeg, png); class left out",
                entry.path().display()
            );
            continue;
        }
        classes.push((name, images));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));

    let train_side: Vec<Option<bool>> = match split_file {
        Some(path) => {
            let text = read_text(path)?;
            let mut side: HashMap<&str, (bool, usize)> = HashMap::new();
            for (n, l) in lines(&text, 0).filter(|(_, l)| !l.starts_with('#')) {
                let (which, class) = split_first(path, n, l, "train CLASS` or `test CLASS")?;
                let is_train = match which {
                    "train" => true,
                    "test" => false,
                    other => {
                        return Err(DataError::line(
                            path,
                            n,
                            format!("{other:?} is not train or test"),
                        ));
                    }
                };
                if !classes.iter().any(|(c, _)| c == class) {
                    return Err(DataError::line(
                        path,
                        n,
                        format!(
                            "no class folder {class:?} with images in {}",
                            root.display()
                        ),
                    ));
                }
                if side.insert(class, (is_train, n)).is_some() {
                    return Err(DataError::line(
                        path,
                        n,
                        format!("class {class:?} listed twice"),
                    ));
                }
            }
            classes
                .iter()
                .map(|(c, _)| side.get(c.as_str()).map(|s| s.0))
                .collect()
        }
        None => {
            if classes.len() < 2 {
                return Err(DataError::format(
                    root,
                    format!(
                        "{} class folder(s) with images; need at least 2 to split",
                        classes.len()
                    ),
                ));
            }
            let half = classes.len().div_ceil(2);
            (0..classes.len()).map(|i| Some(i < half)).collect()
        }
    };

    let (mut train, mut test) = (Vec::new(), Vec::new());
    for ((name, images), side) in classes.into_iter().zip(train_side) {
        let Some(is_train) = side else { continue };
        let out = if is_train { &mut train } else { &mut test };
        out.extend(
            images
                .into_iter()
                .map(|p| (ImageSource::File(p), name.clone())),
        );
    }
    let name = root
        .file_name()
        .map(|n| format!("folder:{}", n.to_string_lossy()))
        .unwrap_or_else(|| "folder".into());
    let dataset = Dataset {
        name,
        train: build_split(train, |c| c.clone()),
        test: build_split(test, |c| c.clone()),
        query_gallery: None,
    };
    fail_if_empty(&dataset, split_file.unwrap_or(root))?;
    Ok(dataset)
}

/// Fashion-MNIST: the train and t10k IDX files pooled (70,000 images); labels 0-4 train,
/// 5-9 test, so the test classes were never seen in training.
fn load_fashion_mnist(root: &Path) -> Result<Dataset, DataError> {
    let pooled = idx::read_pooled(root, &["train", "t10k"])?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &label) in pooled.labels.iter().enumerate() {
        let label = label as usize;
        if label >= FASHION_MNIST_CLASSES.len() {
            return Err(DataError::format(
                root,
                format!("image {i} has label {label}; Fashion-MNIST has 10 classes"),
            ));
        }
        let source = ImageSource::Grey(pooled.image(i));
        if label < 5 {
            train.push((source, label))
        } else {
            test.push((source, label))
        }
    }
    let name = |c: &usize| FASHION_MNIST_CLASSES[*c].to_string();
    let dataset = Dataset {
        name: "fashion-mnist".into(),
        train: build_split(train, name),
        test: build_split(test, name),
        query_gallery: None,
    };
    fail_if_empty(&dataset, root)?;
    Ok(dataset)
}
