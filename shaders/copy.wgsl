// Plain copy: dst[e] = src[e] for every element e.
// The bandwidth baseline of the benches, and the memory snapshot of soft backprop.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x: element count

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let e = u * WG + t;
    if e < p.extra.x {
        dst[e - p.base0.y] = src[e - p.base0.x];
    }
}
