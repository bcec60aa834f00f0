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
    extra: vec4<u32>, // partial: x = TW (column tile), y = row blocks, z = column tiles, w = rows per block
                      // combine: y = blocks, z = lanes per output (a power of two)
    fx: vec4<f32>,
}

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
    var acc = vec4<f32>(0.0);
    let rb = p.extra.w;
    let i_end = min(blk * rb + rb, N);
    if j < W {
        let w0 = (b * H + h0) * N - p.base0.y;
        if nh == 1u {
            // One head (uniform branch): one weight load per element.
            for (var i = blk * rb + rl; i < i_end; i += rl_count) {
                acc.x += w[w0 + i] * mem[(b * N + i) * W + j - p.base0.x];
            }
        } else {
            // Absent heads of the group are clamped to a present one and masked to 0.
            let mask = vec4<f32>(1.0, f32(nh > 1u), f32(nh > 2u), f32(nh > 3u));
            let o1 = min(1u, nh - 1u) * N;
            let o2 = min(2u, nh - 1u) * N;
            let o3 = min(3u, nh - 1u) * N;
            for (var i = blk * rb + rl; i < i_end; i += rl_count) {
                let m = mem[(b * N + i) * W + j - p.base0.x];
                let wv = vec4<f32>(w[w0 + i], w[w0 + o1 + i], w[w0 + o2 + i], w[w0 + o3 + i]);
                acc += wv * mask * m;
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
        for (var hh = 0u; hh < HG; hh += 1u) {
            if hh < nh {
                part[((b * nblk + blk) * H + h0 + hh) * W + j - p.base0.z] = red[hh * 64u + t];
            }
        }
    }
}

@group(0) @binding(1) var<storage, read> cparts: array<f32>;
@group(0) @binding(2) var<storage, read_write> cout: array<f32>;

var<workgroup> csum: array<f32, 256>;

// out[b, h, j] = sum over blocks of part[b, blk, h, j]. Each output gets `lanes` threads
// (lane k sums blocks k, k + lanes, ...), then a fixed-order tree over the lanes: parallel
// for long block lists, and the same bits every run. Consecutive threads take consecutive
// outputs, so loads of one block are coalesced.
@compute @workgroup_size(256)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = p.unit_base + wg.y * p.groups_x + wg.x;
    if u >= p.unit_end {
        return;
    }
    let hw = p.dims.y * p.dims.w;
    let nblk = p.extra.y;
    let lanes = p.extra.z;
    let per_wg = 256u / lanes;
    let o = t % per_wg;
    let lane = t / per_wg;
    let e = u * per_wg + o;
    let ok = e < p.dims.x * hw;
    var s = 0.0;
    if ok {
        let b = e / hw;
        let rem = e % hw;
        for (var blk = lane; blk < nblk; blk += lanes) {
            s += cparts[(b * nblk + blk) * hw + rem - p.base0.x];
        }
    }
    csum[t] = s;
    for (var stride = lanes / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if lane < stride {
            csum[t] += csum[t + stride * per_wg];
        }
    }
    if ok && lane == 0u {
        cout[e - p.base0.y] = csum[t];
    }
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
