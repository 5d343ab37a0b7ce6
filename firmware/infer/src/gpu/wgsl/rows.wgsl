// Ops over the contiguous last `len` elements of each row, one workgroup per row:
// 0 mean, 1 sum, 2 L2 norm, 3 sum of squares (one value per row);
// 4 L2 normalisation, 5 layer normalisation (a whole row).
// The 64 invocations of a row sum strided shares and combine them through workgroup memory:
// a LayerNorm over a 1280-d embedding at batch 1 is one row, which a single invocation would
// walk three times alone.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> part: array<vec2<f32>, 64>;

// The sum of `v` over the workgroup (every invocation calls it: it has barriers).
fn workgroup_sum(l: u32, v: vec2<f32>) -> vec2<f32> {
    part[l] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (l < s) { part[l] += part[l + s]; }
        workgroupBarrier();
    }
    let total = part[0];
    // Nobody overwrites `part` for a next sum before everyone has read this one.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // From the workgroup id only, so the early return and the barriers stay uniform.
    let r = wid.x + wid.y * nwg.x;
    let rows = pu(0u);
    if (r >= rows) { return; }
    let len = pu(1u);
    let op = pu(2u);
    let flags = pu(4u);
    let n = wid.z;
    let base = (n * rows + r) * len;
    var acc = vec2<f32>(0.0);
    for (var j = l; j < len; j += 64u) {
        let v = x[base + j];
        acc += vec2<f32>(v, v * v);
    }
    let t = workgroup_sum(l, acc);
    let sum = t.x;
    let sq = t.y;
    let fl = f32(len);
    switch op {
        case 0u, 1u, 2u, 3u: {
            if (l == 0u) {
                var v = sum / fl;
                if (op == 1u) { v = sum; }
                if (op == 2u) { v = sqrt(sq); }
                if (op == 3u) { v = sq; }
                y[n * rows + r] = v;
            }
        }
        case 4u: {
            let norm = sqrt(sq);
            for (var j = l; j < len; j += 64u) { y[base + j] = x[base + j] / norm; }
        }
        default: {
            // Two passes: the variance from centred values, as the reference does.
            let mean = sum / fl;
            var c = vec2<f32>(0.0);
            for (var j = l; j < len; j += 64u) {
                let d = x[base + j] - mean;
                c.x += d * d;
            }
            let inv = 1.0 / sqrt(workgroup_sum(l, c).x / fl + pf(3u));
            for (var j = l; j < len; j += 64u) {
                var v = (x[base + j] - mean) * inv;
                if ((flags & 1u) != 0u) { v = v * scale[j]; }
                if ((flags & 2u) != 0u) { v = v + bias[j]; }
                y[base + j] = v;
            }
        }
    }
}
