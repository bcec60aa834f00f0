// Soft read, per batch b and head h:
//   r_h(j) = sum_i w_h(i) M(i, j)            (primitives/colsum.wgsl: partial, then combine)
// Backward, given dr:
//   dw_h(i) = dr_h . M_i                     (primitives/rowtile.wgsl: dots)
//   dM(i, j) = sum_h w_h(i) dr_h(j)          (bwd_mem, below)
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

@group(0) @binding(1) var<storage, read> bw: array<f32>;
@group(0) @binding(2) var<storage, read> bdr: array<V>;
@group(0) @binding(3) var<storage, read_write> bdm: array<DMemV>; // f32 or f16

fn bwd_value(el: Element) -> V {
    var acc = V(0.0);
    for (var h = 0u; h < heads(); h += 1u) {
        acc += bw[head_row(el, h) - p.base0.x] * bdr[head_col(el, h)];
    }
    if ACC {
        acc += bdm_ld(el.e - p.base0.z / LANES);
    }
    return acc;
}

// dM(i, j) (+)= sum_h w_h(i) dr_h(j), any head count: a thread per V (LANES elements of a
// row) of EW_ROWS rows, or per packed word (WORDS); added to the output when specialised with
// ACC.
@compute @workgroup_size(WG)
fn bwd_mem_any(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let q = ew_item(wg, t, k);
        if !q.a.ok {
            continue;
        }
        var v1 = V(0.0);
        if q.b.ok {
            v1 = bwd_value(q.b);
        }
        bdm_st2(q.a.e - p.base0.z / LANES, bwd_value(q.a), v1, q.b.ok);
    }
}

// With ACC, the output's V at el (to add to); else (or past the rows) 0, unused.
fn acc_load(el: Element) -> V {
    if ACC && el.ok {
        return bdm_ld(el.e - p.base0.z / LANES);
    }
    return V(0.0);
}

// bwd_value's operations, in its order, from the column's dr vectors and the loaded output.
fn dm_store(el: Element, old: V, dr: HeadVs) {
    if el.ok {
        var acc = V(0.0);
        for (var h = 0u; h < heads(); h += 1u) {
            acc += bw[head_row(el, h) - p.base0.x] * head_v(dr, h);
        }
        if ACC {
            acc += old;
        }
        bdm_st(el.e - p.base0.z / LANES, acc);
    }
}

// The column's dr vectors at a thread's first element, for all its rows.
fn dr_at(first: Element) -> HeadVs {
    var dr: HeadVs;
    for (var h = 0u; h < heads(); h += 1u) {
        set_head_v(&dr, h, bdr[head_col(first, h)]);
    }
    return dr;
}

// As bwd_mem_any, specialised for heads() <= HG heads and EW_ROWS > 1 rows per thread (no
// packed words): a thread per V of EW_ROWS rows of one batch element loads its column's dr
// vectors once, for all its rows, row by row.
@compute @workgroup_size(WG)
fn bwd_mem(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return; // no row of this thread is (rows only grow with k)
    }
    let dr = dr_at(first);
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let el = element(wg, t, k);
        if el.ok {
            dm_store(el, acc_load(el), dr);
        }
    }
}

// As bwd_mem, loading each group of ROW_GROUP rows (2 to 4, Gpu::elementwise_row_group)
// before storing any (GPUs: a store may alias a later row's load, so the compiler keeps
// that load behind it; grouped, a thread has the copy kernel's four loads in flight).
@compute @workgroup_size(WG)
fn bwd_mem_groups(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return;
    }
    let dr = dr_at(first);
    for (var k = 0u; k < EW_ROWS; k += ROW_GROUP) {
        let r0 = ew_row(wg, t, k, 0u);
        let r1 = ew_row(wg, t, k, 1u);
        let r2 = ew_row(wg, t, k, 2u);
        let r3 = ew_row(wg, t, k, 3u);
        let o0 = acc_load(r0);
        let o1 = acc_load(r1);
        let o2 = acc_load(r2);
        let o3 = acc_load(r3);
        dm_store(r0, o0, dr);
        dm_store(r1, o1, dr);
        dm_store(r2, o2, dr);
        dm_store(r3, o3, dr);
    }
}
