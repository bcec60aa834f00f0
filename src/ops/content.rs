//! Content addressing: `w = softmax(beta * cosine(k, M_i))` and its backward pass.
//! Shader: `shaders/content.wgsl` (imports the row-tile primitive); the scores are
//! `content_scores` of the row-tile primitive (with each tile's softmax pairs), the softmax and
//! row sums the row-statistic primitive.

use crate::check::{self, Dims};
use crate::error::Result;
use crate::primitives::colsum::{combine_blocks, weighted_row_sums};
use crate::primitives::rowstat::{combine_pairs, normalize_rows, softmax_backward, Stat};
use crate::primitives::rowstream;
use crate::primitives::rowtile::{self, content_scores, tile_units};
use crate::primitives::spans::{Elementwise, Rows};
use crate::runtime::abi::{Params, TR};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "content.wgsl",
    source: include_str!("../../shaders/content.wgsl"),
    imports: &[&rowtile::SHADER],
};
const BWD_ROWS: KernelDef = KernelDef::new(&SHADER, "bwd_rows");
const BWD_MEM: KernelDef = KernelDef::new(&SHADER, "bwd_mem");
const BWD_MEM_GROUPS: KernelDef = KernelDef::new(&SHADER, "bwd_mem_groups");
const BWD_MEM_ANY: KernelDef = KernelDef::new(&SHADER, "bwd_mem_any");
const BWD_FINISH: KernelDef = KernelDef::new(&SHADER, "bwd_finish");

/// Gradients of content addressing with respect to the keys and strengths, from the forms
/// that add the memory gradient into a tensor of the caller's.
#[derive(Debug)]
pub struct KeyGrads {
    /// d loss / d keys, [B, H, W].
    pub keys: Tensor,
    /// d loss / d strengths, [B, H].
    pub beta: Tensor,
}

/// Gradients of content addressing with respect to its inputs.
#[derive(Debug)]
pub struct ContentGrads {
    /// d loss / d memory, [B, N, W].
    pub memory: Tensor,
    /// d loss / d keys, [B, H, W].
    pub keys: Tensor,
    /// d loss / d strengths, [B, H].
    pub beta: Tensor,
}

fn inputs(gpu: &Gpu, op: &'static str, m: &Tensor, keys: &Tensor, beta: &Tensor) -> Result<Dims> {
    let (b, n, w) = check::memory(gpu, op, "memory", m)?;
    let h = check::middle(gpu, op, "keys", keys, ["B", "H", "W"], b, w)?;
    check::tensor(gpu, op, "beta", beta, &["B", "H"], &[b, h])?;
    Ok(Dims { b, h, n, w })
}

impl Gpu {
    /// Content-based addressing weights, [B, H, N]:
    /// `w[b,h,i] = softmax_i(beta[b,h] * K(keys[b,h], M[b,i]))` with
    /// `K(k, m) = k·m / (norm(k) norm(m) + EPS)` and `norm(x) = sqrt(sum x² + EPS)`.
    ///
    /// `memory` is [B, N, W], `keys` [B, H, W], `beta` [B, H] (used as given).
    pub fn content_address(&self, memory: &Tensor, keys: &Tensor, beta: &Tensor) -> Result<Tensor> {
        const OP: &str = "content_address";
        let d = inputs(self, OP, memory, keys, beta)?;
        let out = self.alloc(OP, &[d.b, d.h, d.n])?;
        let mut rec = self.recorder();
        // One pass over the memory: the scores and each tile's softmax pairs, then the pairs
        // combined per row and the scores normalised.
        let (pairs, tiles) = content_scores(self, &mut rec, OP, d, (memory, keys, beta), &out)?;
        let rows = (d.b * d.h) as u64;
        let stats = combine_pairs(self, &mut rec, OP, Stat::Softmax, &pairs, rows, tiles)?;
        normalize_rows(self, &mut rec, OP, &out.buf, &stats, rows, d.n as u64)?;
        self.release(&mut rec, pairs);
        self.release(&mut rec, stats);
        Ok(out)
    }

    /// Backward of [`Gpu::content_address`] given `dw = d loss / d weights` [B, H, N] and the
    /// weights `w` it returned: first `dz = w (dw - sum_j w_j dw_j)`, then
    /// [`Gpu::content_address_backward_scores`]. [`Gpu::content_address_backward_into`] adds
    /// the memory gradient to a tensor of the caller's instead.
    pub fn content_address_backward(
        &self,
        memory: &Tensor,
        keys: &Tensor,
        beta: &Tensor,
        w: &Tensor,
        dw: &Tensor,
    ) -> Result<ContentGrads> {
        const OP: &str = "content_address_backward";
        let d = inputs(self, OP, memory, keys, beta)?;
        let dz = self.dz_of_dw(OP, d, w, dw)?;
        let g_mem = self.alloc_as(OP, &[d.b, d.n, d.w], memory.dtype)?; // the memory's dtype
        let k = self.content_backward(OP, d, memory, keys, beta, &dz, &g_mem, false)?;
        Ok(ContentGrads {
            memory: g_mem,
            keys: k.keys,
            beta: k.beta,
        })
    }

