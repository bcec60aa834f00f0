// Soft write (all erases, then all adds, as in the NTM paper), per batch b:
//   M'(i,j) = M(i,j) prod_h (1 - w_h(i) e_h(j)) + sum_h w_h(i) a_h(j)
// Backward, given dM', with Q_h(i,j) = prod_{h' != h} (1 - w_h'(i) e_h'(j)) formed as a product
// that skips h (heads before and after it, never a division, so erase = 1 with one-hot weights
// stays finite):
//   dM(i,j)  = dM'(i,j) prod_h (1 - w_h(i) e_h(j))
//   dw_h(i)  = sum_j dM'(i,j) (a_h(j) - M(i,j) e_h(j) Q_h(i,j))
//   de_h(j)  = -sum_i dM'(i,j) M(i,j) w_h(i) Q_h(i,j)
//   da_h(j)  = sum_i dM'(i,j) w_h(i)
// The heads' gradients come from `bwd_heads` (below: rows streamed as coalesced V's, for rows
// of up to WG V's), or for wider rows from `bwd_dw`, on row tiles (as primitives/rowtile.wgsl,
// staging dM' beside M): each thread takes a row for dw, then a (column, head) of the same
// staged tiles for the tile's partial sums of de and da. Both leave de and da as per-block
// partials side by side, [B, blocks, H, 2, W] (one binding for both), which
// primitives/colsum.wgsl's `combine` sums, one quantity at a time. So the backward reads M once
// and dM' once (with one head group `bwd_heads` stores dM too, in place or into its own
// output) or twice (here, and for dM in `bwd_mem`/`bwd_mem_inplace`).
// Memory-shaped bindings may be f32 or f16 (slots MemV/MemS, GradV/GradS, DMemV): values are
// read as f32 and rounded once on store. With WORDS the elementwise kernels take a packed word
// (two elements) per thread (prelude: ew_item), so each thread stores whole words.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).


const TC: u32 = 16u;
const TS: u32 = 17u;

@group(0) @binding(1) var<storage, read_write> fmem: array<MemV>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fe: array<V>;
@group(0) @binding(4) var<storage, read> fa: array<V>;

// M' at one element's V (any head count).
fn fwd_value(el: Element) -> V {
    var keep = V(1.0);
    var add = V(0.0);
    for (var h = 0u; h < heads(); h += 1u) {
        let wv = fw[head_row(el, h) - p.base0.y];
        keep *= 1.0 - wv * fe[head_col(el, h)];
        add += wv * fa[head_col(el, h)];
    }
    return fmem_ld(el.e - p.base0.x / LANES) * keep + add;
}

// In place, for any head count: a thread per V of EW_ROWS rows, or per packed word.
@compute @workgroup_size(WG)
fn fwd_any(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let q = ew_item(wg, t, k);
        if !q.a.ok {
            continue;
        }
        var v1 = V(0.0);
        if q.b.ok {
            v1 = fwd_value(q.b);
        }
        fmem_st2(q.a.e - p.base0.x / LANES, fwd_value(q.a), v1, q.b.ok);
    }
}

// The factors of M' = M keep + add at one element's V, from its column's erase and add
// vectors e and a (heads() <= HG): the operations of fwd_value, in its order.
struct KeepAdd {
    keep: V,
    add: V,
}

fn keep_add_at(el: Element, e: HeadVs, a: HeadVs) -> KeepAdd {
    var f = KeepAdd(V(1.0), V(0.0));
    for (var h = 0u; h < heads(); h += 1u) {
        let wv = fw[head_row(el, h) - p.base0.y];
        f.keep *= 1.0 - wv * head_v(e, h);
        f.add += wv * head_v(a, h);
    }
    return f;
}

fn fwd_load(el: Element) -> V {
    if el.ok {
        return fmem_ld(el.e - p.base0.x / LANES);
    }
    return V(0.0);
}

fn fwd_store(el: Element, m: V, e: HeadVs, a: HeadVs) {
    if el.ok {
        let f = keep_add_at(el, e, a);
        fmem_st(el.e - p.base0.x / LANES, m * f.keep + f.add);
    }
}

// The column's erase and add vectors at a thread's first element, for all its rows.
struct EraseAdd {
    e: HeadVs,
    a: HeadVs,
}

fn erase_add_of(first: Element) -> EraseAdd {
    var e: HeadVs;
    var a: HeadVs;
    for (var h = 0u; h < heads(); h += 1u) {
        set_head_v(&e, h, fe[head_col(first, h)]);
        set_head_v(&a, h, fa[head_col(first, h)]);
    }
    return EraseAdd(e, a);
}

