// Soft read, per batch b and head h:
//   r_h(j) = sum_i w_h(i) M(i, j)            (primitives/colsum.wgsl: partial, then combine)
// Backward, given dr:
//   dw_h(i) = dr_h . M_i                     (primitives/rowtile.wgsl: dots)
//   dM(i, j) = sum_h w_h(i) dr_h(j)          (bwd_mem, below)
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

@group(0) @binding(1) var<storage, read> bw: array<f32>;
@group(0) @binding(2) var<storage, read> bdr: array<V>;
@group(0) @binding(3) var<storage, read_write> bdm: array<V>;

// dM(i, j) (+)= sum_h w_h(i) dr_h(j), a thread per V (LANES elements of a row) of EW_ROWS
// rows; added to the output when specialised with ACC.
@compute @workgroup_size(WG)
fn bwd_mem(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let H = p.dims.y;
    let N = p.dims.z;
    let WL = p.dims.w / LANES;
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let el = element(wg, t, k);
        if !el.ok {
            continue;
        }
        var acc = V(0.0);
        for (var h = 0u; h < H; h += 1u) {
            acc += bw[(el.b * H + h) * N + el.i - p.base0.x] * bdr[(el.b * H + h) * WL + el.j];
        }
        let o = el.e - p.base0.z / LANES;
        if ACC {
            bdm[o] += acc;
        } else {
            bdm[o] = acc;
        }
    }
}
