//! Streaming row dots: the memory rows against a few vectors per head, a coalesced `V` per
//! thread and row (two, `c` and `c + tw`, in the `_pairs` entry points), for rows of up to
//! `WG` V's. The soft read's weight gradient (`dots`) and
//! content addressing's scores with their softmax pairs (`scores`) and its backward in one
//! pass over the memory (`content_backward`, for up to HG heads); soft write's backward
//! streams its rows the same way ([`StreamLayout`]). Wider rows take the row tiles
//! (`rowtile`). Shader: `shaders/primitives/rowstream.wgsl`.

use crate::check::Dims;
use crate::error::Result;
use crate::primitives::spans::Rows;
use crate::runtime::abi::{Params, HG, KR, TR, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "primitives/rowstream.wgsl",
    source: include_str!("../../shaders/primitives/rowstream.wgsl"),
    imports: &[],
};
const DOTS: KernelDef = KernelDef::new(&SHADER, "dots");
const DOTS_PAIRS: KernelDef = KernelDef::new(&SHADER, "dots_pairs");
const READ_BWD: KernelDef = KernelDef::new(&SHADER, "read_bwd");
const READ_BWD_PAIRS: KernelDef = KernelDef::new(&SHADER, "read_bwd_pairs");
const SCORES: KernelDef = KernelDef::new(&SHADER, "scores");
const SCORES_PAIRS: KernelDef = KernelDef::new(&SHADER, "scores_pairs");
const CONTENT_BWD: KernelDef = KernelDef::new(&SHADER, "content_bwd");
const CONTENT_BWD_PAIRS: KernelDef = KernelDef::new(&SHADER, "content_bwd_pairs");

/// Rows per block at most (fewer when that would leave the device idle).
const MAX_RB: u64 = 4096;

/// Layout of the streaming kernels: a unit is (batch b, block of `rb` rows, group of HG
/// heads); its `WG` threads are `WG / tw` row lanes (rounded down) by `tw` column lanes, one V
/// each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLayout {
    /// f32s per V: 4 when W is a multiple of 4, else 1.
    pub lanes: u32,
    /// Column lanes: a row's V's where rows are summed in workgroup memory, so no column lane
    /// idles (W = 20: 5 lanes and 51 row lanes, where a power of two left 3 lanes of 8 idle),
    /// or half of them, rounded up, with `pairs`; with subgroup row sums the narrowest power
    /// of two holding them (the butterflies need one).
    pub tw: u64,
    /// Two V's per thread (V's c and c + tw: the `_pairs` entry points of `scores`, `dots`,
    /// `read_bwd`, `content_bwd` and write.wgsl's `bwd_heads`), where rows are summed in
    /// workgroup memory and hold at least 2 V's.
    pub pairs: bool,
    /// Rows per block: a multiple of the row lanes times `KR` (whole chunks) where that
    /// leaves at least `TR` rows.
    pub rb: u64,
    /// Blocks per batch element.
    pub nblk: u64,
    /// Head groups.
    pub nhg: u64,
    /// Whether a row's `tw` lanes fit one subgroup: the row sums are then subgroup shuffles
    /// (`SUB_ROWS`; `dots`, `scores` and `content_bwd`).
    pub sub_rows: bool,
    /// With `sub_rows`, the rows a thread loads before summing any
    /// (`Gpu::stream_row_group`); 1 otherwise.
    pub row_group: u32,
}

/// Which rows a streaming layout gives two V's per thread (only where rows are summed in
/// workgroup memory: subgroup butterflies take one).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pairs {
    /// One V per thread.
    No,
    /// Rows of at least 2 V's: `scores`, `dots`, `read_bwd`, whose threads keep no
    /// per-column sums.
    Any,
    /// Rows of an even count of V's, at least `min_lanes` column lanes' worth: `content_bwd`
    /// (2: a chunk's rows pass their coefficients through WG slots) and `bwd_heads` (1). With
    /// an odd count one lane holds a single V, and there the per-column sums these kernels
    /// keep for both V's did not pay: content addressing's backward at H = 4, W = 20 (5 V's
    /// in 3 lanes) ran 0.88x as fast on lavapipe, where at W = 64 the pairs were 1.16-1.44x.
    Even { min_lanes: u64 },
}

