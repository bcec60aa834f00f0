//! Soft write (the NTM paper's: all erases, then all adds) and its backward pass.
//! Shaders in `shaders/write.wgsl`.

use crate::check::{self, Dims};
use crate::error::Result;
use crate::primitives::colsum::combine_slot;
use crate::primitives::rowstream::{Pairs, StreamLayout};
use crate::primitives::spans::{Elementwise, Rows};
use crate::runtime::abi::{Params, HG, TR};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "write.wgsl",
    source: include_str!("../../shaders/write.wgsl"),
    imports: &[],
};

const FWD: KernelDef = KernelDef::new(&SHADER, "fwd");
const FWD_GROUPS: KernelDef = KernelDef::new(&SHADER, "fwd_groups");
const FWD_ANY: KernelDef = KernelDef::new(&SHADER, "fwd_any");
const BWD_MEM: KernelDef = KernelDef::new(&SHADER, "bwd_mem");
const BWD_MEM_GROUPS: KernelDef = KernelDef::new(&SHADER, "bwd_mem_groups");
const BWD_MEM_ANY: KernelDef = KernelDef::new(&SHADER, "bwd_mem_any");
const BWD_MEM_INPLACE: KernelDef = KernelDef::new(&SHADER, "bwd_mem_inplace");
const BWD_MEM_INPLACE_GROUPS: KernelDef = KernelDef::new(&SHADER, "bwd_mem_inplace_groups");
const BWD_MEM_INPLACE_ANY: KernelDef = KernelDef::new(&SHADER, "bwd_mem_inplace_any");
const BWD_DW: KernelDef = KernelDef::new(&SHADER, "bwd_dw");
const BWD_HEADS: KernelDef = KernelDef::new(&SHADER, "bwd_heads");
const BWD_HEADS_PAIRS: KernelDef = KernelDef::new(&SHADER, "bwd_heads_pairs");

/// Gradients of a soft write with respect to its heads' inputs, from
/// [`Gpu::soft_write_backward_into`] (whose memory gradient stays in the caller's tensor).
#[derive(Debug)]
pub struct HeadGrads {
    /// d loss / d weights, [B, H, N].
    pub weights: Tensor,
    /// d loss / d erase, [B, H, W].
    pub erase: Tensor,
    /// d loss / d add, [B, H, W].
    pub add: Tensor,
}

/// Gradients of a soft write.
#[derive(Debug)]
pub struct WriteGrads {
    /// d loss / d memory before the write, [B, N, W].
    pub memory: Tensor,
    /// d loss / d weights, [B, H, N].
    pub weights: Tensor,
    /// d loss / d erase, [B, H, W].
    pub erase: Tensor,
    /// d loss / d add, [B, H, W].
    pub add: Tensor,
}

fn inputs(
    gpu: &Gpu,
    op: &'static str,
    m: &Tensor,
    w: &Tensor,
    e: &Tensor,
    a: &Tensor,
) -> Result<Dims> {
    let (b, n, wd) = check::memory(gpu, op, "memory", m)?;
    let h = check::middle(gpu, op, "w", w, ["B", "H", "N"], b, n)?;
    check::tensor(gpu, op, "erase", e, &["B", "H", "W"], &[b, h, wd])?;
    check::tensor(gpu, op, "add", a, &["B", "H", "W"], &[b, h, wd])?;
    Ok(Dims { b, h, n, w: wd })
}

impl Gpu {
    /// Soft write, in place:
    /// `M[b,i,j] <- M[b,i,j] prod_h (1 - w[b,h,i] e[b,h,j]) + sum_h w[b,h,i] a[b,h,j]`.
    ///
    /// `memory` is [B, N, W], `w` [B, H, N], `erase` and `add` [B, H, W]. Keep a copy of the
    /// memory ([`Gpu::copy`]) if the backward pass will need it.
    pub fn soft_write(
        &self,
        memory: &mut Tensor,
        w: &Tensor,
        erase: &Tensor,
        add: &Tensor,
    ) -> Result<()> {
        const OP: &str = "soft_write";
        let d = inputs(self, OP, memory, w, erase, add)?;
        let (h, n) = (d.h as u64, d.n as u64);
        let ew = Elementwise::new(self, d, self.any_packed(&[memory]));
        let elems = |u0, u1| ew.bnw(u0, u1);
        let w_span = |u0, u1| ew.rows(u0, u1).bhn(h, n);
        let mut rec = self.recorder();
        self.launch(
            &mut rec,
            OP,
            &ew.kernel(ew.by_heads((FWD, FWD_GROUPS), FWD_ANY).forms(
                self.form(memory.dtype),
                Form::F32,
                Form::F32,
            ))?,
            ew.params(d),
            ew.units,
            &[
                Arg::window(memory, &elems),
                Arg::window(w, &w_span),
                Arg::whole(erase),
                Arg::whole(add),
            ],
        )?;
        memory.touch();
        Ok(())
    }

