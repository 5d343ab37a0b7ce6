//! ImageNet top-5 with an imported classifier: the user's check that a weight import is right.

use std::path::{Path, PathBuf};

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::data::Preprocess;
use crate::model::Backbone;

/// ImageNet class names in class-index order (first WordNet lemma of each synset).
const IMAGENET_NAMES: &str = include_str!("model/imagenet_classes.txt");

pub fn imagenet_name(class: usize) -> Option<&'static str> {
    IMAGENET_NAMES.lines().nth(class)
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassProbability {
    pub class: usize,
    pub prob: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Prediction {
    pub image: PathBuf,
    pub top5: Vec<ClassProbability>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("{path}: cannot read the image: {message}")]
    Image { path: PathBuf, message: String },
    #[error("the {0} backbone was loaded without its ImageNet classifier")]
    NoClassifier(crate::model::BackboneKind),
}

/// Top-5 ImageNet classes of each image, preprocessed as for evaluation.
pub fn classify(
    backbone: &Backbone,
    images: &[PathBuf],
    preprocess: &Preprocess,
    device: &Device,
) -> Result<Vec<Prediction>, ClassifyError> {
    let side = preprocess.image_size as usize;
    let mut predictions = Vec::with_capacity(images.len());
    for path in images {
        let pixels = load_for_eval(path, preprocess)?;
        let input = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, side, side]), device);
        let logits = backbone
            .logits(input)
            .ok_or(ClassifyError::NoClassifier(backbone.kind()))?;
        let probabilities: Vec<f32> = softmax(logits, 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top5 = ranked
            .into_iter()
            .take(5)
            .map(|(class, prob)| ClassProbability {
                class,
                prob,
                name: imagenet_name(class),
            })
            .collect();
        predictions.push(Prediction {
            image: path.clone(),
            top5,
        });
    }
    Ok(predictions)
}

fn load_for_eval(path: &Path, preprocess: &Preprocess) -> Result<Vec<f32>, ClassifyError> {
    let image = image::open(path).map_err(|error| ClassifyError::Image {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    let side = preprocess.image_size as usize;
    let mut pixels = vec![0.0; 3 * side * side];
    preprocess
        .eval(&image, &mut pixels)
        .map_err(|error| ClassifyError::Image {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    Ok(pixels)
}
