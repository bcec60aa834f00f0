// Location addressing (DESIGN.md §6), per batch b, head h, slot i (indices modulo N), with the
// shift's S = 2R + 1 taps s(k), k = 0..S-1, for the offsets k - R:
//   wg(i) = g wc(i) + (1 - g) wp(i)
//   wt(i) = sum_k s(k) wg(i - (k - R))                      (circular convolution)
//   z(i)  = gamma ln(wt(i) + EPS),  w = softmax(z)          (normalised by primitives/rowstat.wgsl)
// Backward, given dz (from dw: dz = w (dw - sum_j w_j dw_j), primitives/rowstat.wgsl):
//   dgamma = sum_i dz(i) ln(wt(i) + EPS),  dwt(i) = gamma dz(i) / (wt(i) + EPS)
//   dwg(j) = sum_k s(k) dwt(j + (k - R)),  ds(k) = sum_i dwt(i) wg(i - (k - R))
//   dg = sum_i dwg(i) (wc(i) - wp(i)),  dwc = g dwg,  dwp = (1 - g) dwg
// A unit is (row b*H + h, tile of LT slots); the tile stages wg (and, backward, dwt) over its
// slots and a halo of R (2R) on each side in workgroup memory, so each weight is read from
// global memory once per tile (plus its halo) and every sum over taps is O(S) from workgroup
// memory. Sums over slots leave one partial per tile (lanes of a column, then a tree over
// them, in the backward), summed in a fixed order afterwards
// (primitives/colsum.wgsl `combine`), then `unpack` splits them into dgate, dshift, dgamma.
// The per-row parameters travel packed as rp[row] = (g, gamma, s(0), ..., s(S-1)) (`pack`),
// which keeps the backward within 8 storage bindings.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x = S (taps), y = tiles per row, z = S + 2 (packed row length; bwd_lanes:
// lanes per column of the tile sums, a power of two), w = elements. Params.divs (x, y): N's
// divisor, for the slots' wrap-around in `fwd` and the backward.

const LT: u32 = WG;      // slots per tile, one per thread
const HALO: u32 = 256u;  // largest R: S <= 2 HALO + 1 (src/ops/location.rs refuses wider shifts)

var<workgroup> tg: array<f32, 1280>;  // LT + 4 HALO: wg over the tile and a halo of up to 2R
var<workgroup> td: array<f32, 768>;   // LT + 2 HALO: dwt over the tile and a halo of R
var<workgroup> ts: array<f32, 513>;   // 2 HALO + 1: the shift taps
var<workgroup> ra: array<f32, 256>;   // LT: per-slot terms and reductions
var<workgroup> rb: array<f32, 256>;
var<workgroup> rc: array<f32, 256>;   // bwd_lanes: the tile's lane sums of its partials

// x mod N, by N's divisor in Params.divs (x, y): no thread divides (prelude: div_by).
fn mod_n(x: u32) -> u32 {
    return x - div_by(x, p.divs.x, p.divs.y) * p.dims.z;
}

// Slot (a - off) mod N, for a >= 0, given `back` = N - (off mod N) (in 1..=N; a + back stays
// within u32 for the tiles' a < N + LT + 2 HALO).
fn slot(a: u32, back: u32) -> u32 {
    return mod_n(a + back);
}

// `back` of `slot` for an offset.
fn back_of(off: u32) -> u32 {
    return p.dims.z - mod_n(off);
}

@group(0) @binding(1) var<storage, read> pk_gate: array<f32>;
@group(0) @binding(2) var<storage, read> pk_shift: array<f32>;
@group(0) @binding(3) var<storage, read> pk_gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> pk_rp: array<f32>;

// rp[row] = (g, gamma, s(0..S)), one thread per element.
@compute @workgroup_size(WG)
fn pack(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let e = u * WG + t;
    if e >= p.extra.w {
        return;
    }
    let S = p.extra.x;
    let row = e / (S + 2u);
    let c = e % (S + 2u);
    var v = 0.0;
    if c == 0u {
        v = pk_gate[row];
    } else if c == 1u {
        v = pk_gamma[row];
    } else {
        v = pk_shift[row * S + c - 2u];
    }
    pk_rp[e] = v;
}

