// 1x1 convolution (stride 1, no padding, one group) as a tiled matrix product per sample:
// y[oc, p] = clamp(sum_ic w[ic, oc] * x[ic, p] + bias[oc] + res[oc, p]), the weight transposed
// at load to [cin][cout] so that a tile's weights are contiguous like its pixels. A workgroup
// computes a 32 (channels) x 64 (pixels) tile; an invocation computes 4 channels x 8 pixels
// (pixels 4tx..4tx+3 and 32+4tx..32+4tx+3), reading 16-deep slices of w and x through
// workgroup memory as vectors: three vector loads feed 32 multiply-adds. The pointwise convs
// carry most of a MobileNet-style network's arithmetic. When the output is too small to fill
// the GPU (late layers: 7x7 pixels, 1152 inputs), the inputs are split into `splits` ranges:
// each workgroup writes the raw partial sum of its range to `y` (then a scratch buffer) and
// `splitk.wgsl` adds them up.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> ws: array<vec4<f32>, 128>; // [16 k][8 groups of 4 channels]
var<workgroup> xs: array<vec4<f32>, 256>; // [16 k][16 groups of 4 pixels]

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
    let p0 = (tile % tiles_p) * 64u;
    let oc0 = (tile / tiles_p) * 32u;
    let tx = l % 8u;
    let ty = l / 8u;
    let xb = n * cin * npix;
    // Accumulators as vectors: no dynamically indexed private arrays, which drivers may place
    // in slow local memory. acc0..3: channels 4ty+0..3 at the first four pixels; acc4..7 at
    // the second four.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    // Inputs past the range (a partial last slice) read as zeros, in both operands: past the
    // last input the weight index leaves the array, and a read out of bounds may return any
    // value of the buffer (Vulkan's robust access; lavapipe happens to return zero). Channels
    // past cout and pixels past npix need no mask: they only feed outputs that are not stored.
    for (var k0 = k_begin; k0 < k_end; k0 += 16u) {
        for (var q = 0u; q < 2u; q++) {
            let e = l + 64u * q;
            let k = k0 + e / 8u;
            let oc = oc0 + (e % 8u) * 4u;
            let o = k * cout + oc;
            let v = vec4<f32>(wt[o], wt[o + 1u], wt[o + 2u], wt[o + 3u]);
            ws[e] = select(vec4<f32>(0.0), v, k < k_end);
        }
        for (var q = 0u; q < 4u; q++) {
            let e = l + 64u * q;
            let k = k0 + e / 16u;
            let p = p0 + (e % 16u) * 4u;
            let o = xb + k * npix + p;
            let v = vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
            xs[e] = select(vec4<f32>(0.0), v, k < k_end);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let a = ws[kk * 8u + ty];
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
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    let flags = pu(5u);
    let lo = pf(6u);
    let hi = pf(7u);
    let total = pu(0u);
    for (var i = 0u; i < 4u; i++) {
        let oc = oc0 + 4u * ty + i;
        if (oc >= cout) { break; }
        for (var j = 0u; j < 8u; j++) {
            let p = p0 + 32u * (j / 4u) + 4u * tx + j % 4u;
            if (p >= npix) { continue; }
            var v = acc[i + 4u * (j / 4u)][j % 4u];
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
