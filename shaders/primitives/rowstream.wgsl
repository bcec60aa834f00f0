// Streaming row dots: the memory rows against a few vectors per head, for rows of up to WG V's
// (any NTM's width), with every load a coalesced V.
//   dots:   out[b,h,i] = V_h . M_i                                          (soft read's dw)
//   read_bwd: dots, and beside them the soft read's dM from the same V's (one head group)
//   scores: out[b,h,i] = z = beta_h V_h.M_i / (norm(V_h) norm(M_i) + EPS)   (V = keys),
//           and the block's softmax pairs (max_i z, sum_i exp(z - max)) per head, combined
//           afterwards by primitives/rowstat.wgsl, so content addressing reads the memory once
// with norm(x) = sqrt(sum_j x_j^2 + EPS).
// A unit is (batch b, block of rows, group of HG heads); its WG threads are RL = WG / TW row
// lanes (rounded down: the WG % TW threads past them take no rows) by TW column lanes: TW is
// the row's V's where the rows are summed in workgroup memory (no idle column lane: W = 20
// takes 5 of 5 where a power of two took 5 of 8), else (SUB_ROWS) the narrowest power of two
// holding them, as the butterflies need. The `_pairs` entry points (scores, dots, read_bwd,
// content_bwd; write.wgsl's bwd_heads) give each thread two V's of a row, c and c + TW, with
// TW half the row's V's rounded up: one share per thread and row of their sum (the host picks
// them: StreamLayout::new with a Pairs rule). Trees over the row lanes first add the lanes
// past the largest power of two (pow2_floor) into the first ones. Each thread leaves, for KR
// rows of its row lane, its V's share of the dots (a vec4 of the group's heads; a one-head group's
// dot alone, a quarter of the bytes) and of |M_i|^2 in workgroup memory (at the prelude's
// stage_slot: columns swizzled by row against bank conflicts); after a barrier the rows are
// summed over the column lanes in a fixed order (the same bits every run). With
// SUB_ROWS (a row's TW lanes lie within one subgroup) each row's shares are summed instead by
// a butterfly of subgroup shuffles, which leaves the sums in every lane of the row, in a fixed
// order: the chunk loops then need no workgroup memory and no barrier, and each thread loads
// ROW_GROUP rows before summing any (lane_row).
// Where one group holds every head the kernels are specialised for the head count (heads()),
// so a thread computes the dots of the present heads only.
// Params.extra: x = TW, y = blocks per batch, z = rows per block (a multiple of RL * KR where
// that is at least TR rows).
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

@group(0) @binding(1) var<storage, read> smem: array<MemV>; // f32 or f16
@group(0) @binding(2) var<storage, read> svec: array<V>;    // [B, H, W]

var<workgroup> red_dot: array<vec4<f32>, 512>; // KR * WG: the group's heads in lanes
var<workgroup> red_sq: array<f32, 512>;
var<workgroup> red_dot1: array<f32, 512>; // KR * WG: the dots of a one-head group

struct Lane {
    b: u32,
    blk: u32,
    h0: u32,
    nh: u32,
    c: u32,
    r: u32,
    rl: u32,
    col_ok: bool,
    i_begin: u32,
    i_end: u32,
}

fn lane_of(u: u32, t: u32) -> Lane {
    let H = heads();
    let N = p.dims.z;
    let tw = p.extra.x;
    let nblk = p.extra.y;
    let rb = p.extra.z;
    let nhg = (H + HG - 1u) / HG;
    var ln: Lane;
    ln.blk = (u / nhg) % nblk;
    ln.b = (u / nhg) / nblk;
    ln.h0 = (u % nhg) * HG;
    ln.nh = min(HG, H - ln.h0);
    ln.c = t % tw;
    ln.r = t / tw;
    ln.rl = WG / tw;
    ln.col_ok = ln.c < p.dims.w / LANES && ln.r < ln.rl;
    ln.i_begin = ln.blk * rb;
    ln.i_end = min(ln.i_begin + rb, N);
    return ln;
}

// The group's vectors at this thread's column (absent heads 0).
struct Vecs {
    v0: V,
    v1: V,
    v2: V,
    v3: V,
}

fn no_vecs() -> Vecs {
    return Vecs(V(0.0), V(0.0), V(0.0), V(0.0));
}

fn vecs_of(ln: Lane) -> Vecs {
    let H = heads();
    let WL = p.dims.w / LANES;
    let o = (ln.b * H + ln.h0) * WL + min(ln.c, WL - 1u);
    var vs: Vecs;
    vs.v0 = svec[o];
    vs.v1 = V(0.0);
    vs.v2 = V(0.0);
    vs.v3 = V(0.0);
    if ln.nh > 1u {
        vs.v1 = svec[o + WL];
    }
    if ln.nh > 2u {
        vs.v2 = svec[o + 2u * WL];
    }
    if ln.nh > 3u {
        vs.v3 = svec[o + 3u * WL];
    }
    if !ln.col_ok {
        vs.v0 = V(0.0);
        vs.v1 = V(0.0);
        vs.v2 = V(0.0);
        vs.v3 = V(0.0);
    }
    return vs;
}

