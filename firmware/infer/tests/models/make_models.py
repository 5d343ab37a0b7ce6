#!/usr/bin/env python3
"""Writes the small ONNX models the infer tests run on the GPU and compare with tract.

Each model exercises a few ops the way PyTorch's exporter writes them, on small odd shapes
(lavapipe, the software Vulkan the tests run on, is slow). Run from this directory:
    pip install onnx numpy && python3 make_models.py
The .onnx files are committed; rerunning rewrites them identically (fixed seeds).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


def w(*shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save(name, nodes, in_shape, out_shape, inits, opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    g = helper.make_graph(nodes, name, [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="make_models.py")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, f"{name}.onnx")


N = helper.make_node
f32 = np.float32


def clip6(i, o, name):
    return N("Clip", [i, "zero", "six"], [o], name=name)


six = {"zero": np.array(0.0, f32), "six": np.array(6.0, f32)}

# Dense convs: 3x3 padded + bias + Relu, then strided with asymmetric pads + ReLU6.
save("conv_dense", [
    N("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
    N("Relu", ["a"], ["b"], name="relu1"),
    N("Conv", ["b", "w2"], ["c"], name="conv2", pads=[1, 0, 1, 0], strides=[2, 2]),
    clip6("c", "y", "clip2"),
], [3, 9, 11], [6, 5, 5], {"w1": w(4, 3, 3, 3), "b1": w(4), "w2": w(6, 4, 3, 3), **six})

# Depthwise strided conv + ReLU6, then a grouped 1x1 conv (groups of 3 channels).
save("conv_grouped", [
    N("Conv", ["x", "wd", "bd"], ["a"], name="dw", group=6, pads=[1, 1, 1, 1], strides=[2, 2]),
    clip6("a", "b", "clip"),
    N("Conv", ["b", "wg"], ["y"], name="grouped", group=2),
], [6, 9, 9], [4, 5, 5], {"wd": w(6, 1, 3, 3), "bd": w(6), "wg": w(4, 3, 1, 1), **six})

# EfficientNet-Lite's inverted residual: expand 1x1, depthwise 3x3, project 1x1, residual Add.
save("inverted_residual", [
    N("Conv", ["x", "we", "be"], ["a"], name="expand"),
    clip6("a", "b", "clip1"),
    N("Conv", ["b", "wd", "bd"], ["c"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
    clip6("c", "d", "clip2"),
    N("Conv", ["d", "wp", "bp"], ["e"], name="project"),
    N("Add", ["e", "x"], ["y"], name="residual"),
], [4, 7, 7], [4, 7, 7], {"we": w(8, 4, 1, 1), "be": w(8), "wd": w(8, 1, 3, 3), "bd": w(8),
                          "wp": w(4, 8, 1, 1), "bp": w(4), **six})


# Wide 1x1 convs: several 32-channel and 64-pixel tiles (the last ones partial, 81 pixels and
# 5 channels not a multiple of the kernel's 4-wide vectors), partial 16-deep slices of inputs.
save("pointwise_wide", [
    N("Conv", ["x", "w1", "b1"], ["a"], name="expand"),
    N("Relu", ["a"], ["b"], name="relu"),
    N("Conv", ["b", "w2"], ["y"], name="project"),
], [20, 9, 9], [5, 9, 9], {"w1": w(40, 20, 1, 1), "b1": w(40), "w2": w(5, 40, 1, 1)})


# Deep 1x1 convs on few pixels (Lite0's last blocks): too few tiles to fill a GPU, so the
# inputs are split into ranges summed by a second kernel, with bias, residual and clamp there.
save("pointwise_split", [
    N("Conv", ["x", "w1", "b1"], ["a"], name="mix"),
    N("Add", ["a", "x"], ["b"], name="residual"),
    N("Conv", ["b", "w2", "b2"], ["c"], name="project"),
    clip6("c", "y", "clip"),
], [136, 3, 5], [16, 3, 5], {"w1": w(136, 136, 1, 1, scale=0.1), "b1": w(136),
                             "w2": w(16, 136, 1, 1, scale=0.1), "b2": w(16), **six})


def bn(prefix, c):
    return {f"{prefix}_g": (1 + w(c, scale=0.1)), f"{prefix}_b": w(c, scale=0.1),
            f"{prefix}_m": w(c, scale=0.1), f"{prefix}_v": (0.5 + np.abs(w(c))).astype(f32)}


def bn_node(i, o, p):
    return N("BatchNormalization", [i, f"{p}_g", f"{p}_b", f"{p}_m", f"{p}_v"], [o], name=p, epsilon=1e-5)


# ResNet's downsampling basic block: conv-BN-Relu, conv-BN, a strided 1x1 conv-BN shortcut,
# Add, Relu, then the stem's MaxPool.
save("resnet_block", [
    N("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
    bn_node("a", "b", "bn1"),
    N("Relu", ["b"], ["c"], name="relu1"),
    N("Conv", ["c", "w2"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
    bn_node("d", "e", "bn2"),
    N("Conv", ["x", "ws"], ["s"], name="shortcut", strides=[2, 2]),
    bn_node("s", "t", "bns"),
    N("Add", ["e", "t"], ["u"], name="add"),
    N("Relu", ["u"], ["v"], name="relu2"),
    N("MaxPool", ["v"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
], [4, 9, 9], [6, 3, 3], {"w1": w(6, 4, 3, 3), "w2": w(6, 6, 3, 3), "ws": w(6, 4, 1, 1),
                          **bn("bn1", 6), **bn("bn2", 6), **bn("bns", 6)})

# BatchNorm and Relu with no conv to fold into.
save("batchnorm", [
    bn_node("x", "a", "bn"),
    N("Relu", ["a"], ["y"], name="relu"),
], [3, 5, 6], [3, 5, 6], bn("bn", 3))

# Max and average pooling: padding, count_include_pad both ways, ceil_mode.
save("pools", [
    N("MaxPool", ["x"], ["a"], name="max", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    N("AveragePool", ["a"], ["b"], name="avg_incl", kernel_shape=[2, 2], pads=[1, 1, 1, 1],
      count_include_pad=1),
    N("AveragePool", ["b"], ["y"], name="avg_excl", kernel_shape=[3, 3], strides=[2, 2],
      pads=[1, 1, 1, 1]),
], [3, 11, 13], [3, 4, 4], {})

# ceil_mode: the last window may hang over the input (it is cut to the input).
save("pools_ceil", [
    N("AveragePool", ["x"], ["d"], name="avg_ceil", kernel_shape=[2, 2], strides=[2, 2],
      ceil_mode=1),
    N("MaxPool", ["d"], ["y"], name="max_ceil", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
], [3, 11, 13], [3, 3, 3], {})

# The classifier head: global average pool, Flatten, Gemm with transB, alpha and beta.
save("head_gemm", [
    N("GlobalAveragePool", ["x"], ["a"], name="gap"),
    N("Flatten", ["a"], ["b"], name="flatten"),
    N("Gemm", ["b", "wg", "bg"], ["y"], name="fc", transB=1, alpha=0.5, beta=2.0),
], [5, 4, 3], [7], {"wg": w(7, 5), "bg": w(7)})

# A linear layer as PyTorch writes it without Gemm: MatMul, Add bias, then Mul and Relu.
save("head_matmul", [
    N("MatMul", ["x", "wm"], ["a"], name="matmul"),
    N("Add", ["a", "bm"], ["b"], name="bias"),
    N("Mul", ["b", "sm"], ["c"], name="scale"),
    N("Relu", ["c"], ["y"], name="relu"),
], [6], [10], {"wm": w(6, 10), "bm": w(10), "sm": w(10)})

# MatMul over several rows per sample (a token-like axis): the one-output-per-invocation kernel.
save("matmul_rows", [
    N("MatMul", ["x", "wm"], ["a"], name="matmul"),
    N("Add", ["a", "bm"], ["y"], name="bias"),
], [3, 6], [3, 10], {"wm": w(6, 10), "bm": w(10)})

# LayerNormalization (opset 17) over the last axis, with affine parameters.
save("layernorm", [
    N("LayerNormalization", ["x", "ln_s", "ln_b"], ["y"], name="ln", axis=-1, epsilon=1e-5),
], [12], [12], {"ln_s": 1 + w(12, scale=0.1), "ln_b": w(12, scale=0.1)})

# The decomposed form older exporters write (opset 13: ReduceMean takes axes as an attribute).
save("layernorm_decomposed", [
    N("ReduceMean", ["x"], ["mean"], name="mean", axes=[-1]),
    N("Sub", ["x", "mean"], ["d"], name="center"),
    N("Pow", ["d", "two"], ["sq"], name="square"),
    N("ReduceMean", ["sq"], ["var"], name="var", axes=[-1]),
    N("Add", ["var", "eps"], ["ve"], name="add_eps"),
    N("Sqrt", ["ve"], ["std"], name="std"),
    N("Div", ["d", "std"], ["y"], name="normalize"),
], [12], [12], {"two": np.array(2.0, f32), "eps": np.array(1e-5, f32)}, opset=13)

# L2 normalisation: ReduceL2 (opset 18: axes as an input) and Div, then LpNormalization.
save("l2norm", [
    N("ReduceL2", ["x", "axes"], ["n"], name="norm", keepdims=1),
    N("Div", ["x", "n"], ["a"], name="divide"),
    N("Mul", ["a", "k"], ["b"], name="scale"),
    N("LpNormalization", ["b"], ["y"], name="lpnorm", axis=-1, p=2),
], [16], [16], {"axes": np.array([-1], np.int64), "k": w(16)}, opset=18)

# F.normalize as PyTorch exports it: ReduceL2, Clip(min=eps), Expand to x's shape, Div.
save("normalize_torch", [
    N("ReduceL2", ["x"], ["n"], name="norm", axes=[1], keepdims=1),
    N("Clip", ["n", "eps", ""], ["c"], name="clamp_min"),
    N("Shape", ["x"], ["s"], name="shape"),
    N("Expand", ["c", "s"], ["e"], name="expand"),
    N("Div", ["x", "e"], ["y"], name="divide"),
], [24], [24], {"eps": np.array(1e-12, f32)}, opset=13)

# x.view(x.size(0), -1) as PyTorch exports it: Shape, Gather, Unsqueeze, Concat, Reshape.
save("reshape", [
    N("Shape", ["x"], ["s"], name="shape"),
    N("Gather", ["s", "zero_i"], ["n"], name="batch", axis=0),
    N("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
    N("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
    N("Reshape", ["x", "target"], ["r"], name="reshape"),
    N("Mul", ["r", "k"], ["y"], name="scale"),
], [4, 3, 3], [36], {"zero_i": np.array(0, np.int64), "axes0": np.array([0], np.int64),
                     "minus1": np.array([-1], np.int64), "k": w(36)})

# Broadcasting binary ops against constants of several shapes, and Sigmoid.
save("broadcast", [
    N("Add", ["x", "c1"], ["a"], name="add_c11"),
    N("Mul", ["a", "c2"], ["b"], name="mul_1c1w"),
    N("Sub", ["b", "c3"], ["c"], name="sub_scalar"),
    N("Div", ["c", "c4"], ["d"], name="div_w"),
    N("Max", ["d", "c5"], ["e"], name="max"),
    N("Min", ["e", "c6"], ["f"], name="min"),
    N("Sigmoid", ["f"], ["y"], name="sigmoid"),
], [3, 4, 5], [3, 4, 5], {"c1": w(3, 1, 1), "c2": w(1, 3, 1, 5), "c3": np.array(0.25, f32),
                          "c4": (1.5 + np.abs(w(5))).astype(f32), "c5": np.array([-0.3], f32),
                          "c6": np.array([0.9], f32)})

# Two activations broadcast against each other (squeeze-and-excitation's channel scaling).
save("excite", [
    N("GlobalAveragePool", ["x"], ["a"], name="gap"),
    N("Sigmoid", ["a"], ["s"], name="gate"),
    N("Mul", ["x", "s"], ["y"], name="excite"),
], [5, 3, 4], [5, 3, 4], {})

# Embedding heads whose signs are packed: 256 values, and 40 (not a multiple of 32).
save("embed256", [
    N("Conv", ["x", "we", "be"], ["a"], name="conv", pads=[1, 1, 1, 1]),
    N("Flatten", ["a"], ["y"], name="flatten"),
], [3, 8, 8], [256], {"we": w(4, 3, 3, 3), "be": w(4)})
save("embed40", [
    N("Conv", ["x", "we"], ["a"], name="conv"),
    N("Flatten", ["a"], ["y"], name="flatten"),
], [3, 4, 5], [40], {"we": w(2, 3, 1, 1)})

# The NormSoftmax embedding head on a tiny backbone: conv, global average pool, LayerNorm
# without affine parameters, a linear layer without bias, L2 normalisation (64-d code).
save("embedding_head", [
    N("Conv", ["x", "wc", "bc"], ["a"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2]),
    clip6("a", "b", "relu6"),
    N("GlobalAveragePool", ["b"], ["c"], name="gap"),
    N("Flatten", ["c"], ["d"], name="flatten"),
    N("LayerNormalization", ["d", "ones", "zeros"], ["e"], name="ln", axis=-1, epsilon=1e-5),
    N("MatMul", ["e", "wm"], ["f"], name="embed"),
    N("ReduceL2", ["f", "axes"], ["n"], name="norm", keepdims=1),
    N("Div", ["f", "n"], ["y"], name="normalize"),
], [3, 11, 9], [64], {"wc": w(16, 3, 3, 3), "bc": w(16), "ones": np.ones(16, f32),
                      "zeros": np.zeros(16, f32), "wm": w(16, 64), "axes": np.array([-1], np.int64),
                      **six}, opset=18)

# An op the plan does not run: loading must fail naming the node and the op.
save("unsupported", [
    N("Softmax", ["x"], ["y"], name="my_softmax", axis=-1),
], [10], [10], {})

# Any input size (H and W symbolic, fixed at load with `input_hw`): the frame preprocessing
# tests crop frames to several sizes and run this on the result (8 values: packable).
save("frame_head", [
    N("Conv", ["x", "wf", "bf"], ["a"], name="conv"),
    N("GlobalAveragePool", ["a"], ["b"], name="gap"),
    N("Flatten", ["b"], ["y"], name="flatten"),
], [3, "H", "W"], [8], {"wf": w(8, 3, 1, 1), "bf": w(8)})

# Dilated convs: a dense 3x3 with dilation 2 (rows and columns) and a depthwise 3x3 with
# dilations (1, 3) and stride 2, on rows wide enough that some windows lie inside the input.
save("conv_dilated", [
    N("Conv", ["x", "w1", "b1"], ["a"], name="dense", pads=[2, 2, 2, 2], dilations=[2, 2]),
    N("Relu", ["a"], ["b"], name="relu"),
    N("Conv", ["b", "wd"], ["y"], name="depthwise", group=4, pads=[1, 3, 1, 2],
      dilations=[1, 3], strides=[2, 2]),
], [3, 9, 17], [4, 5, 8], {"w1": w(4, 3, 3, 3), "b1": w(4), "wd": w(4, 1, 3, 3)})

# A large input (4.2 MB a sample: copied into the upload buffer by several threads, in 1 MiB
# pieces and a remainder) through an op that keeps every value: any piece lost or misplaced
# shows in the output.
save("large_input", [
    N("Relu", ["x"], ["y"], name="relu"),
], [3, 512, 683], [3, 512, 683], {})

# Rows longer than a workgroup (300 values, two rows a sample): LayerNormalization with affine
# parameters, ReduceL2 and Div, a scale, then ReduceMean subtracted (keepdims).
save("rows_wide", [
    N("LayerNormalization", ["x", "ln_s", "ln_b"], ["a"], name="ln", axis=-1, epsilon=1e-5),
    N("ReduceL2", ["a", "axes"], ["n"], name="norm", keepdims=1),
    N("Div", ["a", "n"], ["b"], name="divide"),
    N("Mul", ["b", "k"], ["c"], name="scale"),
    N("ReduceMean", ["c", "axes"], ["m"], name="mean", keepdims=1),
    N("Sub", ["c", "m"], ["y"], name="center"),
], [2, 300], [2, 300], {"ln_s": 1 + w(300, scale=0.1), "ln_b": w(300, scale=0.1),
                        "axes": np.array([-1], np.int64), "k": w(300)}, opset=18)

# Linear layers with many inputs and few outputs: too few invocations to fill a GPU, so their
# inputs are split into ranges summed by a second kernel. A Gemm (transB, its bias added in
# the second kernel), and a MatMul over two rows a sample.
save("linear_split", [
    N("Gemm", ["x", "wl", "bl"], ["y"], name="linear", transB=1),
], [300], [10], {"wl": w(10, 300, scale=0.1), "bl": w(10)})
save("matmul_rows_split", [
    N("MatMul", ["x", "wm"], ["y"], name="matmul"),
], [2, 300], [2, 10], {"wm": w(300, 10, scale=0.1)})

# 1x1 convs for both tile widths (32 and 64 channels): 80 pixels and 72 / 36 outputs, multiples
# of 4, so the kernel reads its inputs and weights as vectors; the last conv's 66 outputs are
# not (scalar weight loads). Two pixel tiles (the second partial), a partial second channel
# tile, 36 inputs (two whole 16-deep slices and a partial one), a residual Add and ReLU6.
save("pointwise_tiles", [
    N("Conv", ["x", "w1", "b1"], ["a"], name="expand"),
    clip6("a", "b", "clip"),
    N("Conv", ["b", "w2", "b2"], ["c"], name="project"),
    N("Add", ["c", "x"], ["d"], name="residual"),
    N("Conv", ["d", "w3"], ["y"], name="widen"),
], [36, 8, 10], [66, 8, 10], {"w1": w(72, 36, 1, 1, scale=0.2), "b1": w(72),
                              "w2": w(36, 72, 1, 1, scale=0.2), "b2": w(36),
                              "w3": w(66, 36, 1, 1, scale=0.2), **six})


# Windowed convs: a Lite0-like 5x5 stride-2 depthwise conv + ReLU6, a depthwise conv dilated
# beyond its input (every tap but the centre in the padding), a dense conv of 8 inputs, and a
# depthwise conv with a residual Add.
save("conv_windows", [
    N("Conv", ["x", "w5", "b5"], ["a"], name="dw5", group=8, pads=[2, 2, 2, 2], strides=[2, 2]),
    clip6("a", "b", "clip"),
    N("Conv", ["b", "wf"], ["c"], name="dw_far", group=8, pads=[20, 20, 20, 20],
      dilations=[20, 20]),
    N("Conv", ["c", "wdense", "bdense"], ["d"], name="dense", pads=[1, 1, 1, 1]),
    N("Conv", ["d", "wr"], ["e"], name="dw_res", group=6, pads=[1, 1, 1, 1]),
    N("Add", ["e", "d"], ["y"], name="residual"),
], [8, 37, 41], [6, 19, 21], {"w5": w(8, 1, 5, 5, scale=0.3), "b5": w(8),
                              "wf": w(8, 1, 3, 3), "wdense": w(6, 8, 3, 3, scale=0.2),
                              "bdense": w(6), "wr": w(6, 1, 3, 3), **six})


# Layers for the reduce kernel (SplitSums::Workgroup: the inputs shared out within one
# workgroup): 2x2 pixels and 12 columns, multiples of 4 (vector loads and stores, where the
# split models above have scalar ones), 600 outputs (vector weight loads) and 10 (scalar, and a
# partial tile of rows), 600 and 520 inputs (64 input groups, the most), a residual Add with
# ReLU6, and a Gemm's bias by column.
save("reduce_convs", [
    N("Conv", ["x", "w1", "b1"], ["a"], name="mix"),
    N("Add", ["a", "x"], ["b"], name="residual"),
    clip6("b", "c", "clip"),
    N("Conv", ["c", "w2"], ["y"], name="project"),
], [600, 2, 2], [10, 2, 2], {"w1": w(600, 600, 1, 1, scale=0.05), "b1": w(600),
                             "w2": w(10, 600, 1, 1, scale=0.05), **six})
save("reduce_linear", [
    N("Gemm", ["x", "wl", "bl"], ["y"], name="linear", transB=1),
], [520], [12], {"wl": w(12, 520, scale=0.05), "bl": w(12)})


# Convs computing four output channels an invocation (a group's outputs a multiple of 4): a
# grouped conv of 8 outputs a group (two blocks of four each) with bias and ReLU, then a dense
# one with the residual Add and ReLU6 fused; 11 columns (a partial last quad).
save("conv_channels4", [
    N("Conv", ["x", "wg", "bg"], ["a"], name="grouped", group=2, pads=[1, 1, 1, 1]),
    N("Relu", ["a"], ["b"], name="relu"),
    N("Conv", ["b", "wd"], ["c"], name="dense", pads=[1, 1, 1, 1]),
    N("Add", ["c", "b"], ["d"], name="residual"),
    clip6("d", "y", "clip"),
], [6, 9, 11], [16, 9, 11], {"wg": w(16, 3, 3, 3, scale=0.3), "bg": w(16),
                             "wd": w(16, 16, 3, 3, scale=0.1), **six})


# Depthwise convs and the 1x1 convs after them, which `fuse_depthwise` runs as one kernel
# (separable.wgsl): a 5x5 depthwise conv with bias and ReLU6 into a 1x1 conv with bias and the
# residual Add (63 pixels: scalar loads and stores); a strided one (20 pixels: vectors) into 264
# channels with ReLU6 (many blocks of channels); a strided 3x3 one without bias or activation on
# those 264 channels into 10 (scalar weight loads, a partial quad of channels; 6 pixels).
save("separable", [
    N("Conv", ["x", "wd1", "bd1"], ["a"], name="dw1", group=16, pads=[2, 2, 2, 2]),
    clip6("a", "b", "clip1"),
    N("Conv", ["b", "wp1", "bp1"], ["c"], name="pw1"),
    N("Add", ["c", "x"], ["d"], name="residual"),
    N("Conv", ["d", "wd2", "bd2"], ["e"], name="dw2", group=16, pads=[2, 2, 2, 2], strides=[2, 2]),
    clip6("e", "f", "clip2"),
    N("Conv", ["f", "wp2", "bp2"], ["g"], name="pw2"),
    clip6("g", "h", "clip3"),
    N("Conv", ["h", "wd3"], ["i"], name="dw3", group=264, pads=[1, 1, 1, 1], strides=[2, 2]),
    N("Conv", ["i", "wp3"], ["y"], name="pw3"),
], [16, 9, 7], [10, 3, 2], {"wd1": w(16, 1, 5, 5, scale=0.2), "bd1": w(16),
                            "wp1": w(16, 16, 1, 1, scale=0.3), "bp1": w(16),
                            "wd2": w(16, 1, 5, 5, scale=0.2), "bd2": w(16),
                            "wp2": w(264, 16, 1, 1, scale=0.3), "bp2": w(264),
                            "wd3": w(264, 1, 3, 3, scale=0.3),
                            "wp3": w(10, 264, 1, 1, scale=0.1), **six})
