// The copy-task NTM's own layers, as user kernels of ntm-kernels (Gpu::kernel / Gpu::dispatch):
// the LSTM controller, linear layers, the heads' activations, the loss, the optimiser. The
// memory ops (addressing, reads, writes, their backward passes) are the library's.
//
// Parameters live in one flat tensor `theta` (gradients in `grad`, Adam moments in `m`, `v`),
// each layer at an offset given in the uniform. Binding 0 is 16 u32 words (f32 as bits).
//
//   LSTM:    z = Wl [x; r_prev; h_prev] + bl,  i, f, o = sigmoid(z_i, z_f, z_o), g = tanh(z_g),
//            c = f c_prev + i g,  h = o tanh(c)
//   linear:  y = W [a; a2] + b
//   heads:   key = k (raw), beta = softplus, gate = sigmoid, shift = softmax over 3 offsets,
//            gamma = 1 + softplus; erase = sigmoid, add = tanh
//   loss:    binary cross-entropy per bit of sigmoid(y) against the target, in the output phase
//   Adam:    g <- g min(1, clip / norm(all g)); m, v moments; theta -= lr mhat / (sqrt(vhat) + eps)
// Every sum runs in a fixed order: the same inputs give the same bits.

@group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;

fn pw(k: u32) -> u32 {
    return p[k / 4u][k % 4u];
}

