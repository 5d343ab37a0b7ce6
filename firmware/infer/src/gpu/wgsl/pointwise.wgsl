// 1x1 convolution (stride 1, no padding, one group) as a tiled matrix product per sample:
// y[oc, p] = clamp(sum_ic w[oc, ic] * x[ic, p] + bias[oc] + res[oc, p]). A workgroup computes a
// 32 (channels) x 32 (pixels) tile, each invocation a 4 x 4 block, reading 8-deep slices of w
// and x through workgroup memory. The pointwise convs carry most of a MobileNet-style network's
// arithmetic. When the output is too small to fill the GPU (late layers: 7x7 pixels, 1152
// inputs), the inputs are split into `splits` ranges: each workgroup writes the raw partial
// sum of its range to `y` (then a scratch buffer) and `splitk.wgsl` adds them up.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> ws: array<f32, 256>; // [32 channels][8 k]
var<workgroup> xs: array<f32, 256>; // [8 k][32 pixels]

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
    let p0 = (tile % tiles_p) * 32u;
    let oc0 = (tile / tiles_p) * 32u;
    let tx = l % 8u;
    let ty = l / 8u;
    let xb = n * cin * npix;
    // Four rows of four accumulators as vectors: no dynamically indexed private arrays,
    // which drivers may place in slow local memory.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 += 8u) {
        for (var q = 0u; q < 4u; q++) {
            let e = l + 64u * q;
            let oc = oc0 + e / 8u;
            let kw = k0 + e % 8u;
            ws[e] = select(0.0, wt[oc * cin + kw], oc < cout && kw < k_end);
            let kx = k0 + e / 32u;
            let p = p0 + e % 32u;
            xs[e] = select(0.0, x[xb + kx * npix + p], kx < k_end && p < npix);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 8u; kk++) {
            let xr = kk * 32u + tx;
            let b = vec4<f32>(xs[xr], xs[xr + 8u], xs[xr + 16u], xs[xr + 24u]);
            acc0 += ws[ty * 8u + kk] * b;
            acc1 += ws[(ty + 8u) * 8u + kk] * b;
            acc2 += ws[(ty + 16u) * 8u + kk] * b;
            acc3 += ws[(ty + 24u) * 8u + kk] * b;
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    let flags = pu(5u);
    let lo = pf(6u);
    let hi = pf(7u);
    let total = pu(0u);
    for (var i = 0u; i < 4u; i++) {
        let oc = oc0 + ty + 8u * i;
        if (oc >= cout) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let p = p0 + tx + 8u * j;
            if (p >= npix) { continue; }
            var v = acc[i][j];
            let o = oc * npix + p;
            if (splits > 1u) {
                y[(n * splits + split) * total + o] = v;
                continue;
            }
            if ((flags & 1u) != 0u) { v += bias[oc]; }
            if ((flags & 2u) != 0u) { v += res[n * total + o]; }
            y[n * total + o] = clamp(v, lo, hi);
        }
    }
}
