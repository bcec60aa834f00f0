//! Whole-tensor updates a training loop needs between the memory ops: `axpy` (summing
//! gradients over steps, optimiser steps) and `fill`. Shader: `shaders/blas.wgsl`.

use crate::check;
use crate::error::Result;
use crate::runtime::abi::{Params, WG};
use crate::runtime::dispatch::Arg;
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "blas.wgsl",
    source: include_str!("../../shaders/blas.wgsl"),
    imports: &[],
};
const AXPY: KernelDef = KernelDef::new(&SHADER, "axpy");
const FILL: KernelDef = KernelDef::new(&SHADER, "fill");

/// A flat pass over `len` elements: the kernel's lanes (4 when `len` is a multiple of 4),
/// whether threads take packed words, and the elements a unit covers.
struct Flat {
    lanes: u32,
    per_unit: u64,
    units: u64,
    len: u64,
}

impl Flat {
    fn new(len: u64, packed: bool) -> Self {
        let lanes: u32 = if len.is_multiple_of(4) { 4 } else { 1 };
        let words = packed && lanes == 1;
        let per_unit = WG as u64 * if words { 2 } else { lanes as u64 };
        Flat {
            lanes,
            per_unit,
            units: len.div_ceil(per_unit),
            len,
        }
    }
    fn params(&self, scalar: f32) -> Params {
        Params::new(
            [0; 4],
            [(self.len / self.lanes as u64) as u32, 0, 0, 0],
            [scalar, 0.0, 0.0, 0.0],
        )
    }
    fn span(&self, u0: u64, u1: u64) -> (u64, u64) {
        (u0 * self.per_unit, (u1 * self.per_unit).min(self.len))
    }
}

impl Gpu {
    /// `y += alpha · x`, elementwise; `x` and `y` of the same shape, each f32 or f16 (computed
    /// in f32, `y` rounded once to its dtype). Recorded like every op: summing gradients over
    /// the steps of backprop through time stays on the GPU.
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
        let f = Flat::new(y.len as u64, self.any_packed(&[x, y]));
        let span = |u0, u1| f.span(u0, u1);
        let def = AXPY
            .lanes(f.lanes)
            .forms(self.form(x.dtype), Form::F32, self.form(y.dtype));
        let mut rec = self.recorder();
        self.launch(
            &mut rec,
            OP,
            &def,
            f.params(alpha),
            f.units,
            &[Arg::window(x, &span), Arg::window(y, &span)],
        )?;
        y.touch();
        Ok(())
    }

    /// Sets every element of `t` (f32 or f16: `value` rounded once) to `value`.
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
        let f = Flat::new(t.len as u64, self.any_packed(&[t]));
        let span = |u0, u1| f.span(u0, u1);
        let def = FILL
            .lanes(f.lanes)
            .forms(Form::F32, Form::F32, self.form(t.dtype));
        let mut rec = self.recorder();
        self.launch(
            &mut rec,
            OP,
            &def,
            f.params(value),
            f.units,
            &[Arg::window(t, &span)],
        )?;
        t.touch();
        Ok(())
    }
}
