//! The copy kernel: the memory snapshot soft backprop needs, and the crate's side of the
//! bench's roofline (the faster of it and the driver's buffer copy). Shader: `shaders/copy.wgsl`.

use crate::error::Result;
use crate::runtime::abi::{Params, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::{DType, Tensor};
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "copy.wgsl",
    source: include_str!("../../shaders/copy.wgsl"),
    imports: &[],
};
const COPY: KernelDef = KernelDef::new(&SHADER, "copy");
const CAST: KernelDef = KernelDef::new(&SHADER, "convert");

/// vec4s per thread of the copy kernel (`CV` in the shader).
const CV: u64 = 4;

impl Gpu {
    /// A copy of `t` (same dtype), made by this crate's copy kernel (vec4 loads, every
    /// element once). Useful for the memory snapshots that soft backprop needs.
    pub fn copy(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "copy";
        self.check_owner(OP, "tensor", t.gpu)?;
        let out = self.alloc_as(OP, &t.shape, t.dtype)?;
        let mut rec = self.recorder();
        self.record_convert(&mut rec, OP, t, &out)?;
        Ok(out)
    }

    /// `t` converted to `dtype` (a new tensor of the same shape): to f16, each value rounded
    /// to the nearest f16 (ties to even on adapters that round so; see the README), to f32
    /// exactly. Casting to the same dtype copies.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// use ntm_kernels::DType;
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let m = gpu.upload(&[1, 4, 8], &[0.25; 32])?;
    /// let m16 = gpu.cast(&m, DType::F16)?; // half the bytes
    /// let m32 = gpu.cast(&m16, DType::F32)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        const OP: &str = "cast";
        self.check_owner(OP, "tensor", t.gpu)?;
        let out = self.alloc_as(OP, &t.shape, dtype)?;
        let mut rec = self.recorder();
        self.record_convert(&mut rec, OP, t, &out)?;
        Ok(out)
    }

    /// Records `dst = src` (same length): the bit copy for f32, else the cast kernel (an
    /// f16 element converts to f32 and back exactly).
    pub(crate) fn record_convert(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        src: &Tensor,
        dst: &Tensor,
    ) -> Result<()> {
        if src.dtype == DType::F32 && dst.dtype == DType::F32 {
            return self.record_copy(rec, op, &src.buf, &dst.buf, src.len as u64);
        }
        let len = src.len as u64;
        let lanes: u32 = if len.is_multiple_of(4) { 4 } else { 1 };
        let (fs, fd) = (self.form(src.dtype), self.form(dst.dtype));
        let def = CAST.lanes(lanes).forms(fs, Form::F32, fd);
        // Elements per unit: a thread per V, or per word (two elements) with WORDS.
        let per = WG as u64 * if def.spec.words() { 2 } else { lanes as u64 };
        let span = |u0: u64, u1: u64| (u0 * per, (u1 * per).min(len));
        self.launch(
            rec,
            op,
            &def,
            Params::new([0; 4], [(len / lanes as u64) as u32, 0, 0, 0], [0.0; 4]),
            len.div_ceil(per),
            &[Arg::window(src, &span), Arg::window(dst, &span)],
        )
    }

    /// Records the copy of `len` f32s from `src` to `dst` (both hold whole vec4s; only the
    /// first `len` f32s of `dst` are written).
    pub(crate) fn record_copy(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        len: u64,
    ) -> Result<()> {
        let len4 = len.div_ceil(4) * 4;
        let per_unit = WG as u64 * CV * 4;
        let span = |u0: u64, u1: u64| (u0 * per_unit, (u1 * per_unit).min(len4));
        self.launch(
            rec,
            op,
            &COPY,
            Params::new(
                [0, 0, 0, 0],
                [(len4 / 4) as u32, len as u32, 0, 0],
                [0.0; 4],
            ),
            len4.div_ceil(per_unit),
            &[
                Arg::raw(src, len4, Span::Window(&span)),
                Arg::raw(dst, len4, Span::Window(&span)),
            ],
        )
    }
}
