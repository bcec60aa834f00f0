// Soft write (all erases, then all adds, as in the NTM paper), per batch b:
//   M'(i,j) = M(i,j) prod_h (1 - w_h(i) e_h(j)) + sum_h w_h(i) a_h(j)
// Backward, given dM', with Q_h(i,j) = prod_{h' != h} (1 - w_h'(i) e_h'(j)) formed as a product
// that skips h (heads before and after it, never a division, so erase = 1 with one-hot weights
// stays finite):
//   dM(i,j)  = dM'(i,j) prod_h (1 - w_h(i) e_h(j))
//   dw_h(i)  = sum_j dM'(i,j) (a_h(j) - M(i,j) e_h(j) Q_h(i,j))
//   de_h(j)  = -sum_i dM'(i,j) M(i,j) w_h(i) Q_h(i,j)
//   da_h(j)  = sum_i dM'(i,j) w_h(i)
// `bwd_dw` works on row tiles like content.wgsl; `bwd_cols` on row blocks like read.wgsl
// `partial`, whose `combine` then sums the blocks.

struct Params {
    unit_base: u32,
    unit_end: u32,
    groups_x: u32,
    check_slot: u32,
    base0: vec4<u32>,
    base1: vec4<u32>,
    dims: vec4<u32>,  // B, H, N, W
    extra: vec4<u32>, // bwd_cols: x = TW, y = row blocks, z = column tiles
    fx: vec4<f32>,
}

const HG: u32 = 4u;
const TR: u32 = 64u;
const TC: u32 = 16u;
const TS: u32 = 17u;
const RB: u32 = 256u;

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

@group(0) @binding(1) var<storage, read_write> fmem: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fe: array<f32>;
@group(0) @binding(4) var<storage, read> fa: array<f32>;

// In place, one thread per element of M.
@compute @workgroup_size(256)
fn fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
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
    var keep = 1.0;
    var add = 0.0;
    for (var h = 0u; h < H; h += 1u) {
        let wv = fw[(b * H + h) * N + i - p.base0.y];
        let hj = (b * H + h) * W + j;
        keep *= 1.0 - wv * fe[hj];
        add += wv * fa[hj];
    }
    let g = e - p.base0.x;
    fmem[g] = fmem[g] * keep + add;
}

@group(0) @binding(1) var<storage, read> mw: array<f32>;
@group(0) @binding(2) var<storage, read> me: array<f32>;
@group(0) @binding(3) var<storage, read> mgrad: array<f32>;
@group(0) @binding(4) var<storage, read_write> mdm: array<f32>;

// dM = dM' prod_h (1 - w_h e_h), one thread per element.
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
    var keep = 1.0;
    for (var h = 0u; h < H; h += 1u) {
        keep *= 1.0 - mw[(b * H + h) * N + i - p.base0.x] * me[(b * H + h) * W + j];
    }
    mdm[e - p.base0.w] = mgrad[e - p.base0.z] * keep;
}

@group(0) @binding(1) var<storage, read> rmem: array<f32>;
@group(0) @binding(2) var<storage, read> rw: array<f32>;
@group(0) @binding(3) var<storage, read> re: array<f32>;
@group(0) @binding(4) var<storage, read> ra: array<f32>;
@group(0) @binding(5) var<storage, read> rgrad: array<f32>;
@group(0) @binding(6) var<storage, read_write> rdw: array<f32>;

var<workgroup> tile_m: array<f32, 1088>; // TR * TS
var<workgroup> tile_g: array<f32, 1088>;
var<workgroup> tile_e: array<f32, 64>;   // HG * TC
var<workgroup> tile_a: array<f32, 64>;

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

// dw_h(i): one thread per row of a TR-row tile, up to HG heads per unit.
@compute @workgroup_size(64)
fn bwd_dw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
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
    var wv = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    if row_ok {
        for (var hh = 0u; hh < nh; hh += 1u) {
            wv[hh] = rw[(b * H + h0 + hh) * N + i - p.base0.y];
        }
    }
    var dw = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = 0u; j0 < W; j0 += TC) {
        for (var s = t; s < TR * TC; s += TR) {
            let r = s / TC;
            let c = s % TC;
            let ii = blk * TR + r;
            let j = j0 + c;
            var vm = 0.0;
            var vg = 0.0;
            if ii < N && j < W {
                let g = (b * N + ii) * W + j;
                vm = rmem[g - p.base0.x];
                vg = rgrad[g - p.base1.x];
            }
            tile_m[r * TS + c] = vm;
            tile_g[r * TS + c] = vg;
        }
        {
            let hh = t / TC;
            let c = t % TC;
            var ve = 0.0;
            var va = 0.0;
            if hh < nh && j0 + c < W {
                let hj = (b * H + h0 + hh) * W + j0 + c;
                ve = re[hj];
                va = ra[hj];
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
                // Heads outside this unit's group: prefix and suffix products.
                let outside = keep_range(b, i, j, 0u, h0) * keep_range(b, i, j, h0 + nh, H);
                var f = array<f32, 4>(1.0, 1.0, 1.0, 1.0);
                for (var hh = 0u; hh < nh; hh += 1u) {
                    f[hh] = 1.0 - wv[hh] * tile_e[hh * TC + c];
                }
                for (var hh = 0u; hh < nh; hh += 1u) {
                    var q = outside;
                    for (var o = 0u; o < nh; o += 1u) {
                        if o != hh {
                            q *= f[o];
                        }
                    }
                    dw[hh] += g * (tile_a[hh * TC + c] - m * tile_e[hh * TC + c] * q);
                }
            }
        }
        workgroupBarrier();
    }
    if row_ok {
        for (var hh = 0u; hh < nh; hh += 1u) {
            rdw[(b * H + h0 + hh) * N + i - p.base1.y] = dw[hh];
        }
    }
}

