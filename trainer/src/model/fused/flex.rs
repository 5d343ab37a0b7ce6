//! The fused op's own forward and backward on Flex (the default, pure-Rust build).
//!
//! Why: through burn's generic backward a Flex training step spent a fifth of its time in
//! `mask_fill` (ReLU6 as two clamps, both ways), another fifth copying tensors for the depthwise
//! weight gradient (one convolution per channel on a sliced, transposed copy of the input) and
//! much of the rest in batch norm's dozen elementwise passes. Here batch norm and the activation
//! are one pass each way over contiguous memory, and a depthwise convolution's two gradients are
//! direct loops over each channel's planes. The convolution itself, and the gradients of the
//! other convolutions, stay Flex's own.

use burn::backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::{Activation, NativeConvBn, NativeForward};

type FlexTensor = FloatTensor<Flex>;

/// What the backward keeps from the forward.
#[derive(Clone, Debug)]
pub struct Saved {
    x: FlexTensor,
    weight: FlexTensor,
    /// (conv - mean) * invstd, contiguous NCHW.
    normed: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    /// The convolution's output shape.
    shape: [usize; 4],
    options: ConvOptions<2>,
    activation: Activation,
    needs_grad: [bool; 4],
}

impl NativeConvBn for Flex {
    type Saved = Saved;

    fn forward(
        x: &FlexTensor,
        weight: &FlexTensor,
        gamma: &FlexTensor,
        beta: &FlexTensor,
        options: &ConvOptions<2>,
        epsilon: f64,
        activation: Activation,
        needs_grad: [bool; 4],
    ) -> Option<NativeForward<Self>> {
        if [x, weight, gamma, beta]
            .iter()
            .any(|t| t.dtype() != DType::F32)
        {
            return None;
        }
        let conv = Flex::conv2d(x.clone(), weight.clone(), None, options.clone());
        let shape: [usize; 4] = conv.shape().dims();
        let [_, channels, _, _] = shape;
        let conv = Dense::new(&conv);
        let (gamma, beta) = (Dense::new(gamma).to_vec(), Dense::new(beta).to_vec());
        let (mean, variance) = channel_statistics(&conv, shape);
        let invstd: Vec<f32> = variance
            .iter()
            .map(|&v| (1.0 / (f64::from(v) + epsilon).sqrt()) as f32)
            .collect();
        let mut normed = vec![0.0f32; conv.len()];
        let mut output = vec![0.0f32; conv.len()];
        let plane = shape[2] * shape[3];
        normed
            .par_chunks_mut(plane)
            .zip(output.par_chunks_mut(plane))
            .zip(conv.par_chunks(plane))
            .enumerate()
            .for_each(|(i, ((normed, output), conv))| {
                let c = i % channels;
                let (m, s) = (mean[c], invstd[c]);
                for (n, &v) in normed.iter_mut().zip(conv) {
                    *n = (v - m) * s;
                }
                activation.forward(output, normed, gamma[c], beta[c]);
            });
        let device = x.device();
        let tensor = |data: Vec<f32>, dims: &[usize]| {
            Flex::float_from_data(TensorData::new(data, dims.to_vec()), &device)
        };
        Some(NativeForward {
            output: tensor(output, &shape),
            mean: tensor(mean, &[channels]),
            variance: tensor(variance, &[channels]),
            saved: Saved {
                x: x.clone(),
                weight: weight.clone(),
                normed,
                invstd,
                gamma,
                beta,
                shape,
                options: options.clone(),
                activation,
                needs_grad,
            },
        })
    }

