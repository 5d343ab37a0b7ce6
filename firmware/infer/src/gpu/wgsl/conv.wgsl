// Direct NCHW convolution (dense, grouped, depthwise, strided, padded, dilated), one output
// element per invocation, with bias, residual add and clamp (ReLU / ReLU6) fused.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    if (i >= total) { return; }
    let n = gid.z;
    let cin = pu(1u);
    let h = pu(2u);
    let w = pu(3u);
    let oh = pu(4u);
    let ow = pu(5u);
    let kh = pu(6u);
    let kw = pu(7u);
    let cin_g = pu(14u);
    let cout_g = pu(15u);
    let flags = pu(16u);
    let ox = i % ow;
    let t = i / ow;
    let oy = t % oh;
    let oc = t / oh;
    let g = oc / cout_g;
    let hw = h * w;
    let xb = n * cin * hw + g * cin_g * hw;
    let wb = oc * cin_g * kh * kw;
    let iy0 = i32(oy * pu(8u)) - i32(pu(10u));
    let ix0 = i32(ox * pu(9u)) - i32(pu(11u));
    let dh = pu(12u);
    let dw = pu(13u);
    var acc = 0.0;
    for (var ic = 0u; ic < cin_g; ic++) {
        let xc = xb + ic * hw;
        let wc = wb + ic * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            let iy = iy0 + i32(ky * dh);
            if (iy < 0 || iy >= i32(h)) { continue; }
            let xr = xc + u32(iy) * w;
            let wr = wc + ky * kw;
            for (var kx = 0u; kx < kw; kx++) {
                let ix = ix0 + i32(kx * dw);
                if (ix < 0 || ix >= i32(w)) { continue; }
                acc += x[xr + u32(ix)] * wt[wr + kx];
            }
        }
    }
    if ((flags & 1u) != 0u) { acc += bias[oc]; }
    if ((flags & 2u) != 0u) { acc += res[n * total + i]; }
    y[n * total + i] = clamp(acc, pf(17u), pf(18u));
}