// Row i's V at this thread's column (0 past the block or the row).
fn row_v(ln: Lane, i: u32) -> V {
    if i < ln.i_end && ln.col_ok {
        return smem_ld((ln.b * p.dims.z + i) * (p.dims.w / LANES) + ln.c - p.base0.x / LANES);
    }
    return V(0.0);
}

// Row i's V at this thread's column (0 past the block or the row), and this thread's shares
// of its dots with the group's vectors and of |M_i|^2.
struct LaneRow {
    m: V,
    dot: vec4<f32>,
    sq: f32,
}

// The shares of row i from its V m (row_v).
fn share_of(ln: Lane, vs: Vecs, i: u32, m: V) -> LaneRow {
    var lr: LaneRow;
    lr.m = V(0.0);
    lr.dot = vec4<f32>(0.0);
    lr.sq = 0.0;
    if i < ln.i_end && ln.col_ok {
        lr.m = m;
        // Only the group's heads: with heads() specialised the count is a constant.
        lr.dot = vec4<f32>(vsum(m * vs.v0), 0.0, 0.0, 0.0);
        if ln.nh > 1u {
            lr.dot.y = vsum(m * vs.v1);
        }
        if ln.nh > 2u {
            lr.dot.z = vsum(m * vs.v2);
        }
        if ln.nh > 3u {
            lr.dot.w = vsum(m * vs.v3);
        }
        lr.sq = vsum(m * m);
    }
    return lr;
}

fn lane_share(ln: Lane, vs: Vecs, i: u32) -> LaneRow {
    return share_of(ln, vs, i, row_v(ln, i));
}

// This thread's shares of the chunk's rows c0 + k RL + r, k < KR: dots and |M_i|^2 into
// workgroup memory; returns the rows' V's (0 past the block), for kernels that use them again.
fn stage_chunk(ln: Lane, vs: Vecs, c0: u32, t: u32) -> array<V, KR> {
    var ms: array<V, KR>;
    for (var k = 0u; k < KR; k += 1u) {
        let lr = lane_share(ln, vs, c0 + k * ln.rl + ln.r);
        ms[k] = lr.m;
        stage_share(ln, k, lr);
    }
    return ms;
}

// This thread's share of the chunk's k-th row of its row lane, into workgroup memory.
fn stage_share(ln: Lane, k: u32, lr: LaneRow) {
    let slot = k * WG + stage_slot(ln.r, ln.c, p.extra.x);
    // A one-head group stages its dot alone: a quarter of the bytes of the vec4.
    if ln.nh == 1u {
        red_dot1[slot] = lr.dot.x;
    } else {
        red_dot[slot] = lr.dot;
    }
    red_sq[slot] = lr.sq;
}

// scores_pairs: this thread's second column lane, TW V's after its first (absent past the
// row: its loads are skipped and its vectors are 0).
fn second_lane(ln: Lane) -> Lane {
    var l2 = ln;
    l2.c = ln.c + p.extra.x;
    l2.col_ok = l2.c < p.dims.w / LANES && ln.r < ln.rl;
    return l2;
}

// The group's vectors at the second column where `pairs` (0 otherwise: they add nothing).
fn second_vecs(l2: Lane, pairs: bool) -> Vecs {
    if pairs {
        return vecs_of(l2);
    }
    return no_vecs();
}

// The rows' V's a thread staged at each of its two columns (content_bwd_pairs uses them
// again).
struct PairMs {
    a: array<V, KR>,
    b: array<V, KR>,
}

// The `_pairs` kernels: as stage_chunk, with each share the sum of the thread's two V's (the
// first column's, then the second's).
fn stage_pairs(ln: Lane, l2: Lane, vs: Vecs, vs2: Vecs, c0: u32) -> PairMs {
    var ms: PairMs;
    for (var k = 0u; k < KR; k += 1u) {
        let i = c0 + k * ln.rl + ln.r;
        var lr = lane_share(ln, vs, i);
        let b = lane_share(l2, vs2, i);
        ms.a[k] = lr.m;
        ms.b[k] = b.m;
        lr.dot += b.dot;
        lr.sq += b.sq;
        stage_share(ln, k, lr);
    }
    return ms;
}

