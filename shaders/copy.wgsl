// Copy: dst[e] = src[e] for every element e.
// The memory snapshot of soft backprop, and the crate's side of the bench's roofline.
// Four elements at a time: tensors are allocated (or wrapped) in whole vec4s (16 bytes); in
// the last vec4 of a length that is not a multiple of 4 only the tensor's elements are stored,
// so bytes past the tensor (an application's, in a wrapped buffer) are never written. A unit
// copies a contiguous chunk of WG x CV vec4s; thread t takes the vec4s t, t + WG, ...
// (coalesced), with its CV loads in flight before its stores.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x: vec4s to copy, y: elements

const CV: u32 = 4u; // vec4s per thread

@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

fn load(e: u32) -> vec4<f32> {
    if e < p.extra.x {
        return src[e - p.base0.x / 4u];
    }
    return vec4<f32>(0.0);
}

fn store(e: u32, v: vec4<f32>) {
    let o = e - p.base0.y / 4u;
    if e * 4u + 4u <= p.extra.y {
        dst[o] = v;
    } else if e < p.extra.x {
        for (var c = 0u; e * 4u + c < p.extra.y; c += 1u) {
            dst[o][c] = v[c];
        }
    }
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let e = u * WG * CV + t;
    let x0 = load(e);
    let x1 = load(e + WG);
    let x2 = load(e + 2u * WG);
    let x3 = load(e + 3u * WG);
    store(e, x0);
    store(e + WG, x1);
    store(e + 2u * WG, x2);
    store(e + 3u * WG, x3);
}
