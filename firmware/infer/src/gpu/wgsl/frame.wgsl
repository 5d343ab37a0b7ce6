// Frame preprocessing: a packed RGB8 frame (bytes in u32 words, little-endian) to the model's
// normalised NCHW input. One invocation per output pixel of the crop, all three channels.
// The sums run in the order of bundle::Preprocessor (image's resize): for each column tap, the
// vertical sum over the row taps starting from 0.0; then the horizontal sum of those; then
// clamp to 0..=255, round half away from zero, and `v * scale + bias`.
// Params: 0 width, 1 height, 2 crop, 3 rows_left, 4 rows_start, 5 cols_left, 6 cols_start,
// 7 weights (word offsets into `taps`), 8..10 scale, 11..13 bias, 14 zero.
//
// Every product is rounded before it is added, as on the CPU: a GPU compiler may otherwise fuse
// `acc + a * b` into one fused multiply-add (SPIR-V allows it unless told NoContraction, which
// WGSL cannot say), and a last-bit difference next to x.5 would change the rounded u8. XOR with
// a zero the compiler cannot see (param 14) makes the product a value of its own. Vulkan's f32
// add and multiply are correctly rounded, so the result is the CPU's bit for bit.
@group(0) @binding(1) var<storage, read> frame: array<u32>;
@group(0) @binding(2) var<storage, read> taps: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn byte_at(i: u32) -> f32 {
    return f32((frame[i / 4u] >> ((i % 4u) * 8u)) & 0xffu);
}

fn rounded(p: vec3<f32>) -> vec3<f32> {
    return bitcast<vec3<f32>>(bitcast<vec3<u32>>(p) ^ vec3<u32>(pu(14u)));
}

fn pixel(i: u32) -> vec3<f32> {
    return vec3<f32>(byte_at(i), byte_at(i + 1u), byte_at(i + 2u));
}

// The u8 image stores: clamped, rounded half away from zero (WGSL's round() is half to even;
// floor(c + 0.5) can round up in the addition).
fn to_u8(t: f32) -> f32 {
    let c = clamp(t, 0.0, 255.0);
    let f = floor(c);
    return select(f, f + 1.0, c - f >= 0.5);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let s = pu(2u);
    let plane = s * s;
    if (i >= plane) { return; }
    let oy = i / s;
    let ox = i % s;
    let row_bytes = pu(0u) * 3u;
    let rl = taps[pu(3u) + oy];
    let r0 = taps[pu(4u) + oy];
    let r1 = taps[pu(4u) + oy + 1u];
    let cl = taps[pu(5u) + ox];
    let c0 = taps[pu(6u) + ox];
    let c1 = taps[pu(6u) + ox + 1u];
    let wo = pu(7u);
    var t = vec3<f32>(0.0);
    for (var j = c0; j < c1; j++) {
        let col = (cl + j - c0) * 3u;
        var a = vec3<f32>(0.0);
        for (var k = r0; k < r1; k++) {
            let row = rl + k - r0;
            a = a + rounded(pixel(row * row_bytes + col) * bitcast<f32>(taps[wo + k]));
        }
        t = t + rounded(a * bitcast<f32>(taps[wo + j]));
    }
    let scale = vec3<f32>(pf(8u), pf(9u), pf(10u));
    let v = rounded(vec3<f32>(to_u8(t.x), to_u8(t.y), to_u8(t.z)) * scale);
    y[i] = v.x + pf(11u);
    y[plane + i] = v.y + pf(12u);
    y[2u * plane + i] = v.z + pf(13u);
}
