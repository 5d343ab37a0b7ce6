// Ops over the contiguous last `len` elements of each row, one row per invocation:
// 0 mean, 1 sum, 2 L2 norm, 3 sum of squares (one value per row);
// 4 L2 normalisation, 5 layer normalisation (a whole row).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg);
    let rows = pu(0u);
    if (r >= rows) { return; }
    let len = pu(1u);
    let op = pu(2u);
    let flags = pu(4u);
    let n = gid.z;
    let base = (n * rows + r) * len;
    var sum = 0.0;
    var sq = 0.0;
    for (var j = 0u; j < len; j++) {
        let v = x[base + j];
        sum += v;
        sq += v * v;
    }
    let fl = f32(len);
    switch op {
        case 0u: { y[n * rows + r] = sum / fl; }
        case 1u: { y[n * rows + r] = sum; }
        case 2u: { y[n * rows + r] = sqrt(sq); }
        case 3u: { y[n * rows + r] = sq; }
        case 4u: {
            let norm = sqrt(sq);
            for (var j = 0u; j < len; j++) { y[base + j] = x[base + j] / norm; }
        }
        default: {
            // Two passes: the variance from centred values, as the reference does.
            let mean = sum / fl;
            var var_acc = 0.0;
            for (var j = 0u; j < len; j++) {
                let d = x[base + j] - mean;
                var_acc += d * d;
            }
            let inv = 1.0 / sqrt(var_acc / fl + pf(3u));
            for (var j = 0u; j < len; j++) {
                var v = (x[base + j] - mean) * inv;
                if ((flags & 1u) != 0u) { v = v * scale[j]; }
                if ((flags & 2u) != 0u) { v = v + bias[j]; }
                y[base + j] = v;
            }
        }
    }
}
