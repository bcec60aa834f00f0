// Row tiles: memory rows against a few vectors per head (content addressing, the soft read's
// weight gradient, the soft write's dw) for rows wider than primitives/rowstream.wgsl takes
// (more than WG V's), and content addressing's backward with more than HG heads.
// A unit is (batch b, block of TR rows, group of HG heads); the workgroup (TR threads) stages
// TC columns of the tile at a time in workgroup memory (coalesced loads), then each thread owns
// one row and up to HG heads, so each memory row is read from global memory once per group of
// HG heads, with its norm and its dot products in the same pass.
//   dots:           out[b,h,i] = V_h . M_i                      (V = dr: soft read's dw)
//   content_scores: out[b,h,i] = z = beta_h V_h.M_i / (norm(V_h) norm(M_i) + EPS)  (V = keys),
//                   and each tile's softmax pairs (max_i z, sum_i exp(z - max)) per head, so
//                   content addressing reads the memory once and its scores twice (here, and
//                   when primitives/rowstat.wgsl normalises them)
// with norm(x) = sqrt(sum_j x_j^2 + EPS).
// Bindings 1..3 (mem, vecs, beta) are shared by the kernels that import this file.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

const TC: u32 = 32u;  // columns staged per step
const TS: u32 = 33u;  // tile row stride (padded against bank conflicts)

var<workgroup> tile: array<f32, 2112>;      // TR * TS
var<workgroup> ktile: array<vec4<f32>, 32>; // TC columns x the HG heads of the group

struct Unit {
    b: u32,
    blk: u32,
    h0: u32,
    nh: u32,
    i: u32,
}

fn unit_of(wg: vec3<u32>, t: u32) -> Unit {
    let u = unit_id(wg);
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
        return mem_ld((un.b * N + i) * W + j - p.base0.x);
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

// For thread t's row of the tile and the group's HG heads (vec4 lanes; registers, no private
// arrays): dot = V_h . M_i, ksq = |V_h|^2, msq = |M_i|^2, streaming the row once.
struct TileDots {
    dot: vec4<f32>,
    ksq: vec4<f32>,
    msq: f32,
}

fn tile_dots(un: Unit, t: u32) -> TileDots {
    let W = p.dims.w;
    var r: TileDots;
    r.dot = vec4<f32>(0.0);
    r.ksq = vec4<f32>(0.0);
    r.msq = 0.0;
    for (var j0 = 0u; j0 < W; j0 += TC) {
        stage_mem(un, j0, t);
        stage_vecs(un, j0, t);
        workgroupBarrier();
        for (var c = 0u; c < TC; c += 1u) {
            let m = tile[t * TS + c];
            let k = ktile[c];
            r.msq += m * m;
            r.dot += m * k;
            r.ksq += k * k;
        }
        workgroupBarrier();
    }
    return r;
}

@group(0) @binding(1) var<storage, read> mem: array<MemS>; // f32 or f16
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores_out: array<f32>;

@group(0) @binding(3) var<storage, read_write> dots_out: array<f32>;

// out[b,h,i] = V_h . M_i (the weights' gradient of a soft read, V = dr).
@compute @workgroup_size(TR)
fn dots(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let un = unit_of(wg, t);
    let H = p.dims.y;
    let N = p.dims.z;
    let d = tile_dots(un, t);
    if un.i >= N {
        return;
    }
    for (var hh = 0u; hh < un.nh; hh += 1u) {
        let bh = un.b * H + un.h0 + hh;
        dots_out[bh * N + un.i - p.base0.z] = d.dot[hh];
    }
}

@group(0) @binding(5) var<storage, read_write> tile_pairs: array<f32>; // [B*H, tiles, 2]

var<workgroup> pm: array<vec4<f32>, TR>; // per row of the tile: the group's heads' running max
var<workgroup> ps: array<vec4<f32>, TR>; // ... and sum of exp(z - max)

@compute @workgroup_size(TR)
fn content_scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let un = unit_of(wg, t);
    let H = p.dims.y;
    let N = p.dims.z;
    let d = tile_dots(un, t);
    let msq = d.msq;
    // Lanes of absent heads and rows past N hold (NEG_BIG, 0): they add nothing.
    var z = vec4<f32>(NEG_BIG);
    var one = vec4<f32>(0.0);
    if un.i < N {
        for (var hh = 0u; hh < HG; hh += 1u) {
            if hh < un.nh {
                let bh = un.b * H + un.h0 + hh;
                let P = sqrt(d.ksq[hh] + EPS) * sqrt(msq + EPS);
                let v = beta[bh - p.base0.z] * (d.dot[hh] / (P + EPS));
                scores_out[bh * N + un.i - p.base0.w] = v;
                z[hh] = v;
                one[hh] = 1.0;
            }
        }
    }
    // Fixed-order tree over the tile's rows: the same bits every run.
    pm[t] = z;
    ps[t] = one;
    for (var s = TR / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if t < s {
            let m = max(pm[t], pm[t + s]);
            ps[t] = ps[t] * exp(pm[t] - m) + ps[t + s] * exp(pm[t + s] - m);
            pm[t] = m;
        }
    }
    workgroupBarrier();
    if t < un.nh {
        let tiles = (N + TR - 1u) / TR;
        let o = ((un.b * H + un.h0 + t) * tiles + un.blk) * 2u - p.base1.x;
        tile_pairs[o] = pm[0][t];
        tile_pairs[o + 1u] = ps[0][t];
    }
}
