//! Kernels of the application's own (a controller, an optimiser) recorded in the same batch as
//! the crate's ops: same uniform arena, same compute pass, same submits, pipelines cached like
//! the crate's, bindings checked against the WGSL.

use std::sync::Arc;

use super::pipelines::{Pipeline, WorkgroupMemory};
use super::tensor::Tensor;
use super::Gpu;
use crate::error::{Error, Result};

/// Words of parameters a user kernel gets at binding 0 (a uniform of 64 bytes).
pub const MAX_PARAM_WORDS: usize = 16;

/// How a user kernel uses one of its tensors: as `var<storage, read>` or
/// `var<storage, read_write>` in its WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`: the kernel may write the tensor.
    ReadWrite,
}

/// A compiled user kernel, made by [`Gpu::kernel`] and run by [`Gpu::dispatch`].
#[derive(Clone)]
pub struct Kernel {
    name: String,
    pipeline: Arc<Pipeline>,
    access: Vec<Access>,
    gpu: u64,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.name)
            .field("access", &self.access)
            .finish()
    }
}

impl Kernel {
    /// The name it was made with.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// FNV-1a of the source, so that two kernels of one name but different WGSL never share a
/// cached pipeline.
fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Gpu {
    /// Compiles a kernel of the application's own, to be recorded with [`Gpu::dispatch`] in the
    /// same batch as the crate's ops. Its bindings are group 0: binding 0 a
    /// `var<uniform>` of at most [`MAX_PARAM_WORDS`] u32 words (for example
    /// `array<vec4<u32>, 4>`; f32 parameters travel as their bits), then one storage binding
    /// per tensor, numbered 1, 2, ... in the order of `access`. Errors (never panics): WGSL
    /// that does not compile (with naga's report), a missing entry point, bindings that do not
    /// match `access` in number or in read/write, each naming the kernel. Pipelines are cached
    /// by name, source and entry point.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// use ntm_kernels::{Access, Gpu};
    /// let gpu = Gpu::new()?;
    /// let src = "
    ///     @group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;
    ///     @group(0) @binding(1) var<storage, read> x: array<f32>;
    ///     @group(0) @binding(2) var<storage, read_write> y: array<f32>;
    ///     @compute @workgroup_size(64)
    ///     fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    ///         if id.x < p[0].x { y[id.x] = 2.0 * x[id.x] + bitcast<f32>(p[0].y); }
    ///     }";
    /// let k = gpu.kernel("double_plus", src, "main", &[Access::Read, Access::ReadWrite])?;
    /// let x = gpu.upload(&[100], &vec![1.0; 100])?;
    /// let y = gpu.zeros(&[100])?;
    /// gpu.dispatch(&k, [2, 1, 1], &[&x, &y], &[100, 0.5f32.to_bits()])?;
    /// assert_eq!(gpu.download(&y)?[99], 2.5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn kernel(&self, name: &str, wgsl: &str, entry: &str, access: &[Access]) -> Result<Kernel> {
        const OP: &str = "kernel";
        let key = (
            format!("user:{name}:{:016x}", fingerprint(wgsl)),
            entry.to_string(),
            None,
        );
        let cached = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let pipeline = match cached {
            Some(p) => p,
            None => {
                let built = Arc::new(self.build_pipeline(
                    name,
                    wgsl,
                    entry,
                    4 * MAX_PARAM_WORDS as u64,
                    &[],
                    WorkgroupMemory::Zeroed,
                )?);
                self.pipelines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key)
                    .or_insert(built)
                    .clone()
            }
        };
        let writes = &pipeline.reflection.writes;
        if writes.len() != access.len() {
            return Err(Error::Invalid {
                op: OP,
                message: format!(
                    "kernel `{name}` entry point `{entry}` uses {} storage bindings (1..={}) but {} \
                     accesses were given",
                    writes.len(),
                    writes.len(),
                    access.len()
                ),
            });
        }
        for (k, (&w, &a)) in writes.iter().zip(access).enumerate() {
            if w != (a == Access::ReadWrite) {
                return Err(Error::Invalid {
                    op: OP,
                    message: format!(
                        "kernel `{name}` binding {}: the WGSL declares it `{}` but Access::{a:?} \
                         was given",
                        k + 1,
                        if w { "read_write" } else { "read" }
                    ),
                });
            }
        }
        Ok(Kernel {
            name: name.to_string(),
            pipeline,
            access: access.to_vec(),
            gpu: self.id,
        })
    }

    /// Records `kernel` over `groups` workgroups with `tensors` at bindings 1.. (in the order
    /// of its accesses, each bound whole) and `params` (at most [`MAX_PARAM_WORDS`] words; the
    /// rest of the uniform is zero) at binding 0, in the same batch as the crate's ops: it
    /// runs after the ops recorded before it and before those recorded after it. Tensors it
    /// may write count as written in place (an undo record of an earlier write to them is no
    /// longer valid). Returns at once, like every op. An f16 tensor is bound as its bytes
    /// rounded up to whole 4-byte words (two halves per `u32`, the first in the low half; read
    /// them with `unpack2x16float`, or as `f16` with `enable f16` where the device has it).
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        groups: [u32; 3],
        tensors: &[&Tensor],
        params: &[u32],
    ) -> Result<()> {
        const OP: &str = "dispatch";
        let name = &kernel.name;
        if kernel.gpu != self.id {
            return Err(Error::Invalid {
                op: OP,
                message: format!("kernel `{name}` was made by another Gpu"),
            });
        }
        if tensors.len() != kernel.access.len() {
            return Err(Error::Invalid {
                op: OP,
                message: format!(
                    "kernel `{name}` binds {} tensors but {} were given",
                    kernel.access.len(),
                    tensors.len()
                ),
            });
        }
        if params.len() > MAX_PARAM_WORDS {
            return Err(Error::TooLarge {
                op: OP,
                what: format!("the parameter words of kernel `{name}`"),
                size: params.len() as u64,
                limit: MAX_PARAM_WORDS as u64,
            });
        }
        let max_dim = self.limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max_dim) {
            return Err(Error::TooLarge {
                op: OP,
                what: format!("workgroups per dimension of kernel `{name}`"),
                size: g as u64,
                limit: max_dim as u64,
            });
        }
        let max_bind = self.limits.max_storage_buffer_binding_size;
        for t in tensors {
            self.check_owner(OP, "tensors", t.gpu)?;
            if t.size_bytes() > max_bind {
                return Err(Error::TooLarge {
                    op: OP,
                    what: format!(
                        "a tensor of kernel `{name}`, in bytes (bound whole; max_storage_buffer_binding_size)"
                    ),
                    size: t.size_bytes(),
                    limit: max_bind,
                });
            }
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let mut words = [0u32; MAX_PARAM_WORDS];
        words[..params.len()].copy_from_slice(params);
        let binds: Vec<(&wgpu::Buffer, u64, u64)> = tensors
            .iter()
            .map(|t| (&*t.buf, 0, t.size_bytes().next_multiple_of(4)))
            .collect();
        let mut rec = self.recorder();
        self.record(
            &mut rec,
            OP,
            name,
            &kernel.pipeline,
            |_| bytemuck::bytes_of(&words).to_vec(),
            4 * MAX_PARAM_WORDS as u64,
            &binds,
            groups,
        );
        for (t, a) in tensors.iter().zip(&kernel.access) {
            if *a == Access::ReadWrite {
                t.touch();
            }
        }
        Ok(())
    }
}