impl StreamLayout {
    /// The layout for `d`, or `None` when a row has more than `WG` V's: two V's per thread
    /// for the rows `rule` names (`pairs`: kernels with `_pairs` entry points, `scores`,
    /// `dots`, `read_bwd`, `content_bwd`, `bwd_heads`) where `Gpu::stream_vecs_per_thread`
    /// is 2, else one.
    pub fn new(gpu: &Gpu, d: Dims, rule: Pairs) -> Option<Self> {
        let lanes: u32 = if d.w.is_multiple_of(4) { 4 } else { 1 };
        let cols = d.w as u64 / lanes as u64;
        let pow2 = cols.next_power_of_two();
        if pow2 > WG as u64 {
            return None;
        }
        let sub_rows = gpu.subgroup_holds(pow2);
        let pairs = !sub_rows
            && gpu.stream_vecs_per_thread() == 2
            && match rule {
                Pairs::No => false,
                Pairs::Any => cols >= 2,
                Pairs::Even { min_lanes } => cols.is_multiple_of(2) && cols / 2 >= min_lanes,
            };
        let tw = match (sub_rows, pairs) {
            (true, _) => pow2,
            (false, true) => gpu.row_tile(cols).div_ceil(2),
            (false, false) => gpu.row_tile(cols),
        };
        // At least TR rows, as the row tiles: the per-block partials that soft write's
        // backward leaves ([B, blocks, H, W]) stay within a binding wherever the tiles' did.
        let chunk = (WG as u64 / tw) * KR as u64;
        let min_rb = chunk.max(TR as u64);
        let nhg = (d.h as u64).div_ceil(HG as u64);
        let units = |rb: u64| d.b as u64 * (d.n as u64).div_ceil(rb) * nhg;
        let target = gpu.reduction_workgroups() as u64;
        // No longer than a binding holds (f32 rows: the widest element), where possible.
        let fit = gpu.rows_per_binding(d.w as u64 * 4);
        let mut rb = MAX_RB.min(fit).max(min_rb);
        while rb / 2 >= min_rb && units(rb) < target {
            rb /= 2;
        }
        // Whole chunks of rows per block (a power of two already is one, with tw a power of
        // two), unless that leaves fewer than TR rows.
        if (rb / chunk) * chunk >= TR as u64 {
            rb = (rb / chunk) * chunk;
        }
        Some(StreamLayout {
            lanes,
            tw,
            pairs,
            rb,
            nblk: (d.n as u64).div_ceil(rb),
            nhg,
            sub_rows,
            row_group: if sub_rows { gpu.stream_row_group() } else { 1 },
        })
    }

    /// A streaming kernel specialised for this layout: its `V`, its way of summing rows (with
    /// the rows loaded at a time), and the head count where one group holds every head.
    pub fn kernel(&self, def: KernelDef, d: Dims) -> KernelDef {
        def.lanes(self.lanes)
            .sub_rows(self.sub_rows)
            .row_group(self.row_group)
            .one_group_heads(d.h)
    }

    /// A streaming kernel that reads `mem` and stores (with `acc`, adds) a memory gradient
    /// into `g_mem`: [`Self::kernel`] with their storage forms.
    fn grad_kernel(
        &self,
        gpu: &Gpu,
        (def, d): (KernelDef, Dims),
        (mem, g_mem): (&Tensor, &Tensor),
        acc: bool,
    ) -> KernelDef {
        let forms = (gpu.form(mem.dtype), Form::F32, gpu.form(g_mem.dtype));
        self.kernel(def, d)
            .acc(acc)
            .forms(forms.0, forms.1, forms.2)
    }

    /// Workgroups to dispatch.
    pub fn units(&self, d: Dims) -> u64 {
        d.b as u64 * self.nblk * self.nhg
    }

    /// `Params.extra` of the streaming kernels.
    pub fn extra(&self) -> [u32; 4] {
        [self.tw as u32, self.nblk as u32, self.rb as u32, 0]
    }

    /// The memory rows that units `[u0, u1)` touch.
    pub fn rows(&self, d: Dims, u0: u64, u1: u64) -> Rows {
        Rows::of_blocks(u0, u1, self.nhg, self.nblk, self.rb, d.n as u64)
    }
}

/// `out[b,h,i] = V[b,h] . M[b,i]` into a [B, H, N] tensor, streaming rows of layout `l`.
pub(crate) fn dots(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    (d, l): (Dims, StreamLayout),
    mem: &Tensor,
    vecs: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let (n, w, h) = (d.n as u64, d.w as u64, d.h as u64);
    let mem_span = |u0, u1| l.rows(d, u0, u1).bnw(n, w);
    let out_span = |u0, u1| l.rows(d, u0, u1).bhn(h, n);
    gpu.launch(
        rec,
        op,
        &l.kernel(if l.pairs { DOTS_PAIRS } else { DOTS }, d).forms(
            gpu.form(mem.dtype),
            Form::F32,
            Form::F32,
        ),
        Params::new(d.arr(), l.extra(), [0.0; 4]),
        l.units(d),
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(vecs),
            Arg::window(out, &out_span),
        ],
    )
}

