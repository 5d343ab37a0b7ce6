//! Every op the GPU plan runs, checked against tract's CPU runtime on small odd shapes, at
//! batch 1 and 3. The models come from tests/models/make_models.py.

mod common;

use common::{
    assert_close, cpu_and_gpu, load, load_gpu, load_gpu_tuned, model_path, pseudo_random,
    sample_lens,
};
use infer::{Backend, GpuTuning, InferError, Model, PointwiseTiles, SplitSums};

/// Runs `name` on both backends at batches 1 and 3 and compares; returns the GPU kernels.
fn check(name: &str) -> Vec<String> {
    check_tiles(name, PointwiseTiles::Auto)
}

/// `check` with the given 1x1 conv tiles.
fn check_tiles(name: &str, tiles: PointwiseTiles) -> Vec<String> {
    let tuning = GpuTuning {
        pointwise_tiles: tiles,
        ..GpuTuning::default()
    };
    check_tuned(name, tuning)
}

/// `check` with the given tuning of the GPU plan.
fn check_tuned(name: &str, tuning: GpuTuning) -> Vec<String> {
    let path = model_path(name);
    let mut cpu = load(&path, Backend::Cpu, 3).expect("tract loads the model");
    let Some(mut gpu) = load_gpu_tuned(&path, 3, tuning) else {
        return Vec::new();
    };
    assert_eq!(gpu.input_shape(), cpu.input_shape());
    assert_eq!(gpu.output_shape(), cpu.output_shape());
    for (batch, seed) in [(1, 11), (3, 12), (2, 13)] {
        compare(name, &mut cpu, &mut gpu, batch, seed);
    }
    gpu.kernels(1)
}

/// Runs a batch of pseudo-random inputs on both backends and compares.
fn compare(name: &str, cpu: &mut Model, gpu: &mut Model, batch: usize, seed: u64) {
    let (in_len, out_len) = sample_lens(cpu);
    let x = pseudo_random(batch * in_len, seed);
    let mut want = vec![0.0; batch * out_len];
    let mut got = vec![f32::NAN; batch * out_len];
    cpu.run(batch, &x, &mut want).expect("tract runs");
    gpu.run(batch, &x, &mut got).expect("gpu runs");
    assert_close(&format!("{name} batch {batch}"), &got, &want);
}

fn fused(kernels: &[String], ops: &str) -> bool {
    kernels.iter().any(|k| k.contains(&format!("[{ops}]")))
}

const WIDE: &str = "(64-channel tiles)";
const FOUR_CHANNELS: &str = "(4 channels an invocation)";

#[test]
fn conv_dense_padded_strided_with_relu_and_relu6() {
    let k = check("conv_dense");
    if !k.is_empty() {
        assert_eq!(k.len(), 2, "{k:?}");
        assert!(fused(&k, "Conv+Relu") && fused(&k, "Conv+Clip"), "{k:?}");
        // 4 outputs: four channels an invocation; 6: one.
        let four: Vec<&String> = k.iter().filter(|k| k.contains(FOUR_CHANNELS)).collect();
        assert!(four.len() == 1 && four[0].starts_with("conv1"), "{k:?}");
    }
}

#[test]
fn pointwise_convs_over_several_tiles() {
    let k = check("pointwise_wide");
    if !k.is_empty() {
        assert!(fused(&k, "Conv+Relu"), "{k:?}");
    }
}

#[test]
fn pointwise_convs_on_narrow_and_wide_tiles() {
    // (model, its 1x1 convs with more than 32 outputs: the ones wide tiles apply to)
    let models = [
        ("pointwise_tiles", 3),
        ("pointwise_wide", 1),
        ("pointwise_split", 1),
        ("inverted_residual", 0),
    ];
    for (name, wide_convs) in models {
        for tiles in [PointwiseTiles::Narrow, PointwiseTiles::Wide] {
            let k = check_tiles(name, tiles);
            if k.is_empty() {
                return;
            }
            let wide = k.iter().filter(|k| k.contains(WIDE)).count();
            let want = if tiles == PointwiseTiles::Wide {
                wide_convs
            } else {
                0
            };
            assert_eq!(wide, want, "{name} {tiles}: {k:?}");
        }
    }
}

