// Elementwise binary op with numpy broadcasting over up to 6 axes (after the batch).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn apply(op: u32, l: f32, r: f32) -> f32 {
    switch op {
        case 0u: { return l + r; }
        case 1u: { return l - r; }
        case 2u: { return l * r; }
        case 3u: { return l / r; }
        case 4u: {
            // WGSL's pow is undefined for negative bases: integer exponents keep the sign.
            if (r == 0.0) { return 1.0; }
            let m = pow(abs(l), r);
            if (l < 0.0 && fract(r) == 0.0) {
                return select(m, -m, fract(r * 0.5) != 0.0);
            }
            return pow(l, r);
        }
        case 5u: { return max(l, r); }
        default: { return min(l, r); }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    if (i >= total) { return; }
    let n = gid.z;
    var rem = i;
    var ia = n * pu(2u);
    var ib = n * pu(3u);
    for (var d = 5i; d >= 0i; d--) {
        let k = u32(d);
        let dim = pu(4u + k);
        let c = rem % dim;
        rem = rem / dim;
        ia += c * pu(10u + k);
        ib += c * pu(16u + k);
    }
    y[n * total + i] = apply(pu(1u), a[ia], b[ib]);
}
