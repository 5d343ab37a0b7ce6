// Windowed convolution through workgroup memory, for convs of few inputs per output channel:
// depthwise convs (one) and stems (three). A workgroup computes one output channel over a tile
// of TW x TH outputs (32x8, 16x16 or 8x8, chosen at load from the output's width): per input
// channel of its group it copies the input window of the tile (padding as zeros) into
// workgroup memory with neighbouring invocations reading neighbouring columns, then each
// invocation computes `per` (1, 2 or 4) outputs from there: output o = l + 64 j of the tile, at
// row o / TW and column o % TW. The input is read from global memory once a tile instead of
// once a tap, and the outputs of neighbouring invocations are neighbouring columns. Bias,
// residual add and clamp are fused, as in conv.wgsl (which runs the convs that do not fit).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// The largest input window of a tile, in values (gpu/mod.rs: CONV_TILE_INPUT).
var<workgroup> tile: array<f32, 2048>;

// Where an output of the tile reads its window in `tile`, or 0 for an output past the tile.
fn window_start(o: u32, tw: u32, in_cols: u32) -> u32 {
    return (o / tw) * pu(8u) * in_cols + (o % tw) * pu(9u);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Derived from the workgroup id only, so the early return and the barriers stay uniform.
    let all = wid.x + wid.y * nwg.x;
    let tiles_x = pu(21u);
    let per_channel = tiles_x * pu(22u);
    if (all >= pu(25u) * per_channel) { return; }
    let n = wid.z;
    let c = pu(1u);
    let h = pu(2u);
    let w = pu(3u);
    let kh = pu(6u);
    let kw = pu(7u);
    let dh = pu(12u);
    let dw = pu(13u);
    let cin_g = pu(14u);
    let cout_g = pu(15u);
    let tw = pu(19u);
    let th = pu(20u);
    let in_cols = pu(23u);
    let in_len = in_cols * pu(24u);
    let per = pu(26u);
    let oc = all / per_channel;
    let t = all % per_channel;
    let oy0 = (t / tiles_x) * th;
    let ox0 = (t % tiles_x) * tw;
    let iy0 = i32(oy0 * pu(8u)) - i32(pu(10u));
    let ix0 = i32(ox0 * pu(9u)) - i32(pu(11u));
    let g = oc / cout_g;
    // The copy walks the window in steps of 64 values: rows and columns advance by these.
    let step_r = 64u / in_cols;
    let step_c = 64u % in_cols;
    let s0 = window_start(l, tw, in_cols);
    let s1 = select(0u, window_start(l + 64u, tw, in_cols), per > 1u);
    let s2 = select(0u, window_start(l + 128u, tw, in_cols), per > 2u);
    let s3 = select(0u, window_start(l + 192u, tw, in_cols), per > 2u);
    var acc = vec4<f32>(0.0);
    for (var ic = 0u; ic < cin_g; ic++) {
        let xc = (n * c + g * cin_g + ic) * h * w;
        var r = l / in_cols;
        var col = l % in_cols;
        for (var e = l; e < in_len; e += 64u) {
            let iy = iy0 + i32(r);
            let ix = ix0 + i32(col);
            let inside = iy >= 0 && iy < i32(h) && ix >= 0 && ix < i32(w);
            tile[e] = select(0.0, x[xc + select(0u, u32(iy) * w + u32(ix), inside)], inside);
            r += step_r;
            col += step_c;
            if (col >= in_cols) {
                col -= in_cols;
                r += 1u;
            }
        }
        workgroupBarrier();
        let wb = (oc * cin_g + ic) * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            for (var kx = 0u; kx < kw; kx++) {
                let wv = wt[wb + ky * kw + kx];
                let off = ky * dh * in_cols + kx * dw;
                acc.x += wv * tile[s0 + off];
                if (per > 1u) {
                    acc.y += wv * tile[s1 + off];
                }
                if (per > 2u) {
                    acc.z += wv * tile[s2 + off];
                    acc.w += wv * tile[s3 + off];
                }
            }
        }
        workgroupBarrier();
    }
    let at = vec3<u32>(n, oc, oy0);
    finish(at, ox0, l, tw, acc.x);
    if (per > 1u) {
        finish(at, ox0, l + 64u, tw, acc.y);
    }
    if (per > 2u) {
        finish(at, ox0, l + 128u, tw, acc.z);
        finish(at, ox0, l + 192u, tw, acc.w);
    }
}

// Stores output o of the tile (sample at.x, channel at.y, first row at.z, first column ox0)
// with the fused bias, residual and clamp, if it lies inside the output.
fn finish(at: vec3<u32>, ox0: u32, o: u32, tw: u32, v: f32) {
    let oh = pu(4u);
    let ow = pu(5u);
    let oy = at.z + o / tw;
    let ox = ox0 + o % tw;
    if (oy >= oh || ox >= ow) { return; }
    let flags = pu(16u);
    let i = at.x * pu(0u) + (at.y * oh + oy) * ow + ox;
    var r = v;
    if ((flags & 1u) != 0u) { r += bias[at.y]; }
    if ((flags & 2u) != 0u) { r += res[i]; }
    y[i] = clamp(r, pf(17u), pf(18u));
}