fn pf(k: u32) -> f32 {
    return bitcast<f32>(pw(k));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// The shift distribution over offsets -1, 0, +1 (maximum subtracted).
fn softmax3(z: vec3<f32>) -> vec3<f32> {
    let e = exp(z - max(z.x, max(z.y, z.z)));
    return e / (e.x + e.y + e.z);
}

fn softplus(x: f32) -> f32 {
    // log(1 + e^x) without overflow.
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

// ---- lstm_fwd: params B, X, W, C, woff, boff, xoff; a thread per (b, unit j)
@group(0) @binding(1) var<storage, read> lf_theta: array<f32>;
@group(0) @binding(2) var<storage, read> lf_x: array<f32>;
@group(0) @binding(3) var<storage, read> lf_r: array<f32>;
@group(0) @binding(4) var<storage, read> lf_h: array<f32>;
@group(0) @binding(5) var<storage, read> lf_c: array<f32>;
@group(0) @binding(6) var<storage, read_write> lf_gates: array<f32>;
@group(0) @binding(7) var<storage, read_write> lf_cn: array<f32>;
@group(0) @binding(8) var<storage, read_write> lf_hn: array<f32>;

fn lstm_pre(k: u32, b: u32) -> f32 {
    let X = pw(1u);
    let W = pw(2u);
    let C = pw(3u);
    let row = pw(4u) + k * (X + W + C);
    var s = lf_theta[pw(5u) + k];
    for (var i = 0u; i < X; i += 1u) {
        s += lf_theta[row + i] * lf_x[pw(6u) + b * X + i];
    }
    for (var i = 0u; i < W; i += 1u) {
        s += lf_theta[row + X + i] * lf_r[b * W + i];
    }
    for (var i = 0u; i < C; i += 1u) {
        s += lf_theta[row + X + W + i] * lf_h[b * C + i];
    }
    return s;
}

@compute @workgroup_size(64)
fn lstm_fwd(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let C = pw(3u);
    if id.x >= B * C {
        return;
    }
    let b = id.x / C;
    let j = id.x % C;
    let ig = sigmoid(lstm_pre(j, b));
    let fg = sigmoid(lstm_pre(C + j, b));
    let gg = tanh(lstm_pre(2u * C + j, b));
    let og = sigmoid(lstm_pre(3u * C + j, b));
    let c = fg * lf_c[id.x] + ig * gg;
    let o = b * 4u * C;
    lf_gates[o + j] = ig;
    lf_gates[o + C + j] = fg;
    lf_gates[o + 2u * C + j] = gg;
    lf_gates[o + 3u * C + j] = og;
    lf_cn[id.x] = c;
    lf_hn[id.x] = og * tanh(c);
}

// ---- lstm_bwd: params B, C; a thread per (b, j). dc holds dc_t in and dc_{t-1} out; dh is
// the whole gradient of h_t. dgates gets the pre-activation gradients [B, 4C].
@group(0) @binding(1) var<storage, read> lb_gates: array<f32>;
@group(0) @binding(2) var<storage, read> lb_c: array<f32>;
@group(0) @binding(3) var<storage, read> lb_cprev: array<f32>;
@group(0) @binding(4) var<storage, read> lb_dh: array<f32>;
@group(0) @binding(5) var<storage, read_write> lb_dc: array<f32>;
@group(0) @binding(6) var<storage, read_write> lb_dgates: array<f32>;

@compute @workgroup_size(64)
fn lstm_bwd(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let C = pw(1u);
    if id.x >= B * C {
        return;
    }
    let b = id.x / C;
    let j = id.x % C;
    let o = b * 4u * C;
    let ig = lb_gates[o + j];
    let fg = lb_gates[o + C + j];
    let gg = lb_gates[o + 2u * C + j];
    let og = lb_gates[o + 3u * C + j];
    let tc = tanh(lb_c[id.x]);
    let dh = lb_dh[id.x];
    let dc = lb_dc[id.x] + dh * og * (1.0 - tc * tc);
    lb_dgates[o + j] = dc * gg * ig * (1.0 - ig);
    lb_dgates[o + C + j] = dc * lb_cprev[id.x] * fg * (1.0 - fg);
    lb_dgates[o + 2u * C + j] = dc * ig * (1.0 - gg * gg);
    lb_dgates[o + 3u * C + j] = dh * tc * og * (1.0 - og);
    lb_dc[id.x] = dc * fg;
}

// ---- linear_fwd: y[b, o] = b[o] + sum_i W[o, i] [a; a2][b, i]
// params B, A, A2, O, woff, boff, I (row stride of W), act (0: none, 1: relu), aoff (offset of
// `a`'s rows); a thread per (b, o)
@group(0) @binding(1) var<storage, read> lin_theta: array<f32>;
@group(0) @binding(2) var<storage, read> lin_a: array<f32>;
@group(0) @binding(3) var<storage, read> lin_a2: array<f32>;
@group(0) @binding(4) var<storage, read_write> lin_y: array<f32>;

@compute @workgroup_size(64)
fn linear_fwd(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let A = pw(1u);
    let A2 = pw(2u);
    let O = pw(3u);
    if id.x >= B * O {
        return;
    }
    let b = id.x / O;
    let o = id.x % O;
    let row = pw(4u) + o * pw(6u);
    var s = lin_theta[pw(5u) + o];
    for (var i = 0u; i < A; i += 1u) {
        s += lin_theta[row + i] * lin_a[pw(8u) + b * A + i];
    }
    for (var i = 0u; i < A2; i += 1u) {
        s += lin_theta[row + A + i] * lin_a2[b * A2 + i];
    }
    if pw(7u) == 1u {
        s = max(s, 0.0);
    }
    lin_y[id.x] = s;
}

// ---- linear_bwd_in: d[a; a2][b, i] (+)= sum_o W[o, col0 + i] dy[b, o]
// params B, A, A2, O, woff, I, col0, acc (1: add); a thread per (b, i), i < A + A2
@group(0) @binding(1) var<storage, read> lbi_theta: array<f32>;
@group(0) @binding(2) var<storage, read> lbi_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> lbi_da: array<f32>;
@group(0) @binding(4) var<storage, read_write> lbi_da2: array<f32>;

@compute @workgroup_size(64)
fn linear_bwd_in(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let A = pw(1u);
    let A2 = pw(2u);
    let O = pw(3u);
    let n = A + A2;
    if id.x >= B * n {
        return;
    }
    let b = id.x / n;
    let i = id.x % n;
    var s = 0.0;
    for (var o = 0u; o < O; o += 1u) {
        s += lbi_theta[pw(4u) + o * pw(5u) + pw(6u) + i] * lbi_dy[b * O + o];
    }
    let add = pw(7u) == 1u;
    if i < A {
        let k = b * A + i;
        lbi_da[k] = select(s, lbi_da[k] + s, add);
    } else {
        let k = b * A2 + i - A;
        lbi_da2[k] = select(s, lbi_da2[k] + s, add);
    }
}

// ---- relu_bwd: dy[k] *= (y[k] > 0); params len
@group(0) @binding(1) var<storage, read> rb_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> rb_dy: array<f32>;

@compute @workgroup_size(64)
fn relu_bwd(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= pw(0u) {
        return;
    }
    if rb_y[id.x] <= 0.0 {
        rb_dy[id.x] = 0.0;
    }
}

// ---- linear_bwd_w: grad[W[o, col0 + i]] += sum_b dy[b, o] [a; a2][b, i]; with bias = 1 also
// grad[b[o]] += sum_b dy[b, o]. params B, A, A2, O, woff, boff, I, col0, bias, aoff (offset of
// `a`'s rows); a thread per (o, i), i < A + A2 (+ 1 for the bias)
@group(0) @binding(1) var<storage, read_write> lbw_grad: array<f32>;
@group(0) @binding(2) var<storage, read> lbw_dy: array<f32>;
@group(0) @binding(3) var<storage, read> lbw_a: array<f32>;
@group(0) @binding(4) var<storage, read> lbw_a2: array<f32>;

@compute @workgroup_size(64)
fn linear_bwd_w(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let A = pw(1u);
    let A2 = pw(2u);
    let O = pw(3u);
    let n = A + A2 + pw(8u);
    if id.x >= O * n {
        return;
    }
    let o = id.x / n;
    let i = id.x % n;
    var s = 0.0;
    for (var b = 0u; b < B; b += 1u) {
        var x = 1.0;
        if i < A {
            x = lbw_a[pw(9u) + b * A + i];
        } else if i < A + A2 {
            x = lbw_a2[b * A2 + i - A];
        }
        s += lbw_dy[b * O + o] * x;
    }
    if i < A + A2 {
        let k = pw(4u) + o * pw(6u) + pw(7u) + i;
        lbw_grad[k] += s;
    } else {
        lbw_grad[pw(5u) + o] += s;
    }
}

// ---- head_act: one head's parameters from the raw linear output P [B, Pn] at column poff:
// key (W, raw), beta = softplus, gate = sigmoid, shift = softmax (3), gamma = 1 + softplus.
// params B, W, Pn, poff; a thread per b
@group(0) @binding(1) var<storage, read> ha_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> ha_key: array<f32>;
@group(0) @binding(3) var<storage, read_write> ha_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> ha_gate: array<f32>;
@group(0) @binding(5) var<storage, read_write> ha_shift: array<f32>;
@group(0) @binding(6) var<storage, read_write> ha_gamma: array<f32>;

@compute @workgroup_size(64)
fn head_act(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let W = pw(1u);
    if id.x >= B {
        return;
    }
    let b = id.x;
    let o = b * pw(2u) + pw(3u);
    for (var j = 0u; j < W; j += 1u) {
        ha_key[b * W + j] = ha_p[o + j];
    }
    ha_beta[b] = softplus(ha_p[o + W]);
    ha_gate[b] = sigmoid(ha_p[o + W + 1u]);
    let s = softmax3(vec3<f32>(ha_p[o + W + 2u], ha_p[o + W + 3u], ha_p[o + W + 4u]));
    ha_shift[b * 3u] = s.x;
    ha_shift[b * 3u + 1u] = s.y;
    ha_shift[b * 3u + 2u] = s.z;
    ha_gamma[b] = 1.0 + softplus(ha_p[o + W + 5u]);
}

// ---- head_act_bwd: the raw gradient dP at columns poff.. from the head's gradients.
// params B, W, Pn, poff; a thread per b
@group(0) @binding(1) var<storage, read> hb_p: array<f32>;
@group(0) @binding(2) var<storage, read> hb_dkey: array<f32>;
@group(0) @binding(3) var<storage, read> hb_dbeta: array<f32>;
@group(0) @binding(4) var<storage, read> hb_dgate: array<f32>;
@group(0) @binding(5) var<storage, read> hb_dshift: array<f32>;
@group(0) @binding(6) var<storage, read> hb_dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> hb_dp: array<f32>;

@compute @workgroup_size(64)
fn head_act_bwd(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let W = pw(1u);
    if id.x >= B {
        return;
    }
    let b = id.x;
    let o = b * pw(2u) + pw(3u);
    for (var j = 0u; j < W; j += 1u) {
        hb_dp[o + j] = hb_dkey[b * W + j];
    }
    hb_dp[o + W] = hb_dbeta[b] * sigmoid(hb_p[o + W]);
    let g = sigmoid(hb_p[o + W + 1u]);
    hb_dp[o + W + 1u] = hb_dgate[b] * g * (1.0 - g);
    let s = softmax3(vec3<f32>(hb_p[o + W + 2u], hb_p[o + W + 3u], hb_p[o + W + 4u]));
    let ds = vec3<f32>(hb_dshift[b * 3u], hb_dshift[b * 3u + 1u], hb_dshift[b * 3u + 2u]);
    let dz = s * (ds - dot(s, ds));
    hb_dp[o + W + 2u] = dz.x;
    hb_dp[o + W + 3u] = dz.y;
    hb_dp[o + W + 4u] = dz.z;
    hb_dp[o + W + 5u] = hb_dgamma[b] * sigmoid(hb_p[o + W + 5u]);
}

// ---- ea_act: erase = sigmoid, add = tanh from P at columns poff (erase), poff + W (add).
// params B, W, Pn, poff; a thread per (b, j)
@group(0) @binding(1) var<storage, read> ea_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> ea_e: array<f32>;
@group(0) @binding(3) var<storage, read_write> ea_a: array<f32>;

@compute @workgroup_size(64)
fn ea_act(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let W = pw(1u);
    if id.x >= B * W {
        return;
    }
    let b = id.x / W;
    let j = id.x % W;
    let o = b * pw(2u) + pw(3u);
    ea_e[id.x] = sigmoid(ea_p[o + j]);
    ea_a[id.x] = tanh(ea_p[o + W + j]);
}

// ---- ea_act_bwd
@group(0) @binding(1) var<storage, read> eb_p: array<f32>;
@group(0) @binding(2) var<storage, read> eb_de: array<f32>;
@group(0) @binding(3) var<storage, read> eb_da: array<f32>;
@group(0) @binding(4) var<storage, read_write> eb_dp: array<f32>;

@compute @workgroup_size(64)
fn ea_act_bwd(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let W = pw(1u);
    if id.x >= B * W {
        return;
    }
    let b = id.x / W;
    let j = id.x % W;
    let o = b * pw(2u) + pw(3u);
    let e = sigmoid(eb_p[o + j]);
    let a = tanh(eb_p[o + W + j]);
    eb_dp[o + j] = eb_de[id.x] * e * (1.0 - e);
    eb_dp[o + W + j] = eb_da[id.x] * (1.0 - a * a);
}

// ---- bce: loss of sigmoid(y) against the target at time offset toff, when `active`:
// dlogit = (sigmoid(y) - t) * scale; per sequence b: acc[2b] += bits' BCE, acc[2b + 1] +=
// wrong bits (sigmoid(y) > 0.5 differs from t). params B, Y, toff, active, scale (f32); a
// thread per b
@group(0) @binding(1) var<storage, read> bc_y: array<f32>;
@group(0) @binding(2) var<storage, read> bc_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> bc_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> bc_acc: array<f32>;

@compute @workgroup_size(64)
fn bce(@builtin(global_invocation_id) id: vec3<u32>) {
    let B = pw(0u);
    let Y = pw(1u);
    if id.x >= B {
        return;
    }
    let b = id.x;
    let on = pw(3u) == 1u;
    var loss = 0.0;
    var wrong = 0.0;
    for (var k = 0u; k < Y; k += 1u) {
        let y = bc_y[b * Y + k];
        let t = bc_t[pw(2u) + b * Y + k];
        let s = sigmoid(y);
        // BCE with logits: max(y, 0) - y t + log(1 + e^-|y|).
        loss += max(y, 0.0) - y * t + log(1.0 + exp(-abs(y)));
        wrong += select(0.0, 1.0, (s > 0.5) != (t > 0.5));
        bc_dy[b * Y + k] = select(0.0, (s - t) * pf(4u), on);
    }
    if on {
        bc_acc[2u * b] += loss;
        bc_acc[2u * b + 1u] += wrong;
    }
}

// ---- grad_norm: out[0] = sqrt(sum g^2) over n gradients, one workgroup, fixed order.
var<workgroup> gn_red: array<f32, 256>;
@group(0) @binding(1) var<storage, read> gn_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> gn_out: array<f32>;

@compute @workgroup_size(256)
fn grad_norm(@builtin(local_invocation_index) t: u32) {
    var s = 0.0;
    for (var k = t; k < pw(0u); k += 256u) {
        s += gn_g[k] * gn_g[k];
    }
    gn_red[t] = s;
    for (var st = 128u; st > 0u; st = st / 2u) {
        workgroupBarrier();
        if t < st {
            gn_red[t] += gn_red[t + st];
        }
    }
    workgroupBarrier();
    if t == 0u {
        gn_out[0] = sqrt(gn_red[0]);
    }
}

// ---- adam: params n, lr, b1, b2, eps, clip, bc1 = 1 - b1^t, bc2 = 1 - b2^t (f32 bits); the
// gradient is clipped to global norm `clip` and zeroed for the next update.
@group(0) @binding(1) var<storage, read_write> ad_theta: array<f32>;
@group(0) @binding(2) var<storage, read_write> ad_grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> ad_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> ad_v: array<f32>;
@group(0) @binding(5) var<storage, read> ad_norm: array<f32>;

@compute @workgroup_size(64)
fn adam(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = id.y * 65535u * 64u + id.x;
    if k >= pw(0u) {
        return;
    }
    let scale = min(1.0, pf(5u) / max(ad_norm[0], 1e-12));
    let g = ad_grad[k] * scale;
    let m = pf(2u) * ad_m[k] + (1.0 - pf(2u)) * g;
    let v = pf(3u) * ad_v[k] + (1.0 - pf(3u)) * g * g;
    ad_m[k] = m;
    ad_v[k] = v;
    ad_theta[k] -= pf(1u) * (m / pf(6u)) / (sqrt(v / pf(7u)) + pf(4u));
    ad_grad[k] = 0.0;
}

// ---- scale: x *= s; params len, s (f32)
@group(0) @binding(1) var<storage, read_write> sc_x: array<f32>;

@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= pw(0u) {
        return;
    }
    sc_x[id.x] *= pf(1u);
}

// ---- advantage: the score-function's advantage per sequence, reward = minus its mean BCE per
// bit, against a moving-average baseline per sequence length L (all sequences of a batch have
// the same length): adv[b] = reward_b - baseline[L]; then baseline[L] moves towards the batch's
// mean reward. The advantage is divided by B (the loss is a mean over the batch).
// params B, L, bits (f32), decay (f32); one thread
@group(0) @binding(1) var<storage, read> av_acc: array<f32>;
@group(0) @binding(2) var<storage, read_write> av_base: array<f32>;
@group(0) @binding(3) var<storage, read_write> av_adv: array<f32>;

@compute @workgroup_size(1)
fn advantage() {
    let B = pw(0u);
    let L = pw(1u);
    let bits = pf(2u);
    let base = av_base[L];
    var mean = 0.0;
    for (var b = 0u; b < B; b += 1u) {
        let reward = -av_acc[2u * b] / bits;
        av_adv[b] = (reward - base) / f32(B);
        mean += reward / f32(B);
    }
    // The first batch of a length sets its baseline (no advantage yet from a zero start).
    let d = pf(3u);
    av_base[L] = select(d * base + (1.0 - d) * mean, mean, base == 0.0);
}
