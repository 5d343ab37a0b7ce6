// rows x k activations times a constant k x n matrix (Gemm, MatMul), plus an optional bias,
// one output (row, column) per invocation for four samples of the batch: samples 4 z .. 4 z + 3
// (gpu/mod.rs: MATMUL_SAMPLES), those below the largest batch of the dispatch's range. Each
// weight read serves four samples, and consecutive invocations read consecutive weights. A
// linear layer whose few outputs cannot fill the GPU splits its k inputs into `splits` ranges:
// each invocation writes the raw partial sums of its range to `y` (then a scratch buffer) and
// `splitk.wgsl` adds them up with the bias.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    let splits = pu(5u);
    if (i >= total * splits) { return; }
    let split = i / total;
    let o = i % total;
    let k = pu(1u);
    let n = pu(2u);
    let rows = pu(4u);
    let col = o % n;
    let row = o / n;
    let first = gid.z * 4u;
    let count = min(4u, pu(7u) - first);
    // Sample s's row starts at x0 + s * step.
    let step = rows * k;
    let x0 = (first * rows + row) * k;
    let k_begin = split * pu(6u);
    let k_end = min(k_begin + pu(6u), k);
    var acc = vec4<f32>(0.0);
    for (var kk = k_begin; kk < k_end; kk++) {
        let w = wt[kk * n + col];
        acc.x += x[x0 + kk] * w;
        if (count > 1u) { acc.y += x[x0 + step + kk] * w; }
        if (count > 2u) { acc.z += x[x0 + 2u * step + kk] * w; }
        if (count > 3u) { acc.w += x[x0 + 3u * step + kk] * w; }
    }
    for (var s = 0u; s < count; s++) {
        let sample = first + s;
        var v = acc[s];
        if (splits > 1u) {
            y[(sample * splits + split) * total + o] = v;
            continue;
        }
        if ((pu(3u) & 1u) != 0u) { v += bias[col]; }
        y[sample * total + o] = v;
    }
}
