//! ResNet-50 (v1.5: the stride sits on the 3x3 conv), with torchvision's parameter names so
//! its checkpoints load without renames beyond the downsample branch.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::fused::{Activation, conv_bn};

/// Width of the pooled features.
pub const FEATURES: usize = 2048;

/// (bottleneck width, blocks, stride) of the four stages.
const STAGES: [(usize, usize, usize); 4] = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)];
const EXPANSION: usize = 4;

fn conv(device: &Device, channels: [usize; 2], kernel: usize, stride: usize) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

fn bn(device: &Device, channels: usize) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
    pub downsample: Option<Downsample>,
}

impl Bottleneck {
    fn new(device: &Device, input: usize, width: usize, stride: usize) -> Self {
        let output = width * EXPANSION;
        let downsample = (stride != 1 || input != output).then(|| Downsample {
            conv: conv(device, [input, output], 1, stride),
            bn: bn(device, output),
        });
        Self {
            conv1: conv(device, [input, width], 1, 1),
            bn1: bn(device, width),
            conv2: conv(device, [width, width], 3, stride),
            bn2: bn(device, width),
            conv3: conv(device, [width, output], 1, 1),
            bn3: bn(device, output),
            downsample,
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = conv_bn(&self.conv1, &self.bn1, input.clone(), Activation::Relu);
        let x = conv_bn(&self.conv2, &self.bn2, x, Activation::Relu);
        let x = conv_bn(&self.conv3, &self.bn3, x, Activation::Identity);
        let identity = match &self.downsample {
            Some(down) => conv_bn(&down.conv, &down.bn, input, Activation::Identity),
            None => input,
        };
        relu(x + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNet50 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Bottleneck>,
    pub layer2: Vec<Bottleneck>,
    pub layer3: Vec<Bottleneck>,
    pub layer4: Vec<Bottleneck>,
    /// The ImageNet classifier; absent in an embedding model.
    pub fc: Option<Linear>,
}

impl ResNet50 {
    pub fn new(device: &Device, classes: Option<usize>) -> Self {
        let mut channels = 64;
        let mut layers: Vec<Vec<Bottleneck>> = STAGES
            .iter()
            .map(|&(width, blocks, stride)| {
                (0..blocks)
                    .map(|block| {
                        let stride = if block == 0 { stride } else { 1 };
                        let layer = Bottleneck::new(device, channels, width, stride);
                        channels = width * EXPANSION;
                        layer
                    })
                    .collect()
            })
            .collect();
        let layer4 = layers.pop().unwrap_or_default();
        let layer3 = layers.pop().unwrap_or_default();
        let layer2 = layers.pop().unwrap_or_default();
        let layer1 = layers.pop().unwrap_or_default();
        Self {
            conv1: conv(device, [3, 64], 7, 2),
            bn1: bn(device, 64),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: classes.map(|classes| LinearConfig::new(FEATURES, classes).init(device)),
        }
    }

    /// The last feature map, [N, 2048, H/32, W/32].
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = conv_bn(&self.conv1, &self.bn1, images, Activation::Relu);
        x = self.maxpool.forward(x);
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        x
    }

    /// Key renames from torchvision's names to this module's paths.
    pub fn pytorch_key_map() -> Vec<(&'static str, &'static str)> {
        vec![
            (r"\.downsample\.0\.", ".downsample.conv."),
            (r"\.downsample\.1\.", ".downsample.bn."),
        ]
    }
}
