// Content addressing, per batch b, head h, slot i (EPS = 1e-6, norm(x) = sqrt(sum_j x_j^2 + EPS)):
//   D_i = k . M_i,  P_i = norm(k) norm(M_i),  K_i = D_i / (P_i + EPS),  z_i = beta K_i
//   w = softmax_i(z) (done by reduce.wgsl)
// Backward, given dz (the scores' gradient; dz = w (dw - sum_j w_j dw_j) when given dw):
//   dbeta = sum_i dz_i K_i,  dK_i = beta dz_i,  dD_i = dK_i / (P_i + EPS),  dP_i = -dK_i D_i / (P_i + EPS)^2
//   dk  = sum_i dD_i M_i + (sum_i dP_i norm(M_i)) k / norm(k)
//   dM_i = sum_h [dD_hi k_h + dP_hi norm(k_h) M_i / norm(M_i)]
//
// `scores` and `bwd_rows` work on tiles of TR memory rows: the workgroup stages TC columns of
// the tile at a time in workgroup memory (coalesced loads), then each thread owns one row and
// up to HG heads, so every memory row is read from global memory once per group of HG heads,
// with its norm and its dot products in the same pass.

struct Params {
    unit_base: u32,
    unit_end: u32,
    groups_x: u32,
    check_slot: u32,
    base0: vec4<u32>,
    base1: vec4<u32>,
    dims: vec4<u32>,  // B, H, N, W
    extra: vec4<u32>, // scores: x = mode (0: plain dot V.M_i, 1: content score)
    fx: vec4<f32>,
}

const EPS: f32 = 1e-6;
const TR: u32 = 64u;  // rows per tile = threads per workgroup
const TC: u32 = 32u;  // columns staged per step
const TS: u32 = 33u;  // tile row stride (padded against bank conflicts)
const HG: u32 = 4u;   // heads per unit

@group(0) @binding(0) var<uniform> p: Params;

// Elementwise kernels over [B, N, W] map a workgroup of 256 threads to rows x a power-of-two
// column tile (extra.z = tile width, extra.w = its log2): one division per thread, coalesced.
struct Element {
    ok: bool,
    e: u32,
    j: u32,
    b: u32,
    i: u32,
}

fn element(u: u32, t: u32) -> Element {
    let N = p.dims.z;
    let W = p.dims.w;
    let tw = p.extra.z;
    let nct = (W + tw - 1u) / tw;
    let rows_per_wg = 256u / tw;
    let row = (u / nct) * rows_per_wg + (t >> p.extra.w);
    var el: Element;
    el.j = (u % nct) * tw + (t & (tw - 1u));
    el.ok = row < p.dims.x * N && el.j < W;
    el.e = row * W + el.j;
    el.b = row / N;
    el.i = row - el.b * N;
    return el;
}

var<workgroup> tile: array<f32, 2112>;      // TR * TS
var<workgroup> ktile: array<vec4<f32>, 32>; // TC columns x the HG heads of the group
var<workgroup> red: array<f32, 512>;   // TR * HG * 2

struct Unit {
    b: u32,
    blk: u32,
    h0: u32,
    nh: u32,
    i: u32,
}

fn unit_of(wg: vec3<u32>, t: u32) -> Unit {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    let H = p.dims.y;
    let N = p.dims.z;
    let nhg = (H + HG - 1u) / HG;
    let nblk = (N + TR - 1u) / TR;
    let hg = u % nhg;
    let rest = u / nhg;
    var r: Unit;
    r.blk = rest % nblk;
    r.b = rest / nblk;
    r.h0 = hg * HG;
    r.nh = min(HG, H - r.h0);
    r.i = r.blk * TR + t;
    return r;
}

fn load_mem(un: Unit, j0: u32, e: u32) -> f32 {
    let N = p.dims.z;
    let W = p.dims.w;
    let i = un.blk * TR + e / TC;
    let j = j0 + e % TC;
    if i < N && j < W {
        return mem[(un.b * N + i) * W + j - p.base0.x];
    }
    return 0.0;
}

fn store_tile(e: u32, x: f32) {
    tile[(e / TC) * TS + e % TC] = x;
}

// Stages columns [j0, j0 + TC) of the tile's rows. Loads go 8 at a time into scalars, so
// they are in flight together, and no private array is indexed (it would live in local memory).
fn stage_mem(un: Unit, j0: u32, t: u32) {
    for (var k = 0u; k < TC; k += 8u) {
        let e = t + k * TR;
        let x0 = load_mem(un, j0, e);
        let x1 = load_mem(un, j0, e + TR);
        let x2 = load_mem(un, j0, e + 2u * TR);
        let x3 = load_mem(un, j0, e + 3u * TR);
        let x4 = load_mem(un, j0, e + 4u * TR);
        let x5 = load_mem(un, j0, e + 5u * TR);
        let x6 = load_mem(un, j0, e + 6u * TR);
        let x7 = load_mem(un, j0, e + 7u * TR);
        store_tile(e, x0);
        store_tile(e + TR, x1);
        store_tile(e + 2u * TR, x2);
        store_tile(e + 3u * TR, x3);
        store_tile(e + 4u * TR, x4);
        store_tile(e + 5u * TR, x5);
        store_tile(e + 6u * TR, x6);
        store_tile(e + 7u * TR, x7);
    }
}

