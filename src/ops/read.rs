//! Soft read: `r_h = sum_i w_h(i) M_i` and its backward pass. Shader: `shaders/read.wgsl`;
//! the forward is the column-reduction primitive, the weight gradient the row-tile one.

use crate::check::{self, Dims};
use crate::error::Result;
use crate::primitives::colsum::weighted_row_sums;
use crate::primitives::rowstream;
use crate::primitives::rowtile::row_dots;
use crate::primitives::spans::Elementwise;
use crate::runtime::dispatch::Arg;
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "read.wgsl",
    source: include_str!("../../shaders/read.wgsl"),
    imports: &[],
};
const BWD_MEM: KernelDef = KernelDef::new(&SHADER, "bwd_mem");
const BWD_MEM_GROUPS: KernelDef = KernelDef::new(&SHADER, "bwd_mem_groups");
const BWD_MEM_ANY: KernelDef = KernelDef::new(&SHADER, "bwd_mem_any");

/// Gradients of a soft read.
#[derive(Debug)]
pub struct ReadGrads {
    /// d loss / d memory, [B, N, W].
    pub memory: Tensor,
    /// d loss / d weights, [B, H, N].
    pub weights: Tensor,
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
    /// [`Gpu::soft_read_backward_into`] adds the memory gradient to a tensor of the caller's.
    pub fn soft_read_backward(
        &self,
        memory: &Tensor,
        w: &Tensor,
        dr: &Tensor,
    ) -> Result<ReadGrads> {
        const OP: &str = "soft_read_backward";
        let d = inputs(self, OP, memory, w)?;
        check::tensor(self, OP, "dr", dr, &["B", "H", "W"], &[d.b, d.h, d.w])?;
        // The memory's gradient takes the memory's dtype.
        let g_mem = self.alloc_as(OP, &[d.b, d.n, d.w], memory.dtype)?;
        let weights = self.read_backward(OP, d, memory, w, dr, &g_mem, false)?;
        Ok(ReadGrads {
            memory: g_mem,
            weights,
        })
    }

    /// [`Gpu::soft_read_backward`] that adds the memory gradient `sum_h w[b,h,i] dr[b,h,j]`
    /// into `d_memory` [B, N, W] in the same pass (no extra pass over the memory), as
    /// [`Gpu::discrete_read_backward`] does; returns the weights' gradient [B, H, N].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let m = gpu.upload(&[1, 4, 2], &[1.0; 8])?;
    /// let w = gpu.upload(&[1, 1, 4], &[0.25; 4])?;
    /// let dr = gpu.upload(&[1, 1, 2], &[1.0, 2.0])?;
    /// let mut d_mem = gpu.zeros(&[1, 4, 2])?; // summed over the steps of BPTT
    /// let dw = gpu.soft_read_backward_into(&m, &w, &dr, &mut d_mem)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn soft_read_backward_into(
        &self,
        memory: &Tensor,
        w: &Tensor,
        dr: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "soft_read_backward_into";
        let d = inputs(self, OP, memory, w)?;
        check::tensor(self, OP, "dr", dr, &["B", "H", "W"], &[d.b, d.h, d.w])?;
        check::memory_shaped(self, OP, "d_memory", d_memory, d)?;
        let weights = self.read_backward(OP, d, memory, w, dr, d_memory, true)?;
        d_memory.touch();
        Ok(weights)
    }

    /// Records the read's backward: returns the weights' gradient, stores (or with `acc`,
    /// adds) the memory gradient into `g_mem`.
    #[allow(clippy::too_many_arguments)] // internal: both backward forms
    fn read_backward(
        &self,
        op: &'static str,
        d: Dims,
        memory: &Tensor,
        w: &Tensor,
        dr: &Tensor,
        g_mem: &Tensor,
        acc: bool,
    ) -> Result<Tensor> {
        let g_w = self.alloc(op, &[d.b, d.h, d.n])?;
        let mut rec = self.recorder();
        let inputs = (memory, w, dr);
        if rowstream::read_backward(self, &mut rec, op, d, inputs, &g_w, g_mem, acc)? {
            return Ok(g_w);
        }
        row_dots(self, &mut rec, op, d, memory, dr, &g_w)?;
        let (h, n) = (d.h as u64, d.n as u64);
        let ew = Elementwise::new(self, d, self.any_packed(&[g_mem]));
        let elems = |u0, u1| ew.bnw(u0, u1);
        let w_span = |u0, u1| ew.rows(u0, u1).bhn(h, n);
        let def = ew
            .by_heads((BWD_MEM, BWD_MEM_GROUPS), BWD_MEM_ANY)
            .acc(acc)
            .forms(Form::F32, Form::F32, self.form(g_mem.dtype));
        self.launch(
            &mut rec,
            op,
            &ew.kernel(def)?,
            ew.params(d),
            ew.units,
            &[
                Arg::window(w, &w_span),
                Arg::whole(dr),
                Arg::window(g_mem, &elems),
            ],
        )?;
        Ok(g_w)
    }
}
