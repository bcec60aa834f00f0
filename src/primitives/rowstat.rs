//! Row statistics (softmax normalisation, row dot products, entropies, sums of partial
//! pairs): two deterministic levels, chunk partials then a fixed-order combine.
//! Shader: `shaders/primitives/rowstat.wgsl`.

use crate::error::Result;
use crate::primitives::spans::{flat, row_chunks};
use crate::runtime::abi::{divisor, Params, CHUNK, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "primitives/rowstat.wgsl",
    source: include_str!("../../shaders/primitives/rowstat.wgsl"),
    imports: &[],
};
const PARTIAL: KernelDef = KernelDef::new(&SHADER, "partial");
const COMBINE: KernelDef = KernelDef::new(&SHADER, "combine");
const NORMALIZE: KernelDef = KernelDef::new(&SHADER, "normalize");
const SOFTMAX_BWD: KernelDef = KernelDef::new(&SHADER, "softmax_bwd");

/// What a row statistic computes.
#[derive(Clone, Copy)]
pub(crate) enum Stat {
    /// (max x, sum exp(x - max)) per row.
    Softmax = 0,
    /// (0, sum x y) per row; also componentwise sums of pairs.
    Sum = 1,
    /// (0, -sum x log x) per row, with 0 log 0 = 0.
    Entropy = 2,
}

/// Per-row pairs of `x` (and `y`) viewed as [rows, len]; returns a scratch buffer [rows, 2]
/// that the caller releases.
#[allow(clippy::too_many_arguments)] // internal: one reduction, its inputs spelled out
pub(crate) fn row_pairs(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    stat: Stat,
    x: (&wgpu::Buffer, u64),
    y: (&wgpu::Buffer, u64),
    rows: u64,
    len: u64,
) -> Result<wgpu::Buffer> {
    let chunks = len.div_ceil(CHUNK as u64);
    let parts = gpu.scratch(op, rec, rows * chunks * 2)?;
    let span = |u0, u1| row_chunks(u0, u1, chunks, CHUNK as u64, len);
    let out_span = |u0: u64, u1: u64| (u0 * 2, u1 * 2);
    let params = Params::new(
        [0; 4],
        [stat as u32, len as u32, chunks as u32, 0],
        [0.0; 4],
    );
    gpu.launch(
        rec,
        op,
        &PARTIAL,
        params,
        rows * chunks,
        &[
            Arg::raw(x.0, x.1, Span::Window(&span)),
            Arg::raw(y.0, y.1, Span::Window(&span)),
            Arg::raw(&parts, rows * chunks * 2, Span::Window(&out_span)),
        ],
    )?;
    let out = combine_pairs(gpu, rec, op, stat, &parts, rows, chunks)?;
    gpu.release(rec, parts);
    Ok(out)
}

/// Merges [rows, chunks, 2] pairs into a scratch buffer [rows, 2] that the caller releases.
pub(crate) fn combine_pairs(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    stat: Stat,
    pairs: &wgpu::Buffer,
    rows: u64,
    chunks: u64,
) -> Result<wgpu::Buffer> {
    let out = gpu.scratch(op, rec, rows * 2)?;
    let in_span = |u0: u64, u1: u64| (u0 * chunks * 2, u1 * chunks * 2);
    let out_span = |u0: u64, u1: u64| (u0 * 2, u1 * 2);
    let params = Params::new([0; 4], [stat as u32, 0, chunks as u32, 0], [0.0; 4]);
    gpu.launch(
        rec,
        op,
        &COMBINE,
        params,
        rows,
        &[
            Arg::raw(pairs, rows * chunks * 2, Span::Window(&in_span)),
            Arg::raw(&out, rows * 2, Span::Window(&out_span)),
        ],
    )?;
    Ok(out)
}

/// `params` with the row length's divisor in `divs` (x, y): the per-element kernels find an
/// element's row without dividing.
fn with_len(len: u64, params: Params) -> Params {
    let [m, l] = divisor(len as u32);
    Params {
        divs: [m, l, 0, 0],
        ..params
    }
}

/// In place: `z <- exp(z - m_r) / s_r` per row of `z` [rows, len], given the rows'
/// (max, sum exp) pairs `stats` [rows, 2] (from [`combine_pairs`] in softmax mode).
pub(crate) fn normalize_rows(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    z: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    rows: u64,
    len: u64,
) -> Result<()> {
    let total = rows * len;
    let span = |u0: u64, u1: u64| flat(u0, u1, WG as u64, total);
    let stat_span = |u0: u64, u1: u64| {
        let (e0, e1) = flat(u0, u1, WG as u64, total);
        ((e0 / len) * 2, (e1 - 1) / len * 2 + 2)
    };
    let params = with_len(
        len,
        Params::new([0; 4], [0, len as u32, 0, total as u32], [0.0; 4]),
    );
    gpu.launch(
        rec,
        op,
        &NORMALIZE,
        params,
        total.div_ceil(WG as u64),
        &[
            Arg::raw(stats, rows * 2, Span::Window(&stat_span)),
            Arg::raw(z, total, Span::Window(&span)),
        ],
    )
}

/// The backward of a row softmax: `dz = w (dw - sum_j w_j dw_j)` per row of [rows, len],
/// into `dz`.
#[allow(clippy::too_many_arguments)] // internal: one kernel, its inputs spelled out
pub(crate) fn softmax_backward(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    w: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    dz: &wgpu::Buffer,
    rows: u64,
    len: u64,
) -> Result<()> {
    let total = rows * len;
    let sums = row_pairs(gpu, rec, op, Stat::Sum, (w, total), (dw, total), rows, len)?;
    let span = |u0, u1| flat(u0, u1, WG as u64, total);
    let sum_span = |u0: u64, u1: u64| {
        let (e0, e1) = flat(u0, u1, WG as u64, total);
        ((e0 / len) * 2, (e1 - 1) / len * 2 + 2)
    };
    gpu.launch(
        rec,
        op,
        &SOFTMAX_BWD,
        with_len(
            len,
            Params::new([0; 4], [0, len as u32, 0, total as u32], [0.0; 4]),
        ),
        total.div_ceil(WG as u64),
        &[
            Arg::raw(w, total, Span::Window(&span)),
            Arg::raw(dw, total, Span::Window(&span)),
            Arg::raw(&sums, rows * 2, Span::Window(&sum_span)),
            Arg::raw(dz, total, Span::Window(&span)),
        ],
    )?;
    gpu.release(rec, sums);
    Ok(())
}
