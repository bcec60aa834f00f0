//! The copy kernel: the memory snapshot soft backprop needs, and the crate's side of the
//! bench's roofline (the faster of it and the driver's buffer copy). Shader: `shaders/copy.wgsl`.

use crate::error::Result;
use crate::runtime::abi::{Params, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "copy.wgsl",
    source: include_str!("../../shaders/copy.wgsl"),
    imports: &[],
};
const COPY: KernelDef = KernelDef::new(&SHADER, "copy");

/// vec4s per thread of the copy kernel (`CV` in the shader).
const CV: u64 = 4;

impl Gpu {
    /// A copy of `t`, made by this crate's copy kernel (vec4 loads, every element once).
    /// Useful for the memory snapshots that soft backprop needs.
    pub fn copy(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "copy";
        self.check_owner(OP, "tensor", t.gpu)?;
        let out = self.alloc(OP, &t.shape)?;
        let mut rec = self.recorder();
        self.record_copy(&mut rec, OP, &t.buf, &out.buf, t.len as u64)?;
        Ok(out)
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
