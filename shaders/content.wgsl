// Content addressing, per batch b, head h, slot i (EPS = 1e-6, norm(x) = sqrt(sum_j x_j^2 + EPS)):
//   D_i = k . M_i,  P_i = norm(k) norm(M_i),  K_i = D_i / (P_i + EPS),  z_i = beta K_i
//   w = softmax_i(z) (primitives/rowstat.wgsl)
// Backward, given dz (the scores' gradient; dz = w (dw - sum_j w_j dw_j) when given dw):
//   dbeta = sum_i dz_i K_i,  dK_i = beta dz_i,  dD_i = dK_i / (P_i + EPS),  dP_i = -dK_i D_i / (P_i + EPS)^2
//   dk  = sum_i dD_i M_i + (sum_i dP_i norm(M_i)) k / norm(k)
//   dM_i = sum_h [dD_hi k_h + dP_hi norm(k_h) M_i / norm(M_i)]
//
// The scores come from primitives/rowtile.wgsl (`content_scores`), which this file imports:
// `bwd_rows` works on the same row tiles, reading each memory row once per group of HG heads.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl) and
// primitives/rowtile.wgsl.


var<workgroup> red: array<f32, 512>;   // TR * HG * 2

@group(0) @binding(4) var<storage, read> dz: array<f32>;
@group(0) @binding(5) var<storage, read_write> coef_d: array<f32>;  // dD_hi
@group(0) @binding(6) var<storage, read_write> coef_m: array<f32>;  // dP_hi norm(k_h) / norm(M_i)
@group(0) @binding(7) var<storage, read_write> part: array<f32>;    // per (b,h,blk): sum dP norm(M), sum dz K

@compute @workgroup_size(TR)
fn bwd_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let un = unit_of(wg, t);
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    let nblk = (N + TR - 1u) / TR;
    let d = tile_dots(un, t);
    let dot = d.dot;
    let ksq = d.ksq;
    let msq = d.msq;
    let nm = sqrt(msq + EPS);
    for (var hh = 0u; hh < HG; hh += 1u) {
        var sp = 0.0;
        var sb = 0.0;
        if hh < un.nh && un.i < N {
            let bh = un.b * H + un.h0 + hh;
            let nk = sqrt(ksq[hh] + EPS);
            let P = nk * nm + EPS;
            let D = dot[hh];
            let K = D / P;
            let g = dz[bh * N + un.i - p.base0.w];
            let dK = beta[bh - p.base0.z] * g;
            let dD = dK / P;
            let dP = -dK * D / (P * P);
            coef_d[bh * N + un.i - p.base1.x] = dD;
            coef_m[bh * N + un.i - p.base1.y] = dP * nk / nm;
            sp = dP * nm;
            sb = g * K;
        }
        red[(hh * TR + t) * 2u] = sp;
        red[(hh * TR + t) * 2u + 1u] = sb;
    }
    // Fixed-order tree sums over the tile's rows: same bits every run.
    for (var stride = TR / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if t < stride {
            // Absent heads' slots hold zeros that no one reads: only the present heads sum.
            for (var hh = 0u; hh < un.nh; hh += 1u) {
                let a = (hh * TR + t) * 2u;
                let o = (hh * TR + t + stride) * 2u;
                red[a] += red[o];
                red[a + 1u] += red[o + 1u];
            }
        }
    }
    workgroupBarrier();
    if t < un.nh {
        let bh = un.b * H + un.h0 + t;
        let o = (bh * nblk + un.blk) * 2u - p.base1.z;
        part[o] = red[t * TR * 2u];
        part[o + 1u] = red[t * TR * 2u + 1u];
    }
}

@group(0) @binding(1) var<storage, read> m_in: array<MemV>;   // f32 or f16
@group(0) @binding(2) var<storage, read> keys_in: array<V>;
@group(0) @binding(3) var<storage, read> cd_in: array<f32>;
@group(0) @binding(4) var<storage, read> cm_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> dmem: array<DMemV>; // f32 or f16

fn bwd_mem_value(el: Element) -> V {
    let m = m_in_ld(el.e - p.base0.x / LANES);
    var acc = V(0.0);
    for (var h = 0u; h < heads(); h += 1u) {
        acc += cd_in[head_row(el, h) - p.base0.z] * keys_in[head_col(el, h) - p.base0.y / LANES]
             + cm_in[head_row(el, h) - p.base0.w] * m;
    }
    if ACC {
        acc += dmem_ld(el.e - p.base1.x / LANES);
    }
    return acc;
}

