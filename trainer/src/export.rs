//! ONNX export of an embedding model for the device: BatchNorm folded into the convolutions,
//! ReLU6 as Clip, global average pooling, LayerNorm (opset 17) and the bias-free embedding as
//! MatMul; input NCHW float32 with a symbolic batch, output the embedding before L2
//! normalisation (its signs are the code). Only ops that firmware/infer runs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use prost::Message;
use tract_onnx::pb;

use crate::model::lite0::{ConvBn, Lite0, MbConv};
use crate::model::resnet::{Bottleneck, ResNet50};
use crate::model::{Backbone, EmbeddingModel};

pub const INPUT_NAME: &str = "image";
pub const OUTPUT_NAME: &str = "embedding";
pub const OPSET: i64 = 17;
/// The export check's bound on the relative difference between tract and burn.
pub const CHECK_TOLERANCE: f32 = 1e-4;
/// LayerNorm's epsilon in the model (PyTorch's default).
const LAYER_NORM_EPSILON: f32 = 1e-5;

/// The graph under construction.
#[derive(Default)]
struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    next: usize,
}

fn attr_ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn attr_float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

fn values(tensor: Tensor<1>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

impl Graph {
    fn name(&mut self, stem: &str) -> String {
        self.next += 1;
        format!("{stem}_{}", self.next)
    }

    fn constant(&mut self, stem: &str, dims: &[usize], data: Vec<f32>) -> String {
        let name = self.name(stem);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attributes: Vec<pb::AttributeProto>,
    ) -> String {
        let output = self.name(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            name: output.clone(),
            op_type: op.into(),
            input: inputs,
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// Conv with an optional BatchNorm folded into its weights and bias.
    fn conv(&mut self, input: String, conv: &Conv2d, bn: Option<&BatchNorm>) -> Result<String> {
        let weight = conv.weight.val();
        let [out_channels, in_per_group, kh, kw] = weight.dims();
        let mut w: Vec<f32> = weight
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let mut b = match &conv.bias {
            Some(bias) => values(bias.val()),
            None => vec![0.0; out_channels],
        };
        if let Some(bn) = bn {
            let gamma = values(bn.gamma.val());
            let beta = values(bn.beta.val());
            let mean = values(bn.running_mean.value());
            let var = values(bn.running_var.value());
            let per_channel = in_per_group * kh * kw;
            for c in 0..out_channels {
                let scale = gamma[c] / (var[c] + bn.epsilon as f32).sqrt();
                w[c * per_channel..(c + 1) * per_channel]
                    .iter_mut()
                    .for_each(|v| *v *= scale);
                b[c] = (b[c] - mean[c]) * scale + beta[c];
            }
        }
        let (top, left, bottom, right) = match conv.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
            PaddingConfig2d::Valid => (0, 0, 0, 0),
            PaddingConfig2d::Same => {
                bail!("'same' padding is not exported (the backbones use explicit padding)")
            }
        };
        let w = self.constant("weight", &[out_channels, in_per_group, kh, kw], w);
        let b = self.constant("bias", &[out_channels], b);
        let as_i64 = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
        Ok(self.node(
            "Conv",
            vec![input, w, b],
            vec![
                attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                attr_ints("strides", &as_i64(conv.stride)),
                attr_ints("dilations", &as_i64(conv.dilation)),
                attr_ints(
                    "pads",
                    &[top as i64, left as i64, bottom as i64, right as i64],
                ),
                attr_int("group", conv.groups as i64),
            ],
        ))
    }

    fn relu6(&mut self, input: String) -> String {
        let min = self.constant("zero", &[], vec![0.0]);
        let max = self.constant("six", &[], vec![6.0]);
        self.node("Clip", vec![input, min, max], vec![])
    }

    fn conv_bn(&mut self, input: String, layer: &ConvBn) -> Result<String> {
        self.conv(input, &layer.conv, Some(&layer.bn))
    }

    fn mbconv(&mut self, input: String, block: &MbConv) -> Result<String> {
        let mut x = input.clone();
        if let Some(expand) = &block.expand {
            x = self.conv_bn(x, expand)?;
            x = self.relu6(x);
        }
        x = self.conv_bn(x, &block.depthwise)?;
        x = self.relu6(x);
        x = self.conv_bn(x, &block.project)?;
        Ok(if block.skip {
            self.node("Add", vec![x, input], vec![])
        } else {
            x
        })
    }

    fn lite0(&mut self, input: String, net: &Lite0) -> Result<String> {
        let mut x = self.conv_bn(input, &net.stem)?;
        x = self.relu6(x);
        for block in &net.blocks {
            x = self.mbconv(x, block)?;
        }
        x = self.conv_bn(x, &net.head)?;
        Ok(self.relu6(x))
    }

    fn bottleneck(&mut self, input: String, block: &Bottleneck) -> Result<String> {
        let mut x = self.conv(input.clone(), &block.conv1, Some(&block.bn1))?;
        x = self.node("Relu", vec![x], vec![]);
        x = self.conv(x, &block.conv2, Some(&block.bn2))?;
        x = self.node("Relu", vec![x], vec![]);
        x = self.conv(x, &block.conv3, Some(&block.bn3))?;
        let identity = match &block.downsample {
            Some(down) => self.conv(input, &down.conv, Some(&down.bn))?,
            None => input,
        };
        let sum = self.node("Add", vec![x, identity], vec![]);
        Ok(self.node("Relu", vec![sum], vec![]))
    }

    fn resnet50(&mut self, input: String, net: &ResNet50) -> Result<String> {
        let mut x = self.conv(input, &net.conv1, Some(&net.bn1))?;
        x = self.node("Relu", vec![x], vec![]);
        let [kh, kw] = net.maxpool.kernel_size;
        let [sh, sw] = net.maxpool.stride;
        x = self.node(
            "MaxPool",
            vec![x],
            vec![
                attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                attr_ints("strides", &[sh as i64, sw as i64]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        );
        for block in net
            .layer1
            .iter()
            .chain(&net.layer2)
            .chain(&net.layer3)
            .chain(&net.layer4)
        {
            x = self.bottleneck(x, block)?;
        }
        Ok(x)
    }
}

/// The ONNX bytes of `model` (which must be in evaluation mode: its BatchNorm statistics are
/// folded).
pub fn to_onnx(
    model: &EmbeddingModel,
    input_size: usize,
    producer_version: &str,
) -> Result<Vec<u8>> {
    let mut graph = Graph::default();
    let features = match &model.backbone {
        Backbone::Lite0(net) => graph.lite0(INPUT_NAME.into(), net)?,
        Backbone::ResNet50(net) => graph.resnet50(INPUT_NAME.into(), net)?,
    };
    let pooled = graph.node("GlobalAveragePool", vec![features], vec![]);
    let flat = graph.node("Flatten", vec![pooled], vec![attr_int("axis", 1)]);
    let width = model.backbone.kind().features();
    let scale = graph.constant("ln_scale", &[width], vec![1.0; width]);
    let shift = graph.constant("ln_bias", &[width], vec![0.0; width]);
    let mut output = graph.node(
        "LayerNormalization",
        vec![flat, scale, shift],
        vec![
            attr_int("axis", -1),
            attr_float("epsilon", LAYER_NORM_EPSILON),
        ],
    );
    if let Some(linear) = &model.embedding {
        let weight = linear.weight.val();
        let dims = weight.dims();
        let data = weight
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let w = graph.constant("embedding_weight", &dims, data);
        output = graph.node("MatMul", vec![output, w], vec![]);
    }
    // The last node's output is renamed to the graph output.
    if let Some(last) = graph.nodes.last_mut() {
        last.output = vec![OUTPUT_NAME.into()];
    }
    let _ = output;
    let dim = |value: Option<i64>, param: Option<&str>| pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(match (value, param) {
            (Some(v), _) => pb::tensor_shape_proto::dimension::Value::DimValue(v),
            (None, Some(p)) => pb::tensor_shape_proto::dimension::Value::DimParam(p.into()),
            (None, None) => pb::tensor_shape_proto::dimension::Value::DimParam("?".into()),
        }),
    };
    let value_info =
        |name: &str, dims: Vec<pb::tensor_shape_proto::Dimension>| pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto { dim: dims }),
                })),
            }),
            ..Default::default()
        };
    let side = input_size as i64;
    let onnx = pb::ModelProto {
        ir_version: 8,
        producer_name: "lookup-trainer".into(),
        producer_version: producer_version.into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        graph: Some(pb::GraphProto {
            name: format!("{}-embedding", model.backbone.kind()),
            node: graph.nodes,
            initializer: graph.initializers,
            input: vec![value_info(
                INPUT_NAME,
                vec![
                    dim(None, Some("batch")),
                    dim(Some(3), None),
                    dim(Some(side), None),
                    dim(Some(side), None),
                ],
            )],
            output: vec![value_info(
                OUTPUT_NAME,
                vec![
                    dim(None, Some("batch")),
                    dim(Some(model.embedding_dim() as i64), None),
                ],
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(onnx.encode_to_vec())
}

/// Runs ONNX bytes with tract (firmware/infer's CPU runtime) on a batch (NCHW float32) and
/// returns the first output.
pub fn run_with_tract(onnx: &[u8], images: &[f32], batch: usize, side: usize) -> Result<Vec<f32>> {
    let file = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .context("a temporary file for the check")?;
    std::fs::write(file.path(), onnx).context("writing the model for the check")?;
    let options = infer::LoadOptions {
        backend: infer::Backend::Cpu,
        max_batch: batch,
        input_hw: Some((side, side)),
        ..infer::LoadOptions::default()
    };
    let mut model = infer::Model::load(file.path(), &options)
        .context("tract cannot load the exported model")?;
    let per: usize = model.output_shape().iter().product();
    let mut output = vec![0.0; batch * per];
    model
        .run(batch, images, &mut output)
        .context("tract cannot run the exported model")?;
    Ok(output)
}

/// Largest |a - b| relative to the largest |b|.
pub fn relative_difference(actual: &[f32], expected: &[f32]) -> f32 {
    let scale = expected
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
        / scale
}

pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