#[test]
fn pointwise_convs_take_wide_tiles_where_the_batch_fills_the_gpu_with_them() {
    let Some((mut cpu, mut gpu)) = cpu_and_gpu("pointwise_tiles", 32) else {
        return;
    };
    // expand (72 outputs) and widen (66) have 4 wide tiles a sample, project (36) 2: at batch
    // 32 the first two reach 128 wide tiles.
    for (batch, wide) in [(31, 0), (32, 2)] {
        let k = gpu.kernels(batch);
        assert_eq!(k.len(), 3, "batch {batch}: {k:?}");
        let got_wide: Vec<&String> = k.iter().filter(|k| k.contains(WIDE)).collect();
        assert_eq!(got_wide.len(), wide, "batch {batch}: {k:?}");
        assert!(got_wide.iter().all(|k| !k.starts_with("project")), "{k:?}");
        compare("pointwise_tiles", &mut cpu, &mut gpu, batch, batch as u64);
    }
}

#[test]
fn the_split_target_sets_where_convs_split_and_take_wide_tiles() {
    let tuned = |split_workgroups| GpuTuning {
        split_workgroups,
        ..GpuTuning::default()
    };
    // 0: no conv splits, the fused ops stay in the conv kernels.
    let k = check_tuned("pointwise_split", tuned(0));
    if k.is_empty() {
        return;
    }
    assert_eq!(k.len(), 2, "{k:?}");
    assert!(fused(&k, "Conv+Add") && fused(&k, "Conv+Clip"), "{k:?}");
    // 8: the 4 wide tiles a sample of expand and widen reach half of it at batch 1.
    let k = check_tuned("pointwise_tiles", tuned(8));
    assert_eq!(k.iter().filter(|k| k.contains(WIDE)).count(), 2, "{k:?}");
    // 10: the first conv's 5 tiles a sample fill half of it at batch 1, the second's 1 tile
    // does not: it alone splits.
    let k = check_tuned("pointwise_split", tuned(10));
    let partial: Vec<&String> = k.iter().filter(|k| k.contains("partial")).collect();
    assert!(
        partial.len() == 1 && partial[0].starts_with("project"),
        "{k:?}"
    );
}

#[test]
fn pointwise_convs_split_over_their_inputs() {
    let k = check("pointwise_split");
    if !k.is_empty() {
        // Each conv is a partial-sums kernel and a summing kernel with the fused ops.
        assert_eq!(k.len(), 4, "{k:?}");
        assert!(k.iter().any(|k| k.contains("partial")), "{k:?}");
        assert!(fused(&k, "Conv+Add") && fused(&k, "Conv+Clip"), "{k:?}");
    }
}

#[test]
fn pointwise_convs_split_only_at_batches_too_small_to_fill_the_gpu() {
    let Some((mut cpu, mut gpu)) = cpu_and_gpu("pointwise_split", 128) else {
        return;
    };
    // The first conv has 5 tiles a sample, the second 1: each stops splitting once the batch
    // has 128 tiles.
    for (batch, kernels) in [(25, 4), (26, 3), (127, 3), (128, 2)] {
        let k = gpu.kernels(batch);
        assert_eq!(k.len(), kernels, "batch {batch}: {k:?}");
        compare("pointwise_split", &mut cpu, &mut gpu, batch, batch as u64);
    }
    assert!(fused(&gpu.kernels(128), "Conv+Add") && fused(&gpu.kernels(128), "Conv+Clip"));
}

#[test]
fn linear_layer_split_over_its_inputs() {
    for name in ["linear_split", "matmul_rows_split"] {
        let k = check(name);
        if !k.is_empty() {
            assert_eq!(k.len(), 2, "{k:?}");
            assert!(k[0].contains("partial"), "{k:?}");
        }
    }
}

const IN_WORKGROUP: GpuTuning = GpuTuning {
    split_sums: SplitSums::Workgroup,
    pointwise_tiles: PointwiseTiles::Auto,
    split_workgroups: 256,
    fuse_depthwise: false,
};

/// Whether every kernel of a split layer is one reduce kernel (no partial sums, no second
/// kernel adding them).
fn reduced(kernels: &[String]) -> bool {
    kernels.iter().any(|k| k.contains("inputs in"))
        && !kernels.iter().any(|k| k.contains("partial"))
}

#[test]
fn split_layers_add_up_their_sums_within_a_workgroup() {
    // Scalar loads (15 pixels, 10 columns), 16 and 32 input groups; vector loads (4 pixels, 12
    // columns) and 64 groups.
    let models = [
        ("pointwise_split", 2),
        ("reduce_convs", 2),
        ("linear_split", 1),
        ("matmul_rows_split", 1),
        ("reduce_linear", 1),
    ];
    for (name, kernels) in models {
        let k = check_tuned(name, IN_WORKGROUP);
        if k.is_empty() {
            return;
        }
        assert_eq!(k.len(), kernels, "{name}: {k:?}");
        assert!(reduced(&k), "{name}: {k:?}");
    }
    let k = check_tuned("reduce_convs", IN_WORKGROUP);
    assert!(fused(&k, "Conv+Add+Clip"), "{k:?}");
    assert!(k[0].contains("(inputs in 64 groups)"), "{k:?}");
}

