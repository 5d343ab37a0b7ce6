// rows x k activations times a constant k x n matrix (Gemm, MatMul), plus an optional bias.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    if (i >= total) { return; }
    let k = pu(1u);
    let n = pu(2u);
    let col = i % n;
    let row = i / n;
    let xb = (gid.z * pu(4u) + row) * k;
    var acc = 0.0;
    for (var kk = 0u; kk < k; kk++) {
        acc += x[xb + kk] * wt[kk * n + col];
    }
    if ((pu(3u) & 1u) != 0u) { acc += bias[col]; }
    y[gid.z * total + i] = acc;
}