// |V_h|^2 of the group's vectors, once per workgroup: the column lanes' shares (threads
// t < TW hold every column once; with scores_pairs, `vs2` their second columns, else 0),
// summed in a fixed order. Call in uniform control flow.
fn vec_sq_norms(vs: Vecs, vs2: Vecs, t: u32) -> vec4<f32> {
    if t < p.extra.x {
        red_dot[t] = vec4<f32>(vsum(vs.v0 * vs.v0), vsum(vs.v1 * vs.v1), vsum(vs.v2 * vs.v2), vsum(vs.v3 * vs.v3))
            + vec4<f32>(vsum(vs2.v0 * vs2.v0), vsum(vs2.v1 * vs2.v1), vsum(vs2.v2 * vs2.v2), vsum(vs2.v3 * vs2.v3));
    }
    workgroupBarrier();
    var ksq = vec4<f32>(0.0);
    for (var cc = 0u; cc < p.extra.x; cc += 1u) {
        ksq += red_dot[cc];
    }
    workgroupBarrier();
    return ksq;
}

// A group's rows (prelude: stream_group_rows) and their V's at this thread's column, loaded
// together.
struct GroupVs {
    rows: vec4<u32>,
    ma: V,
    mb: V,
    mc: V,
    md: V,
}

fn group_vs(ln: Lane, i0: u32) -> GroupVs {
    let rows = stream_group_rows(i0, ln.rl, ln.r, ln.i_end);
    return GroupVs(rows, row_v(ln, rows.x), row_v(ln, rows.y), row_v(ln, rows.z), row_v(ln, rows.w));
}

// SUB_ROWS: the shares of row i from its V m, with the present heads' dots (and, where
// `with_sq`, |M_i|^2) summed over the row's lanes (in every lane; prelude: row_lanes_sum).
// Call in uniform control flow, with a constant `with_sq`.
//
// The SUB_ROWS loops take ROW_GROUP (1 to 4, `Gpu::stream_row_group`) rows per row lane at a
// time and load all of them before the first row's shuffles: with 4 a thread has four loads in
// flight (as colsum's partial), where row by row each load waits behind the previous row's
// butterfly. Rows are finished in the row-by-row order whatever the group, so every sum keeps
// its order (the same bits). A group's rows past ROW_GROUP are past the block:
// their loads are skipped, and their finishing calls fold away.
fn lane_row(ln: Lane, vs: Vecs, i: u32, m: V, with_sq: bool) -> LaneRow {
    var lr = share_of(ln, vs, i, m);
    lr.dot = row_lanes_sum_heads(lr.dot, ln.nh, p.extra.x);
    if with_sq {
        lr.sq = row_lanes_sum(lr.sq, p.extra.x);
    }
    return lr;
}

// Row slot x of the chunk (k = x / RL, row lane x % RL), summed over the column lanes.
struct RowSum {
    i: u32,
    dot: vec4<f32>,
    sq: f32,
}

fn row_sum(ln: Lane, c0: u32, x: u32) -> RowSum {
    let tw = p.extra.x;
    let k = x / ln.rl;
    let rr = x % ln.rl;
    var s: RowSum;
    s.i = c0 + k * ln.rl + rr;
    s.dot = vec4<f32>(0.0);
    s.sq = 0.0;
    for (var cc = 0u; cc < tw; cc += 1u) {
        let slot = k * WG + stage_slot(rr, cc, tw);
        if ln.nh == 1u {
            s.dot.x += red_dot1[slot];
        } else {
            s.dot += red_dot[slot];
        }
        s.sq += red_sq[slot];
    }
    return s;
}

@group(0) @binding(3) var<storage, read_write> dots_out: array<f32>; // [B, H, N]

// The staged chunk's rows (at c0) summed over the column lanes: thread x < RL * KR stores row
// x's dots. Between barriers.
fn store_chunk_dots(ln: Lane, c0: u32, t: u32) {
    for (var x = t; x < ln.rl * KR; x += WG) {
        let s = row_sum(ln, c0, x);
        if s.i < ln.i_end {
            for (var hh = 0u; hh < ln.nh; hh += 1u) {
                dots_out[(ln.b * heads() + ln.h0 + hh) * p.dims.z + s.i - p.base0.z] = s.dot[hh];
            }
        }
    }
}

// SUB_ROWS: row i's dots from its first lane.
fn store_dots(ln: Lane, i: u32, lr: LaneRow) {
    if ln.c == 0u && i < ln.i_end {
        for (var hh = 0u; hh < ln.nh; hh += 1u) {
            dots_out[(ln.b * heads() + ln.h0 + hh) * p.dims.z + i - p.base0.z] = lr.dot[hh];
        }
    }
}

@compute @workgroup_size(WG)
fn dots(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    dots_of(wg, t, false);
}

// dots with two V's per thread (as scores_pairs).
@compute @workgroup_size(WG)
fn dots_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    dots_of(wg, t, true);
}

