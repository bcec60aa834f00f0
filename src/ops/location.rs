//! Location addressing: the NTM's interpolation gate, circular shift and sharpening, and its
//! backward passes (DESIGN.md §6). Shader: `shaders/location.wgsl`; the softmax and its
//! backward are the row-statistic primitive, the sums over tiles the column-sum combine.

use crate::check::{self, Dims};
use crate::error::{Error, Result};
use crate::primitives::colsum::combine_blocks;
use crate::primitives::rowstat::{combine_pairs, normalize_rows, softmax_backward, Stat};
use crate::runtime::abi::{divisor, Params, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "location.wgsl",
    source: include_str!("../../shaders/location.wgsl"),
    imports: &[],
};
const PACK: KernelDef = KernelDef::new(&SHADER, "pack");
const FWD: KernelDef = KernelDef::new(&SHADER, "fwd");
const BWD: KernelDef = KernelDef::new(&SHADER, "bwd");
const BWD_LANES: KernelDef = KernelDef::new(&SHADER, "bwd_lanes");
const UNPACK: KernelDef = KernelDef::new(&SHADER, "unpack");

/// Slots per tile (`LT` in the shader: one per thread).
const LT: u64 = WG as u64;
/// The widest shift a tile's halo holds: S <= 2 HALO + 1 (`HALO` in the shader).
pub const MAX_SHIFT: usize = 2 * 256 + 1;

/// Lanes per column of the backward's tile sums (`cols` = S + 2 columns), a power of two: on
/// GPUs as many as fit the workgroup (`bwd_lanes`: lane sums, then a fixed-order tree); 1 on
/// CPU adapters (`bwd`, a serial sum per column), since there each level of the tree costs a
/// barrier that outweighs the sums it splits (lavapipe ran the backward at 0.88-0.90x the
/// serial kernel's speed with 32 lanes, 0.96-0.97x with 2). 1 also for shifts of more than
/// 125 taps.
fn tile_lanes(cols: u64, is_cpu: bool) -> u64 {
    let most = if is_cpu { 1 } else { WG as u64 };
    let mut lanes = 1u64;
    while lanes < most && 2 * lanes * cols <= WG as u64 {
        lanes *= 2;
    }
    lanes
}

/// `params` with N's divisor in `divs` (x, y), for the kernels that wrap slots modulo N.
fn with_n(d: Dims, params: Params) -> Params {
    let [m, l] = divisor(d.n as u32);
    Params {
        divs: [m, l, 0, 0],
        ..params
    }
}

/// Gradients of location addressing with respect to its inputs.
#[derive(Debug)]
pub struct LocationGrads {
    /// d loss / d content weights, [B, H, N].
    pub content: Tensor,
    /// d loss / d previous weights, [B, H, N].
    pub prev: Tensor,
    /// d loss / d gate, [B, H].
    pub gate: Tensor,
    /// d loss / d shift distribution, [B, H, S].
    pub shift: Tensor,
    /// d loss / d sharpening, [B, H].
    pub gamma: Tensor,
}