// In place, specialised for heads() <= HG heads and EW_ROWS > 1 rows per thread (no packed
// words), row by row (CPU adapters, Gpu::elementwise_row_group 1): a thread per V of EW_ROWS
// rows of one batch element loads its column's erase and add vectors once, for all its rows.
// Each row's load follows its factors, in a loop of its own: on lavapipe this form was 1.2x
// faster at H = 4 than the grouped loop's at one row (its later rows folded away), or than
// loading first.
@compute @workgroup_size(WG)
fn fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return; // no row of this thread is (rows only grow with k)
    }
    let ea = erase_add_of(first);
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let el = element(wg, t, k);
        if el.ok {
            let f = keep_add_at(el, ea.e, ea.a);
            let at = el.e - p.base0.x / LANES;
            fmem_st(at, fmem_ld(at) * f.keep + f.add);
        }
    }
}

// As fwd, loading each group of ROW_GROUP (2 to 4, Gpu::elementwise_row_group) rows before
// storing any (GPUs: a store may alias a later row's load, in place, so the compiler keeps
// that load behind it; grouped, a thread has the copy kernel's four loads in flight).
@compute @workgroup_size(WG)
fn fwd_groups(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return;
    }
    let ea = erase_add_of(first);
    for (var k = 0u; k < EW_ROWS; k += ROW_GROUP) {
        let r0 = ew_row(wg, t, k, 0u);
        let r1 = ew_row(wg, t, k, 1u);
        let r2 = ew_row(wg, t, k, 2u);
        let r3 = ew_row(wg, t, k, 3u);
        let m0 = fwd_load(r0);
        let m1 = fwd_load(r1);
        let m2 = fwd_load(r2);
        let m3 = fwd_load(r3);
        fwd_store(r0, m0, ea.e, ea.a);
        fwd_store(r1, m1, ea.e, ea.a);
        fwd_store(r2, m2, ea.e, ea.a);
        fwd_store(r3, m3, ea.e, ea.a);
    }
}

@group(0) @binding(1) var<storage, read> mw: array<f32>;
@group(0) @binding(2) var<storage, read> me: array<V>;
@group(0) @binding(3) var<storage, read> mgrad: array<GradV>;
@group(0) @binding(4) var<storage, read_write> mdm: array<MemV>;

// prod_h (1 - w_h(i) e_h(j)) for an element's V, any head count (bwd_mem_any and
// bwd_mem_inplace_any).
fn keep_of(el: Element) -> V {
    var keep = V(1.0);
    for (var h = 0u; h < heads(); h += 1u) {
        keep *= 1.0 - mw[head_row(el, h) - p.base0.x] * me[head_col(el, h)];
    }
    return keep;
}

// The erase vectors of the heads() heads (at most HG) at the column of el.
fn erase_at(el: Element) -> HeadVs {
    var e: HeadVs;
    for (var h = 0u; h < heads(); h += 1u) {
        set_head_v(&e, h, me[head_col(el, h)]);
    }
    return e;
}

// prod_h (1 - w_h(i) e_h(j)) for an element's V, from its column's erase vectors (heads()
// <= HG), in keep_of's order.
fn keep_at(el: Element, e: HeadVs) -> V {
    var keep = V(1.0);
    for (var h = 0u; h < heads(); h += 1u) {
        keep *= 1.0 - mw[head_row(el, h) - p.base0.x] * head_v(e, h);
    }
    return keep;
}

fn bwd_mem_value(el: Element) -> V {
    return mgrad_ld(el.e - p.base0.z / LANES) * keep_of(el);
}

// dM = dM' prod_h (1 - w_h e_h) into a new tensor (the memory's dtype), any head count: a
// thread per V of EW_ROWS rows, or per packed word.
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
        mdm_st2(q.a.e - p.base0.w / LANES, bwd_mem_value(q.a), v1, q.b.ok);
    }
}

fn grad_load(el: Element) -> V {
    if el.ok {
        return mgrad_ld(el.e - p.base0.z / LANES);
    }
    return V(0.0);
}

fn dm_store(el: Element, g: V, e: HeadVs) {
    if el.ok {
        mdm_st(el.e - p.base0.w / LANES, g * keep_at(el, e));
    }
}

