//! Soft read: `r_h = sum_i w_h(i) M_i` and its backward pass. Shaders in `shaders/read.wgsl`.

use crate::check::{self, flat, Dims, Elementwise, Rows};
use crate::content::row_scores;
use crate::error::Result;
use crate::gpu::{Arg, Gpu, KernelDef, Params, Rec, Span, Tensor};

const SRC: &str = include_str!("../shaders/read.wgsl");
const HG: u64 = 4;
/// Workgroups the column reductions aim for: enough to fill a large GPU.
const TARGET_UNITS: u64 = 4096;

const PARTIAL: KernelDef = KernelDef {
    file: "read.wgsl",
    source: SRC,
    entry: "partial",
    writes: &[false, false, true],
};
pub(crate) const COMBINE: KernelDef = KernelDef {
    file: "read.wgsl",
    source: SRC,
    entry: "combine",
    writes: &[false, true],
};
const BWD_MEM: KernelDef = KernelDef {
    file: "read.wgsl",
    source: SRC,
    entry: "bwd_mem",
    writes: &[false, false, true],
};

/// Gradients of a soft read.
#[derive(Debug)]
pub struct ReadGrads {
    /// d loss / d memory, [B, N, W].
    pub memory: Tensor,
    /// d loss / d weights, [B, H, N].
    pub weights: Tensor,
}

/// Layout of the column reductions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ColLayout {
    /// Column tile width: the narrowest power of two holding W, at most 64, so narrow
    /// memories keep several rows in flight per workgroup.
    pub tw: u64,
    /// Column tiles.
    pub nct: u64,
    /// Rows per block: 256, halved (down to 16) until there are enough workgroups.
    pub rb: u64,
    /// Row blocks.
    pub nblk: u64,
    /// Head groups.
    pub nhg: u64,
    /// Workgroups.
    pub units: u64,
}

impl ColLayout {
    /// `extra` of the `partial` kernels' Params.
    pub fn extra(&self) -> [u32; 4] {
        [
            self.tw as u32,
            self.nblk as u32,
            self.nct as u32,
            self.rb as u32,
        ]
    }
}

pub(crate) fn col_layout(d: Dims) -> ColLayout {
    let tw = (d.w as u64).next_power_of_two().min(64);
    let nct = (d.w as u64).div_ceil(tw);
    let nhg = (d.h as u64).div_ceil(HG);
    let units = |rb: u64| d.b as u64 * (d.n as u64).div_ceil(rb) * nct * nhg;
    let mut rb = 256;
    while rb > 16 && units(rb) < TARGET_UNITS {
        rb /= 2;
    }
    ColLayout {
        tw,
        nct,
        rb,
        nblk: (d.n as u64).div_ceil(rb),
        nhg,
        units: units(rb),
    }
}

/// Element spans of the column-reduction units: (memory rows, [B,H,N] rows, partials).
pub(crate) fn col_spans(d: Dims) -> impl Fn(u64, u64) -> (Rows, (u64, u64)) {
    let ColLayout {
        nct, nblk, nhg, rb, ..
    } = col_layout(d);
    let (h, n, w) = (d.h as u64, d.n as u64, d.w as u64);
    move |u0, u1| {
        let r = Rows::of_blocks(u0, u1, nct * nhg, nblk, rb, n);
        let first = u0 / (nct * nhg);
        let last = (u1 - 1) / (nct * nhg);
        (r, (first * h * w, (last + 1) * h * w))
    }
}

/// Sums the partials [B, blocks, H, W] over blocks into `out` [B, H, W].
pub(crate) fn combine_blocks(
    gpu: &Gpu,
    rec: &mut Rec,
    op: &'static str,
    d: Dims,
    parts: &wgpu::Buffer,
    out: (&wgpu::Buffer, u64),
) -> Result<()> {
    let nblk = col_layout(d).nblk;
    let (b, h, w) = (d.b as u64, d.h as u64, d.w as u64);
    let total = b * h * w;
    // Lanes per output: about 8 blocks each, up to the whole workgroup.
    let lanes = nblk.div_ceil(8).next_power_of_two().min(256);
    let per_wg = 256 / lanes;
    let out_span = |u0, u1| flat(u0, u1, per_wg, total);
    let part_span = |u0, u1| {
        let (e0, e1) = flat(u0, u1, per_wg, total);
        (
            (e0 / (h * w)) * nblk * h * w,
            ((e1 - 1) / (h * w) + 1) * nblk * h * w,
        )
    };
    gpu.dispatch(
        rec,
        op,
        &COMBINE,
        Params::new(d.arr(), [0, nblk as u32, lanes as u32, 0], [0.0; 4]),
        total.div_ceil(per_wg),
        &[
            Arg::raw(parts, b * nblk * h * w, Span::Window(&part_span)),
            Arg::raw(out.0, out.1, Span::Window(&out_span)),
        ],
    )
}