@group(0) @binding(1) var<storage, read> lwc: array<f32>;
@group(0) @binding(2) var<storage, read> lwp: array<f32>;
@group(0) @binding(3) var<storage, read> lrp: array<f32>;

// Stages the row's taps, and wg over slots [c0 - off, c0 + LT + off) into tg.
fn stage(row: u32, c0: u32, off: u32, t: u32) {
    let N = p.dims.z;
    let S = p.extra.x;
    let r0 = row * (S + 2u);
    let g = lrp[r0];
    for (var k = t; k < S; k += WG) {
        ts[k] = lrp[r0 + 2u + k];
    }
    let back = back_of(off);
    for (var x = t; x < LT + 2u * off; x += WG) {
        let i = row * N + slot(c0 + x, back);
        tg[x] = g * lwc[i - p.base0.x] + (1.0 - g) * lwp[i - p.base0.y];
    }
}

@group(0) @binding(4) var<storage, read_write> fz: array<f32>;     // [B, H, N]: z
@group(0) @binding(5) var<storage, read_write> fpart: array<f32>;  // [B*H, tiles, 2]: softmax pairs

// z over the tile, and the tile's (max z, sum exp(z - max)) for the softmax.
@compute @workgroup_size(WG)
fn fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let N = p.dims.z;
    let S = p.extra.x;
    let R = S / 2u;
    let tiles = p.extra.y;
    let row = u / tiles;
    let c0 = (u % tiles) * LT;
    stage(row, c0, R, t);
    workgroupBarrier();
    let i = c0 + t;
    var z = NEG_BIG;
    if i < N {
        // wg(i - (k - R)) sits at tg[t + R - (k - R)].
        var wt = 0.0;
        for (var k = 0u; k < S; k += 1u) {
            wt += ts[k] * tg[t + 2u * R - k];
        }
        z = lrp[row * (S + 2u) + 1u] * log(wt + EPS);
        fz[row * N + i - p.base0.w] = z;
    }
    // Fixed-order tree of (max, sum exp) pairs: the same bits every run.
    ra[t] = z;
    rb[t] = select(0.0, 1.0, i < N);
    for (var s = LT / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if t < s {
            let m = max(ra[t], ra[t + s]);
            rb[t] = rb[t] * exp(ra[t] - m) + rb[t + s] * exp(ra[t + s] - m);
            ra[t] = m;
        }
    }
    workgroupBarrier();
    if t == 0u {
        fpart[u * 2u - p.base1.x] = ra[0];
        fpart[u * 2u + 1u - p.base1.x] = rb[0];
    }
}

@group(0) @binding(4) var<storage, read> bdz: array<f32>;          // [B, H, N]
@group(0) @binding(5) var<storage, read_write> bdwc: array<f32>;   // [B, H, N]
@group(0) @binding(6) var<storage, read_write> bdwp: array<f32>;   // [B, H, N]
@group(0) @binding(7) var<storage, read_write> bpart: array<f32>;  // [B, tiles, H, S + 2]

// The backward's tile: where its partials go (at o, S + 2 of them), its live slots and
// its shift.
struct BwdTile {
    o: u32,
    live: u32,
    R: u32,
    S: u32,
}

