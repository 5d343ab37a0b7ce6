//! `run_many`: any number of samples in batches of the loaded maximum, two in flight on the
//! GPU (one copied in or out while the other runs). Each sample must get what a run of it
//! alone gives, whatever batch it fell in, and runs before and after a stream must not see it.

mod common;

use common::{
    assert_close, cpu_and_gpu, load, load_gpu, model_path, mutated, pseudo_random, sample_lens,
};
use infer::{Backend, InferError, Model};
use tract_onnx::pb;

/// Each sample run alone on `model`.
fn one_by_one(model: &mut Model, x: &[f32]) -> Vec<f32> {
    let (in_len, per) = sample_lens(model);
    let mut out = vec![0.0; x.len() / in_len * per];
    for (xs, ys) in x.chunks(in_len).zip(out.chunks_mut(per)) {
        model.run(1, xs, ys).unwrap();
    }
    out
}

#[test]
fn every_sample_of_a_stream_gets_its_own_result() {
    let Some((mut cpu, mut gpu)) = cpu_and_gpu("embedding_head", 3) else {
        return;
    };
    let (in_len, dim) = sample_lens(&cpu);
    // 8 samples at most 3 a batch: 3 + 3 + 2, so both staging sets are used twice and the
    // last batch is smaller; then a stream of one batch, and of one sample.
    for (samples, seed) in [(8, 1), (3, 2), (1, 3), (7, 4)] {
        let x = pseudo_random(samples * in_len, seed);
        let want = one_by_one(&mut cpu, &x);
        let mut cpu_many = vec![f32::NAN; samples * dim];
        cpu.run_many(&x, &mut cpu_many).unwrap();
        assert_eq!(cpu_many, want, "{samples} samples on the CPU");
        let mut got = vec![f32::NAN; samples * dim];
        gpu.run_many(&x, &mut got).unwrap();
        assert_close(&format!("{samples} samples, seed {seed}"), &got, &want);

        let mut signs = vec![0u8; samples * dim / 8];
        infer::pack_signs(&got, dim, &mut signs);
        let mut codes = vec![0u8; samples * dim / 8];
        gpu.run_many_packed(&x, &mut codes).unwrap();
        assert_eq!(codes, signs, "{samples} samples packed on the GPU");
        let mut cpu_codes = vec![0u8; samples * dim / 8];
        cpu.run_many_packed(&x, &mut cpu_codes).unwrap();
        let mut cpu_signs = vec![0u8; samples * dim / 8];
        infer::pack_signs(&want, dim, &mut cpu_signs);
        assert_eq!(cpu_codes, cpu_signs, "{samples} samples packed on the CPU");

        // A plain run after the stream reads its own input, through the first staging set.
        let x1 = pseudo_random(2 * in_len, seed + 100);
        let (mut a, mut b) = (vec![0.0; 2 * dim], vec![f32::NAN; 2 * dim]);
        cpu.run(2, &x1, &mut a).unwrap();
        gpu.run(2, &x1, &mut b).unwrap();
        assert_close("a run after a stream", &b, &a);
    }
}

#[test]
fn a_stream_on_a_larger_model_matches_tract() {
    // Enough work per batch for the GPU to still run one while the next is written.
    let Some((mut cpu, mut gpu)) = cpu_and_gpu("inverted_residual", 4) else {
        return;
    };
    let (in_len, per) = sample_lens(&cpu);
    let x = pseudo_random(11 * in_len, 9);
    let (mut want, mut got) = (vec![0.0; 11 * per], vec![f32::NAN; 11 * per]);
    cpu.run_many(&x, &mut want).unwrap();
    let timings = gpu.run_many(&x, &mut got).unwrap();
    assert_close("inverted_residual, 11 samples by 4", &got, &want);
    assert!(timings.upload_ms > 0.0 && timings.run_ms >= 0.0 && timings.readback_ms > 0.0);
}

#[test]
fn bad_streams_are_errors_and_leave_the_model_usable() {
    let path = model_path("embedding_head");
    let mut cpu = load(&path, Backend::Cpu, 2).unwrap();
    let gpu = load_gpu(&path, 2);
    let (in_len, dim) = sample_lens(&cpu);
    let x = pseudo_random(5 * in_len, 1);
    let mut want = vec![0.0; 5 * dim];
    cpu.run_many(&x, &mut want).unwrap();
    for mut model in std::iter::once(cpu).chain(gpu) {
        let backend = model.backend();
        let mut out = vec![0.0; 5 * dim];
        for (input, out_len, needle) in [
            (&x[..0], 0, "not a whole number of samples"),
            (&x[..in_len + 1], dim, "not a whole number of samples"),
            (&x[..], 4 * dim, "output space"),
        ] {
            let err = model.run_many(input, &mut out[..out_len]).unwrap_err();
            assert!(
                matches!(&err, InferError::Input(m) if m.contains(needle)),
                "{backend}: {err}"
            );
        }
        let mut codes = vec![0u8; 4 * dim / 8];
        assert!(model.run_many_packed(&x, &mut codes).is_err());
        model.run_many(&x, &mut out).unwrap();
        assert_close(&format!("{backend} after errors"), &out, &want);
    }
}

#[test]
fn a_model_exported_for_a_fixed_batch_streams_multiples_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = mutated(&dir, "embedding_head", |m| {
        let input = &mut m.graph.as_mut().unwrap().input[0];
        let Some(pb::type_proto::Value::TensorType(tensor)) =
            input.r#type.as_mut().unwrap().value.as_mut()
        else {
            panic!("a tensor input");
        };
        tensor.shape.as_mut().unwrap().dim[0].value =
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(2));
    });
    let mut cpu = load(&path, Backend::Cpu, 8).unwrap();
    assert_eq!(cpu.max_batch(), 2);
    let (in_len, dim) = sample_lens(&cpu);
    let x = pseudo_random(6 * in_len, 3);
    let mut want = vec![0.0; 6 * dim];
    cpu.run_many(&x, &mut want).unwrap();
    let mut out = vec![0.0; 5 * dim];
    let err = cpu.run_many(&x[..5 * in_len], &mut out).unwrap_err();
    assert!(err.to_string().contains("multiple of 2"), "{err}");
    let Some(mut gpu) = load_gpu(&path, 8) else {
        return;
    };
    let mut got = vec![f32::NAN; 6 * dim];
    gpu.run_many(&x, &mut got).unwrap();
    assert_close("fixed batch 2, 6 samples", &got, &want);
}