// `dots`, or with `pairs` (a constant at each entry point) `dots_pairs`.
fn dots_of(wg: vec3<u32>, t: u32, pairs: bool) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return; // the whole workgroup: no barrier is skipped by part of it
    }
    let ln = lane_of(u, t);
    let vs = vecs_of(ln);
    let l2 = second_lane(ln);
    let vs2 = second_vecs(l2, pairs);
    if SUB_ROWS {
        // ROW_GROUP rows per row lane at a time (lane_row); each row's first lane stores its
        // dots.
        for (var i0 = ln.i_begin; i0 < ln.i_end; i0 += ROW_GROUP * ln.rl) {
            let g = group_vs(ln, i0);
            store_dots(ln, g.rows.x, lane_row(ln, vs, g.rows.x, g.ma, false));
            if ROW_GROUP > 1u {
                store_dots(ln, g.rows.y, lane_row(ln, vs, g.rows.y, g.mb, false));
            }
            if ROW_GROUP > 2u {
                store_dots(ln, g.rows.z, lane_row(ln, vs, g.rows.z, g.mc, false));
            }
            if ROW_GROUP > 3u {
                store_dots(ln, g.rows.w, lane_row(ln, vs, g.rows.w, g.md, false));
            }
        }
        return;
    }
    for (var c0 = ln.i_begin; c0 < ln.i_end; c0 += ln.rl * KR) {
        if pairs {
            _ = stage_pairs(ln, l2, vs, vs2, c0);
        } else {
            _ = stage_chunk(ln, vs, c0, t);
        }
        workgroupBarrier();
        store_chunk_dots(ln, c0, t);
        workgroupBarrier();
    }
}

// ---- read_bwd: the soft read's backward in one pass (shapes with one head group) ----
// dots (dw_h(i) = dr_h . M_i, with V = dr), and beside each row's dots its memory gradient
//   dM(i, j) (+)= sum_h w_h(i) dr_h(j)          (read.wgsl bwd_mem's operations, head order)
// from the dr vectors the thread holds for its column: the pass that reads M writes dM, where
// `dots` and read.wgsl's `bwd_mem` take a pass each. With ACC the stored gradient is loaded
// with the row (dm_old's role) and added.
@group(0) @binding(4) var<storage, read> rb_w: array<f32>;             // [B, H, N]
@group(0) @binding(5) var<storage, read_write> rb_dmem: array<DMemV>;  // [B, N, W], f32 or f16

// With ACC, the stored gradient at row i's V of this thread's column (0 past the block or the
// row); else 0, unused.
fn read_old(ln: Lane, i: u32) -> V {
    if ACC && i < ln.i_end && ln.col_ok {
        return rb_dmem_ld((ln.b * p.dims.z + i) * (p.dims.w / LANES) + ln.c - p.base1.x / LANES);
    }
    return V(0.0);
}

// Row i's dM at this thread's V (0 past the block or the row: nothing stored).
fn read_dm(ln: Lane, vs: Vecs, i: u32, old: V) {
    if i < ln.i_end && ln.col_ok {
        let N = p.dims.z;
        let o = (ln.b * heads() + ln.h0) * N + i - p.base0.w;
        var acc = V(0.0);
        acc += rb_w[o] * vs.v0;
        if ln.nh > 1u {
            acc += rb_w[o + N] * vs.v1;
        }
        if ln.nh > 2u {
            acc += rb_w[o + 2u * N] * vs.v2;
        }
        if ln.nh > 3u {
            acc += rb_w[o + 3u * N] * vs.v3;
        }
        if ACC {
            acc += old;
        }
        rb_dmem_st((ln.b * N + i) * (p.dims.w / LANES) + ln.c - p.base1.x / LANES, acc);
    }
}

// SUB_ROWS: row i's dots (its V m) and its dM.
fn read_row(ln: Lane, vs: Vecs, i: u32, m: V, old: V) {
    store_dots(ln, i, lane_row(ln, vs, i, m, false));
    read_dm(ln, vs, i, old);
}

@compute @workgroup_size(WG)
fn read_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    read_bwd_of(wg, t, false);
}

// read_bwd with two V's per thread (as scores_pairs): each thread stores dM at both.
@compute @workgroup_size(WG)
fn read_bwd_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    read_bwd_of(wg, t, true);
}

// `read_bwd`, or with `pairs` (a constant at each entry point) `read_bwd_pairs`.
fn read_bwd_of(wg: vec3<u32>, t: u32, pairs: bool) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return; // the whole workgroup
    }
    let ln = lane_of(u, t);
    let vs = vecs_of(ln);
    let l2 = second_lane(ln);
    let vs2 = second_vecs(l2, pairs);
    if SUB_ROWS {
        // ROW_GROUP rows per row lane at a time (lane_row), with the stored gradients they add
        // to.
        for (var i0 = ln.i_begin; i0 < ln.i_end; i0 += ROW_GROUP * ln.rl) {
            let g = group_vs(ln, i0);
            let oa = read_old(ln, g.rows.x);
            let ob = read_old(ln, g.rows.y);
            let oc = read_old(ln, g.rows.z);
            let od = read_old(ln, g.rows.w);
            read_row(ln, vs, g.rows.x, g.ma, oa);
            if ROW_GROUP > 1u {
                read_row(ln, vs, g.rows.y, g.mb, ob);
            }
            if ROW_GROUP > 2u {
                read_row(ln, vs, g.rows.z, g.mc, oc);
            }
            if ROW_GROUP > 3u {
                read_row(ln, vs, g.rows.w, g.md, od);
            }
        }
        return;
    }
    for (var c0 = ln.i_begin; c0 < ln.i_end; c0 += ln.rl * KR) {
        if pairs {
            _ = stage_pairs(ln, l2, vs, vs2, c0);
        } else {
            _ = stage_chunk(ln, vs, c0, t);
        }
        for (var k = 0u; k < KR; k += 1u) {
            let i = c0 + k * ln.rl + ln.r;
            read_dm(ln, vs, i, read_old(ln, i));
            if pairs {
                read_dm(l2, vs2, i, read_old(l2, i));
            }
        }
        workgroupBarrier();
        store_chunk_dots(ln, c0, t);
        workgroupBarrier();
    }
}