// As bwd_mem_any, specialised for heads() <= HG heads and EW_ROWS > 1 (no packed words), as
// fwd: the column's erase vectors loaded once for all the thread's rows, row by row.
@compute @workgroup_size(WG)
fn bwd_mem(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return;
    }
    let e = erase_at(first);
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let el = element(wg, t, k);
        if el.ok {
            dm_store(el, grad_load(el), e);
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
    let e = erase_at(first);
    for (var k = 0u; k < EW_ROWS; k += ROW_GROUP) {
        let r0 = ew_row(wg, t, k, 0u);
        let r1 = ew_row(wg, t, k, 1u);
        let r2 = ew_row(wg, t, k, 2u);
        let r3 = ew_row(wg, t, k, 3u);
        let g0 = grad_load(r0);
        let g1 = grad_load(r1);
        let g2 = grad_load(r2);
        let g3 = grad_load(r3);
        dm_store(r0, g0, e);
        dm_store(r1, g1, e);
        dm_store(r2, g2, e);
        dm_store(r3, g3, e);
    }
}

@group(0) @binding(3) var<storage, read_write> idm: array<GradV>;

fn inplace_value(el: Element) -> V {
    return idm_ld(el.e - p.base0.z / LANES) * keep_of(el);
}

// In place: dM' becomes dM = dM' prod_h (1 - w_h e_h) (the accumulating backward, after the
// kernels that read dM'; it keeps dM's dtype), any head count: a thread per V of EW_ROWS
// rows, or per packed word.
@compute @workgroup_size(WG)
fn bwd_mem_inplace_any(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let q = ew_item(wg, t, k);
        if !q.a.ok {
            continue;
        }
        var v1 = V(0.0);
        if q.b.ok {
            v1 = inplace_value(q.b);
        }
        idm_st2(q.a.e - p.base0.z / LANES, inplace_value(q.a), v1, q.b.ok);
    }
}

fn inplace_load(el: Element) -> V {
    if el.ok {
        return idm_ld(el.e - p.base0.z / LANES);
    }
    return V(0.0);
}

fn inplace_store(el: Element, g: V, e: HeadVs) {
    if el.ok {
        idm_st(el.e - p.base0.z / LANES, g * keep_at(el, e));
    }
}

// As bwd_mem_inplace_any, specialised for heads() <= HG heads and EW_ROWS > 1, as fwd (row by
// row).
@compute @workgroup_size(WG)
fn bwd_mem_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return;
    }
    let e = erase_at(first);
    for (var k = 0u; k < EW_ROWS; k += 1u) {
        let el = element(wg, t, k);
        if el.ok {
            inplace_store(el, inplace_load(el), e);
        }
    }
}

// As bwd_mem_inplace, loading each group of ROW_GROUP rows (2 to 4, Gpu::elementwise_row_group)
// before storing any (GPUs: a store may alias a later row's load, so the compiler keeps
// that load behind it; grouped, a thread has the copy kernel's four loads in flight).
@compute @workgroup_size(WG)
fn bwd_mem_inplace_groups(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = element(wg, t, 0u);
    if !first.ok {
        return;
    }
    let e = erase_at(first);
    for (var k = 0u; k < EW_ROWS; k += ROW_GROUP) {
        let r0 = ew_row(wg, t, k, 0u);
        let r1 = ew_row(wg, t, k, 1u);
        let r2 = ew_row(wg, t, k, 2u);
        let r3 = ew_row(wg, t, k, 3u);
        let g0 = inplace_load(r0);
        let g1 = inplace_load(r1);
        let g2 = inplace_load(r2);
        let g3 = inplace_load(r3);
        inplace_store(r0, g0, e);
        inplace_store(r1, g1, e);
        inplace_store(r2, g2, e);
        inplace_store(r3, g3, e);
    }
}

@group(0) @binding(1) var<storage, read> rmem: array<MemS>;
@group(0) @binding(2) var<storage, read> rw: array<f32>;
@group(0) @binding(3) var<storage, read> re: array<f32>;
@group(0) @binding(4) var<storage, read> ra: array<f32>;
@group(0) @binding(5) var<storage, read> rgrad: array<GradS>;
@group(0) @binding(6) var<storage, read_write> rdw: array<f32>;
@group(0) @binding(7) var<storage, read_write> rpart: array<f32>; // [B, tiles, H, 2, W]: de, da

var<workgroup> tile_m: array<f32, 1088>; // TR * TS
var<workgroup> tile_g: array<f32, 1088>;
var<workgroup> tile_e: array<vec4<f32>, 16>; // TC columns x the HG heads of the group
var<workgroup> tile_a: array<vec4<f32>, 16>;
var<workgroup> tile_w: array<vec4<f32>, 64>; // TR rows x the HG heads' weights

