// 2-D max / average pooling, one output element per invocation.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let total = pu(0u);
    if (i >= total) { return; }
    let n = gid.z;
    let c = pu(1u);
    let h = i32(pu(2u));
    let w = i32(pu(3u));
    let oh = pu(4u);
    let ow = pu(5u);
    let kh = pu(6u);
    let kw = pu(7u);
    let dh = i32(pu(12u));
    let dw = i32(pu(13u));
    let mode = pu(14u);
    let ox = i % ow;
    let t = i / ow;
    let oy = t % oh;
    let ch = t / oh;
    let xb = (n * c + ch) * u32(h * w);
    let iy0 = i32(oy * pu(8u)) - i32(pu(10u));
    let ix0 = i32(ox * pu(9u)) - i32(pu(11u));
    var acc = select(0.0, -3.4028235e38, mode == 0u);
    var count = 0.0;
    var padded = 0.0;
    for (var ky = 0i; ky < i32(kh); ky++) {
        let iy = iy0 + ky * dh;
        for (var kx = 0i; kx < i32(kw); kx++) {
            let ix = ix0 + kx * dw;
            // Positions inside the padded input count for count_include_pad.
            if (iy < h + i32(pu(15u)) && ix < w + i32(pu(16u))) { padded += 1.0; }
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) { continue; }
            let v = x[xb + u32(iy * w + ix)];
            if (mode == 0u) { acc = max(acc, v); } else { acc += v; }
            count += 1.0;
        }
    }
    if (mode == 1u) { acc = acc / padded; }
    if (mode == 2u) { acc = acc / count; }
    y[n * total + i] = acc;
}
