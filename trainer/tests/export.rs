//! The ONNX export: the exported graph computes what the burn model computes (both backbones,
//! with and without the embedding layer), and the check refuses a graph that does not.

use trainer::backend::device_from_env;
use trainer::burn::module::Module;
use trainer::burn::tensor::{Distribution, Tensor};
use trainer::export::to_onnx;
use trainer::model::{Backbone, BackboneKind, EmbeddingModel};
use trainer::publish::check_export;

fn random_images(n: usize, side: usize) -> Vec<f32> {
    Tensor::<4>::random(
        [n, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        &device_from_env().unwrap(),
    )
    .into_data()
    .try_to_vec::<f32>()
    .unwrap()
}

/// A model whose BatchNorm statistics are not the identity, so folding them is exercised.
fn trained_like(kind: BackboneKind, dim: usize, seed: u64) -> EmbeddingModel {
    let device = device_from_env().unwrap().autodiff();
    device.seed(seed);
    let model = EmbeddingModel::new(Backbone::new(kind, &device, None), dim, &device);
    // One training-mode forward moves every running mean and variance.
    let side = 64;
    let _ = model.forward(Tensor::<4>::random(
        [4, 3, side, side],
        Distribution::Normal(0.5, 2.0),
        &device,
    ));
    model.valid()
}

#[test]
fn lite0_export_matches_burn_with_and_without_the_embedding_layer() {
    for dim in [1280, 96] {
        let model = trained_like(BackboneKind::EfficientnetLite0, dim, 1);
        let onnx = to_onnx(&model, 64, "test").unwrap();
        let difference = check_export(&model, &onnx, &random_images(2, 64), 2, 64).unwrap();
        eprintln!("lite0 {dim}: relative difference {difference:e}");
    }
}

#[test]
fn resnet50_export_matches_burn() {
    let model = trained_like(BackboneKind::Resnet50, 128, 2);
    let onnx = to_onnx(&model, 64, "test").unwrap();
    let difference = check_export(&model, &onnx, &random_images(1, 64), 1, 64).unwrap();
    eprintln!("resnet50: relative difference {difference:e}");
}

#[test]
fn the_check_refuses_a_graph_of_another_model_and_says_by_how_much() {
    let model = trained_like(BackboneKind::EfficientnetLite0, 64, 3);
    let other = trained_like(BackboneKind::EfficientnetLite0, 64, 4);
    let onnx = to_onnx(&other, 64, "test").unwrap();
    let error = check_export(&model, &onnx, &random_images(2, 64), 2, 64)
        .unwrap_err()
        .to_string();
    assert!(error.contains("differs from the burn model by"), "{error}");
    assert!(error.contains("allowed 1e-4"), "{error}");
}
