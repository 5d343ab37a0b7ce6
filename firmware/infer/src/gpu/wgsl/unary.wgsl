// Elementwise unary ops: clamp (Relu, Clip), sqrt, square, sigmoid, reciprocal, neg.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    if (i >= total) { return; }
    let j = gid.z * total + i;
    let v = x[j];
    var r: f32;
    switch pu(1u) {
        case 0u: { r = clamp(v, pf(2u), pf(3u)); }
        case 1u: { r = sqrt(v); }
        case 2u: { r = v * v; }
        case 3u: { r = 1.0 / (1.0 + exp(-v)); }
        case 4u: { r = 1.0 / v; }
        default: { r = -v; }
    }
    y[j] = r;
}