@group(0) @binding(3) var<storage, read> sbeta: array<f32>;                // [B, H]
@group(0) @binding(4) var<storage, read_write> scores_out: array<f32>;     // [B, H, N]
@group(0) @binding(5) var<storage, read_write> block_pairs: array<f32>;    // [B*H, blocks, 2]

// The group's strengths in head lanes (absent heads 0); `scores` and `content_bwd` bind them
// at the same slot.
fn group_beta(ln: Lane) -> vec4<f32> {
    var bet = vec4<f32>(0.0);
    for (var hh = 0u; hh < ln.nh; hh += 1u) {
        bet[hh] = sbeta[ln.b * heads() + ln.h0 + hh];
    }
    return bet;
}

// What `scores` finishes every row with: the keys' norms, the strengths, and 1 in the lanes of
// present heads.
struct ScoreConsts {
    kn: vec4<f32>,
    bet: vec4<f32>,
    one: vec4<f32>,
}

// SUB_ROWS: row i's first lane finishes it: its scores, and its place in the running pairs.
fn score_row(ln: Lane, sc: ScoreConsts, i: u32, lr: LaneRow, pm: ptr<function, vec4<f32>>, ps: ptr<function, vec4<f32>>) {
    if ln.c == 0u && i < ln.i_end {
        let P = sc.kn * sqrt(lr.sq + EPS);
        let z = sc.bet * (lr.dot / (P + EPS));
        for (var hh = 0u; hh < ln.nh; hh += 1u) {
            scores_out[(ln.b * heads() + ln.h0 + hh) * p.dims.z + i - p.base0.w] = z[hh];
        }
        let zm = select(vec4<f32>(NEG_BIG), z, sc.one > vec4<f32>(0.0));
        let m = max(*pm, zm);
        *ps = *ps * exp(*pm - m) + sc.one * exp(zm - m);
        *pm = m;
    }
}

@compute @workgroup_size(WG)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    scores_of(wg, t, false);
}

// scores with two V's per thread, where rows are summed in workgroup memory (not SUB_ROWS)
// and have at least 2 V's: TW = ceil(W / LANES / 2) column lanes, thread (r, c) taking V's c
// and c + TW of its rows. Per row that halves the shares staged in workgroup memory and the
// row sums' reads, and between two barriers a thread has twice the loads in flight.
@compute @workgroup_size(WG)
fn scores_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    scores_of(wg, t, true);
}

