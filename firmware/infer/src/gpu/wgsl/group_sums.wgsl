// Shared by reduce.wgsl and separable.wgsl, whose invocations are `kgroups` input groups x
// `per_group` tiles (invocation l = group * per_group + slot), each with the partial sums of four
// rows of its tile: adds them up over the groups by halving in workgroup memory. Afterwards
// scratch[r * WORKGROUP_SIZE + l] holds row r's sum for the invocations of group 0. The kernel
// declares `scratch`, at least 4 x WORKGROUP_SIZE vec4s, and calls it from uniform control flow.
fn add_group_sums(
    l: u32,
    group: u32,
    per_group: u32,
    kgroups: u32,
    acc0: vec4<f32>,
    acc1: vec4<f32>,
    acc2: vec4<f32>,
    acc3: vec4<f32>,
) {
    // Written out, not a loop over an array: a dynamically indexed array of accumulators can
    // live in memory instead of registers (on the H200 such an epilogue made the 1x1 convs 4.6
    // times slower).
    scratch[l] = acc0;
    scratch[WORKGROUP_SIZE + l] = acc1;
    scratch[2u * WORKGROUP_SIZE + l] = acc2;
    scratch[3u * WORKGROUP_SIZE + l] = acc3;
    workgroupBarrier();
    for (var half = kgroups / 2u; half > 0u; half /= 2u) {
        if (group < half) {
            let o = l + half * per_group;
            scratch[l] += scratch[o];
            scratch[WORKGROUP_SIZE + l] += scratch[WORKGROUP_SIZE + o];
            scratch[2u * WORKGROUP_SIZE + l] += scratch[2u * WORKGROUP_SIZE + o];
            scratch[3u * WORKGROUP_SIZE + l] += scratch[3u * WORKGROUP_SIZE + o];
        }
        workgroupBarrier();
    }
}
