//! Convolution -> batch norm (batch statistics) -> activation as one differentiable training op.
//!
//! Why: burn 0.22 differentiates these three with its generic backward code on every backend,
//! LibTorch included. There a depthwise convolution's weight gradient is one small convolution
//! per channel (1,152 calls for one of Lite0's layers), batch norm is a dozen elementwise passes
//! each way, and ReLU6 is two compare-and-fill pairs each way: a training step ran at 0.38x
//! PyTorch's speed. On LibTorch this op hands the three to PyTorch's own autograd, so both
//! directions run PyTorch's native kernels (one `convolution_backward`, one fused batch-norm
//! backward, one ReLU6 backward), exactly as PyTorch eager would. On Flex it is the trainer's
//! own code (`fused/flex.rs`: batch norm and activation in one pass each way, a depthwise
//! convolution's gradients as direct loops); on Vulkan, the same composition of burn ops as
//! before. The model is still written once.

// burn 0.22 deprecates LibTorch (and the dispatch code generated for this file names it), but it
// is the fast path today.
#![cfg_attr(feature = "libtorch", allow(deprecated))]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// The activation that follows the batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    /// min(max(x, 0), 6), EfficientNet-Lite's activation.
    Relu6,
}

impl Activation {
    pub fn apply(self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Activation::Identity => x,
            Activation::Relu => relu(x),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// conv(x, weight) -> batch norm with the batch's statistics -> activation, returning the output
/// and the batch mean and biased variance per channel (what the running statistics are fed).
#[backend_extension(Flex, LibTorch: cfg(feature = "libtorch"), Cube: cfg(feature = "vulkan"), Autodiff)]
pub trait ConvBnTrain: Backend {
    fn conv_bn_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        options: ConvOptions<2>,
        epsilon: f64,
        activation: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        compose::<Self>(x, weight, gamma, beta, options, epsilon, activation)
    }
}

/// The op as burn's own ops; differentiated op by op on an autodiff backend.
fn compose<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    options: ConvOptions<2>,
    epsilon: f64,
    activation: Activation,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let conv = B::conv2d(x, weight, None, options);
    let bn = B::batch_norm_train(conv, gamma, beta, epsilon);
    let output = match activation {
        Activation::Identity => bn.output,
        Activation::Relu => B::relu(bn.output),
        Activation::Relu6 => B::float_clamp(bn.output, 0.0.into(), 6.0.into()),
    };
    (output, bn.mean, bn.variance)
}

impl ConvBnTrain for Flex {}
#[cfg(feature = "libtorch")]
impl ConvBnTrain for burn::backend::LibTorch {}
#[cfg(feature = "vulkan")]
impl ConvBnTrain for burn::backend::Cube {}

/// The native forward's results, with what its backward needs.
#[derive(Debug)]
pub struct NativeForward<B: NativeConvBn> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub variance: FloatTensor<B>,
    pub saved: B::Saved,
}

/// A backend's own forward and backward of the whole op, where it has them. The defaults say
/// it has none: the caller then composes burn ops.
pub trait NativeConvBn: Backend {
    /// What the backward needs, kept from the forward.
    type Saved: Clone + Send + std::fmt::Debug + 'static;

    /// The forward, or None where the backend has no native op. `needs_grad`: x, weight,
    /// gamma, beta.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        _x: &FloatTensor<Self>,
        _weight: &FloatTensor<Self>,
        _gamma: &FloatTensor<Self>,
        _beta: &FloatTensor<Self>,
        _options: &ConvOptions<2>,
        _epsilon: f64,
        _activation: Activation,
        _needs_grad: [bool; 4],
    ) -> Option<NativeForward<Self>> {
        None
    }

    /// Gradients of x, weight, gamma and beta (those asked for at the forward).
    fn backward(_saved: Self::Saved, _grad: FloatTensor<Self>) -> [Option<FloatTensor<Self>>; 4] {
        unreachable!("a backend without a native forward saved nothing to differentiate")
    }
}

mod flex;

#[cfg(feature = "vulkan")]
impl NativeConvBn for burn::backend::Cube {
    type Saved = ();
}

#[cfg(feature = "libtorch")]
mod libtorch {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::backend::ops::ConvOptions;
    use burn::backend::tensor::FloatTensor;
    use tch::Tensor;

    use super::{Activation, NativeConvBn, NativeForward};

    /// PyTorch's autograd graph of one op: its output and the leaves it was built from.
    #[derive(Clone, Debug)]
    pub struct Graph {
        output: TchTensor,
        /// x, weight, gamma, beta; present where a gradient was asked for.
        leaves: [Option<TchTensor>; 4],
        /// burn's handles of the inputs and of the output handed to burn: holding them keeps
        /// burn-tch from reusing their memory in place while PyTorch's graph still reads it.
        _pinned: [TchTensor; 5],
    }

    impl NativeConvBn for LibTorch {
        type Saved = Graph;

