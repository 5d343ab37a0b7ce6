// 1x1 convolution (stride 1, no padding, one group) as a tiled matrix product per sample:
// y[oc, p] = clamp(sum_ic w[ic, oc] * x[ic, p] + bias[oc] + res[oc, p]), the weight transposed
// at load to [cin][cout] so that a tile's weights are contiguous like its pixels.
//
// A header made at load (gpu/mod.rs, `Kernel::header`) declares `x`, `wt`, `res` and `y` and
// their 4-wide loads and stores `load_x`, `load_wt`, `load_res`, `store_y` (vector accesses
// where the pixels and channels are multiples of 4, else scalar ones), and `TILE_C`: a
// workgroup computes a TILE_C (32 or 64 channels)
// x 64 pixel tile; an invocation computes TILE_C / 8 channels x 8 pixels (channels 4ty..4ty+3
// and, wide, 32+4ty..; pixels 4tx..4tx+3 and 32+4tx..), reading 16-deep slices of w and x
// through workgroup memory as vectors: per 16 (narrow: 8) multiply-adds of 4 lanes, 3 (4)
// vector loads. The next slice is fetched from global memory into registers while the current
// one is multiplied, so that few workgroups (batch 1) still overlap loads and arithmetic. The
// pointwise convs carry most of a MobileNet-style network's arithmetic. When the output is too
// small to fill the GPU (late layers: 7x7 pixels, 1152 inputs), the inputs are split into
// `splits` ranges: each workgroup writes the raw partial sum of its range to `y` (then a
// scratch buffer) and `splitk.wgsl` adds them up.
@group(0) @binding(3) var<storage, read> bias: array<f32>;

const WIDE: bool = TILE_C == 64u;
// vec4 groups of channels in a tile row of the weight slice.
const GROUPS_C: u32 = TILE_C / 4u;

var<workgroup> ws: array<vec4<f32>, 256>; // [16 k][GROUPS_C groups of 4 channels]
var<workgroup> xs: array<vec4<f32>, 256>; // [16 k][16 groups of 4 pixels]

// One invocation's share of a 16-deep slice: w0..w3 of the weights (w2, w3 wide only), x0..x3
// of the pixels.
struct Share { w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
               x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32> }

struct Tile { l: u32, k_end: u32, oc0: u32, cout: u32, p0: u32, npix: u32, xb: u32 }

// Inputs past the range (a partial last slice) read as zeros, in both operands: past the last
// input the weight index leaves the array, and a read out of bounds may return any value of
// the buffer (Vulkan's robust access; lavapipe happens to return zero). Channels past cout and
// pixels past npix need no mask: they only feed outputs that are not stored.
fn fetch_w(t: Tile, k0: u32, q: u32) -> vec4<f32> {
    let e = t.l + 64u * q;
    let k = k0 + e / GROUPS_C;
    let v = load_wt(k * t.cout + t.oc0 + (e % GROUPS_C) * 4u);
    return select(vec4<f32>(0.0), v, k < t.k_end);
}

fn fetch_x(t: Tile, k0: u32, q: u32) -> vec4<f32> {
    let e = t.l + 64u * q;
    let k = k0 + e / 16u;
    let v = load_x(t.xb + k * t.npix + t.p0 + (e % 16u) * 4u);
    return select(vec4<f32>(0.0), v, k < t.k_end);
}

fn fetch(t: Tile, k0: u32) -> Share {
    var s: Share;
    s.w0 = fetch_w(t, k0, 0u);
    s.w1 = fetch_w(t, k0, 1u);
    if (WIDE) {
        s.w2 = fetch_w(t, k0, 2u);
        s.w3 = fetch_w(t, k0, 3u);
    }
    s.x0 = fetch_x(t, k0, 0u);
    s.x1 = fetch_x(t, k0, 1u);
    s.x2 = fetch_x(t, k0, 2u);
    s.x3 = fetch_x(t, k0, 3u);
    return s;
}

