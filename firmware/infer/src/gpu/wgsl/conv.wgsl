// Direct NCHW convolution (dense, grouped, depthwise, strided, padded, dilated) with bias,
// residual add and clamp (ReLU / ReLU6) fused. An invocation computes four neighbouring outputs
// of a row (columns ox0..ox0+3): the index arithmetic is paid once for the four, each weight is
// read once for the four, and where the four windows lie inside the input's columns (all but
// the edges) the taps are read without bounds checks. Where a group's outputs are a multiple of 4
// (a dense conv: a stem, a ResNet block), it computes four channels oc..oc+3 at those columns:
// each tap of the input is loaded once for the four (CB, declared by a header made at load in
// gpu/mod.rs: `Kernel::header`, is the channels an invocation computes, 4 or 1).
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
    let oc = (t / oh) * CB;
    let g = oc / cout_g;
    let hw = h * w;
    let xb = n * cin * hw + g * cin_g * hw;
    let wb = oc * cin_g * kh * kw;
    // From one output channel's weights to the next's.
    let w_step = cin_g * kh * kw;
    let iy0 = i32(oy * pu(8u)) - i32(pu(10u));
    let ix0 = i32(ox0 * sw) - i32(pu(11u));
    let wi = i32(w);
    // The columns the four windows read: ix0 ..= ix0 + 3 sw + (kw - 1) dw.
    let inside = ix0 >= 0 && ix0 + i32(3u * sw + (kw - 1u) * dw) < wi;
    // acc0..acc3: channels oc..oc+3 (acc1..acc3 only with CB = 4) at the four columns.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var ic = 0u; ic < cin_g; ic++) {
        let xc = xb + ic * hw;
        let wc = wb + ic * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            let iy = iy0 + i32(ky * dh);
            if (iy < 0 || iy >= i32(h)) { continue; }
            let xr = xc + u32(iy) * w;
            let wr = wc + ky * kw;
            for (var kx = 0u; kx < kw; kx++) {
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
                let wk = wr + kx;
                acc0 += v * wt[wk];
                if (CB == 4u) {
                    acc1 += v * wt[wk + w_step];
                    acc2 += v * wt[wk + 2u * w_step];
                    acc3 += v * wt[wk + 3u * w_step];
                }
            }
        }
    }
    let first = n * total + oy * ow + ox0;
    finish(first, ox0, oc, acc0);
    if (CB == 4u) {
        finish(first, ox0, oc + 1u, acc1);
        finish(first, ox0, oc + 2u, acc2);
        finish(first, ox0, oc + 3u, acc3);
    }
}

// Stores channel oc's four columns from ox0 (those inside the row; `first`: where they start in
// channel 0) with the fused bias, residual and clamp.
fn finish(first: u32, ox0: u32, oc: u32, acc: vec4<f32>) {
    let ow = pu(5u);
    let b = select(0.0, bias[oc], (pu(16u) & 1u) != 0u);
    for (var j = 0u; j < 4u; j++) {
        if (ox0 + j >= ow) { break; }
        let o = first + oc * pu(4u) * ow + j;
        var v = acc[j] + b;
        if ((pu(16u) & 2u) != 0u) { v += res[o]; }
        y[o] = clamp(v, pf(17u), pf(18u));
    }
}
