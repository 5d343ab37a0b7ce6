// A depthwise conv and the 1x1 conv that reads it (an inverted-residual block's depthwise and
// projection convs: a depthwise-separable conv) in one dispatch, for layers whose outputs are too
// few to fill the GPU (batch 1, late layers), where a dispatch's fixed cost outweighs the
// layer's arithmetic. The depthwise conv's output never goes to memory. A workgroup takes four
// neighbouring output pixels p..p+3 (flat over the rows) and a block of the 1x1 conv's output
// channels:
// 1. its invocations compute the depthwise conv at the four pixels for every channel, with its
//    fused bias and clamp, into workgroup memory (`scratch`: a vec4 of the four pixels a
//    channel);
// 2. then the 1x1 conv as reduce.wgsl does: an invocation computes 4 output channels x the 4
//    pixels over the channels of its input group, the groups' sums are added by halving in
//    workgroup memory (where the depthwise outputs were), then the 1x1 conv's fused bias,
//    residual and clamp. A block has at most as many quads of channels as the workgroup has
//    invocations.
// A layer whose output channels come in several blocks (to give the GPU more workgroups) has
// each block's workgroup compute step 1 again: arithmetic traded for parallelism.
// A header made at load (gpu/mod.rs, `Kernel::header`) declares WORKGROUP_SIZE, DW_CHANNELS
// (the room in `scratch`), `a` (the 1x1 conv's weight as [cin][cout]) with `load_a`, and `res` and
// `y` with their 4-wide loads and stores (vectors where the pixels are a multiple of 4).
//
// Parameters: 0-13 the depthwise conv's window (`window_params`: the 1x1 conv's outputs a
// sample, then channels, input and output rows and columns, kernel, stride, leading padding,
// dilation), 14 its flags (1: bias), 15-16 its clamp; 17 the 1x1 conv's output channels, 18
// its flags (1: bias, 2: residual), 19-20 its clamp; 21 input groups (a power of two), 22 quads
// of output channels a block, 23 blocks.
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> dw_weight: array<f32>;
@group(0) @binding(7) var<storage, read> dw_bias: array<f32>;

// The depthwise outputs, then the partial sums of the 1x1 conv's four channels of each
// invocation (group_sums.wgsl; DW_CHANNELS is at least 4 x WORKGROUP_SIZE).
var<workgroup> scratch: array<vec4<f32>, DW_CHANNELS>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = wid.z;
    let channels = pu(1u);
    let row_blocks = pu(23u);
    let block = wid.x + wid.y * nwg.x;
    // A grid of over 65,535 workgroups has a partial last row (gpu/mod.rs `Dispatch`): those
    // past the last block have nothing to do.
    if (block >= ((pu(4u) * pu(5u) + 3u) / 4u) * row_blocks) { return; }
    let p = (block / row_blocks) * 4u;
    for (var c = l; c < channels; c += WORKGROUP_SIZE) {
        scratch[c] = depthwise(n, c, p);
    }
    workgroupBarrier();
    let cout = pu(17u);
    let kgroups = pu(21u);
    let quads = pu(22u);
    let per_group = WORKGROUP_SIZE / kgroups;
    let slot = l % per_group;
    let group = l / per_group;
    let r = ((block % row_blocks) * quads + slot) * 4u;
    // Invocations past the block's channels take part in the barriers but store nothing.
    let live = slot < quads && r < cout;
    // acc0..acc3: output channels r..r+3 at the four pixels.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    if (live) {
        for (var i = group; i < channels; i += kgroups) {
            let av = load_a(i * cout + r, 1u);
            let bv = scratch[i];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
    }
    // Every invocation has read the depthwise outputs: their room takes the partial sums.
    workgroupBarrier();
    add_group_sums(l, group, per_group, kgroups, acc0, acc1, acc2, acc3);
    if (live && group == 0u) {
        for (var dr = 0u; dr < 4u; dr++) {
            finish(n, r + dr, p, scratch[dr * WORKGROUP_SIZE + l]);
        }
    }
}

// The depthwise conv's channel c at pixels p..p+3 (those past the last pixel repeat it: they
// are never stored), with its bias and clamp.
fn depthwise(n: u32, c: u32, p: u32) -> vec4<f32> {
    let h = pu(2u);
    let w = pu(3u);
    let ow = pu(5u);
    let last = pu(4u) * ow - 1u;
    let kh = pu(6u);
    let kw = pu(7u);
    let q = min(vec4<u32>(p) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
    let iy0 = vec4<i32>((q / ow) * pu(8u)) - vec4<i32>(i32(pu(10u)));
    let ix0 = vec4<i32>((q % ow) * pu(9u)) - vec4<i32>(i32(pu(11u)));
    let xc = (n * pu(1u) + c) * h * w;
    let wc = c * kh * kw;
    let hi = vec4<i32>(i32(h));
    let wi = vec4<i32>(i32(w));
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < kh; ky++) {
        let iy = iy0 + vec4<i32>(i32(ky * pu(12u)));
        let row_inside = (iy >= vec4<i32>(0)) & (iy < hi);
        for (var kx = 0u; kx < kw; kx++) {
            let ix = ix0 + vec4<i32>(i32(kx * pu(13u)));
            let inside = row_inside & (ix >= vec4<i32>(0)) & (ix < wi);
            // Taps in the padding read the channel's first value and count 0.
            let o = select(vec4<u32>(xc), vec4<u32>(xc) + vec4<u32>(iy * wi + ix), inside);
            let v = vec4<f32>(x[o.x], x[o.y], x[o.z], x[o.w]);
            acc += select(vec4<f32>(0.0), v, inside) * dw_weight[wc + ky * kw + kx];
        }
    }
    if ((pu(14u) & 1u) != 0u) { acc += vec4<f32>(dw_bias[c]); }
    return clamp(acc, vec4<f32>(pf(15u)), vec4<f32>(pf(16u)));
}

// Stores output channel r at pixels p.. (those inside the output) with the fused bias, residual
// and clamp.
fn finish(n: u32, r: u32, p: u32, sum: vec4<f32>) {
    if (r >= pu(17u)) { return; }
    let npix = pu(4u) * pu(5u);
    let o = n * pu(0u) + r * npix + p;
    let flags = pu(18u);
    var v = sum;
    if ((flags & 1u) != 0u) { v += vec4<f32>(bias[r]); }
    if ((flags & 2u) != 0u) { v += load_res(o); }
    store_y(o, clamp(v, vec4<f32>(pf(19u)), vec4<f32>(pf(20u))), min(4u, npix - p));
}
