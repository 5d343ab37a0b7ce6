#!/usr/bin/env python3
"""Writes dispatch_chain.onnx: 70 tiny 1x1 convs (16 -> 16 channels, 8x8 pixels) each followed by
Relu, i.e. 70 GPU dispatches that each do almost nothing. `bench-model` on it measures what a
dispatch costs beside its work (recording, barriers, launch), which bounds a plan's batch-1
latency: EfficientNet-Lite0's plan has about 71 dispatches. Run from this directory:
    pip install onnx numpy && python3 make_chain.py
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
nodes, inits, prev = [], [], "x"
for i in range(70):
    inits.append(numpy_helper.from_array((rng.standard_normal((16, 16, 1, 1)) * 0.25).astype(np.float32), f"w{i}"))
    out = "y" if i == 69 else f"r{i}"
    nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}"))
    nodes.append(helper.make_node("Relu", [f"c{i}"], [out], name=f"relu{i}"))
    prev = out
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 8, 8])
m = helper.make_model(helper.make_graph(nodes, "dispatch_chain", [x], [y], inits),
                      opset_imports=[helper.make_opsetid("", 17)], producer_name="make_chain.py")
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, "dispatch_chain.onnx")