    /// [`Gpu::content_address_backward`] that adds the memory gradient into `d_memory`
    /// [B, N, W] in the same pass (no extra pass over the memory); returns the gradients of
    /// the keys and strengths.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let m = gpu.upload(&[1, 4, 2], &[0.5, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 0.5])?;
    /// let k = gpu.upload(&[1, 1, 2], &[1.0, 0.0])?;
    /// let beta = gpu.upload(&[1, 1], &[5.0])?;
    /// let w = gpu.content_address(&m, &k, &beta)?;
    /// let dw = gpu.upload(&[1, 1, 4], &[1.0, 0.0, 0.0, 0.0])?;
    /// let mut d_mem = gpu.zeros(&[1, 4, 2])?;
    /// let g = gpu.content_address_backward_into(&m, &k, &beta, &w, &dw, &mut d_mem)?;
    /// println!("d keys {:?}", gpu.download(&g.keys)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn content_address_backward_into(
        &self,
        memory: &Tensor,
        keys: &Tensor,
        beta: &Tensor,
        w: &Tensor,
        dw: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<KeyGrads> {
        const OP: &str = "content_address_backward_into";
        let d = inputs(self, OP, memory, keys, beta)?;
        check::memory_shaped(self, OP, "d_memory", d_memory, d)?;
        let dz = self.dz_of_dw(OP, d, w, dw)?;
        let k = self.content_backward(OP, d, memory, keys, beta, &dz, d_memory, true)?;
        d_memory.touch();
        Ok(k)
    }

    /// `dz = w (dw - sum_j w_j dw_j)`, after checking `w` and `dw`.
    fn dz_of_dw(&self, op: &'static str, d: Dims, w: &Tensor, dw: &Tensor) -> Result<Tensor> {
        check::tensor(self, op, "w", w, &["B", "H", "N"], &[d.b, d.h, d.n])?;
        check::tensor(self, op, "dw", dw, &["B", "H", "N"], &[d.b, d.h, d.n])?;
        let dz = self.alloc(op, &[d.b, d.h, d.n])?;
        let mut rec = self.recorder();
        let (rows, len) = ((d.b * d.h) as u64, d.n as u64);
        softmax_backward(self, &mut rec, op, &w.buf, &dw.buf, &dz.buf, rows, len)?;
        Ok(dz)
    }

    /// Backward of content addressing from the gradient of the scores `z = beta * K`
    /// (`dz`, [B, H, N]), e.g. the output of [`Gpu::reinforce_grad`]:
    /// `dbeta = sum_i dz_i K_i`, and `dk`, `dM` through `K = D / (P + EPS)` as in DESIGN.md §3.
    pub fn content_address_backward_scores(
        &self,
        memory: &Tensor,
        keys: &Tensor,
        beta: &Tensor,
        dz: &Tensor,
    ) -> Result<ContentGrads> {
        const OP: &str = "content_address_backward_scores";
        let d = inputs(self, OP, memory, keys, beta)?;
        check::tensor(self, OP, "dz", dz, &["B", "H", "N"], &[d.b, d.h, d.n])?;
        let g_mem = self.alloc_as(OP, &[d.b, d.n, d.w], memory.dtype)?; // the memory's dtype
        let k = self.content_backward(OP, d, memory, keys, beta, dz, &g_mem, false)?;
        Ok(ContentGrads {
            memory: g_mem,
            keys: k.keys,
            beta: k.beta,
        })
    }

