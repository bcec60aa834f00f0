// Row statistics over a [R, L] array, in two deterministic levels (no atomics):
//   partial:   for each row r and chunk c of CHUNK elements, a pair (m, s):
//                mode 0 (softmax): m = max_i x_i, s = sum_i exp(x_i - m)
//                mode 1 (dot):     m = 0,         s = sum_i x_i * y_i
//                mode 2 (entropy): m = 0,         s = -sum_i x_i log x_i  (0 log 0 = 0)
//   combine:   merges a row's pairs [R, C, 2] -> [R, 2]:
//                mode 0: m = max(m1, m2), s = s1 exp(m1 - m) + s2 exp(m2 - m)
//                modes 1, 2: componentwise sums
//   normalize: x_i <- exp(x_i - m_r) / s_r   (softmax with the row maximum subtracted)
//   softmax_bwd: dz_i = w_i (dw_i - sum_j w_j dw_j), given the row sums (mode 1 pairs)
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x: mode, y: L (row length), z: C (chunks per row); Params.divs (x, y): L's
// divisor, for `normalize` and `softmax_bwd` (prelude: div_by)

const PER_THREAD: u32 = 4u;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> pairs: array<f32>;

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_s: array<f32, 256>;

fn merge(m1: f32, s1: f32, m2: f32, s2: f32, mode: u32) -> vec2<f32> {
    if mode == 0u {
        let m = max(m1, m2);
        return vec2<f32>(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
    }
    return vec2<f32>(m1 + m2, s1 + s2);
}

// Tree reduction of (red_m, red_s) over the workgroup; the result is in slot 0.
fn reduce_wg(t: u32, mode: u32) {
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if t < stride {
            let r = merge(red_m[t], red_s[t], red_m[t + stride], red_s[t + stride], mode);
            red_m[t] = r.x;
            red_s[t] = r.y;
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let mode = p.extra.x;
    let len = p.extra.y;
    let chunks = p.extra.z;
    let r = u / chunks;
    let c = u % chunks;
    var m = NEG_BIG;
    var s = 0.0;
    if mode != 0u {
        m = 0.0;
    }
    for (var k = 0u; k < PER_THREAD; k += 1u) {
        let i = c * CHUNK + k * WG + t; // consecutive threads, consecutive elements
        if i < len {
            let g = r * len + i;
            let v = x[g - p.base0.x];
            if mode == 0u {
                let mn = max(m, v);
                s = s * exp(m - mn) + exp(v - mn);
                m = mn;
            } else if mode == 1u {
                s += v * y[g - p.base0.y];
            } else if v > 0.0 {
                s -= v * log(v);
            }
        }
    }
    red_m[t] = m;
    red_s[t] = s;
    reduce_wg(t, mode);
    if t == 0u {
        let o = u * 2u - p.base0.z;
        pairs[o] = red_m[0];
        pairs[o + 1u] = red_s[0];
    }
}

@group(0) @binding(1) var<storage, read> in_pairs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out_pairs: array<f32>;

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let mode = p.extra.x;
    let chunks = p.extra.z;
    var m = NEG_BIG;
    var s = 0.0;
    if mode != 0u {
        m = 0.0;
    }
    for (var c = t; c < chunks; c += WG) {
        let o = (u * chunks + c) * 2u - p.base0.x;
        let r = merge(m, s, in_pairs[o], in_pairs[o + 1u], mode);
        m = r.x;
        s = r.y;
    }
    red_m[t] = m;
    red_s[t] = s;
    reduce_wg(t, mode);
    if t == 0u {
        out_pairs[u * 2u - p.base0.y] = red_m[0];
        out_pairs[u * 2u + 1u - p.base0.y] = red_s[0];
    }
}

@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(WG)
fn normalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let len = p.extra.y;
    let total = p.extra.w;
    let e = u * WG + t;
    if e < total {
        let r = div_by(e, p.divs.x, p.divs.y); // e / len
        let m = stats[r * 2u - p.base0.x];
        let s = stats[r * 2u + 1u - p.base0.x];
        let g = e - p.base0.y;
        z[g] = exp(z[g] - m) / s;
    }
}

@group(0) @binding(1) var<storage, read> sb_w: array<f32>;
@group(0) @binding(2) var<storage, read> sb_dw: array<f32>;
@group(0) @binding(3) var<storage, read> sb_sums: array<f32>; // [R, 2]: (0, sum_j w_j dw_j)
@group(0) @binding(4) var<storage, read_write> sb_dz: array<f32>;

// One thread per element of [R, L].
@compute @workgroup_size(WG)
fn softmax_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let len = p.extra.y;
    let e = u * WG + t;
    if e >= p.extra.w {
        return;
    }
    let r = div_by(e, p.divs.x, p.divs.y); // e / len
    sb_dz[e - p.base0.w] = sb_w[e - p.base0.x] * (sb_dw[e - p.base0.y] - sb_sums[r * 2u + 1u - p.base0.z]);
}
