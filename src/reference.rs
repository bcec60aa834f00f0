//! CPU reference of every op, on plain slices, written to be read beside DESIGN.md §3.
//!
//! Generic over [`Real`] (`f32` and `f64`): the tests check these backward passes against
//! central finite differences in `f64`, and the GPU against these in `f32`/`f64`.
//! Layouts as in DESIGN.md §2: row-major `M[B,N,W]`, `k[B,H,W]`, `beta[B,H]`, `w[B,H,N]`,
//! `e, a, r[B,H,W]`.
//!
//! These are oracles for tests, written for clarity: unlike the GPU API they do not validate
//! their arguments, and panic (index out of bounds) if a slice is shorter than its shape says
//! or an index is `>= N`.

use crate::EPS;

/// The floating-point operations the reference needs.
pub trait Real:
    Copy
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
{
    /// Conversion from f64.
    fn of(x: f64) -> Self;
    /// Conversion to f64.
    fn f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Exponential.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
}

/// The sizes of one call: batch, heads, slots, word width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Batch.
    pub b: usize,
    /// Heads.
    pub h: usize,
    /// Memory slots.
    pub n: usize,
    /// Word width.
    pub w: usize,
}

impl Shape {
    /// A shape from (B, H, N, W).
    pub fn new(b: usize, h: usize, n: usize, w: usize) -> Shape {
        Shape { b, h, n, w }
    }
    fn mem(&self, b: usize, i: usize) -> usize {
        (b * self.n + i) * self.w
    }
    fn vec(&self, b: usize, h: usize) -> usize {
        (b * self.h + h) * self.w
    }
    fn wt(&self, b: usize, h: usize) -> usize {
        (b * self.h + h) * self.n
    }
}

fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    x.iter().zip(y).fold(T::of(0.0), |s, (&a, &b)| s + a * b)
}

/// `norm(x) = sqrt(sum_j x_j^2 + EPS)`.
pub fn norm<T: Real>(x: &[T]) -> T {
    (dot(x, x) + T::of(EPS as f64)).sqrt()
}

/// Softmax of one row, with the row maximum subtracted.
pub fn softmax<T: Real>(z: &[T]) -> Vec<T> {
    let m = z
        .iter()
        .copied()
        .fold(z[0], |a, b| if b > a { b } else { a });
    let e: Vec<T> = z.iter().map(|&v| (v - m).exp()).collect();
    let s = e.iter().fold(T::of(0.0), |a, &b| a + b);
    e.into_iter().map(|v| v / s).collect()
}

/// Content scores `z[b,h,i] = beta[b,h] K_i` with `K_i = D_i / (P_i + EPS)`,
/// `D_i = k·M_i`, `P_i = norm(k) norm(M_i)`.
pub fn content_scores<T: Real>(m: &[T], k: &[T], beta: &[T], s: Shape) -> Vec<T> {
    let eps = T::of(EPS as f64);
    let mut z = vec![T::of(0.0); s.b * s.h * s.n];
    for b in 0..s.b {
        for h in 0..s.h {
            let kv = &k[s.vec(b, h)..s.vec(b, h) + s.w];
            for i in 0..s.n {
                let mi = &m[s.mem(b, i)..s.mem(b, i) + s.w];
                let p = norm(kv) * norm(mi);
                z[s.wt(b, h) + i] = beta[b * s.h + h] * (dot(kv, mi) / (p + eps));
            }
        }
    }
    z
}

/// Content addressing: `w[b,h] = softmax_i(beta[b,h] K_i)`, [B, H, N].
pub fn content_address<T: Real>(m: &[T], k: &[T], beta: &[T], s: Shape) -> Vec<T> {
    let z = content_scores(m, k, beta, s);
    z.chunks(s.n).flat_map(softmax).collect()
}

/// Gradients of content addressing.
#[derive(Clone, Debug)]
pub struct ContentGrads<T> {
    /// d memory, [B, N, W].
    pub memory: Vec<T>,
    /// d keys, [B, H, W].
    pub keys: Vec<T>,
    /// d beta, [B, H].
    pub beta: Vec<T>,
}