    /// [`Gpu::content_address_backward_scores`] that adds the memory gradient into
    /// `d_memory` [B, N, W] in the same pass; returns the gradients of the keys and strengths.
    pub fn content_address_backward_scores_into(
        &self,
        memory: &Tensor,
        keys: &Tensor,
        beta: &Tensor,
        dz: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<KeyGrads> {
        const OP: &str = "content_address_backward_scores_into";
        let d = inputs(self, OP, memory, keys, beta)?;
        check::tensor(self, OP, "dz", dz, &["B", "H", "N"], &[d.b, d.h, d.n])?;
        check::memory_shaped(self, OP, "d_memory", d_memory, d)?;
        let k = self.content_backward(OP, d, memory, keys, beta, dz, d_memory, true)?;
        d_memory.touch();
        Ok(k)
    }

    /// Records the backward from `dz`: the memory gradient stored (or with `acc`, added) into
    /// `g_mem`; returns the keys' and strengths' gradients.
    #[allow(clippy::too_many_arguments)] // internal: every backward form
    fn content_backward(
        &self,
        op: &'static str,
        d: Dims,
        memory: &Tensor,
        keys: &Tensor,
        beta: &Tensor,
        dz: &Tensor,
        g_mem: &Tensor,
        acc: bool,
    ) -> Result<KeyGrads> {
        let g_keys = self.alloc(op, &[d.b, d.h, d.w])?;
        let g_beta = self.alloc(op, &[d.b, d.h])?;
        let (b, h, n, w) = (d.b as u64, d.h as u64, d.n as u64, d.w as u64);
        let mut rec = self.recorder();
        // One pass over the memory where rows stream (up to HG heads); else the row tiles,
        // the elementwise dM pass and a column pass.
        let streamed = rowstream::content_backward(
            self,
            &mut rec,
            op,
            d,
            (memory, keys, beta, dz),
            g_mem,
            acc,
        )?;
        if let Some((part, pairs, nblk)) = streamed {
            let sums = combine_pairs(self, &mut rec, op, Stat::Sum, &pairs, b * h, nblk)?;
            let read = self.scratch(op, &mut rec, b * h * w)?;
            combine_blocks(self, &mut rec, op, d, nblk, &part, (&read, b * h * w))?;
            self.key_grads(&mut rec, op, d, keys, &read, &sums, (&g_keys, &g_beta))?;
            for s in [part, pairs, sums, read] {
                self.release(&mut rec, s);
            }
            return Ok(KeyGrads {
                keys: g_keys,
                beta: g_beta,
            });
        }
        let (units, nblk, nhg) = tile_units(d);
        let coef_d = self.scratch(op, &mut rec, b * h * n)?;
        let coef_m = self.scratch(op, &mut rec, b * h * n)?;
        let parts = self.scratch(op, &mut rec, b * h * nblk * 2)?;
        {
            let rows = |u0, u1| Rows::of_blocks(u0, u1, nhg, nblk, TR as u64, n);
            let mem_span = |u0, u1| rows(u0, u1).bnw(n, w);
            let bhn_span = |u0, u1| rows(u0, u1).bhn(h, n);
            let part_span = |u0, u1| {
                let r = rows(u0, u1);
                (r.b0 * h * nblk * 2, (r.b1 + 1) * h * nblk * 2)
            };
            self.launch(
                &mut rec,
                op,
                &BWD_ROWS.forms(self.form(memory.dtype), Form::F32, Form::F32),
                Params::new(d.arr(), [0; 4], [0.0; 4]),
                units,
                &[
                    Arg::window(memory, &mem_span),
                    Arg::whole(keys),
                    Arg::whole(beta),
                    Arg::window(dz, &bhn_span),
                    Arg::raw(&coef_d, b * h * n, Span::Window(&bhn_span)),
                    Arg::raw(&coef_m, b * h * n, Span::Window(&bhn_span)),
                    Arg::raw(&parts, b * h * nblk * 2, Span::Window(&part_span)),
                ],
            )?;
        }
        let sums = combine_pairs(self, &mut rec, op, Stat::Sum, &parts, b * h, nblk)?;
        {
            let ew = Elementwise::new(self, d, self.any_packed(&[memory, g_mem]));
            let elems = |u0, u1| ew.bnw(u0, u1);
            let bhn_span = |u0, u1| ew.rows(u0, u1).bhn(h, n);
            let def = ew
                .by_heads((BWD_MEM, BWD_MEM_GROUPS), BWD_MEM_ANY)
                .acc(acc)
                .forms(self.form(memory.dtype), Form::F32, self.form(g_mem.dtype));
            self.launch(
                &mut rec,
                op,
                &ew.kernel(def)?,
                ew.params(d),
                ew.units,
                &[
                    Arg::window(memory, &elems),
                    Arg::whole(keys),
                    Arg::raw(&coef_d, b * h * n, Span::Window(&bhn_span)),
                    Arg::raw(&coef_m, b * h * n, Span::Window(&bhn_span)),
                    Arg::window(g_mem, &elems),
                ],
            )?;
        }
        // dk's first term is a soft read of the memory with weights dD.
        let read = self.scratch(op, &mut rec, b * h * w)?;
        weighted_row_sums(self, &mut rec, op, d, memory, &coef_d, &read)?;
        self.key_grads(&mut rec, op, d, keys, &read, &sums, (&g_keys, &g_beta))?;
        for s in [coef_d, coef_m, parts, sums, read] {
            self.release(&mut rec, s);
        }
        Ok(KeyGrads {
            keys: g_keys,
            beta: g_beta,
        })
    }

    /// `dk = read + (sum dP norm(M)) k / norm(k)` and `dbeta = sum dz K` from the summed
    /// `read` [B, H, W] and pairs `sums` [B*H, 2].
    #[allow(clippy::too_many_arguments)] // internal: the backward's last step
    fn key_grads(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        d: Dims,
        keys: &Tensor,
        read: &wgpu::Buffer,
        sums: &wgpu::Buffer,
        (g_keys, g_beta): (&Tensor, &Tensor),
    ) -> Result<()> {
        let (b, h, w) = (d.b as u64, d.h as u64, d.w as u64);
        self.launch(
            rec,
            op,
            &BWD_FINISH,
            Params::new(d.arr(), [0; 4], [0.0; 4]),
            b * h,
            &[
                Arg::whole(keys),
                Arg::raw(read, b * h * w, Span::Whole),
                Arg::raw(sums, b * h * 2, Span::Whole),
                Arg::whole(g_keys),
                Arg::whole(g_beta),
            ],
        )
    }
}