// `scores`, or with `pairs` (a constant at each entry point) `scores_pairs`.
fn scores_of(wg: vec3<u32>, t: u32, pairs: bool) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return; // the whole workgroup
    }
    let ln = lane_of(u, t);
    let vs = vecs_of(ln);
    let l2 = second_lane(ln);
    let vs2 = second_vecs(l2, pairs);
    let H = heads();
    let N = p.dims.z;
    let ksq = vec_sq_norms(vs, vs2, t);
    let bet = group_beta(ln);
    // 1 in the lanes of present heads.
    let one = select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(ln.nh));
    let kn = sqrt(ksq + EPS);
    // Running softmax pairs of the rows this thread finishes; absent lanes stay (NEG_BIG, 0).
    var pm = vec4<f32>(NEG_BIG);
    var ps = vec4<f32>(0.0);
    if SUB_ROWS {
        // ROW_GROUP rows per row lane at a time (lane_row); each row's first lane finishes it.
        let sc = ScoreConsts(kn, bet, one);
        for (var i0 = ln.i_begin; i0 < ln.i_end; i0 += ROW_GROUP * ln.rl) {
            let g = group_vs(ln, i0);
            score_row(ln, sc, g.rows.x, lane_row(ln, vs, g.rows.x, g.ma, true), &pm, &ps);
            if ROW_GROUP > 1u {
                score_row(ln, sc, g.rows.y, lane_row(ln, vs, g.rows.y, g.mb, true), &pm, &ps);
            }
            if ROW_GROUP > 2u {
                score_row(ln, sc, g.rows.z, lane_row(ln, vs, g.rows.z, g.mc, true), &pm, &ps);
            }
            if ROW_GROUP > 3u {
                score_row(ln, sc, g.rows.w, lane_row(ln, vs, g.rows.w, g.md, true), &pm, &ps);
            }
        }
    }
    for (var c0 = ln.i_begin; c0 < ln.i_end && !SUB_ROWS; c0 += ln.rl * KR) {
        if pairs {
            _ = stage_pairs(ln, l2, vs, vs2, c0);
        } else {
            _ = stage_chunk(ln, vs, c0, t);
        }
        workgroupBarrier();
        for (var x = t; x < ln.rl * KR; x += WG) {
            let s = row_sum(ln, c0, x);
            if s.i < ln.i_end {
                let P = kn * sqrt(s.sq + EPS);
                let z = bet * (s.dot / (P + EPS));
                for (var hh = 0u; hh < ln.nh; hh += 1u) {
                    scores_out[(ln.b * H + ln.h0 + hh) * N + s.i - p.base0.w] = z[hh];
                }
                let zm = select(vec4<f32>(NEG_BIG), z, one > vec4<f32>(0.0));
                let m = max(pm, zm);
                ps = ps * exp(pm - m) + one * exp(zm - m);
                pm = m;
            }
        }
        workgroupBarrier();
    }
    // The block's pairs: a fixed-order tree over the threads (red_dot holds max, then sums).
    red_dot[t] = pm;
    red_dot[WG + t] = ps;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if t < s {
            let a = red_dot[t];
            let bm = red_dot[t + s];
            let m = max(a, bm);
            red_dot[WG + t] = red_dot[WG + t] * exp(a - m) + red_dot[WG + t + s] * exp(bm - m);
            red_dot[t] = m;
        }
    }
    workgroupBarrier();
    if t < ln.nh {
        let nblk = p.extra.y;
        let o = ((ln.b * H + ln.h0 + t) * nblk + ln.blk) * 2u - p.base1.x;
        block_pairs[o] = red_dot[0][t];
        block_pairs[o + 1u] = red_dot[WG][t];
    }
}

// ---- content_bwd: content addressing's backward in one pass over the memory ----
// Given dz (the scores' gradient), per row i and head h of the group (shapes with one head
// group, rows of at least 2 V's), with D, P, K as in content.wgsl:
//   dD_hi = beta_h dz_hi / P_hi,  dP_hi = -beta_h dz_hi D_hi / P_hi^2
//   dM_i (+)= sum_h [dD_hi k_h + (dP_hi norm(k_h) / norm(M_i)) M_i]     (stored here)
//   the block's column sums of dD_hi M_i (dk's first term, colsum partial layout) and its
//   sums of dP_hi norm(M_i) and dz_hi K_hi ([B*H, blocks, 2], for dk's norm term and dbeta)
// Each thread keeps its KR rows' V's in registers: the row sums give the rows' coefficients,
// which go back through workgroup memory to the threads that hold the rows.
@group(0) @binding(4) var<storage, read> cb_dz: array<f32>;            // [B, H, N]
@group(0) @binding(5) var<storage, read_write> cb_dmem: array<DMemV>;  // [B, N, W], f32 or f16
@group(0) @binding(6) var<storage, read_write> cb_part: array<V>;      // [B, blocks, H, W]
@group(0) @binding(7) var<storage, read_write> cb_pairs: array<f32>;   // [B*H, blocks, 2]

var<workgroup> red_col: array<V, 256>; // WG column partials

// Row i's dM at this thread's V: sum_h [dD_hi k_h + (dP_hi norm(k_h) / norm(M_i)) M_i], from
// the row's coefficients cd = dD and cm = dP norm(k) / norm(M) in head lanes; with ACC added
// to `old`, the stored gradient (dm_old).
fn store_dm(ln: Lane, vs: Vecs, i: u32, m: V, cd: vec4<f32>, cm: vec4<f32>, old: V) {
    let el = (ln.b * p.dims.z + i) * (p.dims.w / LANES) + ln.c;
    var dm = cd.x * vs.v0 + cm.x * m;
    dm += cd.y * vs.v1 + cm.y * m;
    dm += cd.z * vs.v2 + cm.z * m;
    dm += cd.w * vs.v3 + cm.w * m;
    if ACC {
        dm += old;
    }
    cb_dmem_st(el - p.base1.x / LANES, dm);
}

// With ACC, the stored gradient at row i's V of this thread's column (0 past the block or the
// row); else 0, unused.
fn dm_old(ln: Lane, i: u32) -> V {
    if ACC && i < ln.i_end && ln.col_ok {
        return cb_dmem_ld((ln.b * p.dims.z + i) * (p.dims.w / LANES) + ln.c - p.base1.x / LANES);
    }
    return V(0.0);
}

