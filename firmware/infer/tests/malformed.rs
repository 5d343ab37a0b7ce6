//! Malformed models are load errors that name the problem, never a panic, a hang or a run that
//! never ends: values no valid model holds, in the attributes and constant inputs tract reads.
//! Each case was found by mutating the test models (each once hung or panicked in tract 0.23).

mod common;

use std::path::Path;

use common::{load, model_path, mutated};
use infer::Backend;
use tract_onnx::pb;

fn attribute<'a>(m: &'a mut pb::ModelProto, node: &str, name: &str) -> &'a mut pb::AttributeProto {
    let graph = m.graph.as_mut().unwrap();
    let node = graph.node.iter_mut().find(|n| n.name == node).unwrap();
    node.attribute.iter_mut().find(|a| a.name == name).unwrap()
}

fn load_err(path: &Path) -> String {
    match load(path, Backend::Cpu, 1) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_says(err: &str, needles: &[&str]) {
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

#[test]
fn attributes_out_of_range_name_the_node_and_value() {
    let dir = tempfile::tempdir().unwrap();
    // tract looped (practically) forever on this axis.
    let path = mutated(&dir, "embedding_head", |m| {
        attribute(m, "ln", "axis").i = -917_505;
    });
    assert_says(
        &load_err(&path),
        &["ln", "LayerNormalization", "axis = -917505"],
    );
    // tract panicked on a stride of 0 and on padding that overflows the output size.
    let path = mutated(&dir, "embedding_head", |m| {
        attribute(m, "stem", "strides").ints[1] = 0;
    });
    assert_says(&load_err(&path), &["stem", "Conv", "strides = 0"]);
    let path = mutated(&dir, "embedding_head", |m| {
        attribute(m, "stem", "pads").ints[2] = 1 << 62;
    });
    assert_says(&load_err(&path), &["stem", "pads = 4611686018427387904"]);
    let path = mutated(&dir, "conv_grouped", |m| {
        attribute(m, "dw", "group").i = 0;
    });
    assert_says(&load_err(&path), &["dw", "group = 0"]);
}

#[test]
fn tensors_too_large_for_a_sample_are_refused() {
    // Valid padding, but an output of 16 x 30006 x 30005 values: the CPU run never ended.
    let dir = tempfile::tempdir().unwrap();
    let path = mutated(&dir, "embedding_head", |m| {
        attribute(m, "stem", "pads").ints = vec![60_000; 4];
    });
    assert_says(&load_err(&path), &["stem", "values a sample"]);
}

#[test]
fn a_panic_inside_tract_is_an_error() {
    // ReduceL2 over axis 3 of a rank-2 tensor: tract 0.23 panics while inferring shapes.
    let dir = tempfile::tempdir().unwrap();
    let path = mutated(&dir, "embedding_head", |m| {
        let graph = m.graph.as_mut().unwrap();
        let axes = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == "axes")
            .unwrap();
        if axes.raw_data.is_empty() {
            axes.int64_data = vec![3];
        } else {
            axes.raw_data = 3i64.to_le_bytes().to_vec();
        }
    });
    assert_says(
        &load_err(&path),
        &["loading the model failed", "tract stopped"],
    );
    // The guard leaves later loads and their errors as they were.
    load(&model_path("embedding_head"), Backend::Cpu, 1).unwrap();
}