// Product of (1 - w_h(i) e_h(j)) over heads h in [h_lo, h_hi).
fn keep_range(b: u32, i: u32, j: u32, h_lo: u32, h_hi: u32) -> f32 {
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    var q = 1.0;
    for (var h = h_lo; h < h_hi; h += 1u) {
        q *= 1.0 - rw[(b * H + h) * N + i - p.base0.y] * re[(b * H + h) * W + j];
    }
    return q;
}

// Products over the other heads of a group of four, each skipping its own head (no division).
fn skip_products(f: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(f.y * f.z * f.w, f.x * f.z * f.w, f.x * f.y * f.w, f.x * f.y * f.z);
}

// (M, dM') at flat position e of the tile: rows blk*TR.., columns j0...
fn load_mg(b: u32, blk: u32, j0: u32, e: u32) -> vec2<f32> {
    let N = p.dims.z;
    let W = p.dims.w;
    let i = blk * TR + e / TC;
    let j = j0 + e % TC;
    if i < N && j < W {
        let g = (b * N + i) * W + j;
        return vec2<f32>(rmem_ld(g - p.base0.x), rgrad_ld(g - p.base1.x));
    }
    return vec2<f32>(0.0);
}

fn store_mg(e: u32, v: vec2<f32>) {
    let o = (e / TC) * TS + e % TC;
    tile_m[o] = v.x;
    tile_g[o] = v.y;
}

// Per head h of a group of four (in vec4 lanes), w, e, a of absent heads are 0.
fn group_w(b: u32, i: u32, h0: u32, nh: u32) -> vec4<f32> {
    let H = p.dims.y;
    let N = p.dims.z;
    let o = (b * H + h0) * N + i - p.base0.y;
    var v = vec4<f32>(rw[o], 0.0, 0.0, 0.0);
    if nh > 1u {
        v.y = rw[o + N];
    }
    if nh > 2u {
        v.z = rw[o + 2u * N];
    }
    if nh > 3u {
        v.w = rw[o + 3u * N];
    }
    return v;
}

// dw_h(i): one thread per row of a TR-row tile, the HG heads of a unit in vec4 lanes.
@compute @workgroup_size(64)
fn bwd_dw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    let nhg = (H + HG - 1u) / HG;
    let nblk = (N + TR - 1u) / TR;
    let hg = u % nhg;
    let blk = (u / nhg) % nblk;
    let b = (u / nhg) / nblk;
    let h0 = hg * HG;
    let nh = min(HG, H - h0);
    let i = blk * TR + t;
    let row_ok = i < N;
    var wv = vec4<f32>(0.0);
    if row_ok {
        wv = group_w(b, i, h0, nh);
    }
    tile_w[t] = wv;
    var dw = vec4<f32>(0.0);
    for (var j0 = 0u; j0 < W; j0 += TC) {
        // Loads 8 at a time into registers, then stores: all in flight together.
        for (var k = 0u; k < TC; k += 8u) {
            let e = t + k * TR;
            let x0 = load_mg(b, blk, j0, e);
            let x1 = load_mg(b, blk, j0, e + TR);
            let x2 = load_mg(b, blk, j0, e + 2u * TR);
            let x3 = load_mg(b, blk, j0, e + 3u * TR);
            let x4 = load_mg(b, blk, j0, e + 4u * TR);
            let x5 = load_mg(b, blk, j0, e + 5u * TR);
            let x6 = load_mg(b, blk, j0, e + 6u * TR);
            let x7 = load_mg(b, blk, j0, e + 7u * TR);
            store_mg(e, x0);
            store_mg(e + TR, x1);
            store_mg(e + 2u * TR, x2);
            store_mg(e + 3u * TR, x3);
            store_mg(e + 4u * TR, x4);
            store_mg(e + 5u * TR, x5);
            store_mg(e + 6u * TR, x6);
            store_mg(e + 7u * TR, x7);
        }
        if t < TC {
            var ve = vec4<f32>(0.0);
            var va = vec4<f32>(0.0);
            let j = j0 + t;
            if j < W {
                let o = (b * H + h0) * W + j;
                ve.x = re[o];
                va.x = ra[o];
                if nh > 1u {
                    ve.y = re[o + W];
                    va.y = ra[o + W];
                }
                if nh > 2u {
                    ve.z = re[o + 2u * W];
                    va.z = ra[o + 2u * W];
                }
                if nh > 3u {
                    ve.w = re[o + 3u * W];
                    va.w = ra[o + 3u * W];
                }
            }
            tile_e[t] = ve;
            tile_a[t] = va;
        }
        workgroupBarrier();
        if row_ok {
            let c_end = min(TC, W - j0);
            for (var c = 0u; c < c_end; c += 1u) {
                let j = j0 + c;
                let m = tile_m[t * TS + c];
                let g = tile_g[t * TS + c];
                let e4 = tile_e[c];
                // Heads outside this unit's group: prefix and suffix products.
                let outside = keep_range(b, i, j, 0u, h0) * keep_range(b, i, j, h0 + nh, H);
                let q = outside * skip_products(vec4<f32>(1.0) - wv * e4);
                dw += g * (tile_a[c] - m * e4 * q);
            }
        }
        // Column phase on the same staged tiles (TC columns x HG heads = TR threads): thread t
        // sums, over the tile's rows, head hh's terms of column c of de and da.
        let c = t % TC;
        let hh = t / TC;
        let jc = j0 + c;
        if jc < W && hh < nh {
            let e4 = tile_e[c];
            var de = 0.0;
            var da = 0.0;
            let rows = min(TR, N - blk * TR);
            for (var r = 0u; r < rows; r += 1u) {
                let ir = blk * TR + r;
                let w4 = tile_w[r];
                let m = tile_m[r * TS + c];
                let g = tile_g[r * TS + c];
                let outside = keep_range(b, ir, jc, 0u, h0) * keep_range(b, ir, jc, h0 + nh, H);
                let q = outside * skip_products(vec4<f32>(1.0) - w4 * e4);
                de -= g * m * w4[hh] * q[hh];
                da += g * w4[hh];
            }
            let o = ((b * nblk + blk) * H + h0 + hh) * 2u * W + jc - p.base1.z;
            rpart[o] = de;
            rpart[o + W] = da;
        }
        workgroupBarrier();
    }
    if row_ok {
        for (var hh = 0u; hh < HG; hh += 1u) {
            if hh < nh {
                rdw[(b * H + h0 + hh) * N + i - p.base1.y] = dw[hh];
            }
        }
    }
}

