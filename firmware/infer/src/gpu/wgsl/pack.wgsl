// Sign and pack: bit i of a sample's code is bit (i % 8) of byte (i / 8), set where value > 0.
// Word w holds values 32w..32w+31; on little-endian hosts its bytes are the code's bytes.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let wi = flat(gid, nwg);
    let words = pu(1u);
    if (wi >= words) { return; }
    let d = pu(0u);
    let n = gid.z;
    var bits = 0u;
    for (var b = 0u; b < 32u; b++) {
        let idx = wi * 32u + b;
        if (idx < d && x[n * d + idx] > 0.0) { bits = bits | (1u << b); }
    }
    y[n * words + wi] = bits;
}
