//! Column reductions: weighted sums of memory rows over slots, in two deterministic levels
//! (block partials, then a fixed-order combine). The soft read is one; content addressing's
//! key gradient and soft write's erase and add gradients use the same layout and combine.
//! Shader: `shaders/primitives/colsum.wgsl`.

use crate::check::Dims;
use crate::error::Result;
use crate::primitives::spans::{flat, Rows};
use crate::runtime::abi::{Params, CW, HG, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "primitives/colsum.wgsl",
    source: include_str!("../../shaders/primitives/colsum.wgsl"),
    imports: &[],
};
const PARTIAL: KernelDef = KernelDef::new(&SHADER, "partial");
const COMBINE: KernelDef = KernelDef::new(&SHADER, "combine");
/// Rows per block at most: past this, more blocks cost little and keep more of the device busy.
const MAX_RB: u64 = 4096;
/// Rows per block at least.
const MIN_RB: u64 = 16;
/// Rows per row lane that a block keeps while the device stays busy enough (see
/// [`col_layout`]).
const LANE_ROWS: u64 = 16;

/// Rows per row lane that a block holds at most on CPU adapters where a row lane's rows lie a
/// multiple of 4 KiB apart (f32 rows of `V = vec4` whose W / 4 is a power of two: `CW` threads
/// of 16 bytes). CPU adapters run a workgroup's invocations one SIMD chunk after another, and
/// each chunk walks its row lane's rows across the whole block before the next starts: loads
/// 4 KiB apart, which share cache sets. On lavapipe (AMD EPYC) the soft read forward at B = 1,
/// W = 64 took 2.6-4.4 ms at N = 65,536 with 32 rows per row lane (128 KiB blocks) against
/// 2.1-6.6 ms with the workgroup target's 128 (512 KiB), and 53 against 103-110 ms at
/// N = 1,048,576; W = 128: 6.3-7.5 against 11.9-13.5 ms; 16 and 64 rows per lane were slower.
/// With other strides the longest blocks were the fastest: f16 rows (2 KiB) 29-30 ms at
/// N = 1,048,576 against 42-43 with this cap, W = 63 (1,008 bytes) 71-78 against 87-117 ms
/// (docs/lavapipe-notes.md). GPUs run the invocations together: no cap.
const CPU_STRIDED_LANE_ROWS: u64 = 32;

/// Layout of the column reductions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ColLayout {
    /// Column tile width: a row's V's, at most `CW`. The workgroup's `CW / tw` row lanes
    /// (rounded down) then cover consecutive V's with no idle column lane, also where a row's
    /// V count is not a power of two (W = 20: 5 V's, 51 row lanes; a power-of-two tile of 8
    /// left 3 lanes of 8 idle), and narrow memories keep several rows in flight.
    pub tw: u64,
    /// Column tiles.
    pub nct: u64,
    /// Rows per block: the largest power of two up to `MAX_RB` (at least `MIN_RB`; on CPU
    /// adapters, at most `CPU_STRIDED_LANE_ROWS` per row lane where a row lane's rows lie a
    /// multiple of 4 KiB apart) that still gives the target of workgroups
    /// ([`Gpu::reduction_workgroups`]), or a quarter of it where more blocks would leave each
    /// row lane fewer than `LANE_ROWS` rows.
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

