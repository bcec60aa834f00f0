// The prelude every shader of the crate is composed behind (by src/runtime/pipelines.rs),
// after the specialisation (alias V, LANES, ACC, WORDS, SUB_ROWS, EW_ROWS, heads()), the
// constants EPS, HG, TR, WG, CW, CHUNK, KR and `struct Params` that src/runtime/abi.rs emits
// from its Rust definitions. It holds only what every kernel file shares.

@group(0) @binding(0) var<uniform> p: Params;

// Below every finite score: the start of a running maximum (exp(NEG_BIG - m) is 0 or 1, never
// NaN, where -inf would give NaN in (-inf) - (-inf)).
const NEG_BIG: f32 = -3.0e38;

// The work unit (one workgroup) of this invocation: dispatches are folded into x and y and
// may cover a sub-range [unit_base, unit_end) of an op's units. Kernels start with
//   let u = unit_id(wg); if u >= p.unit_end { return; }
fn unit_id(wg: vec3<u32>) -> u32 {
    return p.unit_base + wg.y * p.groups_x + wg.x;
}

// The high 32 bits of a * b (WGSL has no widening multiply): 16-bit halves, exact.
fn mul_hi(a: u32, b: u32) -> u32 {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let lh = al * bh;
    let hl = ah * bl;
    let carry = (((al * bl) >> 16u) + (lh & 0xffffu) + (hl & 0xffffu)) >> 16u;
    return ah * bh + (lh >> 16u) + (hl >> 16u) + carry;
}

// floor(x / d) for every u32 x, given d's (m, l) from the host (src/runtime/abi.rs `divisor`;
// Hacker's Delight 10-8): a multiply and shifts where a u32 division is a long sequence on
// GPUs and lane by lane on CPU adapters.
fn div_by(x: u32, m: u32, l: u32) -> u32 {
    let t = mul_hi(m, x);
    return (t + ((x - t) >> min(l, 1u))) >> (max(l, 1u) - 1u);
}

// Elementwise kernels over [B, N, W] map a workgroup of WG threads to a tile of rows of one
// batch element by a power-of-two tile of columns (extra.z = tile width tw, extra.w = its
// log2; extra.x = row tiles per batch element), coalesced: thread t takes column
// t & (tw - 1) of the tile and EW_ROWS rows k = 0.., WG / tw rows apart. As a unit never spans
// two batch elements, a thread's column vectors (keys, erase, add, dr) are the same for all
// its rows: it loads them once. Params.divs holds the divisors of the row tiles per batch
// element (x, y) and of the column tiles per row (z, w; with WORDS: N and W), so no thread
// divides. A column is one V (LANES f32s: the host specialises V = vec4<f32> when W is a
// multiple of 4), so `e` and `j` count V's: the row length is p.dims.w / LANES. `ok` is false
// past the dispatch's units, the batch element's rows or the row. Kernels loop
//   for (var k = 0u; k < EW_ROWS; k += 1u) { let el = element(wg, t, k); if !el.ok { continue; } ... }
struct Element {
    ok: bool,
    e: u32,
    j: u32,
    b: u32,
    i: u32,
}

fn element(wg: vec3<u32>, t: u32, k: u32) -> Element {
    let u = unit_id(wg);
    let N = p.dims.z;
    let WL = p.dims.w / LANES;
    let tw = p.extra.z;
    let nct = (WL + tw - 1u) >> p.extra.w;
    let rows_per_k = WG >> p.extra.w;
    let ut = div_by(u, p.divs.z, p.divs.w);
    var el: Element;
    el.b = div_by(ut, p.divs.x, p.divs.y);
    el.i = ((ut - el.b * p.extra.x) * EW_ROWS + k) * rows_per_k + (t >> p.extra.w);
    el.j = (u - ut * nct) * tw + (t & (tw - 1u));
    el.ok = u < p.unit_end && el.i < N && el.j < WL;
    el.e = (el.b * N + el.i) * WL + el.j;
    return el;
}

// Up to HG heads' V's at one column (absent heads 0), which a head-specialised elementwise
// kernel holds for all its rows. Named members, not an array: a private array indexed by a
// loop variable may live in local memory on a GPU; with heads() a constant the head loops
// unroll and the switches fold.
struct HeadVs {
    v0: V,
    v1: V,
    v2: V,
    v3: V,
}

