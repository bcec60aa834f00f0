// Column reductions: weighted sums of memory rows, the primitive of the soft read and of every
// gradient that sums over slots (content addressing's dk, soft write's de and da).
//   partial: part[b, blk, h, j] = sum_{i in block blk} w_h(i) M(i, j)
//            threads along columns (coalesced), several rows in flight when W is narrow,
//            up to HG heads per workgroup, each thread loading several rows before summing;
//            a column tile is a row's V's (at most CW), so CW / TW row lanes (rounded down)
//            take consecutive V's with no idle column lane, whatever W
//   combine: out[b, h, j] = sum_blk part[b, blk, h, j], in a fixed order (deterministic);
//            also sums the partials other kernels write in the same layout, or with S
//            quantities per head, part[b, blk, h, q, j] (write.wgsl: de and da, S = 2)
// Where one group holds every head, partial is specialised for the head count (heads()), so
// the one-head and several-head paths below are chosen at build time.
// Params.extra: partial: x = TW (column tile), y = row blocks, z = column tiles, w = rows per block
//               combine: x = S (quantities per head), y = blocks, z = lanes per output (a
//                        power of two), w = the quantity q summed
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

@group(0) @binding(1) var<storage, read> mem: array<MemV>; // f32 or f16
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<V>; // [B, blocks, H, W]

var<workgroup> red: array<V, CW * HG>;

// A group's several heads: each head's running sum (named members: no private arrays).
struct Heads4 {
    a0: V,
    a1: V,
    a2: V,
    a3: V,
}

// Where the group's heads' weights start in `w` ([B, H, N]), and 1 for present heads, 0 for
// absent ones (clamped to a present head's weights, then masked).
struct HeadWeights {
    at: vec4<u32>,
    on: vec4<f32>,
}

// Row i (its V m) added to each head's sum: a_h += (on_h w_h(i)) m.
fn add_row(acc: Heads4, hw: HeadWeights, i: u32, m: V) -> Heads4 {
    var s = acc;
    s.a0 += (hw.on.x * w[hw.at.x + i]) * m;
    s.a1 += (hw.on.y * w[hw.at.y + i]) * m;
    s.a2 += (hw.on.z * w[hw.at.z + i]) * m;
    s.a3 += (hw.on.w * w[hw.at.w + i]) * m;
    return s;
}