// ---- bwd_heads: the heads' gradients in one streaming pass (memory rows up to WG V's) ----
// A unit is (batch b, block of rows, group of HG heads); its WG threads are RL = WG / TW row
// lanes (rounded down) by TW column lanes (p.extra.x = TW: primitives/rowstream.wgsl's
// layout: a row's V's, or with SUB_ROWS a power of two), so each load of a row is one
// coalesced V per thread. Per row a thread forms, for its V of columns and the
// group's heads, f_h = 1 - w_h e_h and Q_h (the product skipping h), and
//   - adds -dM' M w_h Q_h and dM' w_h to its column sums of de_h and da_h (registers, summed
//     over the row lanes at the end of the block into the colsum partial layout);
//   - leaves its part of dw_h(i) = sum_j dM'(a_h - M e_h Q_h) in workgroup memory, where KR
//     rows of every row lane are summed over the column lanes after each barrier;
//   - with ACC (one head group, no packed words), stores dM = dM' prod_h f_h into `sdm`: its
//     own output, or dM' itself (the in-place backward binds dM' there too; the thread that
//     read an element is the one that writes it, after reading it).
// So the heads' gradients read M and dM' once each, and write dM in the same pass. With SUB_ROWS the dw row sums are subgroup shuffles instead (no barrier per
// chunk). Params.extra: x = TW, y = blocks per batch, z = rows per block (a multiple of
// RL * KR where that is at least TR rows).

@group(0) @binding(1) var<storage, read> smem: array<MemV>;
// Binding 2, the weights, is `rw` (declared above for bwd_dw; group_w reads it).
@group(0) @binding(3) var<storage, read> se: array<V>;
@group(0) @binding(4) var<storage, read> sa: array<V>;
// read_write, so that the in-place backward may bind dM' both here and as `sdm` (read_write
// bindings of one buffer may share a dispatch; a read binding may not share one with them).
@group(0) @binding(5) var<storage, read_write> sgrad: array<GradV>;
@group(0) @binding(6) var<storage, read_write> sdw: array<f32>;
@group(0) @binding(7) var<storage, read_write> spart: array<V>; // [B, blocks, H, 2, W]: de, da
@group(0) @binding(8) var<storage, read_write> sdm: array<DMemV>; // f32 or f16