/// Backward of [`content_address`] given `dw`: `dz_i = w_i (dw_i - sum_j w_j dw_j)`, then
/// [`content_address_backward_scores`].
pub fn content_address_backward<T: Real>(
    m: &[T],
    k: &[T],
    beta: &[T],
    w: &[T],
    dw: &[T],
    s: Shape,
) -> ContentGrads<T> {
    let mut dz = vec![T::of(0.0); w.len()];
    for r in 0..s.b * s.h {
        let (wr, gr) = (&w[r * s.n..(r + 1) * s.n], &dw[r * s.n..(r + 1) * s.n]);
        let sum = dot(wr, gr);
        for i in 0..s.n {
            dz[r * s.n + i] = wr[i] * (gr[i] - sum);
        }
    }
    content_address_backward_scores(m, k, beta, &dz, s)
}

/// Backward of content addressing from the scores' gradient `dz` (DESIGN.md §3):
/// `dbeta = sum_i dz_i K_i`, `dK_i = beta dz_i`, `dD_i = dK_i/(P_i+EPS)`,
/// `dP_i = -dK_i D_i/(P_i+EPS)^2`, `dk += sum_i [dD_i M_i + dP_i norm(M_i) k/norm(k)]`,
/// `dM_i += sum_h [dD_i k + dP_i norm(k) M_i/norm(M_i)]`.
pub fn content_address_backward_scores<T: Real>(
    m: &[T],
    k: &[T],
    beta: &[T],
    dz: &[T],
    s: Shape,
) -> ContentGrads<T> {
    let eps = T::of(EPS as f64);
    let mut g = ContentGrads {
        memory: vec![T::of(0.0); m.len()],
        keys: vec![T::of(0.0); k.len()],
        beta: vec![T::of(0.0); beta.len()],
    };
    for b in 0..s.b {
        for h in 0..s.h {
            let kv = &k[s.vec(b, h)..s.vec(b, h) + s.w];
            let nk = norm(kv);
            let bh = b * s.h + h;
            for i in 0..s.n {
                let mi = &m[s.mem(b, i)..s.mem(b, i) + s.w];
                let nm = norm(mi);
                let d = dot(kv, mi);
                let p = nk * nm + eps;
                let kk = d / p;
                let g_z = dz[s.wt(b, h) + i];
                g.beta[bh] += g_z * kk;
                let dk = beta[bh] * g_z;
                let dd = dk / p;
                let dp = -dk * d / (p * p);
                for j in 0..s.w {
                    g.keys[s.vec(b, h) + j] += dd * mi[j] + dp * nm * kv[j] / nk;
                    g.memory[s.mem(b, i) + j] += dd * kv[j] + dp * nk * mi[j] / nm;
                }
            }
        }
    }
    g
}

/// Soft read: `r[b,h] = sum_i w[b,h,i] M[b,i]`, [B, H, W].
pub fn soft_read<T: Real>(m: &[T], w: &[T], s: Shape) -> Vec<T> {
    let mut r = vec![T::of(0.0); s.b * s.h * s.w];
    for b in 0..s.b {
        for h in 0..s.h {
            for i in 0..s.n {
                let wi = w[s.wt(b, h) + i];
                for j in 0..s.w {
                    r[s.vec(b, h) + j] += wi * m[s.mem(b, i) + j];
                }
            }
        }
    }
    r
}

/// Backward of [`soft_read`] given `dr`: returns `(dM, dw)` with `dw_h(i) = dr_h·M_i`,
/// `dM_i = sum_h w_h(i) dr_h`.
pub fn soft_read_backward<T: Real>(m: &[T], w: &[T], dr: &[T], s: Shape) -> (Vec<T>, Vec<T>) {
    let mut dm = vec![T::of(0.0); m.len()];
    let mut dw = vec![T::of(0.0); w.len()];
    for b in 0..s.b {
        for h in 0..s.h {
            let g = &dr[s.vec(b, h)..s.vec(b, h) + s.w];
            for i in 0..s.n {
                dw[s.wt(b, h) + i] = dot(g, &m[s.mem(b, i)..s.mem(b, i) + s.w]);
                for j in 0..s.w {
                    dm[s.mem(b, i) + j] += w[s.wt(b, h) + i] * g[j];
                }
            }
        }
    }
    (dm, dw)
}