// Row i (its V m at the lane's column) given its coefficients cd and cm: its dM stored there,
// and its terms of the lane's column sums of dD M.
fn cb_apply(ln: Lane, vs: Vecs, i: u32, m: V, cd: vec4<f32>, cm: vec4<f32>, acc: ptr<function, CbSums>) {
    store_dm(ln, vs, i, m, cd, cm, dm_old(ln, i));
    (*acc).dk0 += cd.x * m;
    (*acc).dk1 += cd.y * m;
    (*acc).dk2 += cd.z * m;
    (*acc).dk3 += cd.w * m;
}

// A thread's running sums: its column's dD M per head (dk's first term), and over the rows it
// finishes, dP norm(M) and dz K per head.
struct CbSums {
    dk0: V,
    dk1: V,
    dk2: V,
    dk3: V,
    sp: vec4<f32>,
    sb: vec4<f32>,
}

// The keys' norms and the strengths, in head lanes.
struct CbConsts {
    kn: vec4<f32>,
    bet: vec4<f32>,
}

// SUB_ROWS: what row i needs from memory before its shuffles: its V, dz of the group's heads,
// and the stored gradient (dm_old).
struct CbRow {
    i: u32,
    m: V,
    g: vec4<f32>,
    old: V,
}

fn cb_row(ln: Lane, i: u32) -> CbRow {
    var r: CbRow;
    r.i = i;
    r.m = row_v(ln, i);
    r.g = vec4<f32>(0.0);
    if i < ln.i_end {
        for (var hh = 0u; hh < ln.nh; hh += 1u) {
            r.g[hh] = cb_dz[(ln.b * heads() + ln.h0 + hh) * p.dims.z + i - p.base0.w];
        }
    }
    r.old = dm_old(ln, i);
    return r;
}

// SUB_ROWS: every lane of a row has its sums, so each computes the row's coefficients itself
// and its column of dM and dk; the row's first lane keeps the row's block sums. Call in
// uniform control flow.
fn cb_finish(ln: Lane, vs: Vecs, cc: CbConsts, r: CbRow, acc: ptr<function, CbSums>) {
    let lr = lane_row(ln, vs, r.i, r.m, true);
    if r.i < ln.i_end {
        let g = r.g;
        let nm = sqrt(lr.sq + EPS);
        let P = cc.kn * nm + EPS;
        let K = lr.dot / P;
        let dK = cc.bet * g;
        let cdv = dK / P;
        let dP = -dK * lr.dot / (P * P);
        let cmv = dP * cc.kn / nm;
        if ln.c == 0u {
            (*acc).sp += dP * nm;
            (*acc).sb += g * K;
        }
        if ln.col_ok {
            let m = lr.m;
            store_dm(ln, vs, r.i, m, cdv, cmv, r.old);
            (*acc).dk0 += cdv.x * m;
            (*acc).dk1 += cdv.y * m;
            (*acc).dk2 += cdv.z * m;
            (*acc).dk3 += cdv.w * m;
        }
    }
}

@compute @workgroup_size(WG)
fn content_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    content_bwd_of(wg, t, false);
}

// content_bwd with two V's per thread (as scores_pairs): each thread keeps both V's of its
// rows, stores dM at both, and sums dk's first term for both columns (a second tree over the
// row lanes at the block's end).
@compute @workgroup_size(WG)
fn content_bwd_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    content_bwd_of(wg, t, true);
}

// The block's column sums of one quantity per head (a, this thread's column's; the group's
// heads in a0..a3): a fixed-order tree over the row lanes into `cb_part` at column `c`. Call
// in uniform control flow.
fn cb_column_sums(ln: Lane, c: u32, ok: bool, a: CbSums, t: u32) {
    let H = heads();
    let WL = p.dims.w / LANES;
    let tw = p.extra.x;
    let nblk = p.extra.y;
    for (var hh = 0u; hh < ln.nh; hh += 1u) {
        switch hh {
            case 0u: {
                red_col[t] = a.dk0;
            }
            case 1u: {
                red_col[t] = a.dk1;
            }
            case 2u: {
                red_col[t] = a.dk2;
            }
            default: {
                red_col[t] = a.dk3;
            }
        }
        let p2 = pow2_floor(ln.rl);
        if p2 < ln.rl {
            workgroupBarrier();
            if ln.r < ln.rl - p2 {
                red_col[t] += red_col[t + p2 * tw];
            }
        }
        for (var s = p2 / 2u; s > 0u; s = s / 2u) {
            workgroupBarrier();
            if ln.r < s {
                red_col[t] += red_col[t + s * tw];
            }
        }
        workgroupBarrier();
        if ln.r == 0u && ok {
            cb_part[((ln.b * nblk + ln.blk) * H + ln.h0 + hh) * WL + c - p.base1.y / LANES] = red_col[t];
        }
        workgroupBarrier();
    }
}

