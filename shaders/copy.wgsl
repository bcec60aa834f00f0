// Plain copy: dst[e] = src[e] for every element e.
// The bandwidth baseline of the benches, and the memory snapshot of soft backprop.

struct Params {
    unit_base: u32,
    unit_end: u32,
    groups_x: u32,
    check_slot: u32,
    base0: vec4<u32>, // element offsets of the windows of bindings 1..4
    base1: vec4<u32>, // ... and 5..8
    dims: vec4<u32>,
    extra: vec4<u32>, // x: element count
    fx: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let e = u * 256u + t;
    if e < p.extra.x {
        dst[e - p.base0.y] = src[e - p.base0.x];
    }
}