/// `out[b,h] = sum_i weights[b,h,i] M[b,i]` into `out` [B, H, W]: the soft read, also used
/// for content addressing's key gradient.
pub(crate) fn weighted_row_sums(
    gpu: &Gpu,
    rec: &mut Rec,
    op: &'static str,
    d: Dims,
    mem: &Tensor,
    weights: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    let cl = col_layout(d);
    let (b, h, n, w) = (d.b as u64, d.h as u64, d.n as u64, d.w as u64);
    let parts = gpu.scratch(rec, b * cl.nblk * h * w);
    let spans = col_spans(d);
    let mem_span = |u0, u1| spans(u0, u1).0.bnw(n, w);
    let w_span = |u0, u1| spans(u0, u1).0.bhn(h, n);
    let part_span = |u0, u1| spans(u0, u1).1;
    gpu.dispatch(
        rec,
        op,
        &PARTIAL,
        Params::new(d.arr(), cl.extra(), [0.0; 4]),
        cl.units,
        &[
            Arg::window(mem, &mem_span),
            Arg::raw(weights, b * h * n, Span::Window(&w_span)),
            Arg::raw(&parts, b * cl.nblk * h * w, Span::Window(&part_span)),
        ],
    )?;
    combine_blocks(gpu, rec, op, d, &parts, (out, b * h * w))?;
    gpu.release(rec, parts);
    Ok(())
}

fn inputs(gpu: &Gpu, op: &'static str, m: &Tensor, w: &Tensor) -> Result<Dims> {
    let (b, n, wd) = check::memory(gpu, op, "memory", m)?;
    let h = check::middle(gpu, op, "w", w, ["B", "H", "N"], b, n)?;
    Ok(Dims { b, h, n, w: wd })
}

impl Gpu {
    /// Soft read: `r[b,h] = sum_i w[b,h,i] M[b,i]`, [B, H, W].
    ///
    /// `memory` is [B, N, W], `w` [B, H, N].
    pub fn soft_read(&self, memory: &Tensor, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "soft_read";
        let d = inputs(self, OP, memory, w)?;
        let out = self.alloc(OP, &[d.b, d.h, d.w])?;
        let mut rec = self.recorder();
        weighted_row_sums(self, &mut rec, OP, d, memory, &w.buf, &out.buf)?;
        Ok(out)
    }

    /// Backward of [`Gpu::soft_read`] given `dr` [B, H, W]:
    /// `weights[b,h,i] = dr[b,h]·M[b,i]`, `memory[b,i,j] = sum_h w[b,h,i] dr[b,h,j]`.
    pub fn soft_read_backward(
        &self,
        memory: &Tensor,
        w: &Tensor,
        dr: &Tensor,
    ) -> Result<ReadGrads> {
        const OP: &str = "soft_read_backward";
        let d = inputs(self, OP, memory, w)?;
        check::tensor(self, OP, "dr", dr, &["B", "H", "W"], &[d.b, d.h, d.w])?;
        let g_mem = self.alloc(OP, &[d.b, d.n, d.w])?;
        let g_w = self.alloc(OP, &[d.b, d.h, d.n])?;
        let mut rec = self.recorder();
        row_scores(self, &mut rec, OP, d, memory, dr, None, &g_w)?;
        let (h, n) = (d.h as u64, d.n as u64);
        let ew = Elementwise::new(d);
        let elems = |u0, u1| ew.bnw(u0, u1);
        let w_span = |u0, u1| ew.rows(u0, u1).bhn(h, n);
        self.dispatch(
            &mut rec,
            OP,
            &BWD_MEM,
            Params::new(d.arr(), ew.extra(), [0.0; 4]),
            ew.units,
            &[
                Arg::window(w, &w_span),
                Arg::whole(dr),
                Arg::window(&g_mem, &elems),
            ],
        )?;
        Ok(ReadGrads {
            memory: g_mem,
            weights: g_w,
        })
    }
}