fn head_v(vs: HeadVs, h: u32) -> V {
    switch h {
        case 0u: {
            return vs.v0;
        }
        case 1u: {
            return vs.v1;
        }
        case 2u: {
            return vs.v2;
        }
        default: {
            return vs.v3;
        }
    }
}

fn set_head_v(vs: ptr<function, HeadVs>, h: u32, v: V) {
    switch h {
        case 0u: {
            (*vs).v0 = v;
        }
        case 1u: {
            (*vs).v1 = v;
        }
        case 2u: {
            (*vs).v2 = v;
        }
        default: {
            (*vs).v3 = v;
        }
    }
}

// The index of head h's weight at element el's row in a [B, H, N] tensor, and of its V at
// el's column in a [B, H, W] tensor.
fn head_row(el: Element, h: u32) -> u32 {
    return (el.b * heads() + h) * p.dims.z + el.i;
}

fn head_col(el: Element, h: u32) -> u32 {
    return (el.b * heads() + h) * (p.dims.w / LANES) + el.j;
}

// Row g of the group of a thread's EW_ROWS rows that starts at row k0 (g < 4): not ok past
// ROW_GROUP (2 to 4) or EW_ROWS. The head-specialised elementwise kernels' `_groups` entry
// points load a group's rows before storing any: a store may alias a later row's load from
// the same tensor (in place), so the compiler cannot move that load above it, and row by row
// a GPU thread would have one load in flight where the copy kernel has four. CPU adapters take
// groups of 1 (their cores reorder loads themselves; lavapipe was 1.46x slower with groups of
// 4 at H = 4, not isolated) through the row-by-row entry points, chosen on the host: a
// row-by-row branch beside the group loop in one entry point, the loop folded away, was 10-20%
// slower on lavapipe at H = 4 (measured twice, the second time as a regression since bebcc56).
fn ew_row(wg: vec3<u32>, t: u32, k0: u32, g: u32) -> Element {
    var el = element(wg, t, k0 + g);
    el.ok = el.ok && g < ROW_GROUP && k0 + g < EW_ROWS;
    return el;
}

// With WORDS (f16 packed two per u32 and LANES = 1: rows may start mid-word) the elementwise
// kernels map each thread to one word instead: flat elements 2q and 2q + 1, each with its own
// row and column, so the thread computes both halves and stores the word whole (NAME_st2).
// A unit covers WG * EW_ROWS consecutive words; `b.ok` is false for the half past the tensor.
struct Word {
    a: Element,
    b: Element,
}

fn flat_element(f: u32, live: bool) -> Element {
    let N = p.dims.z;
    let W = p.dims.w;
    var el: Element;
    let row = div_by(f, p.divs.z, p.divs.w);
    el.ok = live && row < p.dims.x * N;
    el.e = f;
    el.j = f - row * W;
    el.b = div_by(row, p.divs.x, p.divs.y);
    el.i = row - el.b * N;
    return el;
}

fn word_elements(wg: vec3<u32>, t: u32, k: u32) -> Word {
    let u = unit_id(wg);
    let q = (u * EW_ROWS + k) * WG + t;
    let live = u < p.unit_end;
    var wd: Word;
    wd.a = flat_element(2u * q, live);
    wd.b = flat_element(2u * q + 1u, live);
    return wd;
}

// The elements an elementwise kernel stores in one iteration: with WORDS a packed word (both
// halves), else one element (`b.ok` false). Kernels store them with NAME_st2, whose index is in
// V's (in elements with WORDS, where LANES = 1).
fn ew_item(wg: vec3<u32>, t: u32, k: u32) -> Word {
    if WORDS {
        return word_elements(wg, t, k);
    }
    var wd: Word;
    wd.a = element(wg, t, k);
    wd.b = wd.a;
    wd.b.ok = false;
    return wd;
}

// Flat kernels over n V's: the first element a thread stores and whether it stores the next
// one too. With WORDS (LANES = 1) a thread takes a packed word, elements 2q and 2q + 1, and
// stores them with NAME_st2; else one V (`ok1` false).
struct FlatItem {
    e: u32,
    ok: bool,
    ok1: bool,
}

fn flat_item(u: u32, t: u32, n: u32) -> FlatItem {
    var f: FlatItem;
    if WORDS {
        f.e = 2u * (u * WG + t);
        f.ok1 = f.e + 1u < n;
    } else {
        f.e = u * WG + t;
        f.ok1 = false;
    }
    f.ok = f.e < n;
    return f;
}