/// The layout for kernels that take `lanes` elements (one `V`) per thread and column, of
/// `elem_bytes` each in memory (4 for f32, 2 for f16).
pub(crate) fn col_layout(gpu: &Gpu, d: Dims, (lanes, elem_bytes): (u32, u64)) -> ColLayout {
    let cols = d.w as u64 / lanes as u64;
    let tw = gpu.row_tile(cols).min(CW as u64);
    let nct = cols.div_ceil(tw);
    let nhg = (d.h as u64).div_ceil(HG as u64);
    let units = |rb: u64| d.b as u64 * (d.n as u64).div_ceil(rb) * nct * nhg;
    let target = gpu.reduction_workgroups() as u64;
    let row_lanes = CW as u64 / tw;
    // No longer than a binding holds (f32 rows: the widest element), where that is possible.
    let mut rb = MAX_RB.min(gpu.rows_per_binding(d.w as u64 * 4)).max(MIN_RB);
    let lane_stride = row_lanes * d.w as u64 * elem_bytes;
    if gpu.is_cpu() && lane_stride.is_multiple_of(4096) {
        while rb > MIN_RB && rb > CPU_STRIDED_LANE_ROWS * row_lanes {
            rb /= 2;
        }
    }
    while rb > MIN_RB && units(rb) < target {
        // Each row lane keeps at least LANE_ROWS rows while the device still gets a quarter
        // of its target: fewer rows per lane leave the block's reduction to dominate (the
        // H200 read forward at B = 16, N <= 16,384 was 1.4x slower at 4 rows per lane).
        if rb / row_lanes <= LANE_ROWS && units(rb) >= target / 4 {
            break;
        }
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

/// Element spans of the units of column-reduction layout `l`: (memory rows, [B,H,N] rows,
/// partials).
fn col_spans(l: ColLayout, d: Dims) -> impl Fn(u64, u64) -> (Rows, (u64, u64)) {
    let ColLayout {
        nct, nblk, nhg, rb, ..
    } = l;
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
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    nblk: u64,
    parts: &wgpu::Buffer,
    out: (&wgpu::Buffer, u64),
) -> Result<()> {
    combine_slot(gpu, rec, op, (d, nblk), (parts, 1, 0), out)
}

/// Sums slot `slot` of partials that hold `slots` quantities per head, [B, blocks, H, slots,
/// W] (a kernel that sums two quantities, such as soft write's erase and add gradients, leaves
/// both in one buffer), over blocks into `out` [B, H, W].
pub(crate) fn combine_slot(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    (d, nblk): (Dims, u64),
    (parts, slots, slot): (&wgpu::Buffer, u64, u64),
    out: (&wgpu::Buffer, u64),
) -> Result<()> {
    let (b, h, w) = (d.b as u64, d.h as u64, d.w as u64);
    let total = b * h * w;
    let per_batch = nblk * h * slots * w;
    // Lanes per output: about 8 blocks each, up to the whole workgroup.
    let lanes = nblk.div_ceil(8).next_power_of_two().min(WG as u64);
    let per_wg = WG as u64 / lanes;
    let out_span = |u0, u1| flat(u0, u1, per_wg, total);
    let part_span = |u0, u1| {
        let (e0, e1) = flat(u0, u1, per_wg, total);
        (
            (e0 / (h * w)) * per_batch,
            ((e1 - 1) / (h * w) + 1) * per_batch,
        )
    };
    gpu.launch(
        rec,
        op,
        &COMBINE,
        Params::new(
            d.arr(),
            [slots as u32, nblk as u32, lanes as u32, slot as u32],
            [0.0; 4],
        ),
        total.div_ceil(per_wg),
        &[
            Arg::raw(parts, b * per_batch, Span::Window(&part_span)),
            Arg::raw(out.0, out.1, Span::Window(&out_span)),
        ],
    )
}

/// `out[b,h] = sum_i weights[b,h,i] M[b,i]` into `out` [B, H, W]: the soft read, also used
/// for content addressing's key gradient.
pub(crate) fn weighted_row_sums(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    mem: &Tensor,
    weights: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    // V = vec4 columns where the width allows.
    let lanes = if d.w.is_multiple_of(4) { 4 } else { 1 };
    let cl = col_layout(gpu, d, (lanes, mem.dtype.size_bytes()));
    let (b, h, n, w) = (d.b as u64, d.h as u64, d.n as u64, d.w as u64);
    let parts = gpu.scratch(op, rec, b * cl.nblk * h * w)?;
    let spans = col_spans(cl, d);
    let mem_span = |u0, u1| spans(u0, u1).0.bnw(n, w);
    let w_span = |u0, u1| spans(u0, u1).0.bhn(h, n);
    let part_span = |u0, u1| spans(u0, u1).1;
    gpu.launch(
        rec,
        op,
        &PARTIAL
            .lanes(lanes)
            .one_group_heads(d.h)
            // Several heads load this many rows before summing (one head always loads 4).
            .row_group(if d.h > 1 { gpu.stream_row_group() } else { 1 })
            .forms(gpu.form(mem.dtype), Form::F32, Form::F32),
        Params::new(d.arr(), cl.extra(), [0.0; 4]),
        cl.units,
        &[
            Arg::window(mem, &mem_span),
            Arg::raw(weights, b * h * n, Span::Window(&w_span)),
            Arg::raw(&parts, b * cl.nblk * h * w, Span::Window(&part_span)),
        ],
    )?;
    combine_blocks(gpu, rec, op, d, cl.nblk, &parts, (out, b * h * w))?;
    gpu.release(rec, parts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column tiles of a row's V's (or, with `ColumnTiles::PowerOfTwo`, the power of two of
    /// them); the blocks' rows: on CPU adapters, where a row lane's rows lie a multiple of
    /// 4 KiB apart, at most `CPU_STRIDED_LANE_ROWS` per row lane (more workgroups than the
    /// target); otherwise, and on GPUs, the longest that give the target, up to `MAX_RB` (and a
    /// binding).
    #[test]
    fn blocks_cap_strided_row_lanes_on_cpu_adapters() {
        let gpu = Gpu::new().unwrap_or_else(|e| panic!("this test needs an adapter: {e}"));
        gpu.set_reduction_workgroups(1).unwrap();
        // (W, lanes, bytes per element, whether a row lane's stride is a multiple of 4 KiB)
        for (w, lanes, bytes, strided) in [
            (64, 4, 4, true),   // 16 row lanes of 256 bytes
            (128, 4, 4, true),  // 8 of 512
            (8, 4, 4, true),    // 128 of 32
            (64, 4, 2, false),  // f16: 16 of 128 bytes
            (20, 4, 4, false),  // 51 of 80
            (63, 1, 4, false),  // 4 of 252 (a tile of 63 V's)
            (3, 1, 4, false),   // 85 of 12
            (4096, 4, 4, true), // one row lane per column tile
        ] {
            let d = Dims {
                b: 1,
                h: 1,
                n: 1 << 20,
                w,
            };
            let l = col_layout(&gpu, d, (lanes, bytes));
            // A column tile holds a row's V's (up to CW): no idle column lane.
            assert_eq!(l.tw, (w as u64 / lanes as u64).min(CW as u64), "W = {w}");
            let row_lanes = CW as u64 / l.tw;
            let longest = MAX_RB.min(gpu.rows_per_binding(w as u64 * 4)).max(MIN_RB);
            let want = if gpu.is_cpu() && strided {
                longest.min(CPU_STRIDED_LANE_ROWS * row_lanes).max(MIN_RB)
            } else {
                longest
            };
            assert_eq!(l.rb, want, "W = {w}, {bytes}-byte elements");
            assert_eq!(l.nblk, (1u64 << 20).div_ceil(l.rb));
        }
        // With power-of-two tiles, the narrowest power of two holding a row's V's (up to CW).
        gpu.set_column_tiles(crate::ColumnTiles::PowerOfTwo);
        for (w, lanes, tw) in [
            (20, 4, 8),
            (63, 1, 64),
            (3, 1, 4),
            (64, 4, 16),
            (4096, 4, CW),
        ] {
            let d = Dims {
                b: 1,
                h: 1,
                n: 1000,
                w,
            };
            let l = col_layout(&gpu, d, (lanes, 4));
            assert_eq!(l.tw, tw as u64, "W = {w}, power-of-two tiles");
        }
    }
}