/// Where a backward starts: the weights' gradient `dw`, or the sharpening scores' `dz`.
#[derive(Clone, Copy)]
enum Start<'a> {
    Weights(&'a Tensor),
    Scores(&'a Tensor),
}

/// The call's sizes: B, H, N in `d` (W unused), and S.
fn inputs(
    gpu: &Gpu,
    op: &'static str,
    wc: &Tensor,
    wp: &Tensor,
    gate: &Tensor,
    shift: &Tensor,
    gamma: &Tensor,
) -> Result<(Dims, usize)> {
    gpu.check_owner(op, "content", wc.gpu)?;
    check::f32_only(op, "content", wc)?;
    if wc.shape.len() != 3 {
        return Err(Error::Shape {
            op,
            arg: "content",
            expected: "rank 3: [B, H, N]".into(),
            given: wc.shape.clone(),
        });
    }
    let (b, h, n) = (wc.shape[0], wc.shape[1], wc.shape[2]);
    check::tensor(gpu, op, "prev", wp, &["B", "H", "N"], &[b, h, n])?;
    check::tensor(gpu, op, "gate", gate, &["B", "H"], &[b, h])?;
    check::tensor(gpu, op, "gamma", gamma, &["B", "H"], &[b, h])?;
    let taps = check::middle_last(gpu, op, "shift", shift, ["B", "H", "S"], b, h)?;
    if taps % 2 == 0 {
        return Err(Error::Invalid {
            op,
            message: format!(
                "argument `shift` has S = {taps} taps; S must be odd (offsets -R..R, S = 2R + 1)"
            ),
        });
    }
    if taps > MAX_SHIFT {
        return Err(Error::TooLarge {
            op,
            what: "the shift width S (a tile's halo holds offsets up to ±256)".into(),
            size: taps as u64,
            limit: MAX_SHIFT as u64,
        });
    }
    Ok((Dims { b, h, n, w: 0 }, taps))
}

/// Element span of whole rows of [rows, n] touched by units [u0, u1) of `tiles` units a row.
fn row_span(tiles: u64, n: u64) -> impl Fn(u64, u64) -> (u64, u64) {
    move |u0, u1| ((u0 / tiles) * n, ((u1 - 1) / tiles + 1) * n)
}

impl Gpu {
    /// Packs (gate, gamma, shift) per row into a scratch [B*H, S + 2].
    fn pack_rows(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        (d, taps): (Dims, usize),
        gate: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
    ) -> Result<(wgpu::Buffer, u64)> {
        let len = (d.b * d.h * (taps + 2)) as u64;
        let rp = self.scratch(op, rec, len)?;
        self.launch(
            rec,
            op,
            &PACK,
            Params::new(d.arr(), [taps as u32, 0, 0, len as u32], [0.0; 4]),
            len.div_ceil(WG as u64),
            &[
                Arg::whole(gate),
                Arg::whole(shift),
                Arg::whole(gamma),
                Arg::raw(&rp, len, Span::Whole),
            ],
        )?;
        Ok((rp, len))
    }

    /// Records the forward into `out` [B, H, N] (the weights, normalised).
    #[allow(clippy::too_many_arguments)] // internal: the forward's inputs spelled out
    fn location_forward(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        (d, taps): (Dims, usize),
        wc: &Tensor,
        wp: &Tensor,
        rp: (&wgpu::Buffer, u64),
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let (rows, n) = ((d.b * d.h) as u64, d.n as u64);
        let tiles = n.div_ceil(LT);
        let parts = self.scratch(op, rec, rows * tiles * 2)?;
        let rows_span = row_span(tiles, n);
        let part_span = |u0: u64, u1: u64| (u0 * 2, u1 * 2);
        self.launch(
            rec,
            op,
            &FWD,
            with_n(
                d,
                Params::new(d.arr(), [taps as u32, tiles as u32, 0, 0], [0.0; 4]),
            ),
            rows * tiles,
            &[
                Arg::window(wc, &rows_span),
                Arg::window(wp, &rows_span),
                Arg::raw(rp.0, rp.1, Span::Whole),
                Arg::raw(out, rows * n, Span::Window(&rows_span)),
                Arg::raw(&parts, rows * tiles * 2, Span::Window(&part_span)),
            ],
        )?;
        let stats = combine_pairs(self, rec, op, Stat::Softmax, &parts, rows, tiles)?;
        normalize_rows(self, rec, op, out, &stats, rows, n)?;
        self.release(rec, parts);
        self.release(rec, stats);
        Ok(())
    }

    /// Location addressing weights, [B, H, N]: per row, `wg = g wc + (1 − g) wp`, the circular
    /// convolution `wt(i) = sum_k shift(k) wg(i − (k − R))` (S = 2R + 1 taps for the offsets
    /// −R..R, modulo N, so S may exceed N), then `w = softmax(gamma ln(wt + EPS))`, which
    /// stays finite for large `gamma` and exact zeros in `wt`.
    ///
    /// `content` and `prev` are [B, H, N], `gate` and `gamma` [B, H] (used as given: the caller
    /// applies a sigmoid and 1 + softplus), `shift` [B, H, S] with S odd and at most
    /// [`MAX_SHIFT`](crate::MAX_SHIFT) (rows sum to 1: the caller applies a softmax).
    pub fn location_address(
        &self,
        content: &Tensor,
        prev: &Tensor,
        gate: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "location_address";
        let ds = inputs(self, OP, content, prev, gate, shift, gamma)?;
        let out = self.alloc(OP, &content.shape)?;
        let mut rec = self.recorder();
        let (rp, len) = self.pack_rows(&mut rec, OP, ds, gate, shift, gamma)?;
        self.location_forward(&mut rec, OP, ds, content, prev, (&rp, len), &out.buf)?;
        self.release(&mut rec, rp);
        Ok(out)
    }

    /// Backward of [`Gpu::location_address`] given `dw = d loss / d weights` [B, H, N]: the
    /// weights are recomputed, then `dz = w (dw − sum_j w_j dw_j)` and
    /// [`Gpu::location_address_backward_scores`].
    #[allow(clippy::too_many_arguments)] // the op's inputs, as DESIGN.md §6 names them
    pub fn location_address_backward(
        &self,
        content: &Tensor,
        prev: &Tensor,
        gate: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
        dw: &Tensor,
    ) -> Result<LocationGrads> {
        const OP: &str = "location_address_backward";
        let ds = inputs(self, OP, content, prev, gate, shift, gamma)?;
        check::tensor(self, OP, "dw", dw, &["B", "H", "N"], &content.shape)?;
        self.location_backward(
            OP,
            ds,
            content,
            prev,
            gate,
            shift,
            gamma,
            Start::Weights(dw),
            None,
        )
    }

    /// Backward of location addressing from the gradient of the sharpening scores
    /// `z = gamma ln(wt + EPS)` (`w = softmax(z)`; `dz` [B, H, N], e.g. from
    /// [`Gpu::reinforce_grad`]): `dgamma = sum_i dz(i) ln(wt(i) + EPS)`,
    /// `dwt = gamma dz / (wt + EPS)`, then through the shift and the gate as in DESIGN.md §6.
    /// Never divides by `w`. Its `content` output is the `dw` to feed
    /// [`Gpu::content_address_backward`].
    #[allow(clippy::too_many_arguments)] // the op's inputs, as DESIGN.md §6 names them
    pub fn location_address_backward_scores(
        &self,
        content: &Tensor,
        prev: &Tensor,
        gate: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
        dz: &Tensor,
    ) -> Result<LocationGrads> {
        const OP: &str = "location_address_backward_scores";
        let ds = inputs(self, OP, content, prev, gate, shift, gamma)?;
        check::tensor(self, OP, "dz", dz, &["B", "H", "N"], &content.shape)?;
        self.location_backward(
            OP,
            ds,
            content,
            prev,
            gate,
            shift,
            gamma,
            Start::Scores(dz),
            None,
        )
    }

    #[allow(clippy::too_many_arguments)] // internal: both backward forms
    fn location_backward(
        &self,
        op: &'static str,
        (d, taps): (Dims, usize),
        wc: &Tensor,
        wp: &Tensor,
        gate: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
        start: Start<'_>,
        lanes: Option<u64>,
    ) -> Result<LocationGrads> {
        let lanes = lanes.unwrap_or_else(|| tile_lanes(taps as u64 + 2, self.is_cpu()));
        let g = LocationGrads {
            content: self.alloc(op, &[d.b, d.h, d.n])?,
            prev: self.alloc(op, &[d.b, d.h, d.n])?,
            gate: self.alloc(op, &[d.b, d.h])?,
            shift: self.alloc(op, &[d.b, d.h, taps])?,
            gamma: self.alloc(op, &[d.b, d.h])?,
        };
        let (rows, n) = ((d.b * d.h) as u64, d.n as u64);
        let total = rows * n;
        let tiles = n.div_ceil(LT);
        let width = taps as u64 + 2;
        let mut rec = self.recorder();
        let (rp, rp_len) = self.pack_rows(&mut rec, op, (d, taps), gate, shift, gamma)?;
        // From dw: recompute the weights, then dz = w (dw - sum w dw) into a scratch.
        let mut dz_scratch = None;
        let dz_buf: &wgpu::Buffer = match start {
            Start::Weights(dw) => {
                let w = self.scratch(op, &mut rec, total)?;
                self.location_forward(&mut rec, op, (d, taps), wc, wp, (&rp, rp_len), &w)?;
                let dz = self.scratch(op, &mut rec, total)?;
                softmax_backward(self, &mut rec, op, &w, &dw.buf, &dz, rows, n)?;
                self.release(&mut rec, w);
                dz_scratch.insert(dz)
            }
            Start::Scores(dz) => &dz.buf,
        };
        let parts_len = rows * tiles * width;
        let parts = self.scratch(op, &mut rec, parts_len)?;
        let rows_span = row_span(tiles, n);
        // Partials [B, tiles, H, S + 2]: units [u0, u1) cover batch elements u0 / (H tiles)..
        let per_b = d.h as u64 * tiles;
        let part_span = move |u0: u64, u1: u64| {
            (
                (u0 / per_b) * per_b * width,
                ((u1 - 1) / per_b + 1) * per_b * width,
            )
        };
        self.launch(
            &mut rec,
            op,
            if lanes == 1 { &BWD } else { &BWD_LANES },
            with_n(
                d,
                Params::new(
                    d.arr(),
                    [taps as u32, tiles as u32, lanes as u32, 0],
                    [0.0; 4],
                ),
            ),
            rows * tiles,
            &[
                Arg::window(wc, &rows_span),
                Arg::window(wp, &rows_span),
                Arg::raw(&rp, rp_len, Span::Whole),
                Arg::raw(dz_buf, total, Span::Window(&rows_span)),
                Arg::window(&g.content, &rows_span),
                Arg::window(&g.prev, &rows_span),
                Arg::raw(&parts, parts_len, Span::Window(&part_span)),
            ],
        )?;
        let sums = self.scratch(op, &mut rec, rows * width)?;
        let dsum = Dims {
            b: d.b,
            h: d.h,
            n: d.n,
            w: width as usize,
        };
        combine_blocks(
            self,
            &mut rec,
            op,
            dsum,
            tiles,
            &parts,
            (&sums, rows * width),
        )?;
        let len = rows * width;
        self.launch(
            &mut rec,
            op,
            &UNPACK,
            Params::new(d.arr(), [taps as u32, 0, 0, len as u32], [0.0; 4]),
            len.div_ceil(WG as u64),
            &[
                Arg::raw(&sums, len, Span::Whole),
                Arg::whole(&g.gate),
                Arg::whole(&g.shift),
                Arg::whole(&g.gamma),
            ],
        )?;
        for s in [rp, parts, sums].into_iter().chain(dz_scratch) {
            self.release(&mut rec, s);
        }
        Ok(g)
    }
}

/// The backward's tile sums at every lane count a shift allows, against the CPU reference.
/// CPU adapters (those CI runs on) pick a serial sum per column and GPUs as many lanes as fit
/// (`tile_lanes`); here each count is forced, so the lanes' tree is tested on every adapter,
/// also right after a kernel filled workgroup memory with NaN (tests/workgroup_memory.rs
/// does that for the public paths). The public paths are tested in `tests/location.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self as r, Shape};

    /// Splitmix64: a deterministic stream in [0, 1).
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f32> {
            (0..len)
                .map(|_| (lo + (hi - lo) * self.unit()) as f32)
                .collect()
        }
        /// Rows of `len` positive weights summing to 1.
        fn weights(&mut self, rows: usize, len: usize) -> Vec<f32> {
            let mut out = Vec::with_capacity(rows * len);
            for _ in 0..rows {
                let e: Vec<f64> = (0..len).map(|_| (3.0 * self.unit()).exp()).collect();
                let s: f64 = e.iter().sum();
                out.extend(e.iter().map(|x| (x / s) as f32));
            }
            out
        }
    }

    fn f64s(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    /// `|got - want| <= 2e-5 max|want| + 1e-4 |want| + term` for every element (the
    /// tolerances of `tests/location.rs`); panics naming the worst element.
    fn check(what: &str, got: &[f32], want: &[f64], terms: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        let (mut worst, mut at) = (-1.0f64, 0);
        for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(terms).enumerate() {
            assert!(g.is_finite(), "{what}: element {i} is {g}");
            let err = (g as f64 - w).abs() / (2e-5 * scale + 1e-4 * w.abs() + t);
            if err > worst {
                (worst, at) = (err, i);
            }
        }
        assert!(
            worst <= 1.0,
            "{what}: worst element {at}: got {} want {} ({worst:.2} of its tolerance)",
            got[at],
            want[at]
        );
    }

    #[test]
    fn tile_sums_at_every_lane_count() {
        let gpu = Gpu::new().unwrap_or_else(|e| panic!("this test needs an adapter: {e}"));
        let poison = gpu
            .kernel(
                "poison",
                "@group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;
                 @group(0) @binding(1) var<storage, read_write> sink: array<f32>;
                 var<workgroup> junk: array<vec4<f32>, 1024>;
                 @compute @workgroup_size(256)
                 fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) g: vec3<u32>) {
                     for (var k = 0u; k < 4u; k += 1u) { junk[k * 256u + i] = vec4<f32>(bitcast<f32>(p[0].x)); }
                     workgroupBarrier();
                     if i == 0u { sink[g.x] = junk[(g.x * 17u) % 1024u].x; }
                 }",
                "main",
                &[crate::Access::ReadWrite],
            )
            .unwrap();
        let sink = gpu.zeros(&[256]).unwrap();
        let mut rng = Rng(7);
        // S = 1, 3, 41, 101, 125: the lanes that fit go from 64 down to 2.
        for (b, h, n, taps) in [
            (1, 1, 300, 1),
            (2, 3, 1000, 3),
            (1, 2, 700, 41),
            (3, 1, 513, 101),
            (1, 1, 257, 125),
        ] {
            let (s, rows) = (Shape::new(b, h, n, 0), b * h);
            let wc = rng.weights(rows, n);
            let wp = rng.weights(rows, n);
            let gate = rng.vec(rows, 0.0, 1.0);
            let shift = rng.weights(rows, taps);
            let gamma = rng.vec(rows, 1.0, 5.0);
            let dz = rng.vec(rows * n, -1.0, 1.0);
            let up = |shape: &[usize], x: &[f32]| gpu.upload(shape, x).unwrap();
            let bhn = [b, h, n];
            let t = (
                up(&bhn, &wc),
                up(&bhn, &wp),
                up(&[b, h], &gate),
                up(&[b, h, taps], &shift),
                up(&[b, h], &gamma),
                up(&bhn, &dz),
            );
            let (wc, wp, gate, shift, gamma, dz) = (
                f64s(&wc),
                f64s(&wp),
                f64s(&gate),
                f64s(&shift),
                f64s(&gamma),
                f64s(&dz),
            );
            let want =
                r::location_address_backward_scores(&wc, &wp, &gate, &shift, &gamma, &dz, s, taps);
            // Cancelling sums resolve only to a few roundings of their terms' magnitudes
            // (as in tests/location.rs): the reference backward run on |dz|.
            let ulps = (taps as f64 + 8.0) * 2f64.powi(-24);
            let abs: Vec<f64> = dz.iter().map(|x| x.abs()).collect();
            let m =
                r::location_address_backward_scores(&wc, &wp, &gate, &shift, &gamma, &abs, s, taps);
            let lnwt: Vec<f64> = r::location_scores(&wc, &wp, &gate, &shift, &gamma, s, taps)
                .iter()
                .enumerate()
                .map(|(i, z)| z / gamma[i / n])
                .collect();
            let per_row = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
                (0..rows)
                    .map(|row| (row * n..(row + 1) * n).map(f).sum::<f64>() * ulps)
                    .collect()
            };
            let shift_terms: Vec<f64> = m.shift.iter().map(|x| x * ulps).collect();
            let gate_terms = per_row(&|k| (m.content[k] + m.prev[k]) * (wc[k] - wp[k]).abs());
            let gamma_terms = per_row(&|k| abs[k] * (1.0 + lnwt[k].abs()));
            let most = tile_lanes(taps as u64 + 2, false);
            let mut lanes = 1;
            while lanes <= most {
                const OP: &str = "tile_sums_at_every_lane_count";
                let ds = inputs(&gpu, OP, &t.0, &t.1, &t.2, &t.3, &t.4).unwrap();
                let backward = || {
                    let (c, p, g, s, gm) = (&t.0, &t.1, &t.2, &t.3, &t.4);
                    gpu.location_backward(OP, ds, c, p, g, s, gm, Start::Scores(&t.5), Some(lanes))
                        .unwrap()
                };
                let got = backward();
                let tag = format!("B={b} H={h} N={n} S={taps} lanes={lanes}");
                let dl = |x: &Tensor| gpu.download(x).unwrap();
                // The same bits after a kernel filled workgroup memory with NaN: the kernels
                // write every workgroup slot they read (their memory is not zeroed).
                gpu.dispatch(&poison, [256, 1, 1], &[&sink], &[0x7fc0_0000])
                    .unwrap();
                let again = backward();
                for (what, x, y) in [
                    ("dcontent", &got.content, &again.content),
                    ("dprev", &got.prev, &again.prev),
                    ("dgate", &got.gate, &again.gate),
                    ("dshift", &got.shift, &again.shift),
                    ("dgamma", &got.gamma, &again.gamma),
                ] {
                    let bits =
                        |t: &Tensor| -> Vec<u32> { dl(t).iter().map(|v| v.to_bits()).collect() };
                    assert!(
                        bits(x) == bits(y),
                        "{tag} {what}: other bits after the poison"
                    );
                }
                check(
                    &format!("{tag} dshift"),
                    &dl(&got.shift),
                    &want.shift,
                    &shift_terms,
                );
                check(
                    &format!("{tag} dgate"),
                    &dl(&got.gate),
                    &want.gate,
                    &gate_terms,
                );
                check(
                    &format!("{tag} dgamma"),
                    &dl(&got.gamma),
                    &want.gamma,
                    &gamma_terms,
                );
                lanes *= 2;
            }
            assert!(most >= 2, "S = {taps} should allow a lanes' tree");
        }
    }
}
