//! The embedding network of NormSoftmax: a pretrained backbone, global average pooling,
//! LayerNorm without affine, an optional bias-free linear embedding, L2 normalisation.

pub mod fused;
pub mod lite0;
pub mod resnet;

use std::fmt;
use std::str::FromStr;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use lite0::Lite0;
pub use resnet::ResNet50;

/// LayerNorm's epsilon (PyTorch's default).
const LAYER_NORM_EPSILON: f64 = 1e-5;
/// Guards the L2 normalisation of an all-zero vector.
const L2_EPSILON: f64 = 1e-12;

/// Which backbone to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneKind {
    EfficientnetLite0,
    Resnet50,
}

impl BackboneKind {
    pub const ALL: [BackboneKind; 2] = [BackboneKind::EfficientnetLite0, BackboneKind::Resnet50];

    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::EfficientnetLite0 => "efficientnet-lite0",
            BackboneKind::Resnet50 => "resnet50",
        }
    }

    /// Width of the pooled features.
    pub fn features(self) -> usize {
        match self {
            BackboneKind::EfficientnetLite0 => lite0::FEATURES,
            BackboneKind::Resnet50 => resnet::FEATURES,
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackboneKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "efficientnet-lite0" | "lite0" => Ok(BackboneKind::EfficientnetLite0),
            "resnet50" | "resnet-50" => Ok(BackboneKind::Resnet50),
            other => Err(format!(
                "unknown backbone '{other}' (known: efficientnet-lite0, resnet50)"
            )),
        }
    }
}

// One backbone per model, built once: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    Lite0(Lite0),
    ResNet50(ResNet50),
}

impl Backbone {
    /// A backbone with random weights; `classes` adds the ImageNet-style classifier.
    pub fn new(kind: BackboneKind, device: &Device, classes: Option<usize>) -> Self {
        match kind {
            BackboneKind::EfficientnetLite0 => Backbone::Lite0(Lite0::new(device, classes)),
            BackboneKind::Resnet50 => Backbone::ResNet50(ResNet50::new(device, classes)),
        }
    }

    pub fn kind(&self) -> BackboneKind {
        match self {
            Backbone::Lite0(_) => BackboneKind::EfficientnetLite0,
            Backbone::ResNet50(_) => BackboneKind::Resnet50,
        }
    }

    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        match self {
            Backbone::Lite0(net) => net.features(images),
            Backbone::ResNet50(net) => net.features(images),
        }
    }

    /// Global average pooling: [N, C, H, W] -> [N, C].
    pub fn pooled(&self, images: Tensor<4>) -> Tensor<2> {
        global_average_pool(self.features(images))
    }

    /// ImageNet logits from the imported classifier, `None` when the backbone has none.
    pub fn logits(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        let classifier = match self {
            Backbone::Lite0(net) => net.classifier.as_ref(),
            Backbone::ResNet50(net) => net.fc.as_ref(),
        }?;
        Some(classifier.forward(self.pooled(images)))
    }

    /// Drops the ImageNet classifier, which an embedding model does not use.
    pub fn without_classifier(self) -> Self {
        match self {
            Backbone::Lite0(net) => Backbone::Lite0(Lite0 {
                classifier: None,
                ..net
            }),
            Backbone::ResNet50(net) => Backbone::ResNet50(ResNet50 { fc: None, ..net }),
        }
    }
}

pub fn global_average_pool(features: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = features.dims();
    features.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// LayerNorm over the last dimension, without learnable scale or shift.
pub fn layer_norm(x: Tensor<2>) -> Tensor<2> {
    let centred = x.clone() - x.mean_dim(1);
    let variance = centred.clone().square().mean_dim(1);
    centred / (variance + LAYER_NORM_EPSILON).sqrt()
}

/// Rows scaled to unit length.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(L2_EPSILON);
    x / norm
}

/// The NormSoftmax embedding network.
#[derive(Module, Debug)]
pub struct EmbeddingModel {
    pub backbone: Backbone,
    /// Present only when the embedding width differs from the pooled width.
    pub embedding: Option<Linear>,
}

impl EmbeddingModel {
    pub fn new(backbone: Backbone, embedding_dim: usize, device: &Device) -> Self {
        let features = backbone.kind().features();
        let embedding = (embedding_dim != features).then(|| {
            LinearConfig::new(features, embedding_dim)
                .with_bias(false)
                .init(device)
        });
        Self {
            backbone: backbone.without_classifier(),
            embedding,
        }
    }

    pub fn embedding_dim(&self) -> usize {
        match &self.embedding {
            Some(linear) => linear.weight.dims()[1],
            None => self.backbone.kind().features(),
        }
    }

    /// The head on pooled features: LayerNorm, then the embedding; not yet L2-normalised
    /// (signs, and so codes, are the same either way).
    pub fn head(&self, pooled: Tensor<2>) -> Tensor<2> {
        let normed = layer_norm(pooled);
        match &self.embedding {
            Some(linear) => linear.forward(normed),
            None => normed,
        }
    }

    /// Unnormalised embeddings of a batch of images.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.backbone.pooled(images))
    }

    /// Unit-length embeddings, the model's output.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        l2_normalize(self.embed(images))
    }
}