var<workgroup> red_dw: array<vec4<f32>, 512>; // KR * WG partial dw's, the group's heads in lanes
var<workgroup> red_dw1: array<f32, 512>; // ... of a one-head group: its lane alone
var<workgroup> red_col: array<V, 256>; // WG column partials

// prod over the heads outside [h0, h0 + nh) of (1 - w_h(i) e_h(j)) at V column j.
fn keep_outside(b: u32, i: u32, j: u32, h0: u32, nh: u32) -> V {
    let H = p.dims.y;
    let N = p.dims.z;
    let WL = p.dims.w / LANES;
    var q = V(1.0);
    for (var h = 0u; h < H; h += 1u) {
        if h < h0 || h >= h0 + nh {
            q *= 1.0 - rw[(b * H + h) * N + i - p.base0.y] * se[(b * H + h) * WL + j];
        }
    }
    return q;
}

fn pick(v0: V, v1: V, v2: V, v3: V, k: u32) -> V {
    switch k {
        case 0u: {
            return v0;
        }
        case 1u: {
            return v1;
        }
        case 2u: {
            return v2;
        }
        default: {
            return v3;
        }
    }
}

// A thread's constants in bwd_heads: its unit's batch element, head group and block end, its
// column, and the group's erase and add vectors at that column (absent heads 0: factor 1).
struct HeadsCtx {
    b: u32,
    h0: u32,
    nh: u32,
    nhg: u32,
    i_end: u32,
    c: u32,
    col_ok: bool,
    e0: V,
    e1: V,
    e2: V,
    e3: V,
    a0: V,
    a1: V,
    a2: V,
    a3: V,
}

// A thread's column sums of de_h and da_h over its rows.
struct HeadsSums {
    de0: V,
    de1: V,
    de2: V,
    de3: V,
    da0: V,
    da1: V,
    da2: V,
    da3: V,
}

// Row i's loads at a thread's column: M's and dM''s V's and the group's weights (0 where the
// row is past the block or the column past the row: ok false).
struct HeadsRow {
    i: u32,
    ok: bool,
    el: u32,
    m: V,
    g: V,
    wv: vec4<f32>,
}

// Head k of a group's erase (group_vec_e) or add (group_vec_a) vector at offset eo (its first
// head's V at a column of [B, H, W]); 0 for an absent head (k >= nh).
fn group_vec_e(eo: u32, k: u32, nh: u32) -> V {
    return select(V(0.0), se[eo + min(k, nh - 1u) * (p.dims.w / LANES)], k < nh);
}

fn group_vec_a(eo: u32, k: u32, nh: u32) -> V {
    return select(V(0.0), sa[eo + min(k, nh - 1u) * (p.dims.w / LANES)], k < nh);
}

fn heads_row(x: HeadsCtx, i: u32) -> HeadsRow {
    var r: HeadsRow;
    r.i = i;
    r.ok = i < x.i_end && x.col_ok;
    r.el = (x.b * p.dims.z + i) * (p.dims.w / LANES) + x.c;
    r.m = V(0.0);
    r.g = V(0.0);
    r.wv = vec4<f32>(0.0);
    if r.ok {
        r.m = smem_ld(r.el - p.base0.x / LANES);
        r.g = sgrad_ld(r.el - p.base1.x / LANES);
        r.wv = group_w(x.b, i, x.h0, x.nh);
    }
    return r;
}

// Row r's share of dw at the thread's column (the group's heads in lanes; 0 where not ok),
// its terms of the column sums, and with ACC its dM stored (at the element the thread
// loaded).
fn heads_grads(x: HeadsCtx, r: HeadsRow, sums: ptr<function, HeadsSums>) -> vec4<f32> {
    if !r.ok {
        return vec4<f32>(0.0);
    }
    let m = r.m;
    let g = r.g;
    let wv = r.wv;
    let f0 = 1.0 - wv.x * x.e0;
    let f1 = 1.0 - wv.y * x.e1;
    let f2 = 1.0 - wv.z * x.e2;
    let f3 = 1.0 - wv.w * x.e3;
    var out = V(1.0);
    if x.nhg > 1u {
        out = keep_outside(x.b, r.i, x.c, x.h0, x.nh);
    }
    let q0 = out * f1 * f2 * f3;
    let q1 = out * f0 * f2 * f3;
    let q2 = out * f0 * f1 * f3;
    let q3 = out * f0 * f1 * f2;
    let gm = g * m;
    (*sums).de0 -= gm * wv.x * q0;
    (*sums).de1 -= gm * wv.y * q1;
    (*sums).de2 -= gm * wv.z * q2;
    (*sums).de3 -= gm * wv.w * q3;
    (*sums).da0 += g * wv.x;
    (*sums).da1 += g * wv.y;
    (*sums).da2 += g * wv.z;
    (*sums).da3 += g * wv.w;
    if ACC {
        sdm_st(r.el - p.base1.w / LANES, g * (f0 * f1 * f2 * f3));
    }
    return vec4<f32>(
        vsum(g * (x.a0 - m * x.e0 * q0)),
        vsum(g * (x.a1 - m * x.e1 * q1)),
        vsum(g * (x.a2 - m * x.e2 * q2)),
        vsum(g * (x.a3 - m * x.e3 * q3)),
    );
}

