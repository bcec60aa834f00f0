//! A plain copy kernel: the memory snapshot soft backprop needs, and the bandwidth baseline
//! of the bench. Shader: `shaders/copy.wgsl`.

use crate::error::Result;
use crate::runtime::abi::{Params, WG};
use crate::runtime::dispatch::Arg;
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::tensor::Tensor;
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "copy.wgsl",
    source: include_str!("../../shaders/copy.wgsl"),
    imports: &[],
};
const COPY: KernelDef = KernelDef {
    shader: &SHADER,
    entry: "copy",
};

impl Gpu {
    /// A copy of `t` made by this crate's plain copy kernel (the bandwidth baseline of the
    /// benches). Useful for the memory snapshots that soft backprop needs.
    pub fn copy(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "copy";
        self.check_owner(OP, "tensor", t.gpu)?;
        let out = self.alloc(OP, &t.shape)?;
        let n = t.len as u64;
        let wg = WG as u64;
        let span = |u0: u64, u1: u64| (u0 * wg, (u1 * wg).min(n));
        let mut rec = self.recorder();
        self.dispatch(
            &mut rec,
            OP,
            &COPY,
            Params::new([0, 0, 0, 0], [n as u32, 0, 0, 0], [0.0; 4]),
            n.div_ceil(wg),
            &[Arg::window(t, &span), Arg::window(&out, &span)],
        )?;
        Ok(out)
    }
}