@group(0) @binding(1) var<storage, read> cmem: array<f32>;
@group(0) @binding(2) var<storage, read> cw: array<f32>;
@group(0) @binding(3) var<storage, read> ce: array<f32>;
@group(0) @binding(4) var<storage, read> cgrad: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_de: array<f32>; // [B, blocks, H, W]
@group(0) @binding(6) var<storage, read_write> part_da: array<f32>;

var<workgroup> red_e: array<f32, 256>;
var<workgroup> red_a: array<f32, 256>;

fn keep_range_cols(b: u32, i: u32, j: u32, h_lo: u32, h_hi: u32) -> f32 {
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    var q = 1.0;
    for (var h = h_lo; h < h_hi; h += 1u) {
        q *= 1.0 - cw[(b * H + h) * N + i - p.base0.y] * ce[(b * H + h) * W + j];
    }
    return q;
}

// de, da partial sums over a block of RB rows; threads along columns as in read.wgsl.
@compute @workgroup_size(64)
fn bwd_cols(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let H = p.dims.y;
    let N = p.dims.z;
    let W = p.dims.w;
    let tw = p.extra.x;
    let rl_count = 64u / tw;
    let nblk = p.extra.y;
    let nct = p.extra.z;
    let nhg = (H + HG - 1u) / HG;
    let hg = u % nhg;
    var rest = u / nhg;
    let ct = rest % nct;
    rest = rest / nct;
    let blk = rest % nblk;
    let b = rest / nblk;
    let h0 = hg * HG;
    let nh = min(HG, H - h0);
    let c = t % tw;
    let rl = t / tw;
    let j = ct * tw + c;
    var de = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var da = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    if j < W {
        var eg = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
        for (var hh = 0u; hh < nh; hh += 1u) {
            eg[hh] = ce[(b * H + h0 + hh) * W + j];
        }
        let i_end = min(blk * RB + RB, N);
        for (var i = blk * RB + rl; i < i_end; i += rl_count) {
            let g_idx = (b * N + i) * W + j;
            let m = cmem[g_idx - p.base0.x];
            let g = cgrad[g_idx - p.base0.w];
            let outside = keep_range_cols(b, i, j, 0u, h0) * keep_range_cols(b, i, j, h0 + nh, H);
            var wv = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
            var f = array<f32, 4>(1.0, 1.0, 1.0, 1.0);
            for (var hh = 0u; hh < nh; hh += 1u) {
                wv[hh] = cw[(b * H + h0 + hh) * N + i - p.base0.y];
                f[hh] = 1.0 - wv[hh] * eg[hh];
            }
            for (var hh = 0u; hh < nh; hh += 1u) {
                var q = outside;
                for (var o = 0u; o < nh; o += 1u) {
                    if o != hh {
                        q *= f[o];
                    }
                }
                de[hh] -= g * m * wv[hh] * q;
                da[hh] += g * wv[hh];
            }
        }
    }
    for (var hh = 0u; hh < HG; hh += 1u) {
        red_e[hh * 64u + t] = de[hh];
        red_a[hh * 64u + t] = da[hh];
    }
    for (var s = rl_count / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if rl < s {
            for (var hh = 0u; hh < HG; hh += 1u) {
                red_e[hh * 64u + t] += red_e[hh * 64u + t + s * tw];
                red_a[hh * 64u + t] += red_a[hh * 64u + t + s * tw];
            }
        }
    }
    workgroupBarrier();
    if rl == 0u && j < W {
        for (var hh = 0u; hh < nh; hh += 1u) {
            let o = ((b * nblk + blk) * H + h0 + hh) * W + j;
            part_de[o - p.base1.x] = red_e[hh * 64u + t];
            part_da[o - p.base1.y] = red_a[hh * 64u + t];
        }
    }
}