#[test]
fn in_workgroup_sums_leave_batches_that_fill_the_gpu_to_the_tiled_kernel() {
    let Some(mut gpu) = load_gpu_tuned(&model_path("pointwise_split"), 128, IN_WORKGROUP) else {
        return;
    };
    let mut cpu = load(&model_path("pointwise_split"), Backend::Cpu, 128).expect("tract loads");
    // As with sums in a second kernel (above), the first conv stops splitting at batch 26, the
    // second at 128; linear layers take the reduce kernel at every batch.
    for (batch, reducing) in [(25, 2), (26, 1), (128, 0)] {
        let k = gpu.kernels(batch);
        assert_eq!(k.len(), 2, "batch {batch}: {k:?}");
        let got = k.iter().filter(|k| k.contains("inputs in")).count();
        assert_eq!(got, reducing, "batch {batch}: {k:?}");
        compare("pointwise_split", &mut cpu, &mut gpu, batch, batch as u64);
    }
    for name in ["head_gemm", "head_matmul", "matmul_rows"] {
        let k = check_tuned(name, IN_WORKGROUP);
        assert!(reduced(&k), "{name}: {k:?}");
    }
    let Some(mut gpu) = load_gpu_tuned(&model_path("reduce_linear"), 64, IN_WORKGROUP) else {
        return;
    };
    let mut cpu = load(&model_path("reduce_linear"), Backend::Cpu, 64).expect("tract loads");
    assert!(reduced(&gpu.kernels(64)), "{:?}", gpu.kernels(64));
    compare("reduce_linear", &mut cpu, &mut gpu, 64, 64);
}

#[test]
fn grouped_and_dense_convs_four_channels_an_invocation() {
    let k = check("conv_channels4");
    if !k.is_empty() {
        assert_eq!(k.len(), 2, "{k:?}");
        assert!(k.iter().all(|k| k.contains(FOUR_CHANNELS)), "{k:?}");
        assert!(
            fused(&k, "Conv+Relu") && fused(&k, "Conv+Add+Clip"),
            "{k:?}"
        );
    }
}

#[test]
fn conv_depthwise_and_grouped() {
    check("conv_grouped");
}

#[test]
fn conv_windows_lite0_like_far_dilated_and_with_residual() {
    let k = check("conv_windows");
    if !k.is_empty() {
        assert_eq!(k.len(), 4, "{k:?}");
        assert!(fused(&k, "Conv+Clip") && fused(&k, "Conv+Add"), "{k:?}");
    }
}

#[test]
fn conv_dilated_dense_and_depthwise() {
    check("conv_dilated");
}

#[test]
fn inverted_residual_fuses_activations_and_residual_add() {
    let k = check("inverted_residual");
    if !k.is_empty() {
        assert_eq!(k.len(), 3, "{k:?}");
        assert!(fused(&k, "Conv+Add"), "{k:?}");
    }
}

#[test]
fn resnet_block_folds_batchnorm_and_fuses_add_relu() {
    let k = check("resnet_block");
    if !k.is_empty() {
        // conv1, conv2, the shortcut (with conv2's output as residual), the max pool.
        assert_eq!(k.len(), 4, "{k:?}");
        assert!(fused(&k, "Conv+BatchNormalization+Relu"), "{k:?}");
        assert!(fused(&k, "Conv+BatchNormalization+Add+Relu"), "{k:?}");
    }
}

#[test]
fn batchnorm_and_relu_without_a_conv() {
    check("batchnorm");
}

#[test]
fn large_input_copied_in_pieces() {
    check("large_input");
}

#[test]
fn max_and_average_pools() {
    check("pools");
}

#[test]
fn pools_with_ceil_mode() {
    check("pools_ceil");
}

#[test]
fn global_average_pool_flatten_gemm() {
    check("head_gemm");
}

#[test]
fn matmul_with_bias_scale_relu() {
    check("head_matmul");
}

#[test]
fn matmul_over_several_rows() {
    check("matmul_rows");
}

#[test]
fn layer_normalization() {
    check("layernorm");
}

#[test]
fn row_ops_over_rows_longer_than_a_workgroup() {
    check("rows_wide");
}

