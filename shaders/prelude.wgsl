// The prelude every shader of the crate is composed behind (by src/runtime/pipelines.rs),
// after the constants EPS, HG, TR, WG, CW, CHUNK and `struct Params` that src/runtime/abi.rs
// emits from its Rust definitions. It holds only what every kernel file shares.

@group(0) @binding(0) var<uniform> p: Params;

// The work unit (one workgroup) of this invocation: dispatches are folded into x and y and
// may cover a sub-range [unit_base, unit_end) of an op's units. Kernels start with
//   let u = unit_id(wg); if u >= p.unit_end { return; }
fn unit_id(wg: vec3<u32>) -> u32 {
    return p.unit_base + wg.y * p.groups_x + wg.x;
}

// Elementwise kernels over [B, N, W] map a workgroup of WG threads to rows x a power-of-two
// column tile (extra.z = tile width, extra.w = its log2): one division per thread, coalesced.
// `ok` is false past the dispatch's units or the tensor. Kernels start with
//   let el = element(wg, t); if !el.ok { return; }
struct Element {
    ok: bool,
    e: u32,
    j: u32,
    b: u32,
    i: u32,
}

fn element(wg: vec3<u32>, t: u32) -> Element {
    let u = unit_id(wg);
    let N = p.dims.z;
    let W = p.dims.w;
    let tw = p.extra.z;
    let nct = (W + tw - 1u) / tw;
    let rows_per_wg = WG / tw;
    let row = (u / nct) * rows_per_wg + (t >> p.extra.w);
    var el: Element;
    el.j = (u % nct) * tw + (t & (tw - 1u));
    el.ok = u < p.unit_end && row < p.dims.x * N && el.j < W;
    el.e = row * W + el.j;
    el.b = row / N;
    el.i = row - el.b * N;
    return el;
}