    fn backward(saved: Saved, grad: FlexTensor) -> [Option<FlexTensor>; 4] {
        let device = grad.device();
        let grad = Dense::new(&grad);
        let shape = saved.shape;
        let [batch, channels, height, width] = shape;
        let plane = height * width;
        let count = (batch * plane) as f64;
        let Saved {
            normed,
            gamma,
            beta,
            invstd,
            activation,
            ..
        } = &saved;
        // The gradient at batch norm's output, through the activation.
        let mut g = vec![0.0f32; grad.len()];
        g.par_chunks_mut(plane)
            .zip(grad.par_chunks(plane))
            .zip(normed.par_chunks(plane))
            .enumerate()
            .for_each(|(i, ((g, grad), normed))| {
                let c = i % channels;
                activation.backward(g, grad, normed, gamma[c], beta[c]);
            });
        // Per channel: sum of g (beta's gradient) and of g * normed (gamma's).
        let sums: Vec<(f64, f64)> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let (mut sum, mut dot) = (0.0f64, 0.0f64);
                for n in 0..batch {
                    let at = (n * channels + c) * plane;
                    let (g, x) = (&g[at..at + plane], &normed[at..at + plane]);
                    sum += f64::from(g.iter().sum::<f32>());
                    dot += f64::from(g.iter().zip(x).map(|(g, x)| g * x).sum::<f32>());
                }
                (sum, dot)
            })
            .collect();
        let tensor = |data: Vec<f32>, dims: &[usize]| {
            Flex::float_from_data(TensorData::new(data, dims.to_vec()), &device)
        };
        let [needs_x, needs_weight, needs_gamma, needs_beta] = saved.needs_grad;
        let grad_gamma =
            needs_gamma.then(|| tensor(sums.iter().map(|s| s.1 as f32).collect(), &[channels]));
        let grad_beta =
            needs_beta.then(|| tensor(sums.iter().map(|s| s.0 as f32).collect(), &[channels]));
        if !needs_x && !needs_weight {
            return [None, None, grad_gamma, grad_beta];
        }
        // The gradient at the convolution's output: batch norm's backward with batch statistics.
        g.par_chunks_mut(plane)
            .zip(normed.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (g, normed))| {
                let c = i % channels;
                let scale = gamma[c] * invstd[c];
                let mean_g = (sums[c].0 / count) as f32;
                let mean_gx = (sums[c].1 / count) as f32;
                for (g, &n) in g.iter_mut().zip(normed) {
                    *g = scale * (*g - mean_g - n * mean_gx);
                }
            });
        let grad_conv = tensor(g, &shape);
        let x = saved.x;
        let weight = saved.weight;
        let options = saved.options;
        let depthwise = Depthwise::of(&x, &weight, &options, shape);
        let grad_x = needs_x.then(|| match &depthwise {
            Some(d) => tensor(d.input_grad(&grad_conv, &weight), &x.shape().dims::<4>()),
            None => Flex::conv2d_x_backward(
                x.clone(),
                weight.clone(),
                grad_conv.clone(),
                options.clone(),
            ),
        });
        let grad_weight = needs_weight.then(|| match &depthwise {
            Some(d) => tensor(d.weight_grad(&grad_conv, &x), &weight.shape().dims::<4>()),
            None => Flex::conv2d_weight_backward(x, weight.clone(), grad_conv, options),
        });
        [grad_x, grad_weight, grad_gamma, grad_beta]
    }
}

// One loop per activation, with the channel's scale and shift hoisted, so that each compiles
// to straight vector code.
impl Activation {
    /// `output = activation(gamma * normed + beta)` over one plane.
    fn forward(self, output: &mut [f32], normed: &[f32], gamma: f32, beta: f32) {
        let pairs = output.iter_mut().zip(normed);
        match self {
            Activation::Identity => pairs.for_each(|(o, &n)| *o = gamma * n + beta),
            Activation::Relu => pairs.for_each(|(o, &n)| *o = (gamma * n + beta).max(0.0)),
            Activation::Relu6 => {
                pairs.for_each(|(o, &n)| *o = (gamma * n + beta).clamp(0.0, 6.0));
            }
        }
    }

