//! Location addressing: the NTM's interpolation gate, circular shift and sharpening, and its
//! backward passes (DESIGN.md §6). Shader: `shaders/location.wgsl`; the softmax and its
//! backward are the row-statistic primitive, the sums over tiles the column-sum combine.

use crate::check::{self, Dims};
use crate::error::{Error, Result};
use crate::primitives::colsum::combine_blocks;
use crate::primitives::rowstat::{combine_pairs, normalize_rows, softmax_backward, Stat};
use crate::runtime::abi::{Params, WG};
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
const UNPACK: KernelDef = KernelDef::new(&SHADER, "unpack");

/// Slots per tile (`LT` in the shader: one per thread).
const LT: u64 = WG as u64;
/// The widest shift a tile's halo holds: S <= 2 HALO + 1 (`HALO` in the shader).
pub const MAX_SHIFT: usize = 2 * 256 + 1;

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
            Params::new(d.arr(), [taps as u32, tiles as u32, 0, 0], [0.0; 4]),
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
        self.location_backward(OP, ds, content, prev, gate, shift, gamma, Start::Scores(dz))
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
    ) -> Result<LocationGrads> {
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
        // Lanes per column of the tiles' partial sums (S + 2 columns), a power of two: as many
        // as fit the workgroup on GPUs; at most 2 on CPU adapters, where each level of the
        // lanes' tree costs a barrier that outweighs the sums it splits (lavapipe ran the
        // backward at 0.88-0.90x the serial sums' speed with 32 lanes). 1: a serial sum per
        // column (shifts of more than 126 taps).
        let cols = taps as u64 + 2;
        let most = if self.adapter().is_cpu { 2 } else { WG as u64 };
        let mut lanes = 1u64;
        while lanes < most && 2 * lanes * cols <= WG as u64 {
            lanes *= 2;
        }
        self.launch(
            &mut rec,
            op,
            &BWD,
            Params::new(
                d.arr(),
                [taps as u32, tiles as u32, lanes as u32, 0],
                [0.0; 4],
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
