// Sums the partial products of a split 1x1 conv or linear layer (see pointwise.wgsl and
// matmul.wgsl), then the fused bias, residual add and clamp. Output i of a sample has the bias
// of channel (i / bias_div) % bias_mod: (pixels, channels) for a conv, (1, columns) for a MatMul.
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> res: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    if (i >= total) { return; }
    let n = gid.z;
    let splits = pu(1u);
    let flags = pu(2u);
    var v = 0.0;
    for (var s = 0u; s < splits; s++) {
        v += part[(n * splits + s) * total + i];
    }
    if ((flags & 1u) != 0u) { v += bias[(i / pu(5u)) % pu(6u)]; }
    if ((flags & 2u) != 0u) { v += res[n * total + i]; }
    y[n * total + i] = clamp(v, pf(3u), pf(4u));
}