// SUB_ROWS: x summed over the tw lanes of this invocation's row (tw a power of two, the row's
// lanes an aligned run within one subgroup), in every lane of the row, by a butterfly of
// subgroup shuffles. Call in uniform control flow: every lane of the subgroup takes part.
// Lanes a and a ^ s add the same two values, so the row's lanes end with the same bits.
fn row_lanes_sum4(x: vec4<f32>, tw: u32) -> vec4<f32> {
    var s = x;
    for (var m = 1u; m < tw; m = m << 1u) {
        s += xor_lanes4(s, m);
    }
    return s;
}

fn row_lanes_sum(x: f32, tw: u32) -> f32 {
    var s = x;
    for (var m = 1u; m < tw; m = m << 1u) {
        s += xor_lanes(s, m);
    }
    return s;
}

fn row_lanes_sum3(x: vec3<f32>, tw: u32) -> vec3<f32> {
    var s = x;
    for (var m = 1u; m < tw; m = m << 1u) {
        s += xor_lanes3(s, m);
    }
    return s;
}

fn row_lanes_sum2(x: vec2<f32>, tw: u32) -> vec2<f32> {
    var s = x;
    for (var m = 1u; m < tw; m = m << 1u) {
        s += xor_lanes2(s, m);
    }
    return s;
}

// row_lanes_sum4 of the first nh lanes of x only (a group's present heads), the others
// returned as they are: each summed lane gets row_lanes_sum4's operations (the same bits),
// with a shuffle per present head where a vec4 shuffle moves four (on NVIDIA, one 32-bit
// shuffle per lane: at one head a quarter of them). Call in uniform control flow, with the
// same nh in every lane of the subgroup.
fn row_lanes_sum_heads(x: vec4<f32>, nh: u32, tw: u32) -> vec4<f32> {
    switch nh {
        case 1u: {
            return vec4<f32>(row_lanes_sum(x.x, tw), x.yzw);
        }
        case 2u: {
            return vec4<f32>(row_lanes_sum2(x.xy, tw), x.zw);
        }
        case 3u: {
            return vec4<f32>(row_lanes_sum3(x.xyz, tw), x.w);
        }
        default: {
            return row_lanes_sum4(x, tw);
        }
    }
}

// Streaming rows' subgroup loops (primitives/rowstream.wgsl, write.wgsl bwd_heads), which take
// ROW_GROUP rows per row lane at a time: the rows of the group that starts at row i0, row lane
// r of rl taking i0 + k rl + r in lane k = 0..3. A lane k >= ROW_GROUP holds i_end, a row past
// the block: not loaded, and the calls for it fold away.
fn stream_group_rows(i0: u32, rl: u32, r: u32, i_end: u32) -> vec4<u32> {
    let k = vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<u32>(i_end), i0 + k * rl + r, k < vec4<u32>(ROW_GROUP));
}

// Streaming rows (primitives/rowstream.wgsl, write.wgsl bwd_heads): the workgroup-memory slot
// of row lane r's share at column lane c, with tw column lanes. The staging stores (a row's
// lanes, consecutive threads) fill consecutive slots: no bank conflict. The row sums (one
// thread per row, reading its columns in order) read a column across rows strided by tw
// words: where tw is a power of two the columns are XOR-swizzled by row, so that 32 rows meet
// at most 2-way conflicts (4-way at tw = 4 and 8; unswizzled, 16-way at tw = 16). Other
// widths (a row's V's exactly) stay unswizzled: at most 2-way for odd tw and most even ones;
// 3- to 6-way at tw = 6, 10, 12, 14, 20, 24, 28, 40, 48, 80, 96 (counted for 32-bit slots
// over 32 banks, KR rows per row lane), against a quarter or more of the threads idle with
// a power of two. Only where values sit changes, not the order of any sum.
fn stage_slot(r: u32, c: u32, tw: u32) -> u32 {
    if (tw & (tw - 1u)) == 0u {
        return r * tw + (c ^ (r & (tw - 1u)));
    }
    return r * tw + c;
}

// The largest power of two not above x > 0: trees over a count of lanes that is not a power
// of two first add the lanes past it into the first ones (column tiles of a row's V's).
fn pow2_floor(x: u32) -> u32 {
    return 1u << firstLeadingBit(x);
}