/// Soft write in place: `M(i,j) <- M(i,j) prod_h (1 - w_h(i) e_h(j)) + sum_h w_h(i) a_h(j)`.
pub fn soft_write<T: Real>(m: &mut [T], w: &[T], e: &[T], a: &[T], s: Shape) {
    let one = T::of(1.0);
    for b in 0..s.b {
        for i in 0..s.n {
            for j in 0..s.w {
                let mut keep = one;
                let mut add = T::of(0.0);
                for h in 0..s.h {
                    let wi = w[s.wt(b, h) + i];
                    keep *= one - wi * e[s.vec(b, h) + j];
                    add += wi * a[s.vec(b, h) + j];
                }
                let x = &mut m[s.mem(b, i) + j];
                *x = *x * keep + add;
            }
        }
    }
}

/// Gradients of a write.
#[derive(Clone, Debug)]
pub struct WriteGrads<T> {
    /// d memory before the write, [B, N, W].
    pub memory: Vec<T>,
    /// d weights, [B, H, N].
    pub weights: Vec<T>,
    /// d erase, [B, H, W].
    pub erase: Vec<T>,
    /// d add, [B, H, W].
    pub add: Vec<T>,
}

/// `Q_h = prod_{h' != h} f_h'`, as a product that skips h (prefix times suffix), never a division.
fn products_skipping<T: Real>(f: &[T]) -> Vec<T> {
    let one = T::of(1.0);
    let mut q = vec![one; f.len()];
    let mut prefix = one;
    for h in 0..f.len() {
        q[h] = prefix;
        prefix *= f[h];
    }
    let mut suffix = one;
    for h in (0..f.len()).rev() {
        q[h] *= suffix;
        suffix *= f[h];
    }
    q
}

/// Backward of [`soft_write`] given the memory before it and `dM'` (DESIGN.md §3).
pub fn soft_write_backward<T: Real>(
    m: &[T],
    w: &[T],
    e: &[T],
    a: &[T],
    d_after: &[T],
    s: Shape,
) -> WriteGrads<T> {
    let one = T::of(1.0);
    let mut g = WriteGrads {
        memory: vec![T::of(0.0); m.len()],
        weights: vec![T::of(0.0); w.len()],
        erase: vec![T::of(0.0); e.len()],
        add: vec![T::of(0.0); a.len()],
    };
    for b in 0..s.b {
        for i in 0..s.n {
            for j in 0..s.w {
                let f: Vec<T> = (0..s.h)
                    .map(|h| one - w[s.wt(b, h) + i] * e[s.vec(b, h) + j])
                    .collect();
                let q = products_skipping(&f);
                let keep = f.iter().fold(one, |p, &x| p * x);
                let mij = m[s.mem(b, i) + j];
                let gij = d_after[s.mem(b, i) + j];
                g.memory[s.mem(b, i) + j] = gij * keep;
                for h in 0..s.h {
                    let (wi, ej, aj) = (w[s.wt(b, h) + i], e[s.vec(b, h) + j], a[s.vec(b, h) + j]);
                    g.weights[s.wt(b, h) + i] += gij * (aj - mij * ej * q[h]);
                    g.erase[s.vec(b, h) + j] -= gij * mij * wi * q[h];
                    g.add[s.vec(b, h) + j] += gij * wi;
                }
            }
        }
    }
    g
}

// ----- discrete access ---------------------------------------------------------------------

/// lowbias32 (Wellons): the 32-bit integer hash behind [`gumbel`], as in `shaders/sample.wgsl`.
pub fn hash_mix(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846ca68b);
    x ^= x >> 16;
    x
}

