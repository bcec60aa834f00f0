//! Whole-tensor updates a training loop needs between the memory ops: `axpy` (summing
//! gradients over steps, optimiser steps) and `fill`. Shader: `shaders/blas.wgsl`.

use crate::check;
use crate::error::Result;
use crate::runtime::abi::{Params, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "blas.wgsl",
    source: include_str!("../../shaders/blas.wgsl"),
    imports: &[],
};
const AXPY: KernelDef = KernelDef::new(&SHADER, "axpy");
const FILL: KernelDef = KernelDef::new(&SHADER, "fill");

/// (params, units, span) of a flat pass over `len` f32s, a vec4 per thread.
fn flat_pass(len: u64, scalar: f32) -> (Params, u64, impl Fn(u64, u64) -> (u64, u64)) {
    let len4 = len.div_ceil(4) * 4;
    let per_unit = WG as u64 * 4;
    let params = Params::new(
        [0; 4],
        [(len4 / 4) as u32, len as u32, 0, 0],
        [scalar, 0.0, 0.0, 0.0],
    );
    let span = move |u0: u64, u1: u64| (u0 * per_unit, (u1 * per_unit).min(len4));
    (params, len4.div_ceil(per_unit), span)
}

impl Gpu {
    /// `y += alpha · x`, elementwise; `x` and `y` of the same shape. Recorded like every op:
    /// summing gradients over the steps of backprop through time stays on the GPU.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let x = gpu.upload(&[3], &[1.0, 2.0, 3.0])?;
    /// let mut y = gpu.upload(&[3], &[1.0, 1.0, 1.0])?;
    /// gpu.axpy(0.5, &x, &mut y)?;
    /// assert_eq!(gpu.download(&y)?, vec![1.5, 2.0, 2.5]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn axpy(&self, alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
        const OP: &str = "axpy";
        check::same_shape(self, OP, ("x", x), ("y", y))?;
        let len = y.len as u64;
        let len4 = len.div_ceil(4) * 4;
        let (params, units, span) = flat_pass(len, alpha);
        let mut rec = self.recorder();
        self.launch(
            &mut rec,
            OP,
            &AXPY,
            params,
            units,
            &[
                Arg::raw(&x.buf, len4, Span::Window(&span)),
                Arg::raw(&y.buf, len4, Span::Window(&span)),
            ],
        )?;
        y.touch();
        Ok(())
    }

    /// Sets every element of `t` to `value`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let mut d_mem = gpu.zeros(&[2, 128, 20])?;
    /// gpu.fill(&mut d_mem, 0.0)?; // e.g. clear an accumulated gradient each step
    /// # Ok(())
    /// # }
    /// ```
    pub fn fill(&self, t: &mut Tensor, value: f32) -> Result<()> {
        const OP: &str = "fill";
        self.check_owner(OP, "t", t.gpu)?;
        let len = t.len as u64;
        let len4 = len.div_ceil(4) * 4;
        let (params, units, span) = flat_pass(len, value);
        let mut rec = self.recorder();
        self.launch(
            &mut rec,
            OP,
            &FILL,
            params,
            units,
            &[Arg::raw(&t.buf, len4, Span::Window(&span))],
        )?;
        t.touch();
        Ok(())
    }
}