/// The soft read's backward in one pass over the memory: `g_w[b,h,i] = dr[b,h] . M[b,i]`, and
/// `dM[b,i] = sum_h w[b,h,i] dr[b,h]` stored (with `acc`, added) into `g_mem`, where rows
/// stream, one head group holds every head, no packed f16 word of `g_mem` would be shared by
/// two threads, and `Gpu::read_backward_passes` is 1. Returns whether it ran (else the caller
/// takes the dots and a `dM` pass).
#[allow(clippy::too_many_arguments)] // internal: one pass, its inputs spelled out
pub(crate) fn read_backward(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    (mem, w, dr): (&Tensor, &Tensor, &Tensor),
    g_w: &Tensor,
    g_mem: &Tensor,
    acc: bool,
) -> Result<bool> {
    let Some(l) = StreamLayout::new(gpu, d, Pairs::Any) else {
        return Ok(false);
    };
    let one_pass = gpu.read_backward_passes() == 1;
    if !one_pass || l.nhg != 1 || (l.lanes == 1 && gpu.any_packed(&[g_mem])) {
        return Ok(false);
    }
    let (n, w_len, h) = (d.n as u64, d.w as u64, d.h as u64);
    let mem_span = |u0, u1| l.rows(d, u0, u1).bnw(n, w_len);
    let bhn_span = |u0, u1| l.rows(d, u0, u1).bhn(h, n);
    gpu.launch(
        rec,
        op,
        &l.grad_kernel(
            gpu,
            (if l.pairs { READ_BWD_PAIRS } else { READ_BWD }, d),
            (mem, g_mem),
            acc,
        ),
        Params::new(d.arr(), l.extra(), [0.0; 4]),
        l.units(d),
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(dr),
            Arg::window(g_w, &bhn_span),
            Arg::window(w, &bhn_span),
            Arg::window(g_mem, &mem_span),
        ],
    )?;
    Ok(true)
}

/// The content scores `beta[b,h] K(keys[b,h], M[b,i])` into `out` [B, H, N], and each
/// block's softmax pairs into a scratch [B*H, blocks, 2] that the caller combines
/// (`rowstat::combine_pairs`) and releases; returns it with the block count.
pub(crate) fn scores(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    (d, l): (Dims, StreamLayout),
    (mem, keys, beta): (&Tensor, &Tensor, &Tensor),
    out: &Tensor,
) -> Result<(wgpu::Buffer, u64)> {
    let (n, w, h) = (d.n as u64, d.w as u64, d.h as u64);
    let mem_span = |u0, u1| l.rows(d, u0, u1).bnw(n, w);
    let out_span = |u0, u1| l.rows(d, u0, u1).bhn(h, n);
    let pairs_len = d.b as u64 * h * l.nblk * 2;
    let pair_span = |u0, u1| {
        let r = l.rows(d, u0, u1);
        (r.b0 * h * l.nblk * 2, (r.b1 + 1) * h * l.nblk * 2)
    };
    let pairs = gpu.scratch(op, rec, pairs_len)?;
    let def = if l.pairs { SCORES_PAIRS } else { SCORES };
    gpu.launch(
        rec,
        op,
        &l.kernel(def, d)
            .forms(gpu.form(mem.dtype), Form::F32, Form::F32),
        Params::new(d.arr(), l.extra(), [0.0; 4]),
        l.units(d),
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(keys),
            Arg::whole(beta),
            Arg::window(out, &out_span),
            Arg::raw(&pairs, pairs_len, Span::Window(&pair_span)),
        ],
    )?;
    Ok((pairs, l.nblk))
}