        fn forward(
            x: &TchTensor,
            weight: &TchTensor,
            gamma: &TchTensor,
            beta: &TchTensor,
            options: &ConvOptions<2>,
            epsilon: f64,
            activation: Activation,
            needs_grad: [bool; 4],
        ) -> Option<NativeForward<Self>> {
            if options.is_asymmetric() {
                return None;
            }
            let inputs = [x, weight, gamma, beta];
            // Leaves share the inputs' memory; only those asked for record a gradient.
            let leaves: [Tensor; 4] =
                std::array::from_fn(|i| inputs[i].tensor.detach().set_requires_grad(needs_grad[i]));
            let to_i64 = |v: [usize; 2]| v.map(|e| e as i64);
            let (output, mean, invstd) = tch::with_grad(|| {
                let conv = leaves[0].conv2d(
                    &leaves[1],
                    None::<&Tensor>,
                    to_i64(options.stride),
                    to_i64(options.padding_begin()),
                    to_i64(options.dilation),
                    options.groups as i64,
                );
                let (normed, mean, invstd) = conv.native_batch_norm(
                    Some(&leaves[2]),
                    Some(&leaves[3]),
                    None,
                    None,
                    true,
                    0.0,
                    epsilon,
                );
                let output = match activation {
                    Activation::Identity => normed,
                    Activation::Relu => normed.relu(),
                    Activation::Relu6 => normed.relu6(),
                };
                (output, mean, invstd)
            });
            // burn wants the biased variance; PyTorch keeps 1/sqrt(var + eps).
            let variance = (invstd.square().reciprocal() - epsilon).detach();
            let burn_output = TchTensor::new(output.detach());
            let graph = Graph {
                output: TchTensor::new(output),
                leaves: std::array::from_fn(|i| {
                    needs_grad[i].then(|| TchTensor::new(leaves[i].shallow_clone()))
                }),
                _pinned: [
                    x.clone(),
                    weight.clone(),
                    gamma.clone(),
                    beta.clone(),
                    burn_output.clone(),
                ],
            };
            // PyTorch's graph keeps the mean for the backward: burn gets a copy it may overwrite.
            Some(NativeForward {
                output: burn_output,
                mean: TchTensor::new(mean.detach().copy()),
                variance: TchTensor::new(variance),
                saved: graph,
            })
        }

        fn backward(graph: Graph, grad: FloatTensor<Self>) -> [Option<FloatTensor<Self>>; 4] {
            let wanted: Vec<&Tensor> = graph.leaves.iter().flatten().map(|t| &t.tensor).collect();
            if wanted.is_empty() {
                return [None, None, None, None];
            }
            // PyTorch's engine seeds the backward with ones: d(sum(output * grad))/d(output) is
            // the incoming gradient.
            let seed = tch::with_grad(|| (&graph.output.tensor * &grad.tensor).sum(None));
            let mut grads = Tensor::run_backward(&[seed], &wanted, false, false).into_iter();
            graph
                .leaves
                .map(|leaf| leaf.map(|_| TchTensor::new(grads.next().expect("one per leaf"))))
        }
    }
}

impl<B: ConvBnTrain + NativeConvBn, C: CheckpointStrategy> ConvBnTrain for Autodiff<B, C> {
    fn conv_bn_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        options: ConvOptions<2>,
        epsilon: f64,
        activation: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct ConvBnBackward;

        impl<B: NativeConvBn> Backward<B, 4> for ConvBnBackward {
            type State = B::Saved;

            fn backward(
                self,
                ops: Ops<Self::State, 4>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node);
                let computed = B::backward(ops.state, grad);
                for (parent, gradient) in ops.parents.iter().zip(computed) {
                    if let (Some(node), Some(gradient)) = (parent, gradient) {
                        grads.register::<B>(node.id, gradient);
                    }
                }
            }
        }

        let needs_grad = [&x, &weight, &gamma, &beta].map(|t| t.is_tracked());
        let Some(NativeForward {
            output,
            mean,
            variance,
            saved,
        }) = B::forward(
            x.primitive(),
            weight.primitive(),
            gamma.primitive(),
            beta.primitive(),
            &options,
            epsilon,
            activation,
            needs_grad,
        )
        else {
            return compose::<Self>(x, weight, gamma, beta, options, epsilon, activation);
        };
        let statistics = FloatTensor::<Self>::new;
        let output = match ConvBnBackward
            .prepare::<C>([x.node(), weight.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        (output, statistics(mean), statistics(variance))
    }
}

/// `activation(bn(conv(x)))`. Where `bn` trains (an autodiff device and training enabled, as
/// burn's `BatchNorm::forward` decides), as one op; otherwise through the modules themselves.
pub fn conv_bn(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, activation: Activation) -> Tensor<4> {
    if x.device().is_autodiff()
        && bn.training.is_enabled()
        && let Some(options) = fixed_conv_options(conv)
    {
        return conv_bn_train(bn, x, conv.weight.val(), options, activation);
    }
    activation.apply(bn.forward(conv.forward(x)))
}

/// The convolution's options, unless its padding depends on the input size (`Same`).
fn fixed_conv_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return None,
    };
    Some(ConvOptions::new_with_padding(
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
    ))
}

/// The training path of [`conv_bn`]: batch statistics, running statistics updated as burn's
/// `BatchNorm` does.
fn conv_bn_train(
    bn: &BatchNorm,
    x: Tensor<4>,
    weight: Tensor<4>,
    options: ConvOptions<2>,
    activation: Activation,
) -> Tensor<4> {
    use burn::backend::{Dispatch, DispatchTensor};
    let device = x.device();
    let (output, mean, variance) = <Dispatch as ConvBnTrain>::conv_bn_train(
        x.into_dispatch(),
        weight.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        options,
        bn.epsilon,
        activation,
    );
    let momentum = bn.momentum;
    let update = |running: Tensor<1>, batch: DispatchTensor| {
        running
            .to_device(&device)
            .mul_scalar(1.0 - momentum)
            .add(
                Tensor::<1>::from_dispatch(batch)
                    .detach()
                    .mul_scalar(momentum),
            )
            .detach()
    };
    bn.running_mean
        .update(update(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(update(bn.running_var.value_sync(), variance));
    Tensor::from_dispatch(output)
}