// Threads take a V column each (LANES f32s); the HG heads of the group in a0..a3 (registers:
// no private arrays). With several heads, ROW_GROUP rows (1 to 4, `Gpu::stream_row_group`)
// are loaded before their sums; one head always loads four.
@compute @workgroup_size(CW)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let H = heads();
    let N = p.dims.z;
    let WL = p.dims.w / LANES;
    let tw = p.extra.x;
    let rl_count = CW / tw;
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
    // The CW % TW threads past the last row lane take no rows.
    let lane_ok = rl < rl_count;
    var a0 = V(0.0);
    var a1 = V(0.0);
    var a2 = V(0.0);
    var a3 = V(0.0);
    let rb = p.extra.w;
    let i_end = min(blk * rb + rb, N);
    let m0 = b * N * WL + j - p.base0.x / LANES;
    if lane_ok && j < WL {
        let w0 = (b * H + h0) * N - p.base0.y;
        if nh == 1u {
            // One head (uniform branch): one weight load per V. Four rows' loads go out
            // before their sums (more bytes in flight per thread); the sums keep row order.
            let st = rl_count;
            var i = blk * rb + rl;
            for (; i + 3u * st < i_end; i += 4u * st) {
                let ma = mem_ld(m0 + i * WL);
                let mb = mem_ld(m0 + (i + st) * WL);
                let mc = mem_ld(m0 + (i + 2u * st) * WL);
                let md = mem_ld(m0 + (i + 3u * st) * WL);
                let wa = w[w0 + i];
                let wb = w[w0 + i + st];
                let wc = w[w0 + i + 2u * st];
                let wd = w[w0 + i + 3u * st];
                a0 += wa * ma;
                a0 += wb * mb;
                a0 += wc * mc;
                a0 += wd * md;
            }
            for (; i < i_end; i += st) {
                a0 += w[w0 + i] * mem_ld(m0 + i * WL);
            }
        } else {
            // Absent heads of the group are clamped to a present one and masked to 0.
            let hw = HeadWeights(
                vec4<u32>(w0, w0 + min(1u, nh - 1u) * N, w0 + min(2u, nh - 1u) * N, w0 + min(3u, nh - 1u) * N),
                vec4<f32>(1.0, f32(nh > 1u), f32(nh > 2u), f32(nh > 3u)),
            );
            var acc = Heads4(a0, a1, a2, a3);
            let st = rl_count;
            var i = blk * rb + rl;
            if ROW_GROUP > 1u {
                // ROW_GROUP rows' loads before their sums (GPUs: more bytes in flight per
                // thread, as the one-head path's four); rows past the group (lanes k >=
                // ROW_GROUP of stream_group_rows) fold away, and the sums keep row order.
                for (; i + (ROW_GROUP - 1u) * st < i_end; i += ROW_GROUP * st) {
                    let r = stream_group_rows(i, st, 0u, i_end);
                    let ma = mem_ld(m0 + r.x * WL);
                    let mb = mem_ld(m0 + r.y * WL);
                    var mc = V(0.0);
                    var md = V(0.0);
                    if ROW_GROUP > 2u {
                        mc = mem_ld(m0 + r.z * WL);
                    }
                    if ROW_GROUP > 3u {
                        md = mem_ld(m0 + r.w * WL);
                    }
                    acc = add_row(acc, hw, r.x, ma);
                    acc = add_row(acc, hw, r.y, mb);
                    if ROW_GROUP > 2u {
                        acc = add_row(acc, hw, r.z, mc);
                    }
                    if ROW_GROUP > 3u {
                        acc = add_row(acc, hw, r.w, md);
                    }
                }
            }
            for (; i < i_end; i += st) {
                acc = add_row(acc, hw, i, mem_ld(m0 + i * WL));
            }
            a0 = acc.a0;
            a1 = acc.a1;
            a2 = acc.a2;
            a3 = acc.a3;
        }
    }
    // Only the group's present heads go through the tree (nh is a constant where heads() is):
    // at H = 1 a quarter of the workgroup-memory traffic of all HG.
    // The row lanes are summed by a tree over the largest power of two of them, after the
    // lanes past it are added to the first ones (a fixed order: the same bits every run).
    red[t] = a0;
    if nh > 1u {
        red[CW + t] = a1;
    }
    if nh > 2u {
        red[2u * CW + t] = a2;
    }
    if nh > 3u {
        red[3u * CW + t] = a3;
    }
    let p2 = pow2_floor(rl_count);
    if p2 < rl_count {
        workgroupBarrier();
        if rl < rl_count - p2 {
            for (var hh = 0u; hh < nh; hh += 1u) {
                red[hh * CW + t] += red[hh * CW + t + p2 * tw];
            }
        }
    }
    for (var s = p2 / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if rl < s {
            for (var hh = 0u; hh < nh; hh += 1u) {
                red[hh * CW + t] += red[hh * CW + t + s * tw];
            }
        }
    }
    workgroupBarrier();
    if rl == 0u && j < WL {
        for (var hh = 0u; hh < nh; hh += 1u) {
            part[((b * nblk + blk) * H + h0 + hh) * WL + j - p.base0.z / LANES] = red[hh * CW + t];
        }
    }
}

@group(0) @binding(1) var<storage, read> cparts: array<f32>;
@group(0) @binding(2) var<storage, read_write> cout: array<f32>;

var<workgroup> csum: array<f32, 256>;

// out[b, h, j] = sum over blocks of part[b, blk, h, q, j]. Each output gets `lanes` threads
// (lane k sums blocks k, k + lanes, ...), then a fixed-order tree over the lanes: parallel
// for long block lists, and the same bits every run. Consecutive threads take consecutive
// outputs, so loads of one block are coalesced.
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
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
        // Element (h, j) of quantity q in a block's H x S x W partials (rem = h W + j).
        let S = p.extra.x;
        let W = p.dims.w;
        let at = rem + ((rem / W) * (S - 1u) + p.extra.w) * W - p.base0.x;
        for (var blk = lane; blk < nblk; blk += lanes) {
            s += cparts[(b * nblk + blk) * hw * S + at];
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