    /// The gradient through the activation over one plane, as burn differentiates the same
    /// activation: ReLU's passes where its output is above 0 (or NaN), the clamp's where the
    /// input is not outside [0, 6].
    fn backward(self, g: &mut [f32], grad: &[f32], normed: &[f32], gamma: f32, beta: f32) {
        let triples = g.iter_mut().zip(grad).zip(normed);
        match self {
            Activation::Identity => g.copy_from_slice(grad),
            Activation::Relu => triples.for_each(|((g, &d), &n)| {
                let v = gamma * n + beta;
                *g = if v > 0.0 || v.is_nan() { d } else { 0.0 };
            }),
            Activation::Relu6 => triples.for_each(|((g, &d), &n)| {
                let v = gamma * n + beta;
                // Not `!(0.0..=6.0).contains(&v)`: a NaN passes, as burn's masks let it.
                #[allow(clippy::manual_range_contains)]
                let outside = v < 0.0 || v > 6.0;
                *g = if outside { 0.0 } else { d };
            }),
        }
    }
}

/// An f32 tensor whose values are contiguous from its first element, read as a slice.
struct Dense(FlexTensor);

impl Dense {
    fn new(t: &FlexTensor) -> Self {
        Dense(if t.as_slice::<f32>().is_some() {
            t.clone()
        } else {
            t.to_contiguous()
        })
    }
}

impl std::ops::Deref for Dense {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        self.0.as_slice().expect("a dense f32 tensor")
    }
}

/// Per channel of an NCHW tensor: the mean and the biased variance (sums in f64).
fn channel_statistics(
    data: &[f32],
    [batch, channels, height, width]: [usize; 4],
) -> (Vec<f32>, Vec<f32>) {
    let plane = height * width;
    let count = (batch * plane) as f64;
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let planes = || (0..batch).map(|n| &data[(n * channels + c) * plane..][..plane]);
            let mean = planes()
                .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>())
                .sum::<f64>()
                / count;
            let variance = planes()
                .map(|p| {
                    p.iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / count;
            (mean as f32, variance as f32)
        })
        .unzip()
}

/// A depthwise convolution's geometry (one input channel per output channel, groups = channels):
/// its gradients are computed here, plane by plane.
struct Depthwise {
    batch: usize,
    channels: usize,
    /// Input and output plane sizes.
    input: [usize; 2],
    output: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
}

impl Depthwise {
    fn of(
        x: &FlexTensor,
        weight: &FlexTensor,
        options: &ConvOptions<2>,
        output: [usize; 4],
    ) -> Option<Self> {
        let [batch, channels, h, w] = x.shape().dims();
        let [out_channels, per_group, kh, kw] = weight.shape().dims();
        (options.groups == channels && out_channels == channels && per_group == 1).then(|| {
            Depthwise {
                batch,
                channels,
                input: [h, w],
                output: [output[2], output[3]],
                kernel: [kh, kw],
                stride: options.stride,
                dilation: options.dilation,
                pad: options.padding_begin(),
            }
        })
    }

    /// Per kernel column `kx`: the offset of its input column (`ix = ox * stride + offset`) and
    /// the output columns `ox` for which that lies inside the input.
    fn column_taps(&self) -> Vec<(isize, std::ops::Range<usize>)> {
        let (s, w, ow) = (
            self.stride[1] as isize,
            self.input[1] as isize,
            self.output[1],
        );
        (0..self.kernel[1])
            .map(|kx| {
                let offset = (kx * self.dilation[1]) as isize - self.pad[1] as isize;
                let first = if offset < 0 { (-offset + s - 1) / s } else { 0 };
                let end = if offset >= w {
                    0
                } else {
                    (w - offset + s - 1) / s
                };
                (offset, (first as usize).min(ow)..(end as usize).min(ow))
            })
            .collect()
    }

    /// Input row of output row `oy` at kernel row `ky`, if inside the input.
    fn row(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize - self.pad[0] as isize;
        (0..self.input[0] as isize)
            .contains(&iy)
            .then_some(iy as usize)
    }