// Columns [j0, j0 + TC) of the group's vectors, one vec4 (its HG heads; absent heads 0) per column.
fn stage_vecs(un: Unit, j0: u32, t: u32) {
    let H = p.dims.y;
    let W = p.dims.w;
    if t < TC {
        var k = vec4<f32>(0.0);
        let j = j0 + t;
        if j < W {
            let o = (un.b * H + un.h0) * W + j - p.base0.y;
            k.x = vecs[o];
            if un.nh > 1u {
                k.y = vecs[o + W];
            }
            if un.nh > 2u {
                k.z = vecs[o + 2u * W];
            }
            if un.nh > 3u {
                k.w = vecs[o + 3u * W];
            }
        }
        ktile[t] = k;
    }
}

@group(0) @binding(1) var<storage, read> mem: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores_out: array<f32>;

// mode 0: out = V_h . M_i (the weights' gradient of a soft read, V = dr)
// mode 1: out = beta_h K_hi (content scores, V = keys)
@compute @workgroup_size(64)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let un = unit_of(wg, t);
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    // The HG heads of the group in vec4 lanes: registers, no private arrays.
    var dot = vec4<f32>(0.0);
    var ksq = vec4<f32>(0.0);
    var msq = 0.0;
    for (var j0 = 0u; j0 < W; j0 += TC) {
        stage_mem(un, j0, t);
        stage_vecs(un, j0, t);
        workgroupBarrier();
        for (var c = 0u; c < TC; c += 1u) {
            let m = tile[t * TS + c];
            let k = ktile[c];
            msq += m * m;
            dot += m * k;
            ksq += k * k;
        }
        workgroupBarrier();
    }
    if un.i >= N {
        return;
    }
    for (var hh = 0u; hh < HG; hh += 1u) {
        if hh < un.nh {
            let bh = un.b * H + un.h0 + hh;
            var v = dot[hh];
            if p.extra.x == 1u {
                let P = sqrt(ksq[hh] + EPS) * sqrt(msq + EPS);
                v = beta[bh - p.base0.z] * (dot[hh] / (P + EPS));
            }
            scores_out[bh * N + un.i - p.base0.w] = v;
        }
    }
}

@group(0) @binding(4) var<storage, read> dz: array<f32>;
@group(0) @binding(5) var<storage, read_write> coef_d: array<f32>;  // dD_hi
@group(0) @binding(6) var<storage, read_write> coef_m: array<f32>;  // dP_hi norm(k_h) / norm(M_i)
@group(0) @binding(7) var<storage, read_write> part: array<f32>;    // per (b,h,blk): sum dP norm(M), sum dz K

@compute @workgroup_size(64)
fn bwd_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let un = unit_of(wg, t);
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    let nblk = (N + TR - 1u) / TR;
    // The HG heads of the group in vec4 lanes: registers, no private arrays.
    var dot = vec4<f32>(0.0);
    var ksq = vec4<f32>(0.0);
    var msq = 0.0;
    for (var j0 = 0u; j0 < W; j0 += TC) {
        stage_mem(un, j0, t);
        stage_vecs(un, j0, t);
        workgroupBarrier();
        for (var c = 0u; c < TC; c += 1u) {
            let m = tile[t * TS + c];
            let k = ktile[c];
            msq += m * m;
            dot += m * k;
            ksq += k * k;
        }
        workgroupBarrier();
    }
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
            for (var hh = 0u; hh < HG; hh += 1u) {
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

@group(0) @binding(1) var<storage, read> m_in: array<f32>;
@group(0) @binding(2) var<storage, read> keys_in: array<f32>;
@group(0) @binding(3) var<storage, read> cd_in: array<f32>;
@group(0) @binding(4) var<storage, read> cm_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> dmem: array<f32>;

// dM_ij = sum_h [dD_hi k_hj + (dP_hi norm(k_h) / norm(M_i)) M_ij], one thread per element.
@compute @workgroup_size(256)
fn bwd_mem(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    let el = element(u, t);
    if !el.ok {
        return;
    }
    let e = el.e;
    let j = el.j;
    let b = el.b;
    let i = el.i;
    let m = m_in[e - p.base0.x];
    var acc = 0.0;
    for (var h = 0u; h < H; h += 1u) {
        let bh = b * H + h;
        acc += cd_in[bh * N + i - p.base0.z] * keys_in[bh * W + j - p.base0.y]
             + cm_in[bh * N + i - p.base0.w] * m;
    }
    dmem[e - p.base1.x] = acc;
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
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
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

@group(0) @binding(1) var<storage, read> dz_w: array<f32>;
@group(0) @binding(2) var<storage, read> dz_dw: array<f32>;
@group(0) @binding(3) var<storage, read> dz_s: array<f32>;       // [B*H, 2]: (0, sum_j w_j dw_j)
@group(0) @binding(4) var<storage, read_write> dz_out: array<f32>;

// dz_i = w_i (dw_i - sum_j w_j dw_j), one thread per element of [B, H, N].
@compute @workgroup_size(256)
fn dz_from_dw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let N = p.dims.z;
    let e = u * 256u + t;
    if e >= p.dims.x * p.dims.y * N {
        return;
    }
    let r = e / N;
    dz_out[e - p.base0.w] = dz_w[e - p.base0.x] * (dz_dw[e - p.base0.y] - dz_s[r * 2u + 1u]);
}