/// Content addressing's backward from `dz` in one pass over the memory, where the layout has
/// one head group and rows of at least 2 V's, and no packed f16 word would be shared by two
/// threads (`None` otherwise: the caller takes the row-tile path). Stores (with `acc`, adds)
/// the memory gradient into `g_mem`; returns scratch buffers the caller releases: the blocks'
/// partials of `sum_i dD_hi M_i` [B, blocks, H, W] and their pairs
/// `(sum dP norm(M), sum dz K)` [B*H, blocks, 2], with the block count.
#[allow(clippy::too_many_arguments)] // internal: one pass, its inputs spelled out
pub(crate) fn content_backward(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    (mem, keys, beta, dz): (&Tensor, &Tensor, &Tensor, &Tensor),
    g_mem: &Tensor,
    acc: bool,
) -> Result<Option<(wgpu::Buffer, wgpu::Buffer, u64)>> {
    let Some(l) = StreamLayout::new(gpu, d, Pairs::Even { min_lanes: 2 }) else {
        return Ok(None);
    };
    if l.nhg != 1 || l.tw < 2 || (l.lanes == 1 && gpu.any_packed(&[g_mem])) {
        return Ok(None);
    }
    let (b, n, w, h) = (d.b as u64, d.n as u64, d.w as u64, d.h as u64);
    let mem_span = |u0, u1| l.rows(d, u0, u1).bnw(n, w);
    let bhn_span = |u0, u1| l.rows(d, u0, u1).bhn(h, n);
    let part_len = b * l.nblk * h * w;
    let part_span = |u0, u1| {
        let r = l.rows(d, u0, u1);
        let (t0, t1) = (r.i0 / l.rb, (r.i1 - 1) / l.rb);
        (
            (r.b0 * l.nblk + t0) * h * w,
            (r.b1 * l.nblk + t1 + 1) * h * w,
        )
    };
    let pairs_len = b * h * l.nblk * 2;
    let pair_span = |u0, u1| {
        let r = l.rows(d, u0, u1);
        (r.b0 * h * l.nblk * 2, (r.b1 + 1) * h * l.nblk * 2)
    };
    let part = gpu.scratch(op, rec, part_len)?;
    let pairs = gpu.scratch(op, rec, pairs_len)?;
    gpu.launch(
        rec,
        op,
        &l.grad_kernel(
            gpu,
            (
                if l.pairs {
                    CONTENT_BWD_PAIRS
                } else {
                    CONTENT_BWD
                },
                d,
            ),
            (mem, g_mem),
            acc,
        ),
        Params::new(d.arr(), l.extra(), [0.0; 4]),
        l.units(d),
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(keys),
            Arg::whole(beta),
            Arg::window(dz, &bhn_span),
            Arg::window(g_mem, &mem_span),
            Arg::raw(&part, part_len, Span::Window(&part_span)),
            Arg::raw(&pairs, pairs_len, Span::Window(&pair_span)),
        ],
    )?;
    Ok(Some((part, pairs, l.nblk)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ColumnTiles, RowSums};

    /// Workgroup row sums take a row's V's exactly (no idle column lane), or half of them
    /// rounded up with two per thread (`Pairs`: rows of at least 2 V's, or an even count
    /// leaving enough lanes; only where `Gpu::stream_vecs_per_thread` is 2), or the power of
    /// two of them with `ColumnTiles::PowerOfTwo`, and give blocks of whole chunks of rows (at
    /// least TR); subgroup row sums keep the narrowest power of two.
    #[test]
    fn stream_tiles_hold_rows_exactly() {
        let gpu = Gpu::new().unwrap_or_else(|e| panic!("this test needs an adapter: {e}"));
        for (sums, vecs, tiles) in [RowSums::Workgroup, RowSums::Subgroup]
            .into_iter()
            .flat_map(|s| [(s, 1), (s, 2)])
            .flat_map(|(s, v)| [(s, v, ColumnTiles::Exact), (s, v, ColumnTiles::PowerOfTwo)])
        {
            if gpu.set_row_sums(sums).is_err() {
                continue; // no subgroups on this adapter
            }
            gpu.set_stream_vecs_per_thread(vecs).unwrap();
            gpu.set_column_tiles(tiles);
            // (W, V's per row)
            for (w, cols) in [
                (1usize, 1u64),
                (3, 3),
                (6, 6),
                (20, 5),
                (28, 7),
                (64, 16),
                (100, 25),
            ] {
                let rules = [
                    Pairs::No,
                    Pairs::Any,
                    Pairs::Even { min_lanes: 1 },
                    Pairs::Even { min_lanes: 2 },
                ];
                for (n, rule) in [1usize, 100, 1 << 16, 1 << 20]
                    .into_iter()
                    .flat_map(|n| rules.map(|r| (n, r)))
                {
                    let d = Dims { b: 1, h: 1, n, w };
                    let l = StreamLayout::new(&gpu, d, rule).unwrap();
                    let pairs = !l.sub_rows
                        && vecs == 2
                        && match rule {
                            Pairs::No => false,
                            Pairs::Any => cols >= 2,
                            Pairs::Even { min_lanes } => cols % 2 == 0 && cols / 2 >= min_lanes,
                        };
                    assert_eq!(l.pairs, pairs, "W = {w}, {sums:?}, {vecs} V's, {rule:?}");
                    let tile = match tiles {
                        ColumnTiles::Exact => cols,
                        ColumnTiles::PowerOfTwo => cols.next_power_of_two(),
                    };
                    let want = match (l.sub_rows, pairs) {
                        (true, _) => cols.next_power_of_two(),
                        (false, true) => tile.div_ceil(2),
                        (false, false) => tile,
                    };
                    assert_eq!(l.tw, want, "W = {w}, {sums:?}, {tiles:?}, {rule:?}");
                    let chunk = (WG as u64 / l.tw) * KR as u64;
                    assert!(l.rb >= TR as u64, "W = {w}, N = {n}: {} rows", l.rb);
                    assert!(
                        l.rb.is_multiple_of(chunk) || (l.rb / chunk) * chunk < TR as u64,
                        "W = {w}, N = {n}: {} rows in chunks of {chunk}",
                        l.rb
                    );
                    assert_eq!(l.nblk, (n as u64).div_ceil(l.rb));
                }
            }
        }
    }
}
