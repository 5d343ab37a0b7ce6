// Shared by every kernel: per-dispatch parameters (written once at load) and the flat index.
// A dispatch is (x, y) workgroups over the elements of one sample and z = the batch.
struct Params { v: array<vec4<u32>, 8> }
@group(0) @binding(0) var<uniform> params: Params;

fn pu(i: u32) -> u32 { return params.v[i / 4u][i % 4u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 64u; }