/// The counter-based hash of (seed, b, h, i) that sampling draws from.
pub fn hash4(seed: u64, b: u32, h: u32, i: u32) -> u32 {
    let mut x = hash_mix(seed as u32 ^ 0x9e3779b9);
    x = hash_mix(x ^ (seed >> 32) as u32);
    x = hash_mix(x ^ b ^ 0x85ebca6b);
    x = hash_mix(x ^ h ^ 0xc2b2ae35);
    hash_mix(x ^ i)
}

/// The standard Gumbel variate `-ln(-ln U)` of (seed, b, h, i), `U = (top 24 bits + 0.5) / 2^24`,
/// computed in f32 as on the GPU.
pub fn gumbel(seed: u64, b: u32, h: u32, i: u32) -> f32 {
    let u = ((hash4(seed, b, h, i) >> 8) as f32 + 0.5) / 16_777_216.0;
    -(-u.ln()).ln()
}

/// Gumbel-max sampling, one index per (b, h): `argmax_i ln w(i) + gumbel(seed, b, h, i)` over
/// the slots with `w > 0`; ties to the lowest index; a row with no positive weight gives 0.
/// In f32, as on the GPU (whose `log` may differ in the last bit, so rare near-ties differ).
pub fn sample(w: &[f32], seed: u64, s: Shape) -> Vec<u32> {
    let mut out = Vec::with_capacity(s.b * s.h);
    for b in 0..s.b {
        for h in 0..s.h {
            let row = &w[s.wt(b, h)..s.wt(b, h) + s.n];
            let mut best: Option<(f32, u32)> = None;
            for (i, &wi) in row.iter().enumerate() {
                if wi > 0.0 {
                    let score = wi.ln() + gumbel(seed, b as u32, h as u32, i as u32);
                    if best.is_none_or(|(bs, _)| score > bs) {
                        best = Some((score, i as u32));
                    }
                }
            }
            out.push(best.map_or(0, |(_, i)| i));
        }
    }
    out
}

