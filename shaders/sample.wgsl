// Sampling and the score-function gradient, per batch b and head h over the N slots.
//   sample: idx = argmax_i log w(i) + G(seed, b, h, i), G = -log(-log(U)), U in (0, 1) from a
//           counter-based hash of (seed, b, h, i) (the CPU reference uses the same function);
//           slots with w <= 0 (or NaN) are never drawn; ties go to the lowest index.
//   argmax: idx = argmax_i w(i), ties to the lowest index.
//   Two deterministic levels: `partial` per chunk of 1024 slots, `combine` per row.
//   reinforce: dz(i) = -A (onehot(idx)(i) - w(i)) + lambda w(i) (log w(i) + H(w)),
//           H(w) = -sum_i w(i) log w(i), with w log w = 0 where w = 0: the gradient of
//           -A log w(idx) - lambda H(w) with respect to the scores, never dividing by w(idx).
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: partial/combine: x = mode (0 sample, 1 argmax), y, z = seed (low, high), w = chunks
// Params.fx: reinforce: x = lambda

const PER_THREAD: u32 = 4u;
const NONE: u32 = 0xffffffffu;

fn mix(v: u32) -> u32 {
    // lowbias32 (Wellons): a full-avalanche 32-bit integer hash.
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn hash4(seed_lo: u32, seed_hi: u32, b: u32, h: u32, i: u32) -> u32 {
    var x = mix(seed_lo ^ 0x9e3779b9u);
    x = mix(x ^ seed_hi);
    x = mix(x ^ b ^ 0x85ebca6bu);
    x = mix(x ^ h ^ 0xc2b2ae35u);
    return mix(x ^ i);
}

fn gumbel(b: u32, h: u32, i: u32) -> f32 {
    let bits = hash4(p.extra.y, p.extra.z, b, h, i);
    let u = (f32(bits >> 8u) + 0.5) / 16777216.0; // (0, 1), exact in f32
    return -log(-log(u));
}

// (score, index) with a larger score winning, ties to the lower index, NONE losing to all.
fn better(s1: f32, i1: u32, s2: f32, i2: u32) -> bool {
    if i2 == NONE {
        return i1 != NONE;
    }
    if i1 == NONE {
        return false;
    }
    return s1 > s2 || (s1 == s2 && i1 < i2);
}

var<workgroup> red_s: array<f32, 256>;
var<workgroup> red_i: array<u32, 256>;

fn reduce_best(t: u32) {
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if t < stride && better(red_s[t + stride], red_i[t + stride], red_s[t], red_i[t]) {
            red_s[t] = red_s[t + stride];
            red_i[t] = red_i[t + stride];
        }
    }
    workgroupBarrier();
}

@group(0) @binding(1) var<storage, read> sw: array<f32>;
@group(0) @binding(2) var<storage, read_write> best: array<u32>; // [rows, chunks, 2]: score bits, index

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let H = p.dims.y;
    let N = p.dims.z;
    let chunks = p.extra.w;
    let r = u / chunks;
    let c = u % chunks;
    var bs = 0.0;
    var bi = NONE;
    for (var k = 0u; k < PER_THREAD; k += 1u) {
        let i = c * CHUNK + k * WG + t;
        if i < N {
            let w = sw[r * N + i - p.base0.x];
            var s = w;
            var ok = w == w; // not NaN
            if p.extra.x == 0u {
                ok = w > 0.0;
                s = log(w) + gumbel(r / H, r % H, i);
            }
            if ok && better(s, i, bs, bi) {
                bs = s;
                bi = i;
            }
        }
    }
    red_s[t] = bs;
    red_i[t] = bi;
    reduce_best(t);
    if t == 0u {
        best[u * 2u - p.base0.y] = bitcast<u32>(red_s[0]);
        best[u * 2u + 1u - p.base0.y] = red_i[0];
    }
}

@group(0) @binding(1) var<storage, read> cbest: array<u32>;
@group(0) @binding(2) var<storage, read_write> cidx: array<u32>;
@group(0) @binding(3) var<storage, read_write> cflags: array<atomic<u32>>;

// One workgroup per row; a row with nothing drawable is flagged and gets index 0.
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let chunks = p.extra.w;
    var bs = 0.0;
    var bi = NONE;
    for (var c = t; c < chunks; c += WG) {
        let o = (u * chunks + c) * 2u - p.base0.x;
        let s = bitcast<f32>(cbest[o]);
        let i = cbest[o + 1u];
        if better(s, i, bs, bi) {
            bs = s;
            bi = i;
        }
    }
    red_s[t] = bs;
    red_i[t] = bi;
    reduce_best(t);
    if t == 0u {
        var i = red_i[0];
        if i == NONE {
            atomicMax(&cflags[p.check_slot], 0xffffffffu - u);
            i = 0u;
        }
        cidx[u] = i;
    }
}

@group(0) @binding(1) var<storage, read> rw: array<f32>;
@group(0) @binding(2) var<storage, read> ridx: array<u32>;
@group(0) @binding(3) var<storage, read> radv: array<f32>;
@group(0) @binding(4) var<storage, read> rent: array<f32>;  // [B*H, 2]: (0, H(w))
@group(0) @binding(5) var<storage, read_write> rdz: array<f32>;
@group(0) @binding(6) var<storage, read_write> rflags: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn reinforce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let N = p.dims.z;
    let e = u * WG + t;
    if e >= p.dims.x * p.dims.y * N {
        return;
    }
    let r = div_by(e, p.divs.x, p.divs.y); // e / N (Params.divs: N's divisor)
    let i = e - r * N;
    let chosen = ridx[r];
    if chosen >= N && i == 0u {
        atomicMax(&rflags[p.check_slot], 0xffffffffu - r);
    }
    let w = rw[e - p.base0.x];
    var onehot = 0.0;
    if i == chosen {
        onehot = 1.0;
    }
    var ent_term = 0.0;
    if w > 0.0 {
        ent_term = w * (log(w) + rent[r * 2u + 1u]);
    }
    rdz[e - p.base1.x] = -radv[r] * (onehot - w) + p.fx.x * ent_term;
}
