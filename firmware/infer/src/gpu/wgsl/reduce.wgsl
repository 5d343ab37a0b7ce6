// A 1x1 conv or linear layer whose outputs are too few to fill the GPU (batch 1, late layers),
// its k inputs shared out among the invocations of a workgroup, which add up their partial sums
// in workgroup memory, then the fused bias, residual and clamp: one dispatch where splitting the
// inputs among workgroups takes a second to add the partial sums (`splitk.wgsl`), and on a GPU
// each dispatch costs microseconds, more than such a layer's arithmetic at batch 1.
//
// y[r, c] = clamp(sum_i a[r, i] * b[i, c] + bias + res[r, c]) for each sample:
// - a 1x1 conv: r = output channel, c = pixel, a = its weight as [cin][cout], b = the input;
// - a linear layer: r = row, c = column, a = the input, b = its weight as [k][n].
// An invocation computes four neighbouring columns c..c+3 (one value of `a` times a 4-wide load
// of `b`) over the inputs i = g, g + kgroups, ... of its input group g. A workgroup is `kgroups`
// input groups (a power of two, up to 64) x WORKGROUP_SIZE / kgroups column quads. A header made
// at load (gpu/mod.rs, `Kernel::header`) declares WORKGROUP_SIZE, and `b`, `res` and `y` with
// their 4-wide loads and stores (vectors where the columns are a multiple of 4).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

var<workgroup> partial: array<vec4<f32>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = pu(1u);
    let cols = pu(3u);
    let kgroups = pu(11u);
    let quads_per_row = pu(12u);
    let quads = WORKGROUP_SIZE / kgroups;
    let slot = l % quads;
    let group = l / quads;
    let quad = (wid.x + wid.y * nwg.x) * quads + slot;
    // Invocations past the last quad take part in the barriers but load and store nothing.
    let live = quad < pu(2u) * quads_per_row;
    let r = quad / quads_per_row;
    let c = (quad % quads_per_row) * 4u;
    let n = wid.z;
    let a0 = n * pu(6u) + r * pu(5u);
    let a_step = pu(4u);
    let b0 = n * pu(7u) + c;
    var acc = vec4<f32>(0.0);
    if (live) {
        for (var i = group; i < k; i += kgroups) {
            acc += a[a0 + i * a_step] * load_b(b0 + i * cols);
        }
    }
    partial[l] = acc;
    workgroupBarrier();
    for (var half = kgroups / 2u; half > 0u; half /= 2u) {
        if (group < half) {
            partial[l] += partial[l + half * quads];
        }
        workgroupBarrier();
    }
    if (group != 0u || !live) { return; }
    let o = n * pu(0u) + r * cols + c;
    let flags = pu(8u);
    var v = partial[l];
    if ((flags & 1u) != 0u) { v += vec4<f32>(bias[r]); }
    if ((flags & 4u) != 0u) {
        v += vec4<f32>(bias[c], bias[c + 1u], bias[c + 2u], bias[c + 3u]);
    }
    if ((flags & 2u) != 0u) { v += load_res(o); }
    store_y(o, clamp(v, vec4<f32>(pf(9u)), vec4<f32>(pf(10u))), min(4u, cols - c));
}