// SUB_ROWS: row r's dw, its share s summed over the row's lanes (the present heads' lanes;
// uniform control flow: every lane takes part), stored by the row's first lane.
fn heads_dw(x: HeadsCtx, r: HeadsRow, s: vec4<f32>) {
    let sum = row_lanes_sum_heads(s, x.nh, p.extra.x);
    if x.c == 0u && r.i < x.i_end {
        let N = p.dims.z;
        let o = (x.b * heads() + x.h0) * N + r.i - p.base1.y;
        for (var hh = 0u; hh < x.nh; hh += 1u) {
            sdw[o + hh * N] = sum[hh];
        }
    }
}

// A thread's context at column c (`ok`: c is in the row, and the thread in a row lane): the
// group's erase and add vectors there.
fn heads_at(x: HeadsCtx, c: u32, ok: bool) -> HeadsCtx {
    let H = heads();
    let WL = p.dims.w / LANES;
    var y = x;
    y.c = c;
    y.col_ok = ok;
    let eo = (x.b * H + x.h0) * WL + min(c, WL - 1u);
    y.e0 = group_vec_e(eo, 0u, x.nh);
    y.e1 = group_vec_e(eo, 1u, x.nh);
    y.e2 = group_vec_e(eo, 2u, x.nh);
    y.e3 = group_vec_e(eo, 3u, x.nh);
    y.a0 = group_vec_a(eo, 0u, x.nh);
    y.a1 = group_vec_a(eo, 1u, x.nh);
    y.a2 = group_vec_a(eo, 2u, x.nh);
    y.a3 = group_vec_a(eo, 3u, x.nh);
    return y;
}

