// Direct NCHW convolution (dense, grouped, depthwise, strided, padded, dilated) with bias,
// residual add and clamp (ReLU / ReLU6) fused. An invocation computes four neighbouring outputs
// of a row (columns ox0..ox0+3): the index arithmetic is paid once for the four, each weight is
// read once for the four, and where the four windows lie inside the input's columns (all but
// the edges) the taps are read without bounds checks.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// x[row + col], or 0 in the padding.
fn tap(row: u32, col: i32, w: i32) -> f32 {
    let inside = col >= 0 && col < w;
    return select(0.0, x[row + select(0u, u32(col), inside)], inside);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let quads = pu(19u);
    if (i >= quads) { return; }
    let total = pu(0u);
    let n = gid.z;
    let cin = pu(1u);
    let h = pu(2u);
    let w = pu(3u);
    let oh = pu(4u);
    let ow = pu(5u);
    let kh = pu(6u);
    let kw = pu(7u);
    let sw = pu(9u);
    let dh = pu(12u);
    let dw = pu(13u);
    let cin_g = pu(14u);
    let cout_g = pu(15u);
    let flags = pu(16u);
    let row_quads = (ow + 3u) / 4u;
    let ox0 = (i % row_quads) * 4u;
    let t = i / row_quads;
    let oy = t % oh;
    let oc = t / oh;
    let g = oc / cout_g;
    let hw = h * w;
    let xb = n * cin * hw + g * cin_g * hw;
    let wb = oc * cin_g * kh * kw;
    let iy0 = i32(oy * pu(8u)) - i32(pu(10u));
    let ix0 = i32(ox0 * sw) - i32(pu(11u));
    let wi = i32(w);
    // The columns the four windows read: ix0 ..= ix0 + 3 sw + (kw - 1) dw.
    let inside = ix0 >= 0 && ix0 + i32(3u * sw + (kw - 1u) * dw) < wi;
    var acc = vec4<f32>(0.0);
    for (var ic = 0u; ic < cin_g; ic++) {
        let xc = xb + ic * hw;
        let wc = wb + ic * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            let iy = iy0 + i32(ky * dh);
            if (iy < 0 || iy >= i32(h)) { continue; }
            let xr = xc + u32(iy) * w;
            let wr = wc + ky * kw;
            for (var kx = 0u; kx < kw; kx++) {
                let wv = wt[wr + kx];
                let col = ix0 + i32(kx * dw);
                var v: vec4<f32>;
                if (inside) {
                    let b = xr + u32(col);
                    v = vec4<f32>(x[b], x[b + sw], x[b + 2u * sw], x[b + 3u * sw]);
                } else {
                    let s = i32(sw);
                    v = vec4<f32>(
                        tap(xr, col, wi),
                        tap(xr, col + s, wi),
                        tap(xr, col + 2 * s, wi),
                        tap(xr, col + 3 * s, wi),
                    );
                }
                acc += v * wv;
            }
        }
    }
    let lo = pf(17u);
    let hi = pf(18u);
    let b = select(0.0, bias[oc], (flags & 1u) != 0u);
    for (var j = 0u; j < 4u; j++) {
        if (ox0 + j >= ow) { break; }
        let o = n * total + (oc * oh + oy) * ow + ox0 + j;
        var v = acc[j] + b;
        if ((flags & 2u) != 0u) { v += res[o]; }
        y[o] = clamp(v, lo, hi);
    }
}