fn stash(l: u32, s: Share) {
    ws[l] = s.w0;
    ws[l + 64u] = s.w1;
    if (WIDE) {
        ws[l + 128u] = s.w2;
        ws[l + 192u] = s.w3;
    }
    xs[l] = s.x0;
    xs[l + 64u] = s.x1;
    xs[l + 128u] = s.x2;
    xs[l + 192u] = s.x3;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Derived from the workgroup id only, so the early return and the barriers stay uniform.
    let all = wid.x + wid.y * nwg.x;
    if (all >= pu(8u)) { return; }
    let cin = pu(1u);
    let npix = pu(2u);
    let cout = pu(3u);
    let tiles_p = pu(4u);
    let splits = pu(9u);
    let chunk = pu(10u);
    let tiles = pu(8u) / splits;
    let tile = all % tiles;
    let split = all / tiles;
    let k_begin = split * chunk;
    let k_end = min(k_begin + chunk, cin);
    let n = wid.z;
    let t = Tile(l, k_end, (tile / tiles_p) * TILE_C, cout, (tile % tiles_p) * 64u, npix,
                 n * cin * npix);
    let tx = l % 8u;
    let ty = l / 8u;
    // Accumulators as vectors: no dynamically indexed private arrays, which drivers may place
    // in slow local memory. acc0..3: channels 4ty+0..3 at the first four pixels; acc4..7 at
    // the second four; acc8..15 (wide) the same for channels 32+4ty+0..3.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);
    var next = fetch(t, k_begin);
    for (var k0 = k_begin; k0 < k_end; k0 += 16u) {
        stash(l, next);
        workgroupBarrier();
        if (k0 + 16u < k_end) { next = fetch(t, k0 + 16u); }
        for (var kk = 0u; kk < 16u; kk++) {
            let a = ws[kk * GROUPS_C + ty];
            let b0 = xs[kk * 16u + tx];
            let b1 = xs[kk * 16u + 8u + tx];
            acc0 += a.x * b0;
            acc1 += a.y * b0;
            acc2 += a.z * b0;
            acc3 += a.w * b0;
            acc4 += a.x * b1;
            acc5 += a.y * b1;
            acc6 += a.z * b1;
            acc7 += a.w * b1;
            if (WIDE) {
                let c = ws[kk * GROUPS_C + 8u + ty];
                acc8 += c.x * b0;
                acc9 += c.y * b0;
                acc10 += c.z * b0;
                acc11 += c.w * b0;
                acc12 += c.x * b1;
                acc13 += c.y * b1;
                acc14 += c.z * b1;
                acc15 += c.w * b1;
            }
        }
        workgroupBarrier();
    }
    // Each accumulator holds one channel at four neighbouring pixels: one 4-wide store, and the
    // eight invocations of a row of the workgroup store 32 neighbouring pixels. Written out,
    // not looped over an array: a dynamically indexed private array may live in slow local
    // memory.
    let e = Epilogue(n, split, t.oc0 + 4u * ty, t.p0 + 4u * tx);
    finish(e, 0u, 0u, acc0);
    finish(e, 1u, 0u, acc1);
    finish(e, 2u, 0u, acc2);
    finish(e, 3u, 0u, acc3);
    finish(e, 0u, 32u, acc4);
    finish(e, 1u, 32u, acc5);
    finish(e, 2u, 32u, acc6);
    finish(e, 3u, 32u, acc7);
    if (WIDE) {
        finish(e, 32u, 0u, acc8);
        finish(e, 33u, 0u, acc9);
        finish(e, 34u, 0u, acc10);
        finish(e, 35u, 0u, acc11);
        finish(e, 32u, 32u, acc12);
        finish(e, 33u, 32u, acc13);
        finish(e, 34u, 32u, acc14);
        finish(e, 35u, 32u, acc15);
    }
}

// Where an invocation's outputs go: its sample and input range, its first channel and pixel.
struct Epilogue { n: u32, split: u32, oc: u32, p: u32 }

// Stores channel e.oc + dc at pixels e.p + dp .. + 3 (those inside the output): the raw
// partial sum of a split, else with the fused bias, residual and clamp.
fn finish(e: Epilogue, dc: u32, dp: u32, v: vec4<f32>) {
    let oc = e.oc + dc;
    let p = e.p + dp;
    let npix = pu(2u);
    if (oc >= pu(3u) || p >= npix) { return; }
    let lanes = min(4u, npix - p);
    let o = oc * npix + p;
    let total = pu(0u);
    let splits = pu(9u);
    if (splits > 1u) {
        store_y((e.n * splits + e.split) * total + o, v, lanes);
        return;
    }
    let flags = pu(5u);
    var r = v;
    if ((flags & 1u) != 0u) { r += vec4<f32>(bias[oc]); }
    if ((flags & 2u) != 0u) { r += load_res(e.n * total + o); }
    store_y(e.n * total + o, clamp(r, vec4<f32>(pf(6u)), vec4<f32>(pf(7u))), lanes);
}