    /// Backward of [`Gpu::soft_write`], given the memory before the write and
    /// `d_after = d loss / d M'` [B, N, W]. See DESIGN.md §3; the product over the other heads
    /// is formed without division, so one-hot weights with erase exactly 1 stay finite.
    /// [`Gpu::soft_write_backward_into`] turns a caller's `dM'` into `dM` in place instead.
    pub fn soft_write_backward(
        &self,
        memory_before: &Tensor,
        w: &Tensor,
        erase: &Tensor,
        add: &Tensor,
        d_after: &Tensor,
    ) -> Result<WriteGrads> {
        const OP: &str = "soft_write_backward";
        let d = inputs(self, OP, memory_before, w, erase, add)?;
        check::memory_shaped(self, OP, "d_after", d_after, d)?;
        // The memory's gradient takes the memory's dtype.
        let g_mem = self.alloc_as(OP, &[d.b, d.n, d.w], memory_before.dtype)?;
        let g = self.write_backward(OP, d, memory_before, w, erase, add, d_after, Some(&g_mem))?;
        Ok(WriteGrads {
            memory: g_mem,
            weights: g.weights,
            erase: g.erase,
            add: g.add,
        })
    }

    /// [`Gpu::soft_write_backward`] in place, as [`Gpu::discrete_write_backward`] does:
    /// `d_memory` holds `dM'` (the gradient after the write) and becomes `dM` (before it),
    /// with no extra pass over the memory; returns the heads' gradients.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let before = gpu.upload(&[1, 3, 2], &[1.0; 6])?;
    /// let w = gpu.upload(&[1, 1, 3], &[0.2, 0.3, 0.5])?;
    /// let e = gpu.upload(&[1, 1, 2], &[0.5, 0.5])?;
    /// let a = gpu.upload(&[1, 1, 2], &[1.0, -1.0])?;
    /// let mut d_mem = gpu.upload(&[1, 3, 2], &[1.0; 6])?; // dM'
    /// let g = gpu.soft_write_backward_into(&before, &w, &e, &a, &mut d_mem)?; // d_mem is dM
    /// # Ok(())
    /// # }
    /// ```
    pub fn soft_write_backward_into(
        &self,
        memory_before: &Tensor,
        w: &Tensor,
        erase: &Tensor,
        add: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<HeadGrads> {
        const OP: &str = "soft_write_backward_into";
        let d = inputs(self, OP, memory_before, w, erase, add)?;
        check::memory_shaped(self, OP, "d_memory", d_memory, d)?;
        let g = self.write_backward(OP, d, memory_before, w, erase, add, d_memory, None)?;
        d_memory.touch();
        Ok(g)
    }

    /// Records the write's backward: the heads' gradients from `d_after`, then the memory's,
    /// into `g_mem` or, without one, into `d_after` in place (after every kernel that reads it).
    #[allow(clippy::too_many_arguments)] // internal: both backward forms
    fn write_backward(
        &self,
        op: &'static str,
        d: Dims,
        memory_before: &Tensor,
        w: &Tensor,
        erase: &Tensor,
        add: &Tensor,
        d_after: &Tensor,
        g_mem: Option<&Tensor>,
    ) -> Result<HeadGrads> {
        let g_w = self.alloc(op, &[d.b, d.h, d.n])?;
        let g_e = self.alloc(op, &[d.b, d.h, d.w])?;
        let g_a = self.alloc(op, &[d.b, d.h, d.w])?;
        let (b, h, n, wd) = (d.b as u64, d.h as u64, d.n as u64, d.w as u64);
        let mut rec = self.recorder();
        let (fm, fg) = (self.form(memory_before.dtype), self.form(d_after.dtype));

        // The heads' gradients: one streaming pass where rows fit a workgroup (any NTM's),
        // else row tiles. Both leave per-block partial sums of de and da side by side,
        // [B, blocks, H, 2, W].
        // Two V's per thread (`bwd_heads_pairs`) for one head and an even count of V's per
        // row; else one. On lavapipe the pairs were 1.13-1.20x as fast at H = 1 (W = 64,
        // 128) and 1.00x at H = 2, where a thread's vectors and sums double to 16 V's.
        let pairs = if d.h == 1 {
            Pairs::Even { min_lanes: 1 }
        } else {
            Pairs::No
        };
        let layout = StreamLayout::new(self, d, pairs);
        let (nblk, rb) = layout.map_or((n.div_ceil(TR as u64), TR as u64), |l| (l.nblk, l.rb));
        let nhg = h.div_ceil(HG as u64);
        let rows = |u0, u1| Rows::of_blocks(u0, u1, nhg, nblk, rb, n);
        let t_mem = |u0, u1| rows(u0, u1).bnw(n, wd);
        let t_w = |u0, u1| rows(u0, u1).bhn(h, n);
        let part_len = b * nblk * h * 2 * wd;
        let t_part = |u0, u1| {
            let r = rows(u0, u1);
            let (t0, t1) = (r.i0 / rb, (r.i1 - 1) / rb);
            let per_block = h * 2 * wd;
            (
                (r.b0 * nblk + t0) * per_block,
                (r.b1 * nblk + t1 + 1) * per_block,
            )
        };
        let parts = self.scratch(op, &mut rec, part_len)?;
        // With one head group and no packed words, `bwd_heads` also stores dM (each thread
        // what it read): into g_mem, or in place over dM', so no second pass reads dM'.
        let dm_out = g_mem.unwrap_or(d_after);
        let fused_dm = layout
            .is_some_and(|l| l.nhg == 1 && !(l.lanes == 1 && self.any_packed(&[d_after, dm_out])));
        let mut args = vec![
            Arg::window(memory_before, &t_mem),
            Arg::window(w, &t_w),
            Arg::whole(erase),
            Arg::whole(add),
            Arg::window(d_after, &t_mem),
            Arg::window(&g_w, &t_w),
            Arg::raw(&parts, part_len, Span::Window(&t_part)),
        ];
        let kernel = match layout {
            Some(l) => {
                // dM's output (unwritten without ACC); in place dM' is bound twice, both
                // read_write (which one dispatch allows).
                args.push(Arg::window(dm_out, &t_mem));
                l.kernel(if l.pairs { BWD_HEADS_PAIRS } else { BWD_HEADS }, d)
                    .acc(fused_dm)
                    .forms(fm, fg, self.form(dm_out.dtype))
            }
            None => BWD_DW.forms(fm, fg, Form::F32),
        };
        let extra = layout.map_or([0; 4], |l| l.extra());
        self.launch(
            &mut rec,
            op,
            &kernel,
            Params::new(d.arr(), extra, [0.0; 4]),
            b * nblk * nhg,
            &args,
        )?;
        // Quantity 0 of each head's partials is de, 1 is da.
        for (slot, out) in [(0, &g_e), (1, &g_a)] {
            let slots = (&parts, 2, slot);
            combine_slot(self, &mut rec, op, (d, nblk), slots, (&out.buf, b * h * wd))?;
        }
        self.release(&mut rec, parts);
        if fused_dm {
            return Ok(HeadGrads {
                weights: g_w,
                erase: g_e,
                add: g_a,
            });
        }
        // dM = dM' prod_h (1 - w_h e_h), after the kernels above read dM'.
        let ew = Elementwise::new(
            self,
            d,
            self.any_packed(&[d_after, g_mem.unwrap_or(d_after)]),
        );
        let elems = |u0, u1| ew.bnw(u0, u1);
        let e_w_span = |u0, u1| ew.rows(u0, u1).bhn(h, n);
        let params = ew.params(d);
        match g_mem {
            Some(g_mem) => self.launch(
                &mut rec,
                op,
                &ew.kernel(ew.by_heads((BWD_MEM, BWD_MEM_GROUPS), BWD_MEM_ANY).forms(
                    self.form(g_mem.dtype),
                    fg,
                    Form::F32,
                ))?,
                params,
                ew.units,
                &[
                    Arg::window(w, &e_w_span),
                    Arg::whole(erase),
                    Arg::window(d_after, &elems),
                    Arg::window(g_mem, &elems),
                ],
            )?,
            None => self.launch(
                &mut rec,
                op,
                &ew.kernel(
                    ew.by_heads(
                        (BWD_MEM_INPLACE, BWD_MEM_INPLACE_GROUPS),
                        BWD_MEM_INPLACE_ANY,
                    )
                    .forms(Form::F32, fg, Form::F32),
                )?,
                params,
                ew.units,
                &[
                    Arg::window(w, &e_w_span),
                    Arg::whole(erase),
                    Arg::window(d_after, &elems),
                ],
            )?,
        }
        Ok(HeadGrads {
            weights: g_w,
            erase: g_e,
            add: g_a,
        })
    }
}