// dwc and dwp over unit u's tile, leaving the per-slot terms of the tile's partial sums
// (ds(0..S), dg, dgamma) staged in workgroup memory for `bwd` and `bwd_lanes` to sum.
fn bwd_tile(u: u32, t: u32) -> BwdTile {
    let H = p.dims.y;
    let N = p.dims.z;
    let S = p.extra.x;
    let R = S / 2u;
    let tiles = p.extra.y;
    let row = u / tiles;
    let tile = u % tiles;
    let c0 = tile * LT;
    let r0 = row * (S + 2u);
    let g = lrp[r0];
    let gamma = lrp[r0 + 1u];
    stage(row, c0, 2u * R, t);
    workgroupBarrier();
    // dwt over slots [c0 - R, c0 + LT + R): y -> slot c0 + y - R, whose wg(. - (k - R)) sits
    // at tg[y + 2R - k]. The tile's own slots also keep their dgamma term.
    let back = back_of(R);
    for (var y = t; y < LT + 2u * R; y += WG) {
        var wt = 0.0;
        for (var k = 0u; k < S; k += 1u) {
            wt += ts[k] * tg[y + 2u * R - k];
        }
        let dz = bdz[row * N + slot(c0 + y, back) - p.base0.w];
        td[y] = gamma * dz / (wt + EPS);
        if y >= R && y < R + LT {
            ra[y - R] = select(0.0, dz * log(wt + EPS), c0 + y - R < N);
        }
    }
    workgroupBarrier();
    let j = c0 + t;
    var q = 0.0;
    if j < N {
        // dwt(j + (k - R)) sits at td[t + k].
        var dwg = 0.0;
        for (var k = 0u; k < S; k += 1u) {
            dwg += ts[k] * td[t + k];
        }
        let e = row * N + j;
        bdwc[e - p.base1.x] = g * dwg;
        bdwp[e - p.base1.y] = (1.0 - g) * dwg;
        q = dwg * (lwc[e - p.base0.x] - lwp[e - p.base0.y]);
    }
    rb[t] = q;
    workgroupBarrier();
    var tl: BwdTile;
    tl.o = (((row / H) * tiles + tile) * H + row % H) * (S + 2u) - p.base1.z;
    tl.live = min(LT, N - c0);
    tl.R = R;
    tl.S = S;
    return tl;
}

// dwc, dwp and the tile's partials, each column (ds(c) for c < S, then dg, then dgamma) a
// thread's fixed-order serial sum over the tile's slots (wg(i - (k - R)) at tg[y + 3R - k]):
// for CPU adapters, where a tree's barriers cost more than they split, and shifts too wide
// for two lanes per column.
@compute @workgroup_size(WG)
fn bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let k = bwd_tile(u, t);
    for (var c = t; c < k.S + 2u; c += WG) {
        bpart[k.o + c] = tile_sum(c, 0u, 1u, k.live, k.R, k.S);
    }
}

// As `bwd`, with L = extra.z lanes per column (a power of two, (S + 2) L <= WG): lane l sums
// slots l, l + L, ...; then a tree over the lanes. Both orders are fixed: the same bits every
// run.
@compute @workgroup_size(WG)
fn bwd_lanes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let k = bwd_tile(u, t);
    let L = p.extra.z;
    let nc = k.S + 2u;
    let c = t / L;
    let l = t % L;
    var acc = 0.0;
    if c < nc {
        acc = tile_sum(c, l, L, k.live, k.R, k.S);
    }
    rc[t] = acc;
    for (var s = L / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if l < s && c < nc {
            rc[t] += rc[t + s];
        }
    }
    if l == 0u && c < nc {
        bpart[k.o + c] = rc[t];
    }
}

// Column c of a tile's partials (ds(c) for c < S, then dg, then dgamma) over its slots
// y = l, l + step, ... < live, in that order.
fn tile_sum(c: u32, l: u32, step: u32, live: u32, R: u32, S: u32) -> f32 {
    var acc = 0.0;
    if c < S {
        for (var y = l; y < live; y += step) {
            acc += td[y + R] * tg[y + 3u * R - c];
        }
    } else if c == S {
        for (var y = l; y < live; y += step) {
            acc += rb[y];
        }
    } else {
        for (var y = l; y < live; y += step) {
            acc += ra[y];
        }
    }
    return acc;
}

@group(0) @binding(1) var<storage, read> up_sums: array<f32>;       // [B*H, S + 2]
@group(0) @binding(2) var<storage, read_write> up_gate: array<f32>;  // [B, H]
@group(0) @binding(3) var<storage, read_write> up_shift: array<f32>; // [B, H, S]
@group(0) @binding(4) var<storage, read_write> up_gamma: array<f32>; // [B, H]

// Splits the summed partials, one thread per element.
@compute @workgroup_size(WG)
fn unpack(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let e = u * WG + t;
    if e >= p.extra.w {
        return;
    }
    let S = p.extra.x;
    let row = e / (S + 2u);
    let c = e % (S + 2u);
    let v = up_sums[e];
    if c < S {
        up_shift[row * S + c] = v;
    } else if c == S {
        up_gate[row] = v;
    } else {
        up_gamma[row] = v;
    }
}
