// A 1x1 conv or linear layer whose outputs are too few to fill the GPU (batch 1, late layers),
// its k inputs shared out among the invocations of a workgroup, which add up their partial sums
// in workgroup memory, then the fused bias, residual and clamp: one dispatch where splitting the
// inputs among workgroups takes a second to add the partial sums (`splitk.wgsl`), and on a GPU
// each dispatch costs microseconds, more than such a layer's arithmetic at batch 1.
//
// y[r, c] = clamp(sum_i a[r, i] * b[i, c] + bias + res[r, c]) for each sample:
// - a 1x1 conv: r = output channel, c = pixel, a = its weight as [cin][cout], b = the input;
// - a linear layer: r = row, c = column, a = the input, b = its weight as [k][n].
// An invocation computes a tile of 4 rows x 4 columns (r..r+3, c..c+3) over the inputs
// i = g, g + kgroups, ... of its input group g: per input, a 4-wide load of each operand and 16
// multiply-adds (an invocation of one row would load every value of `b` once for each row: four
// times the loads). A workgroup is `kgroups` input groups (a power of two, up to 64) x
// WORKGROUP_SIZE / kgroups tiles. A header made at load (gpu/mod.rs, `Kernel::header`) declares
// WORKGROUP_SIZE, and `a`, `b`, `res` and `y` with their 4-wide loads and stores (vectors where
// the rows of a conv's weight or the columns are a multiple of 4; `load_a(o, step)` reads
// a[o], a[o + step], .. : rows are `step` apart, 1 in a conv's weight).
@group(0) @binding(3) var<storage, read> bias: array<f32>;

// The partial sums of the four rows of each invocation: [row][invocation] (group_sums.wgsl).
var<workgroup> scratch: array<vec4<f32>, 4 * WORKGROUP_SIZE>;

// An invocation's tile: its sample, first row and first column.
struct Tile { n: u32, r: u32, c: u32 }

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
    let per_group = WORKGROUP_SIZE / kgroups;
    let slot = l % per_group;
    let group = l / per_group;
    let tile = (wid.x + wid.y * nwg.x) * per_group + slot;
    // Invocations past the last tile take part in the barriers but load and store nothing.
    let live = tile < pu(13u);
    let t = Tile(wid.z, (tile / quads_per_row) * 4u, (tile % quads_per_row) * 4u);
    let a_row = pu(5u);
    let a0 = t.n * pu(6u) + t.r * a_row;
    let a_step = pu(4u);
    let b0 = t.n * pu(7u) + t.c;
    // acc0..acc3: rows r..r+3 at columns c..c+3.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    if (live) {
        for (var i = group; i < k; i += kgroups) {
            let av = load_a(a0 + i * a_step, a_row);
            let bv = load_b(b0 + i * cols);
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
    }
    add_group_sums(l, group, per_group, kgroups, acc0, acc1, acc2, acc3);
    if (group != 0u || !live) { return; }
    for (var dr = 0u; dr < 4u; dr++) {
        finish(t, dr, scratch[dr * WORKGROUP_SIZE + l]);
    }
}

// Stores row t.r + dr at columns t.c.. (those inside the output) with the fused bias (by row or
// by column), residual and clamp.
fn finish(t: Tile, dr: u32, sum: vec4<f32>) {
    let r = t.r + dr;
    let cols = pu(3u);
    if (r >= pu(2u)) { return; }
    let o = t.n * pu(0u) + r * cols + t.c;
    let flags = pu(8u);
    var v = sum;
    if ((flags & 1u) != 0u) { v += vec4<f32>(bias[r]); }
    if ((flags & 4u) != 0u) {
        v += vec4<f32>(bias[t.c], bias[t.c + 1u], bias[t.c + 2u], bias[t.c + 3u]);
    }
    if ((flags & 2u) != 0u) { v += load_res(o); }
    store_y(o, clamp(v, vec4<f32>(pf(9u)), vec4<f32>(pf(10u))), min(4u, cols - t.c));
}
