//! The fused conv -> batch norm -> activation training op (`model::fused`) against burn's own
//! modules applied one after the other: output, running statistics and the gradients of the
//! input, the conv weight, gamma and beta. On the LibTorch build (`TRAINER_BACKEND=libtorch`)
//! the fused op runs through PyTorch's autograd, on the default build through the trainer's own
//! Flex code (`model/fused/flex.rs`): either way two independent implementations are compared.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use trainer::backend::device_from_env;
use trainer::model::fused::{Activation, conv_bn};

struct Case {
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    activation: Activation,
    input_grad: bool,
    /// Top, left, bottom, right; None: kernel / 2 on every side.
    padding: Option<[usize; 4]>,
    dilation: usize,
}

fn modules(device: &Device, case: &Case) -> (Conv2d, BatchNorm) {
    let pad = case.kernel / 2;
    let [top, left, bottom, right] = case.padding.unwrap_or([pad; 4]);
    let conv = Conv2dConfig::new(case.channels, [case.kernel, case.kernel])
        .with_stride([case.stride, case.stride])
        .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
        .with_dilation([case.dilation, case.dilation])
        .with_groups(case.groups)
        .with_bias(false)
        .init(device);
    let mut bn = BatchNormConfig::new(case.channels[1]).init(device);
    // Not the identity, so that gamma and beta matter; large enough that ReLU6 clips at 6. The
    // first channel's 4 and 3 make it clip whatever the random draws: its normalised values,
    // mean 0 and variance 1 over a few dozen outputs, exceed 0.75 somewhere.
    let first = |value: f32| Tensor::<1>::from_floats([value], device);
    bn.gamma = Param::from_tensor(
        Tensor::random([case.channels[1]], Distribution::Uniform(0.5, 4.0), device)
            .slice_assign(0..1, first(4.0)),
    );
    bn.beta = Param::from_tensor(
        Tensor::random([case.channels[1]], Distribution::Uniform(-1.0, 3.0), device)
            .slice_assign(0..1, first(3.0)),
    );
    (conv, bn)
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn assert_close(what: &str, actual: Vec<f32>, expected: Vec<f32>) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-4 * scale,
            "{what}[{i}]: {a} vs {e} (scale {scale})"
        );
    }
}

fn check(case: Case) {
    let device = device_from_env().unwrap().autodiff();
    let (conv, bn) = modules(&device, &case);
    let reference_bn = bn.clone();
    let input = Tensor::<4>::random([3, case.channels[0], 9, 7], Distribution::Default, &device);
    let input = if case.input_grad {
        input.require_grad()
    } else {
        input
    };
    let fused = conv_bn(&conv, &bn, input.clone(), case.activation);
    let reference = case
        .activation
        .apply(reference_bn.forward(conv.forward(input.clone())));
    let output_weights = Tensor::<4>::random(reference.dims(), Distribution::Default, &device);
    if case.activation == Activation::Relu6 {
        let clipped = values(reference.clone().greater_equal_elem(6.0).float().sum());
        assert!(
            clipped[0] > 0.0,
            "the case should reach ReLU6's upper bound"
        );
    }
    assert_close("output", values(fused.clone()), values(reference.clone()));
    assert_close(
        "running mean",
        values(bn.running_mean.value()),
        values(reference_bn.running_mean.value()),
    );
    assert_close(
        "running var",
        values(bn.running_var.value()),
        values(reference_bn.running_var.value()),
    );

    let fused_grads = (fused * output_weights.clone()).sum().backward();
    let reference_grads = (reference * output_weights).sum().backward();
    let grad = |tensor: Tensor<4>, grads| values(tensor.grad(grads).expect("a gradient"));
    let grad1 = |tensor: Tensor<1>, grads| values(tensor.grad(grads).expect("a gradient"));
    if case.input_grad {
        assert_close(
            "dL/dx",
            grad(input.clone(), &fused_grads),
            grad(input.clone(), &reference_grads),
        );
    } else {
        assert!(input.grad(&fused_grads).is_none());
    }
    assert_close(
        "dL/dweight",
        grad(conv.weight.val(), &fused_grads),
        grad(conv.weight.val(), &reference_grads),
    );
    assert_close(
        "dL/dgamma",
        grad1(bn.gamma.val(), &fused_grads),
        grad1(reference_bn.gamma.val(), &reference_grads),
    );
    assert_close(
        "dL/dbeta",
        grad1(bn.beta.val(), &fused_grads),
        grad1(reference_bn.beta.val(), &reference_grads),
    );
}

#[test]
fn dense_3x3_stride_2_relu6() {
    check(Case {
        channels: [4, 6],
        kernel: 3,
        stride: 2,
        groups: 1,
        activation: Activation::Relu6,
        input_grad: true,
        padding: None,
        dilation: 1,
    });
}

#[test]
fn depthwise_5x5_relu6() {
    check(Case {
        channels: [6, 6],
        kernel: 5,
        stride: 1,
        groups: 6,
        activation: Activation::Relu6,
        input_grad: true,
        padding: None,
        dilation: 1,
    });
}

#[test]
fn depthwise_3x3_stride_2_asymmetric_padding_relu6() {
    // TensorFlow's "same" padding, as EfficientNet's strided depthwise layers may have it.
    check(Case {
        channels: [5, 5],
        kernel: 3,
        stride: 2,
        groups: 5,
        activation: Activation::Relu6,
        input_grad: true,
        padding: Some([0, 1, 2, 1]),
        dilation: 1,
    });
}

#[test]
fn depthwise_dilated_relu() {
    check(Case {
        channels: [4, 4],
        kernel: 3,
        stride: 1,
        groups: 4,
        activation: Activation::Relu,
        input_grad: true,
        padding: Some([2, 2, 2, 2]),
        dilation: 2,
    });
}

#[test]
fn pointwise_identity() {
    check(Case {
        channels: [6, 5],
        kernel: 1,
        stride: 1,
        groups: 1,
        activation: Activation::Identity,
        input_grad: true,
        padding: None,
        dilation: 1,
    });
}

#[test]
fn grouped_relu_without_input_gradient() {
    // The stem: the images take no gradient.
    check(Case {
        channels: [4, 8],
        kernel: 3,
        stride: 2,
        groups: 2,
        activation: Activation::Relu,
        input_grad: false,
        padding: None,
        dilation: 1,
    });
}

#[test]
fn inference_uses_running_statistics() {
    // Without autodiff the op is the modules themselves and leaves the statistics alone.
    let device = device_from_env().unwrap();
    let case = Case {
        channels: [3, 4],
        kernel: 3,
        stride: 1,
        groups: 1,
        activation: Activation::Relu6,
        input_grad: false,
        padding: None,
        dilation: 1,
    };
    let (conv, bn) = modules(&device, &case);
    let input = Tensor::<4>::random([2, 3, 5, 5], Distribution::Default, &device);
    let before = values(bn.running_mean.value());
    let output = conv_bn(&conv, &bn, input.clone(), case.activation);
    let expected = case.activation.apply(bn.forward(conv.forward(input)));
    assert_close("output", values(output), values(expected));
    assert_eq!(values(bn.running_mean.value()), before);
}