    /// d loss / d x: each output gradient spread over the inputs its window read.
    fn input_grad(&self, grad: &FlexTensor, weight: &FlexTensor) -> Vec<f32> {
        let (grad, weight) = (Dense::new(grad), Dense::new(weight));
        let ([h, w], [oh, ow], [kh, kw]) = (self.input, self.output, self.kernel);
        let sx = self.stride[1];
        let taps = self.column_taps();
        let mut dx = vec![0.0f32; self.batch * self.channels * h * w];
        dx.par_chunks_mut(h * w)
            .zip(grad.par_chunks(oh * ow))
            .enumerate()
            .for_each(|(i, (dx, grad))| {
                let c = i % self.channels;
                let filter = &weight[c * kh * kw..][..kh * kw];
                for oy in 0..oh {
                    let grad_row = &grad[oy * ow..][..ow];
                    for ky in 0..kh {
                        let Some(iy) = self.row(oy, ky) else { continue };
                        let dx_row = &mut dx[iy * w..][..w];
                        for (kx, (offset, columns)) in taps.iter().enumerate() {
                            let v = filter[ky * kw + kx];
                            let Some(start) = tap_start(columns, sx, *offset) else {
                                continue;
                            };
                            let (inputs, outputs) =
                                (&mut dx_row[start..], &grad_row[columns.clone()]);
                            // Slices and zips, not indices: no bounds checks, vector code.
                            if sx == 1 {
                                for (d, &g) in inputs.iter_mut().zip(outputs) {
                                    *d += g * v;
                                }
                            } else {
                                for (d, &g) in inputs.iter_mut().step_by(sx).zip(outputs) {
                                    *d += g * v;
                                }
                            }
                        }
                    }
                }
            });
        dx
    }

    /// d loss / d weight: per channel and tap, the output gradient against the inputs the tap
    /// read (each row summed in f32, the rows in f64).
    fn weight_grad(&self, grad: &FlexTensor, x: &FlexTensor) -> Vec<f32> {
        let (grad, x) = (Dense::new(grad), Dense::new(x));
        let ([h, w], [oh, ow], [kh, kw]) = (self.input, self.output, self.kernel);
        let sx = self.stride[1];
        let taps = self.column_taps();
        let mut dw = vec![0.0f32; self.channels * kh * kw];
        dw.par_chunks_mut(kh * kw).enumerate().for_each(|(c, dw)| {
            let mut sums = vec![0.0f64; kh * kw];
            for n in 0..self.batch {
                let plane = n * self.channels + c;
                let x = &x[plane * h * w..][..h * w];
                let grad = &grad[plane * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    let grad_row = &grad[oy * ow..][..ow];
                    for ky in 0..kh {
                        let Some(iy) = self.row(oy, ky) else { continue };
                        let x_row = &x[iy * w..][..w];
                        for (kx, (offset, columns)) in taps.iter().enumerate() {
                            let Some(start) = tap_start(columns, sx, *offset) else {
                                continue;
                            };
                            let outputs = &grad_row[columns.clone()];
                            let sum = if sx == 1 {
                                dot(&x_row[start..][..outputs.len()], outputs)
                            } else {
                                let inputs = x_row[start..].iter().step_by(sx);
                                inputs.zip(outputs).map(|(x, g)| x * g).sum()
                            };
                            sums[ky * kw + kx] += f64::from(sum);
                        }
                    }
                }
            }
            for (d, s) in dw.iter_mut().zip(sums) {
                *d = s as f32;
            }
        });
        dw
    }
}

/// Where in the input row a kernel column's outputs `columns` start reading (then every
/// `stride`-th value), or None when they are none.
fn tap_start(columns: &std::ops::Range<usize>, stride: usize, offset: isize) -> Option<usize> {
    (!columns.is_empty()).then(|| ((columns.start * stride) as isize + offset) as usize)
}

/// Sum of products of two equally long slices in eight lanes (so that it compiles to vector
/// code), then the lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a, b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .map(|(a, b)| a * b)
        .sum();
    let mut lanes = [0.0f32; 8];
    for (a, b) in a.zip(b) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
