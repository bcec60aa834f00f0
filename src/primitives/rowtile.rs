//! Row tiles: kernels that stream memory rows against a few vectors per head, each row read
//! once per group of HG heads with its norm and dot products in the same pass. The content
//! scores and the soft read's weight gradient are `row_scores`; content addressing's backward
//! and soft write's weight gradient work on the same tiles (they import the shader).
//! Shader: `shaders/primitives/rowtile.wgsl`.

use crate::check::Dims;
use crate::error::Result;
use crate::primitives::spans::Rows;
use crate::runtime::abi::{Params, HG, TR};
use crate::runtime::dispatch::Arg;
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "primitives/rowtile.wgsl",
    source: include_str!("../../shaders/primitives/rowtile.wgsl"),
    imports: &[],
};
const SCORES: KernelDef = KernelDef::new(&SHADER, "scores");

/// Row-tile units: (b, block of TR rows, group of HG heads).
pub(crate) fn tile_units(d: Dims) -> (u64, u64, u64) {
    let nblk = (d.n as u64).div_ceil(TR as u64);
    let nhg = (d.h as u64).div_ceil(HG as u64);
    (d.b as u64 * nblk * nhg, nblk, nhg)
}

/// `out[b,h,i] = V[b,h] . M[b,i]` (`beta = None`), or the content scores
/// `beta[b,h] K(V[b,h], M[b,i])` (`beta = Some`), into a [B, H, N] buffer.
#[allow(clippy::too_many_arguments)] // internal: one kernel, its inputs spelled out
pub(crate) fn row_scores(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    mem: &Tensor,
    vecs: &Tensor,
    beta: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    let (units, nblk, nhg) = tile_units(d);
    let (n, w, h) = (d.n as u64, d.w as u64, d.h as u64);
    let rows = |u0, u1| Rows::of_blocks(u0, u1, nhg, nblk, TR as u64, n);
    let mem_span = |u0, u1| rows(u0, u1).bnw(n, w);
    let out_span = |u0, u1| rows(u0, u1).bhn(h, n);
    let mode = beta.is_some() as u32;
    gpu.launch(
        rec,
        op,
        &SCORES,
        Params::new(d.arr(), [mode, 0, 0, 0], [0.0; 4]),
        units,
        &[
            Arg::window(mem, &mem_span),
            Arg::whole(vecs),
            Arg::whole(beta.unwrap_or(vecs)),
            Arg::window(out, &out_span),
        ],
    )
}
