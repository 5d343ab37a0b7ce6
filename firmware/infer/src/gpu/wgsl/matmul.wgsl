// rows x k activations times a constant k x n matrix (Gemm, MatMul), plus an optional bias,
// one output per invocation (consecutive invocations read consecutive weights). A linear layer
// whose few outputs cannot fill the GPU splits its k inputs into `splits` ranges: each
// invocation writes the raw partial sum of its range to `y` (then a scratch buffer) and
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
    let col = o % n;
    let row = o / n;
    let xb = (gid.z * pu(4u) + row) * k;
    let k_begin = split * pu(6u);
    let k_end = min(k_begin + pu(6u), k);
    var acc = 0.0;
    for (var kk = k_begin; kk < k_end; kk++) {
        acc += x[xb + kk] * wt[kk * n + col];
    }
    if (splits > 1u) {
        y[(gid.z * splits + split) * total + o] = acc;
        return;
    }
    if ((pu(3u) & 1u) != 0u) { acc += bias[col]; }
    y[gid.z * total + o] = acc;
}