// The block's column sums at column c (a thread's sums over its rows): a fixed-order tree
// over the row lanes, per (quantity, head), into the partials. Call in uniform control flow.
fn heads_column_sums(x: HeadsCtx, sums: HeadsSums, blk: u32, r: u32, t: u32) {
    let H = heads();
    let WL = p.dims.w / LANES;
    let tw = p.extra.x;
    let nblk = p.extra.y;
    let rl = WG / tw;
    for (var q = 0u; q < 2u * x.nh; q += 1u) {
        let hh = q / 2u;
        if q % 2u == 0u {
            red_col[t] = pick(sums.de0, sums.de1, sums.de2, sums.de3, hh);
        } else {
            red_col[t] = pick(sums.da0, sums.da1, sums.da2, sums.da3, hh);
        }
        let p2 = pow2_floor(rl);
        if p2 < rl {
            workgroupBarrier();
            if r < rl - p2 {
                red_col[t] += red_col[t + p2 * tw];
            }
        }
        for (var s = p2 / 2u; s > 0u; s = s / 2u) {
            workgroupBarrier();
            if r < s {
                red_col[t] += red_col[t + s * tw];
            }
        }
        workgroupBarrier();
        if r == 0u && x.col_ok {
            // de (q even) then da: the two quantities of the head side by side.
            let o = ((x.b * nblk + blk) * H + x.h0 + hh) * 2u * WL + (q % 2u) * WL + x.c;
            spart[o - p.base1.z / LANES] = red_col[t];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn bwd_heads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    bwd_heads_of(wg, t, false);
}

// bwd_heads with two V's per thread, c and c + TW (as primitives/rowstream.wgsl's
// scores_pairs), taken by the host for one head (with 4, a thread's erase and add vectors and
// column sums for both columns would be 32 V's): one staged dw share per row, the sum of both
// columns'; dM stored at both; a second tree of column sums at the block's end.
@compute @workgroup_size(WG)
fn bwd_heads_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    bwd_heads_of(wg, t, true);
}

// `bwd_heads`, or with `pairs` (a constant at each entry point) `bwd_heads_pairs`.
fn bwd_heads_of(wg: vec3<u32>, t: u32, pairs: bool) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return; // the whole workgroup: no barrier is skipped by part of it
    }
    let H = heads(); // a constant where one group holds every head: absent heads fold away
    let N = p.dims.z;
    let WL = p.dims.w / LANES;
    let tw = p.extra.x;
    let nblk = p.extra.y;
    let rb = p.extra.z;
    let rl = WG / tw;
    var x: HeadsCtx;
    x.nhg = (H + HG - 1u) / HG;
    let hg = u % x.nhg;
    let blk = (u / x.nhg) % nblk;
    x.b = (u / x.nhg) / nblk;
    x.h0 = hg * HG;
    x.nh = min(HG, H - x.h0);
    let r = t / tw;
    // The group's erase and add vectors at this thread's column (absent heads 0: factor 1);
    // the WG % TW threads past the last row lane take no rows.
    x = heads_at(x, t % tw, t % tw < WL && r < rl);
    let z = V(0.0);
    var sums = HeadsSums(z, z, z, z, z, z, z, z);
    var sums2 = sums;
    let i_begin = blk * rb;
    x.i_end = min(i_begin + rb, N);
    // With pairs, the thread's second column (absent past the row: its loads are skipped).
    var x2 = x;
    if pairs {
        x2 = heads_at(x, x.c + tw, x.c + tw < WL && r < rl);
    }
    let nh = x.nh;
    let c = x.c;
    let col_ok = x.col_ok;
    if SUB_ROWS {
        // ROW_GROUP rows per row lane at a time, all loaded (M, dM' and weights) before the
        // first row's shuffles, as primitives/rowstream.wgsl `lane_row`; rows are finished in
        // the row-by-row order (the same bits). No workgroup memory or barrier in the loop.
        for (var c0 = i_begin; c0 < x.i_end; c0 += ROW_GROUP * rl) {
            let rows = stream_group_rows(c0, rl, r, x.i_end);
            let ra = heads_row(x, rows.x);
            let rb1 = heads_row(x, rows.y);
            let rc = heads_row(x, rows.z);
            let rd = heads_row(x, rows.w);
            heads_dw(x, ra, heads_grads(x, ra, &sums));
            if ROW_GROUP > 1u {
                heads_dw(x, rb1, heads_grads(x, rb1, &sums));
            }
            if ROW_GROUP > 2u {
                heads_dw(x, rc, heads_grads(x, rc, &sums));
            }
            if ROW_GROUP > 3u {
                heads_dw(x, rd, heads_grads(x, rd, &sums));
            }
        }
    }
    // Else KR rows per row lane, summed in workgroup memory between two barriers.
    for (var c0 = i_begin; c0 < x.i_end && !SUB_ROWS; c0 += rl * KR) {
        for (var k = 0u; k < KR; k += 1u) {
            let row = heads_row(x, c0 + k * rl + r);
            var share = heads_grads(x, row, &sums);
            if pairs {
                let row2 = heads_row(x2, c0 + k * rl + r);
                share += heads_grads(x2, row2, &sums2);
            }
            if nh == 1u {
                red_dw1[k * WG + stage_slot(r, c, tw)] = share.x;
            } else {
                red_dw[k * WG + stage_slot(r, c, tw)] = share;
            }
        }
        workgroupBarrier();
        // Threads sum rows (k, rl) over the column lanes, in a fixed order (RL * KR rows:
        // more than WG when rows are narrower than KR V's).
        for (var q = t; q < rl * KR; q += WG) {
            let k = q / rl;
            let rr = q % rl;
            let i = c0 + k * rl + rr;
            if i < x.i_end {
                var s = vec4<f32>(0.0);
                for (var cc = 0u; cc < tw; cc += 1u) {
                    if nh == 1u {
                        s.x += red_dw1[k * WG + stage_slot(rr, cc, tw)];
                    } else {
                        s += red_dw[k * WG + stage_slot(rr, cc, tw)];
                    }
                }
                let o = (x.b * H + x.h0) * N + i - p.base1.y;
                for (var hh = 0u; hh < nh; hh += 1u) {
                    sdw[o + hh * N] = s[hh];
                }
            }
        }
        workgroupBarrier();
    }
    // The block's column sums: a fixed-order tree over the row lanes, per (quantity, head)
    // (with pairs, a second one for the second columns).
    heads_column_sums(x, sums, blk, r, t);
    if pairs {
        heads_column_sums(x2, sums2, blk, r, t);
    }
}