#[test]
fn layer_normalization_decomposed() {
    check("layernorm_decomposed");
}

#[test]
fn l2_normalisation_reduce_l2_and_lp_normalization() {
    check("l2norm");
}

#[test]
fn torch_normalize_with_clip_and_expand() {
    check("normalize_torch");
}

#[test]
fn reshape_from_shape_arithmetic() {
    let k = check("reshape");
    if !k.is_empty() {
        // The reshape is a view: only the Mul runs.
        assert_eq!(k.len(), 1, "{k:?}");
    }
}

#[test]
fn broadcasting_binary_ops_and_sigmoid() {
    check("broadcast");
}

#[test]
fn activation_times_activation_broadcast() {
    check("excite");
}

#[test]
fn unsupported_op_is_a_load_error_naming_node_and_op() {
    match load(&model_path("unsupported"), Backend::Gpu, 1) {
        Err(InferError::NoAdapter(e)) => eprintln!("SKIPPED: no adapter ({e})"),
        Err(e @ InferError::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("my_softmax") && msg.contains("Softmax"),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a Softmax model loaded on the GPU plan"),
    }
    // The CPU backend runs whatever tract runs.
    let mut cpu = load(&model_path("unsupported"), Backend::Cpu, 1).expect("tract runs Softmax");
    let mut y = vec![0.0; 10];
    cpu.run(1, &pseudo_random(10, 1), &mut y).unwrap();
    assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn batch_beyond_the_loaded_maximum_is_refused() {
    let Some(mut gpu) = load_gpu(&model_path("head_matmul"), 2) else {
        return;
    };
    let x = pseudo_random(3 * 6, 1);
    let mut y = vec![0.0; 3 * 10];
    assert!(matches!(gpu.run(3, &x, &mut y), Err(InferError::Input(_))));
    let mut y = vec![0.0; 2 * 10];
    assert!(matches!(
        gpu.run(2, &x[..6], &mut y),
        Err(InferError::Input(_))
    ));
}

/// A run's commands are recorded ahead, while the GPU runs the one before: runs of the same
/// kind with new inputs, runs of other batches and outputs in between, must each give their
/// own input's result.
#[test]
fn runs_in_a_row_each_give_their_own_inputs_result() {
    let Some((mut cpu, mut gpu)) = cpu_and_gpu("inverted_residual", 3) else {
        return;
    };
    for (batch, seed) in [
        (2, 1),
        (2, 2),
        (2, 3),
        (3, 4),
        (2, 5),
        (1, 6),
        (1, 7),
        (2, 8),
    ] {
        compare("inverted_residual", &mut cpu, &mut gpu, batch, seed);
    }
    // Floats and packed codes alternating, on new inputs: each code is the signs of the
    // floats of its own input.
    let Some((mut cpu, mut gpu)) = cpu_and_gpu("embedding_head", 3) else {
        return;
    };
    let (in_len, dim) = sample_lens(&cpu);
    let mut codes = Vec::new();
    for seed in 10..14 {
        let x = pseudo_random(2 * in_len, seed);
        let (mut want, mut got) = (vec![0.0; 2 * dim], vec![f32::NAN; 2 * dim]);
        cpu.run(2, &x, &mut want).unwrap();
        gpu.run(2, &x, &mut got).unwrap();
        assert_close(&format!("embedding_head seed {seed}"), &got, &want);
        let mut signs = vec![0u8; 2 * dim / 8];
        infer::pack_signs(&got, dim, &mut signs);
        let mut code = vec![0u8; 2 * dim / 8];
        gpu.run_packed(2, &x, &mut code).unwrap();
        assert_eq!(code, signs, "seed {seed}");
        codes.push(code);
    }
    codes.dedup();
    assert_eq!(codes.len(), 4, "each input has its own code");
}

/// Each bit of the GPU's packed code must equal the sign bit of tract's value, except for
/// values within rounding noise of zero.
fn check_packed(name: &str, dim: usize) {
    let Some((mut cpu, mut gpu)) = cpu_and_gpu(name, 3) else {
        return;
    };
    let in_len: usize = cpu.input_shape().iter().product();
    let batch = 3;
    let x = pseudo_random(batch * in_len, 5);
    let mut values = vec![0.0; batch * dim];
    cpu.run(batch, &x, &mut values).unwrap();
    let mut want = vec![0u8; batch * dim / 8];
    infer::pack_signs(&values, dim, &mut want);
    let mut got = vec![0u8; batch * dim / 8];
    gpu.run_packed(batch, &x, &mut got).unwrap();
    let mut cpu_codes = vec![0u8; batch * dim / 8];
    cpu.run_packed(batch, &x, &mut cpu_codes).unwrap();
    assert_eq!(cpu_codes, want);
    let mut ones = 0;
    for (i, v) in values.iter().enumerate() {
        let bit = |codes: &[u8]| codes[i / 8] >> (i % 8) & 1;
        ones += u32::from(bit(&want));
        if bit(&got) != bit(&want) {
            assert!(v.abs() < 1e-5, "{name}: bit {i} differs for value {v}");
        }
    }
    // Both signs occur: a constant code would not test the order.
    assert!(ones > 0 && ones < (batch * dim) as u32);
}

#[test]
fn sign_and_pack_256() {
    check("embed256");
    check_packed("embed256", 256);
}

#[test]
fn sign_and_pack_40_partial_word() {
    check("embed40");
    check_packed("embed40", 40);
}

#[test]
fn embedding_head_and_its_packed_code() {
    check("embedding_head");
    check_packed("embedding_head", 64);
}

#[test]
fn pack_bit_order_is_the_gallery_order() {
    // bit i of the code is bit (i % 8) of byte (i / 8), set where the value is > 0.
    let mut v = vec![-1.0f32; 16];
    v[0] = 0.5;
    v[3] = 2.0;
    v[9] = 1.0;
    v[15] = 0.1;
    v[4] = 0.0; // zero is not positive
    let mut out = [0u8; 2];
    infer::pack_signs(&v, 16, &mut out);
    assert_eq!(out, [0b0000_1001, 0b1000_0010]);
}

const FUSE_DEPTHWISE: GpuTuning = GpuTuning {
    fuse_depthwise: true,
    ..IN_WORKGROUP
};
const DEPTHWISE_FUSED: &str = "(depthwise fused";

#[test]
fn depthwise_convs_run_inside_the_1x1_convs_after_them() {
    let k = check_tuned("separable", FUSE_DEPTHWISE);
    if k.is_empty() {
        return;
    }
    // Three kernels for six convs; the 1x1 convs' channels in blocks: 4 quads of channels in
    // 4 blocks (16 quads of pixels give half of 256 workgroups), 66 in 22, 3 in 3.
    assert_eq!(k.len(), 3, "{k:?}");
    for (kernel, blocks) in k.iter().zip([4, 22, 3]) {
        let want = format!("{DEPTHWISE_FUSED}, channel blocks: {blocks})");
        assert!(kernel.contains(&want), "{kernel}: {want}");
    }
    assert!(
        k[0].starts_with("dw1 [Conv+Clip] + pw1 [Conv+Add]"),
        "{k:?}"
    );
    assert!(fused(&k, "Conv+Clip"), "{k:?}");
    // Lite0's block: expand, then the depthwise and projection convs in one kernel.
    let k = check_tuned("inverted_residual", FUSE_DEPTHWISE);
    assert_eq!(k.len(), 2, "{k:?}");
    assert!(
        k[1].contains(DEPTHWISE_FUSED) && fused(&k, "Conv+Add"),
        "{k:?}"
    );
}

#[test]
fn depthwise_convs_run_on_their_own_at_batches_that_fill_the_gpu() {
    // A target of 8 workgroups: the first and last 1x1 convs (a tile a sample) fill half of it
    // from batch 4, the second (9 tiles) at batch 1. Their blocks of channels: one for the
    // first (16 quads of pixels), two for the last at batch 1 (2 quads of pixels), one from 2.
    let tuning = GpuTuning {
        split_workgroups: 8,
        ..FUSE_DEPTHWISE
    };
    let Some(mut gpu) = load_gpu_tuned(&model_path("separable"), 5, tuning) else {
        return;
    };
    let mut cpu = load(&model_path("separable"), Backend::Cpu, 5).expect("tract loads");
    for batch in 1..=5 {
        let k = gpu.kernels(batch);
        let fused_kernels = k.iter().filter(|k| k.contains(DEPTHWISE_FUSED)).count();
        let (kernels, fused_kernels_want) = if batch < 4 { (4, 2) } else { (6, 0) };
        assert_eq!(
            (k.len(), fused_kernels),
            (kernels, fused_kernels_want),
            "{k:?}"
        );
        if batch < 4 {
            let last = if batch == 1 { 2 } else { 1 };
            assert!(k[0].contains("channel blocks: 1)"), "{k:?}");
            assert!(k[3].contains(&format!("channel blocks: {last})")), "{k:?}");
        }
        compare("separable", &mut cpu, &mut gpu, batch, 20 + batch as u64);
    }
}
