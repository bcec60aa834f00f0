// Soft read, per batch b and head h:
//   r_h(j) = sum_i w_h(i) M(i, j)            (primitives/colsum.wgsl: partial, then combine)
// Backward, given dr:
//   dw_h(i) = dr_h . M_i                     (primitives/rowtile.wgsl: scores, mode 0)
//   dM(i, j) = sum_h w_h(i) dr_h(j)          (bwd_mem, below)
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

@group(0) @binding(1) var<storage, read> bw: array<f32>;
@group(0) @binding(2) var<storage, read> bdr: array<f32>;
@group(0) @binding(3) var<storage, read_write> bdm: array<f32>;

// dM(i, j) = sum_h w_h(i) dr_h(j), one thread per element of M.
@compute @workgroup_size(WG)
fn bwd_mem(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let el = element(wg, t);
    if !el.ok {
        return;
    }
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    let e = el.e;
    let j = el.j;
    let b = el.b;
    let i = el.i;
    var acc = 0.0;
    for (var h = 0u; h < H; h += 1u) {
        acc += bw[(b * H + h) * N + i - p.base0.x] * bdr[(b * H + h) * W + j];
    }
    bdm[e - p.base0.z] = acc;
}
