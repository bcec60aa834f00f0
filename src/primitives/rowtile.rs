//! Row tiles: kernels that stream memory rows against a few vectors per head, each row read
//! once per group of HG heads with its norm and dot products in the same pass. Rows of up to
//! `WG` V's go to the streaming kernels (`rowstream`) instead; the tiles take wider rows. The content
//! scores are `content_scores`, the soft read's weight gradient `row_dots`; content addressing's backward
//! and soft write's weight gradient work on the same tiles (they import the shader).
//! Shader: `shaders/primitives/rowtile.wgsl`.

use crate::check::Dims;
use crate::error::Result;
use crate::primitives::rowstream::{self, Pairs, StreamLayout};
use crate::primitives::spans::Rows;
use crate::runtime::abi::{Params, HG, TR};
use crate::runtime::dispatch::Arg;
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "primitives/rowtile.wgsl",
    source: include_str!("../../shaders/primitives/rowtile.wgsl"),
    imports: &[],
};
const DOTS: KernelDef = KernelDef::new(&SHADER, "dots");
const CONTENT_SCORES: KernelDef = KernelDef::new(&SHADER, "content_scores");

/// Row-tile units: (b, block of TR rows, group of HG heads).
pub(crate) fn tile_units(d: Dims) -> (u64, u64, u64) {
    let nblk = (d.n as u64).div_ceil(TR as u64);
    let nhg = (d.h as u64).div_ceil(HG as u64);
    (d.b as u64 * nblk * nhg, nblk, nhg)
}

/// `out[b,h,i] = V[b,h] . M[b,i]` into a [B, H, N] tensor (the soft read's weight gradient).
pub(crate) fn row_dots(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    mem: &Tensor,
    vecs: &Tensor,
    out: &Tensor,
) -> Result<()> {
    // Rows that fit a workgroup stream with coalesced V loads; wider ones take the tiles.
    if let Some(l) = StreamLayout::new(gpu, d, Pairs::Any) {
        return rowstream::dots(gpu, rec, op, (d, l), mem, vecs, out);
    }
    let (units, nblk, nhg) = tile_units(d);
    let (n, w, h) = (d.n as u64, d.w as u64, d.h as u64);
    let rows = |u0, u1| Rows::of_blocks(u0, u1, nhg, nblk, TR as u64, n);
    let mem_span = |u0, u1| rows(u0, u1).bnw(n, w);
    let out_span = |u0, u1| rows(u0, u1).bhn(h, n);
    gpu.launch(
        rec,
        op,
        &DOTS.forms(gpu.form(mem.dtype), Form::F32, Form::F32),
        Params::new(d.arr(), [0; 4], [0.0; 4]),
        units,
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(vecs),
            Arg::window(out, &out_span),
        ],
    )
}

/// The content scores `beta[b,h] K(keys[b,h], M[b,i])` into `out` [B, H, N], and each tile's
/// softmax pairs (max, sum exp) per head into a scratch [B*H, tiles, 2] that the caller
/// combines (`rowstat::combine_pairs`) and releases; returns it with the tile count.
pub(crate) fn content_scores(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    (mem, keys, beta): (&Tensor, &Tensor, &Tensor),
    out: &Tensor,
) -> Result<(wgpu::Buffer, u64)> {
    if let Some(l) = StreamLayout::new(gpu, d, Pairs::Any) {
        return rowstream::scores(gpu, rec, op, (d, l), (mem, keys, beta), out);
    }
    let (units, nblk, nhg) = tile_units(d);
    let (n, w, h) = (d.n as u64, d.w as u64, d.h as u64);
    let rows = |u0, u1| Rows::of_blocks(u0, u1, nhg, nblk, TR as u64, n);
    let mem_span = |u0, u1| rows(u0, u1).bnw(n, w);
    let out_span = |u0, u1| rows(u0, u1).bhn(h, n);
    let pairs_len = d.b as u64 * h * nblk * 2;
    let pair_span = |u0, u1| {
        let r = rows(u0, u1);
        (r.b0 * h * nblk * 2, (r.b1 + 1) * h * nblk * 2)
    };
    let pairs = gpu.scratch(op, rec, pairs_len)?;
    gpu.launch(
        rec,
        op,
        &CONTENT_SCORES.forms(gpu.form(mem.dtype), Form::F32, Form::F32),
        Params::new(d.arr(), [1, 0, 0, 0], [0.0; 4]),
        units,
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(keys),
            Arg::whole(beta),
            Arg::window(out, &out_span),
            Arg::raw(
                &pairs,
                pairs_len,
                crate::runtime::dispatch::Span::Window(&pair_span),
            ),
        ],
    )?;
    Ok((pairs, nblk))
}