// `content_bwd`, or with `pairs` (a constant at each entry point) `content_bwd_pairs`.
fn content_bwd_of(wg: vec3<u32>, t: u32, pairs: bool) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return; // the whole workgroup
    }
    let ln = lane_of(u, t);
    let vs = vecs_of(ln);
    let l2 = second_lane(ln);
    let vs2 = second_vecs(l2, pairs);
    let H = heads();
    let N = p.dims.z;
    let ksq = vec_sq_norms(vs, vs2, t);
    let kn = sqrt(ksq + EPS);
    let bet = group_beta(ln);
    var acc: CbSums;
    acc.dk0 = V(0.0);
    acc.dk1 = V(0.0);
    acc.dk2 = V(0.0);
    acc.dk3 = V(0.0);
    acc.sp = vec4<f32>(0.0);
    acc.sb = vec4<f32>(0.0);
    // With pairs, the second column's sums of dD M (dk0..dk3; its sp and sb stay 0).
    var acc2 = acc;
    let rows = ln.rl * KR; // at most WG: a row's coefficients fit red_dot twice over
    if SUB_ROWS {
        // ROW_GROUP rows per row lane at a time (lane_row), each row's loads (its V, dz, the
        // stored gradient with ACC) before the first row's shuffles.
        let cc = CbConsts(kn, bet);
        for (var i0 = ln.i_begin; i0 < ln.i_end; i0 += ROW_GROUP * ln.rl) {
            let group = stream_group_rows(i0, ln.rl, ln.r, ln.i_end);
            let ra = cb_row(ln, group.x);
            let rb = cb_row(ln, group.y);
            let rc = cb_row(ln, group.z);
            let rd = cb_row(ln, group.w);
            cb_finish(ln, vs, cc, ra, &acc);
            if ROW_GROUP > 1u {
                cb_finish(ln, vs, cc, rb, &acc);
            }
            if ROW_GROUP > 2u {
                cb_finish(ln, vs, cc, rc, &acc);
            }
            if ROW_GROUP > 3u {
                cb_finish(ln, vs, cc, rd, &acc);
            }
        }
    }
    for (var c0 = ln.i_begin; c0 < ln.i_end && !SUB_ROWS; c0 += rows) {
        var ms: array<V, KR>;
        var ms2: array<V, KR>;
        if pairs {
            let both = stage_pairs(ln, l2, vs, vs2, c0);
            ms = both.a;
            ms2 = both.b;
        } else {
            ms = stage_chunk(ln, vs, c0, t);
        }
        workgroupBarrier();
        // Thread x < rows: row x's coefficients (dD, dP norm(k) / norm(M)) for the group.
        var cd = vec4<f32>(0.0);
        var cm = vec4<f32>(0.0);
        if t < rows {
            let s = row_sum(ln, c0, t);
            if s.i < ln.i_end {
                var g = vec4<f32>(0.0);
                for (var hh = 0u; hh < ln.nh; hh += 1u) {
                    g[hh] = cb_dz[(ln.b * H + ln.h0 + hh) * N + s.i - p.base0.w];
                }
                let nm = sqrt(s.sq + EPS);
                let P = kn * nm + EPS;
                let K = s.dot / P;
                let dK = bet * g;
                cd = dK / P;
                let dP = -dK * s.dot / (P * P);
                cm = dP * kn / nm;
                acc.sp += dP * nm;
                acc.sb += g * K;
            }
        }
        workgroupBarrier();
        if t < rows {
            red_dot[t] = cd;
            red_dot[WG + t] = cm;
        }
        workgroupBarrier();
        for (var k = 0u; k < KR; k += 1u) {
            let i = c0 + k * ln.rl + ln.r;
            if i < ln.i_end && ln.col_ok {
                let x = k * ln.rl + ln.r;
                let cdv = red_dot[x];
                let cmv = red_dot[WG + x];
                cb_apply(ln, vs, i, ms[k], cdv, cmv, &acc);
                if pairs && l2.col_ok {
                    cb_apply(l2, vs2, i, ms2[k], cdv, cmv, &acc2);
                }
            }
        }
        workgroupBarrier();
    }
    // The block's column sums of dD M per head: a fixed-order tree over the row lanes (with
    // pairs, a second one for the second columns).
    let nblk = p.extra.y;
    cb_column_sums(ln, ln.c, ln.col_ok, acc, t);
    if pairs {
        cb_column_sums(ln, l2.c, l2.col_ok, acc2, t);
    }
    // The block's sums of dP norm(M) and dz K per head: a fixed-order tree over the threads.
    red_dot[t] = acc.sp;
    red_dot[WG + t] = acc.sb;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if t < s {
            red_dot[t] += red_dot[t + s];
            red_dot[WG + t] += red_dot[WG + t + s];
        }
    }
    workgroupBarrier();
    if t < ln.nh {
        let o = ((ln.b * H + ln.h0 + t) * nblk + ln.blk) * 2u - p.base1.z;
        cb_pairs[o] = red_dot[0][t];
        cb_pairs[o + 1u] = red_dot[WG][t];
    }
}
