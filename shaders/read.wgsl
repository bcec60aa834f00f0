// Soft read, per batch b and head h:
//   r_h(j) = sum_i w_h(i) M(i, j)
// Backward, given dr:
//   dw_h(i) = dr_h . M_i      (computed by content.wgsl `scores`, mode 0: same row-tile pass)
//   dM(i, j) = sum_h w_h(i) dr_h(j)
//
// `partial` reduces over blocks of RB rows, threads along columns (coalesced), several rows
// in flight when W is narrow; `combine` sums the blocks in a fixed order (deterministic).
// The same two kernels reduce any weighted row sum: content addressing's dk and soft
// write's da, de partials reuse `combine`.

struct Params {
    unit_base: u32,
    unit_end: u32,
    groups_x: u32,
    check_slot: u32,
    base0: vec4<u32>,
    base1: vec4<u32>,
    dims: vec4<u32>,  // B, H, N, W
    extra: vec4<u32>, // partial: x = TW (column tile), y = row blocks, z = column tiles; combine: y = blocks
    fx: vec4<f32>,
}

const RB: u32 = 256u; // rows per block
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
@group(0) @binding(1) var<storage, read> mem: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>; // [B, blocks, H, W]

var<workgroup> red: array<f32, 256>; // 64 threads x HG

@compute @workgroup_size(64)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
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
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let i_end = min(blk * RB + RB, N);
    if j < W {
        for (var i = blk * RB + rl; i < i_end; i += rl_count) {
            let m = mem[(b * N + i) * W + j - p.base0.x];
            for (var hh = 0u; hh < nh; hh += 1u) {
                acc[hh] += w[(b * H + h0 + hh) * N + i - p.base0.y] * m;
            }
        }
    }
    for (var hh = 0u; hh < HG; hh += 1u) {
        red[hh * 64u + t] = acc[hh];
    }
    for (var s = rl_count / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if rl < s {
            for (var hh = 0u; hh < HG; hh += 1u) {
                red[hh * 64u + t] += red[hh * 64u + t + s * tw];
            }
        }
    }
    workgroupBarrier();
    if rl == 0u && j < W {
        for (var hh = 0u; hh < nh; hh += 1u) {
            part[((b * nblk + blk) * H + h0 + hh) * W + j - p.base0.z] = red[hh * 64u + t];
        }
    }
}

@group(0) @binding(1) var<storage, read> cparts: array<f32>;
@group(0) @binding(2) var<storage, read_write> cout: array<f32>;

// out[b, h, j] = sum over blocks of part[b, blk, h, j], in block order.
@compute @workgroup_size(256)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let hw = p.dims.y * p.dims.w;
    let nblk = p.extra.y;
    let e = u * 256u + t;
    if e >= p.dims.x * hw {
        return;
    }
    let b = e / hw;
    let rem = e % hw;
    var s = 0.0;
    for (var blk = 0u; blk < nblk; blk += 1u) {
        s += cparts[(b * nblk + blk) * hw + rem - p.base0.x];
    }
    cout[e - p.base0.y] = s;
}

@group(0) @binding(1) var<storage, read> bw: array<f32>;
@group(0) @binding(2) var<storage, read> bdr: array<f32>;
@group(0) @binding(3) var<storage, read_write> bdm: array<f32>;

// dM(i, j) = sum_h w_h(i) dr_h(j), one thread per element of M.
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
    var acc = 0.0;
    for (var h = 0u; h < H; h += 1u) {
        acc += bw[(b * H + h) * N + i - p.base0.x] * bdr[(b * H + h) * W + j];
    }
    bdm[e - p.base0.z] = acc;
}
