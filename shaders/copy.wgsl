// Copy: dst[e] = src[e] for every element e, bit for bit (words are moved as u32).
// The memory snapshot of soft backprop, and the crate's side of the bench's roofline.
// Four elements at a time: tensors are allocated (or wrapped) in whole vec4s (16 bytes); in
// the last vec4 of a length that is not a multiple of 4 only the tensor's elements are stored,
// so bytes past the tensor (an application's, in a wrapped buffer) are never written. A unit
// copies a contiguous chunk of WG x CV vec4s; thread t takes the vec4s t, t + WG, ...
// (coalesced), with its CV loads in flight before its stores.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x: vec4s to copy, y: elements

const CV: u32 = 4u; // vec4s per thread

@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

fn load(e: u32) -> vec4<u32> {
    if e < p.extra.x {
        return src[e - p.base0.x / 4u];
    }
    return vec4<u32>(0u);
}

fn store(e: u32, v: vec4<u32>) {
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

// Cast: dst[e] = src[e] between memory-shaped dtypes (f32, f16, either storage form), read as
// f32 and rounded once on store; flat over the elements, a thread per V, or with WORDS a
// thread per packed word (both halves). Params.extra.x: elements / LANES.
@group(0) @binding(1) var<storage, read> csrc: array<MemV>;
@group(0) @binding(2) var<storage, read_write> cdst: array<DMemV>;

@compute @workgroup_size(WG)
fn convert(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let f = flat_item(u, t, p.extra.x);
    if f.ok {
        var v1 = V(0.0);
        if f.ok1 {
            v1 = csrc_ld(f.e + 1u - p.base0.x / LANES);
        }
        cdst_st2(f.e - p.base0.y / LANES, csrc_ld(f.e - p.base0.x / LANES), v1, f.ok1);
    }
}
