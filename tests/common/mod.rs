//! Shared test helpers: the GPU (a missing adapter fails the test, never skips it), a
//! deterministic RNG, and `all_close`, which compares every element and names the worst.
#![allow(dead_code)]

use ntm_kernels::{
    ColumnTiles, Gpu, RowSums, MAX_ELEMENTWISE_ROW_GROUP, MAX_STREAM_ROW_GROUP,
    MAX_STREAM_VECS_PER_THREAD,
};
use std::sync::OnceLock;

/// One Gpu per test binary. No adapter is a failure, with the reason.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => {
            eprintln!("adapter: {}", g.adapter());
            g
        }
        Err(e) => panic!("GPU tests need an adapter and none was found: {e}"),
    })
}

/// A Gpu of the test's own, for tests of errors reported at the next wait (which another
/// test's wait on a shared Gpu would receive).
pub fn own_gpu() -> Gpu {
    Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter and none was found: {e}"))
}

/// Sets every kernel setting of `g` as `Gpu::from_wgpu` sets it for a GPU (CI runs only CPU
/// adapters, whose defaults differ in four of them): 1 elementwise row per thread loaded in
/// groups of 4, 4 rows per streaming group, the soft read's backward in one pass, 4,096
/// reduction workgroups, two V's per streaming thread, exact column tiles, workgroup row sums.
pub fn set_gpu_defaults(g: &Gpu) {
    g.set_elementwise_rows(1).unwrap();
    g.set_elementwise_row_group(MAX_ELEMENTWISE_ROW_GROUP)
        .unwrap();
    g.set_stream_row_group(MAX_STREAM_ROW_GROUP).unwrap();
    g.set_read_backward_passes(1).unwrap();
    g.set_reduction_workgroups(4096).unwrap();
    g.set_stream_vecs_per_thread(MAX_STREAM_VECS_PER_THREAD)
        .unwrap();
    g.set_column_tiles(ColumnTiles::Exact);
    g.set_row_sums(RowSums::Workgroup).unwrap();
}

/// A wgpu device of the test's own on the adapter `Gpu::new` would pick (honouring
/// `WGPU_BACKEND`), with the adapter's limits changed by `f`: to test `Gpu::from_wgpu` and the
/// crate under small limits.
pub fn device_with(f: impl FnOnce(&mut wgpu::Limits)) -> (wgpu::Device, wgpu::Queue) {
    pollster::block_on(async {
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .expect("GPU tests need an adapter");
        let mut limits = adapter.limits();
        f(&mut limits);
        adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("test device"),
                required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .expect("a device with the requested limits")
    })
}

/// SplitMix64: deterministic test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..len).map(|_| self.range(lo, hi) as f32).collect()
    }
    /// Rows of `len` that sum to 1 (softmax of scaled uniforms).
    pub fn weights(&mut self, rows: usize, len: usize, sharp: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * len);
        for _ in 0..rows {
            let z: Vec<f64> = (0..len).map(|_| self.range(-sharp, sharp)).collect();
            out.extend(
                ntm_kernels::reference::softmax(&z)
                    .into_iter()
                    .map(|v| v as f32),
            );
        }
        out
    }
}

pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Every element must satisfy `|got - want| <= atol * max|want| + rtol * |want|` (tolerance
/// relative to the tensor's scale, since reductions of f32 err in proportion to it), and be
/// finite. On failure, reports the worst element. Returns the worst normalised error.
#[track_caller]
pub fn all_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    all_close_terms(what, got, want, atol, rtol, None)
}

/// Like [`all_close`], plus `terms[i]` to each element's tolerance: for results that are a
/// cancellation of larger terms, f32 can only resolve them relative to those terms.
#[track_caller]
pub fn all_close_terms(
    what: &str,
    got: &[f32],
    want: &[f64],
    atol: f64,
    rtol: f64,
    terms: Option<&[f64]>,
) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = (0usize, -1.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (reference {w})");
        let tol = atol * scale + rtol * w.abs() + terms.map_or(0.0, |t| t[i]);
        let err = (g as f64 - w).abs() / tol.max(1e-300);
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let (i, err) = worst;
    // A report mode for tuning tolerances: it prints every comparison, and still fails.
    if std::env::var("NTM_TEST_REPORT").is_ok() {
        eprintln!("REPORT {err:10.4} {what}");
    }
    assert!(
        err <= 1.0,
        "{what}: worst element {i}: got {} want {} (|diff| {:.3e}, tolerance {:.3e} = {atol:e}*{scale:.3e} + {rtol:e}*|want|)",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs(),
        atol * scale + rtol * want[i].abs() + terms.map_or(0.0, |t| t[i])
    );
    err
}

/// Tolerance per unit of term magnitude: a few dozen f32 roundings (2^-24 each).
pub const TERM: f64 = 64.0 / 16_777_216.0;

/// Sums of the magnitudes of the terms that content addressing's backward adds up (DESIGN.md
/// §3), per element of (memory, keys, beta), times TERM. With W = 1 the cosine is +-1 and these
/// gradients are pure cancellation (about EPS relative to their terms).
pub fn content_terms(
    m: &[f64],
    k: &[f64],
    beta: &[f64],
    dz: &[f64],
    s: ntm_kernels::reference::Shape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let eps = ntm_kernels::EPS as f64;
    let (mut tm, mut tk, mut tb) = (
        vec![0.0; m.len()],
        vec![0.0; k.len()],
        vec![0.0; beta.len()],
    );
    for b in 0..s.b {
        for h in 0..s.h {
            let bh = b * s.h + h;
            let kv = &k[bh * s.w..(bh + 1) * s.w];
            let nk = (kv.iter().map(|x| x * x).sum::<f64>() + eps).sqrt();
            for i in 0..s.n {
                let mi = &m[(b * s.n + i) * s.w..(b * s.n + i + 1) * s.w];
                let nm = (mi.iter().map(|x| x * x).sum::<f64>() + eps).sqrt();
                let d: f64 = kv.iter().zip(mi).map(|(a, b)| a * b).sum();
                let p = nk * nm + eps;
                let g = dz[bh * s.n + i].abs();
                tb[bh] += g * (d / p).abs();
                let dd = beta[bh].abs() * g / p;
                let dp = beta[bh].abs() * g * d.abs() / (p * p);
                for j in 0..s.w {
                    tk[bh * s.w + j] += dd * mi[j].abs() + dp * nm * kv[j].abs() / nk;
                    tm[(b * s.n + i) * s.w + j] += dd * kv[j].abs() + dp * nk * mi[j].abs() / nm;
                }
            }
        }
    }
    let scale = |v: Vec<f64>| v.into_iter().map(|x| x * TERM).collect();
    (scale(tm), scale(tk), scale(tb))
}

/// Magnitude of dz = w (dw - sum_j w_j dw_j), term by term.
pub fn dz_terms(w: &[f64], dw: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; w.len()];
    for r in 0..w.len() / n {
        let s: f64 = (0..n).map(|i| (w[r * n + i] * dw[r * n + i]).abs()).sum();
        for i in 0..n {
            out[r * n + i] = w[r * n + i] * (dw[r * n + i].abs() + s);
        }
    }
    out
}