/// The greedy pick: `argmax_i w(i)` per (b, h), ties to the lowest index.
pub fn argmax(w: &[f32], s: Shape) -> Vec<u32> {
    w.chunks(s.n)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// One-hot weights [B, H, N] of indices [B, H].
pub fn onehot<T: Real>(idx: &[u32], s: Shape) -> Vec<T> {
    let mut w = vec![T::of(0.0); s.b * s.h * s.n];
    for (bh, &i) in idx.iter().enumerate() {
        w[bh * s.n + i as usize] = T::of(1.0);
    }
    w
}

/// Discrete read: `r[b,h] = M[b, idx[b,h]]`.
pub fn discrete_read<T: Real>(m: &[T], idx: &[u32], s: Shape) -> Vec<T> {
    let mut r = Vec::with_capacity(s.b * s.h * s.w);
    for b in 0..s.b {
        for h in 0..s.h {
            let row = s.mem(b, idx[b * s.h + h] as usize);
            r.extend_from_slice(&m[row..row + s.w]);
        }
    }
    r
}

/// Backward of [`discrete_read`]: `d_mem[b, idx] += dr[b,h]` for each head in order; returns
/// `dw_at_idx[b,h] = dr[b,h]·M[b, idx[b,h]]`.
pub fn discrete_read_backward<T: Real>(
    m: &[T],
    idx: &[u32],
    dr: &[T],
    d_mem: &mut [T],
    s: Shape,
) -> Vec<T> {
    let mut dw = vec![T::of(0.0); s.b * s.h];
    for b in 0..s.b {
        for h in 0..s.h {
            let row = s.mem(b, idx[b * s.h + h] as usize);
            let g = &dr[s.vec(b, h)..s.vec(b, h) + s.w];
            dw[b * s.h + h] = dot(g, &m[row..row + s.w]);
            for j in 0..s.w {
                d_mem[row + j] += g[j];
            }
        }
    }
    dw
}

/// Discrete write in place: `M[r] <- M[r] prod_{h: idx_h=r} (1 - e_h) + sum_{h: idx_h=r} a_h`.
/// Returns the old rows [B, H, W] (the undo record).
pub fn discrete_write<T: Real>(m: &mut [T], idx: &[u32], e: &[T], a: &[T], s: Shape) -> Vec<T> {
    let old = discrete_read(m, idx, s);
    let one = T::of(1.0);
    for b in 0..s.b {
        let mut done = Vec::new();
        for h in 0..s.h {
            let i = idx[b * s.h + h];
            if done.contains(&i) {
                continue;
            }
            done.push(i);
            let row = s.mem(b, i as usize);
            for j in 0..s.w {
                let mut keep = one;
                let mut add = T::of(0.0);
                for o in (0..s.h).filter(|&o| idx[b * s.h + o] == i) {
                    keep *= one - e[s.vec(b, o) + j];
                    add += a[s.vec(b, o) + j];
                }
                m[row + j] = m[row + j] * keep + add;
            }
        }
    }
    old
}

/// Restores the rows that [`discrete_write`] overwrote.
pub fn undo_write<T: Real>(m: &mut [T], idx: &[u32], old: &[T], s: Shape) {
    for bh in (0..s.b * s.h).rev() {
        let row = s.mem(bh / s.h, idx[bh] as usize);
        m[row..row + s.w].copy_from_slice(&old[bh * s.w..(bh + 1) * s.w]);
    }
}

/// Gradients of a discrete write.
#[derive(Clone, Debug)]
pub struct DiscreteWriteGrads<T> {
    /// d erase, [B, H, W].
    pub erase: Vec<T>,
    /// d add, [B, H, W].
    pub add: Vec<T>,
    /// d w_h(idx_h), [B, H].
    pub weight_at_idx: Vec<T>,
}

/// Backward of [`discrete_write`] from its old rows: turns `d_mem` from dM' into dM in place
/// on the written rows, and returns the gradients of erase, add and the one-hot weight at each
/// chosen slot (soft write's backward with one-hot weights; `Q_h` skips h, no division).
pub fn discrete_write_backward<T: Real>(
    idx: &[u32],
    old: &[T],
    e: &[T],
    a: &[T],
    d_mem: &mut [T],
    s: Shape,
) -> DiscreteWriteGrads<T> {
    let one = T::of(1.0);
    let mut g = DiscreteWriteGrads {
        erase: vec![T::of(0.0); s.b * s.h * s.w],
        add: vec![T::of(0.0); s.b * s.h * s.w],
        weight_at_idx: vec![T::of(0.0); s.b * s.h],
    };
    for b in 0..s.b {
        for h in 0..s.h {
            let i = idx[b * s.h + h];
            let row = s.mem(b, i as usize);
            let mut dw = T::of(0.0);
            for j in 0..s.w {
                let mut q = one;
                for o in (0..s.h).filter(|&o| o != h && idx[b * s.h + o] == i) {
                    q *= one - e[s.vec(b, o) + j];
                }
                let gj = d_mem[row + j];
                let mj = old[s.vec(b, h) + j];
                g.erase[s.vec(b, h) + j] = -gj * mj * q;
                g.add[s.vec(b, h) + j] = gj;
                dw += gj * (a[s.vec(b, h) + j] - mj * e[s.vec(b, h) + j] * q);
            }
            g.weight_at_idx[b * s.h + h] = dw;
        }
        let mut done = Vec::new();
        for h in 0..s.h {
            let i = idx[b * s.h + h];
            if done.contains(&i) {
                continue;
            }
            done.push(i);
            let row = s.mem(b, i as usize);
            for j in 0..s.w {
                for o in (0..s.h).filter(|&o| idx[b * s.h + o] == i) {
                    d_mem[row + j] *= one - e[s.vec(b, o) + j];
                }
            }
        }
    }
    g
}

/// Entropy `H(w) = -sum_i w_i ln w_i` of one row, with `0 ln 0 = 0`.
pub fn entropy<T: Real>(w: &[T]) -> T {
    w.iter().fold(T::of(0.0), |acc, &x| {
        if x > T::of(0.0) {
            acc - x * x.ln()
        } else {
            acc
        }
    })
}

/// Score-function gradient of `-A ln w(idx) - lambda H(w)` with respect to the scores:
/// `dz(i) = -A (onehot(idx)(i) - w(i)) + lambda w(i) (ln w(i) + H(w))`, `w ln w = 0` at 0.
pub fn reinforce_grad<T: Real>(w: &[T], idx: &[u32], adv: &[T], lambda: T, s: Shape) -> Vec<T> {
    let mut dz = vec![T::of(0.0); w.len()];
    for r in 0..s.b * s.h {
        let row = &w[r * s.n..(r + 1) * s.n];
        let ent = entropy(row);
        for i in 0..s.n {
            let hot = if i == idx[r] as usize {
                T::of(1.0)
            } else {
                T::of(0.0)
            };
            let ent_term = if row[i] > T::of(0.0) {
                row[i] * (row[i].ln() + ent)
            } else {
                T::of(0.0)
            };
            dz[r * s.n + i] = -adv[r] * (hot - row[i]) + lambda * ent_term;
        }
    }
    dz
}

/// Gradients of location addressing (DESIGN.md §6).
#[derive(Clone, Debug)]
pub struct LocationGrads<T> {
    /// d content weights, [B, H, N].
    pub content: Vec<T>,
    /// d previous weights, [B, H, N].
    pub prev: Vec<T>,
    /// d gate, [B, H].
    pub gate: Vec<T>,
    /// d shift distribution, [B, H, S].
    pub shift: Vec<T>,
    /// d sharpening, [B, H].
    pub gamma: Vec<T>,
}

/// `x mod n` for a signed offset.
fn wrap(x: isize, n: usize) -> usize {
    x.rem_euclid(n as isize) as usize
}

/// For one row: the interpolation `wg(i) = g wc(i) + (1 - g) wp(i)` and the circular
/// convolution `wt(i) = sum_{k=-R..R} s(k+R) wg(i - k)`.
fn location_row<T: Real>(wc: &[T], wp: &[T], g: T, s: &[T]) -> (Vec<T>, Vec<T>) {
    let n = wc.len();
    let r = (s.len() / 2) as isize;
    let wg: Vec<T> = (0..n)
        .map(|i| g * wc[i] + (T::of(1.0) - g) * wp[i])
        .collect();
    let wt = (0..n)
        .map(|i| {
            (-r..=r).fold(T::of(0.0), |acc, k| {
                acc + s[(k + r) as usize] * wg[wrap(i as isize - k, n)]
            })
        })
        .collect();
    (wg, wt)
}

/// The sharpening scores of location addressing, `z = gamma ln(wt + EPS)` per row, with `wt`
/// the shifted interpolation (DESIGN.md §6); `w = softmax(z)`.
pub fn location_scores<T: Real>(
    wc: &[T],
    wp: &[T],
    gate: &[T],
    shift: &[T],
    gamma: &[T],
    s: Shape,
    taps: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(s.b * s.h * s.n);
    for bh in 0..s.b * s.h {
        let row = bh * s.n..(bh + 1) * s.n;
        let sh = &shift[bh * taps..(bh + 1) * taps];
        let (_, wt) = location_row(&wc[row.clone()], &wp[row], gate[bh], sh);
        out.extend(wt.iter().map(|&x| gamma[bh] * (x + T::of(EPS as f64)).ln()));
    }
    out
}

/// Location addressing (DESIGN.md §6): per row (b, h), interpolation with the previous
/// weights, circular shift by `shift` (S = 2R + 1 offsets −R..R, modulo N), and sharpening
/// `w = softmax(gamma ln(wt + EPS))`. `wc`, `wp` [B, H, N], `gate`, `gamma` [B, H],
/// `shift` [B, H, S] with S = `taps`; `s.w` is unused.
pub fn location_address<T: Real>(
    wc: &[T],
    wp: &[T],
    gate: &[T],
    shift: &[T],
    gamma: &[T],
    s: Shape,
    taps: usize,
) -> Vec<T> {
    location_scores(wc, wp, gate, shift, gamma, s, taps)
        .chunks(s.n)
        .flat_map(softmax)
        .collect()
}

/// Backward of [`location_address`] from the gradient of the sharpening scores
/// `z = gamma ln(wt + EPS)` (`w = softmax(z)`): where a sampled slot's score-function gradient
/// enters; no division by `w`.
#[allow(clippy::too_many_arguments)] // the op's inputs, as in DESIGN.md
pub fn location_address_backward_scores<T: Real>(
    wc: &[T],
    wp: &[T],
    gate: &[T],
    shift: &[T],
    gamma: &[T],
    dz: &[T],
    s: Shape,
    taps: usize,
) -> LocationGrads<T> {
    let n = s.n;
    let r = (taps / 2) as isize;
    let zero = T::of(0.0);
    let mut g = LocationGrads {
        content: vec![zero; s.b * s.h * n],
        prev: vec![zero; s.b * s.h * n],
        gate: vec![zero; s.b * s.h],
        shift: vec![zero; s.b * s.h * taps],
        gamma: vec![zero; s.b * s.h],
    };
    for bh in 0..s.b * s.h {
        let o = bh * n;
        let sh = &shift[bh * taps..(bh + 1) * taps];
        let (wg, wt) = location_row(&wc[o..o + n], &wp[o..o + n], gate[bh], sh);
        let dz = &dz[o..o + n];
        let eps = T::of(EPS as f64);
        // dgamma = sum_i dz(i) ln(wt(i) + EPS), dwt(i) = gamma dz(i) / (wt(i) + EPS).
        g.gamma[bh] = (0..n).fold(zero, |a, i| a + dz[i] * (wt[i] + eps).ln());
        let dwt: Vec<T> = (0..n).map(|i| gamma[bh] * dz[i] / (wt[i] + eps)).collect();
        // dwg(j) = sum_k s(k+R) dwt(j + k), ds(k+R) = sum_i dwt(i) wg(i - k).
        for k in -r..=r {
            g.shift[bh * taps + (k + r) as usize] =
                (0..n).fold(zero, |a, i| a + dwt[i] * wg[wrap(i as isize - k, n)]);
        }
        let mut dg = zero;
        for j in 0..n {
            let dwg = (-r..=r).fold(zero, |a, k| {
                a + sh[(k + r) as usize] * dwt[wrap(j as isize + k, n)]
            });
            dg += dwg * (wc[o + j] - wp[o + j]);
            g.content[o + j] = gate[bh] * dwg;
            g.prev[o + j] = (T::of(1.0) - gate[bh]) * dwg;
        }
        g.gate[bh] = dg;
    }
    g
}

/// Backward of [`location_address`] given `dw`: `dz = w (dw − sum_j w_j dw_j)` with `w`
/// recomputed, then [`location_address_backward_scores`].
#[allow(clippy::too_many_arguments)] // the op's inputs, as in DESIGN.md
pub fn location_address_backward<T: Real>(
    wc: &[T],
    wp: &[T],
    gate: &[T],
    shift: &[T],
    gamma: &[T],
    dw: &[T],
    s: Shape,
    taps: usize,
) -> LocationGrads<T> {
    let w = location_address(wc, wp, gate, shift, gamma, s, taps);
    let mut dz = vec![T::of(0.0); w.len()];
    for bh in 0..s.b * s.h {
        let row = bh * s.n..(bh + 1) * s.n;
        let sum = dot(&w[row.clone()], &dw[row.clone()]);
        for i in row {
            dz[i] = w[i] * (dw[i] - sum);
        }
    }
    location_address_backward_scores(wc, wp, gate, shift, gamma, &dz, s, taps)
}