// dM_ij (+)= sum_h [dD_hi k_hj + (dP_hi norm(k_h) / norm(M_i)) M_ij], any head count: a
// thread per V of EW_ROWS rows, or per packed word (WORDS); added to the output when
// specialised with ACC.
@compute @workgroup_size(WG)
fn bwd_mem_any(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let q = ew_item(wg, t, k);
        if !q.a.ok {
            continue;
        }
        var v1 = V(0.0);
        if q.b.ok {
            v1 = bwd_mem_value(q.b);
        }
        dmem_st2(q.a.e - p.base1.x / LANES, bwd_mem_value(q.a), v1, q.b.ok);
    }
}

// A row's memory V and, with ACC, the output's V there (to add to).
struct RowLoads {
    m: V,
    old: V,
}

fn row_load(el: Element) -> RowLoads {
    var r: RowLoads;
    r.m = V(0.0);
    r.old = V(0.0);
    if el.ok {
        r.m = m_in_ld(el.e - p.base0.x / LANES);
        if ACC {
            r.old = dmem_ld(el.e - p.base1.x / LANES);
        }
    }
    return r;
}

// bwd_mem_value's operations, in its order, from the column's key vectors and the row's loads.
fn dm_store(el: Element, r: RowLoads, ks: HeadVs) {
    if el.ok {
        var acc = V(0.0);
        for (var h = 0u; h < heads(); h += 1u) {
            acc += cd_in[head_row(el, h) - p.base0.z] * head_v(ks, h)
                 + cm_in[head_row(el, h) - p.base0.w] * r.m;
        }
        if ACC {
            acc += r.old;
        }
        dmem_st(el.e - p.base1.x / LANES, acc);
    }
}

// The column's key vectors at a thread's first element, for all its rows.
fn keys_at(first: Element) -> HeadVs {
    var ks: HeadVs;
    for (var h = 0u; h < heads(); h += 1u) {
        set_head_v(&ks, h, keys_in[head_col(first, h) - p.base0.y / LANES]);
    }
    return ks;
}

// As bwd_mem_any, specialised for heads() <= HG heads and EW_ROWS > 1 rows per thread (no
// packed words): a thread per V of EW_ROWS rows of one batch element loads its column's key
// vectors once, for all its rows, row by row.
@compute @workgroup_size(WG)
fn bwd_mem(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return; // no row of this thread is (rows only grow with k)
    }
    let ks = keys_at(first);
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let el = element(wg, t, k);
        if el.ok {
            dm_store(el, row_load(el), ks);
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
    let ks = keys_at(first);
    for (var k = 0u; k < EW_ROWS; k += ROW_GROUP) {
        let r0 = ew_row(wg, t, k, 0u);
        let r1 = ew_row(wg, t, k, 1u);
        let r2 = ew_row(wg, t, k, 2u);
        let r3 = ew_row(wg, t, k, 3u);
        let m0 = row_load(r0);
        let m1 = row_load(r1);
        let m2 = row_load(r2);
        let m3 = row_load(r3);
        dm_store(r0, m0, ks);
        dm_store(r1, m1, ks);
        dm_store(r2, m2, ks);
        dm_store(r3, m3, ks);
    }
}

@group(0) @binding(1) var<storage, read> fk_keys: array<f32>;
@group(0) @binding(2) var<storage, read> fk_read: array<f32>;   // sum_i dD_hi M_i, [B,H,W]
@group(0) @binding(3) var<storage, read> fk_sums: array<f32>;   // [B*H, 2]: sum dP norm(M), sum dz K
@group(0) @binding(4) var<storage, read_write> dkeys: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;

var<workgroup> ksum: array<f32, 64>;

// One workgroup per (b, h): dk = sum_i dD_i M_i + (sum_i dP_i norm(M_i)) k / norm(k); dbeta = sum_i dz_i K_i.
@compute @workgroup_size(64)
fn bwd_finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let W = p.dims.w;
    var s = 0.0;
    for (var j = t; j < W; j += 64u) {
        let k = fk_keys[u * W + j];
        s += k * k;
    }
    ksum[t] = s;
    for (var stride = 32u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if t < stride {
            ksum[t] += ksum[t + stride];
        }
    }
    workgroupBarrier();
    let nk = sqrt(ksum[0] + EPS);
    let sp = fk_sums[u * 2u];
    for (var j = t; j < W; j += 64u) {
        dkeys[u * W + j] = fk_read[u * W + j] + sp * fk_keys[u * W + j] / nk;
    }
    if t == 0u {
        dbeta[u] = fk_sums[u * 2u + 1u];
    }
}
