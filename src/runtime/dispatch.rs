//! Dispatch of one kernel over a range of work units, split into as many dispatches as the
//! adapter's limits need: tensors larger than one storage binding are bound in windows over
//! just the elements each dispatch touches, and unit counts past the per-dimension limit are
//! folded into two dimensions.

use std::num::NonZeroU64;

use super::abi::{Params, MAX_ARGS, PARAM_BYTES};
use super::pipelines::KernelDef;
use super::recorder::{Recorder, ARENA_SLOTS};
use super::tensor::{DType, Indices, Tensor};
use super::Gpu;
use crate::error::{Error, Result};

/// How a storage binding is bound for a dispatch.
pub(crate) enum Span<'a> {
    /// The whole buffer (it must fit one storage binding).
    Whole,
    /// Only the elements `[lo, hi)` that units `[u0, u1)` touch, given by this function.
    Window(&'a dyn Fn(u64, u64) -> (u64, u64)),
}

/// One storage argument of a dispatch.
pub(crate) struct Arg<'a> {
    pub buf: &'a wgpu::Buffer,
    /// Length of the tensor in elements of `dtype` (indices and raw buffers: 4-byte words,
    /// `F32`).
    pub len: u64,
    pub dtype: DType,
    pub span: Span<'a>,
}

impl<'a> Arg<'a> {
    pub fn whole(t: &'a Tensor) -> Self {
        Arg {
            buf: &t.buf,
            len: t.len as u64,
            dtype: t.dtype,
            span: Span::Whole,
        }
    }
    pub fn window(t: &'a Tensor, f: &'a dyn Fn(u64, u64) -> (u64, u64)) -> Self {
        Arg {
            buf: &t.buf,
            len: t.len as u64,
            dtype: t.dtype,
            span: Span::Window(f),
        }
    }
    pub fn indices(t: &'a Indices) -> Self {
        Arg {
            buf: &t.buf,
            len: t.len as u64,
            dtype: DType::F32,
            span: Span::Whole,
        }
    }
    pub fn raw(buf: &'a wgpu::Buffer, len: u64, span: Span<'a>) -> Self {
        Arg {
            buf,
            len,
            dtype: DType::F32,
            span,
        }
    }
    /// Bytes the argument's elements take, in whole 4-byte words (bindings are).
    fn bytes(&self) -> u64 {
        (self.len * self.dtype.size_bytes()).next_multiple_of(4)
    }
}

impl Gpu {
    /// Records `units` workgroups of `def`, split into as many dispatches as the adapter's
    /// binding and dispatch limits need. Windowed arguments are bound over just the elements
    /// each dispatch touches. The arguments must match the kernel's storage bindings, in
    /// order (checked against its WGSL).
    pub(crate) fn launch(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        def: &KernelDef,
        params: Params,
        units: u64,
        args: &[Arg<'_>],
    ) -> Result<()> {
        let kernel = self.pipeline(def)?;
        let name = format!("{}::{}", def.shader.name, def.entry);
        self.dispatch_pipeline(rec, op, &name, &kernel, params, units, args)
    }

    #[allow(clippy::too_many_arguments)] // internal: the one place every dispatch goes through
    pub(crate) fn dispatch_pipeline(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        name: &str,
        kernel: &super::pipelines::Pipeline,
        mut params: Params,
        units: u64,
        args: &[Arg<'_>],
    ) -> Result<()> {
        let want = kernel.reflection.writes.len();
        if args.len() != want || args.len() > MAX_ARGS {
            return Err(Error::Invalid {
                op,
                message: format!(
                    "kernel `{name}` has {want} storage bindings but {} arguments were given",
                    args.len()
                ),
            });
        }
        for (k, (a, &want)) in args.iter().zip(&kernel.dtypes).enumerate() {
            if a.dtype != want {
                // An op routed a tensor to a kernel specialised for another dtype: a bug in
                // the crate (or a user kernel given an f16 tensor), never a silent misread.
                return Err(Error::Invalid {
                    op,
                    message: format!(
                        "kernel `{name}` binding {} takes {want} elements but was given a {} tensor",
                        k + 1,
                        a.dtype
                    ),
                });
            }
        }
        if units == 0 {
            return Ok(());
        }
        let max_bind = self.limits.max_storage_buffer_binding_size;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let max_dim = self.limits.max_compute_workgroups_per_dimension as u64;
        for a in args {
            if matches!(a.span, Span::Whole) && a.bytes() > max_bind {
                return Err(Error::TooLarge {
                    op,
                    what: format!(
                        "an argument bound whole by kernel `{name}`, in bytes (max_storage_buffer_binding_size)"
                    ),
                    size: a.bytes(),
                    limit: max_bind,
                });
            }
        }
        // The (offset, size) in bytes that units [u0, u1) bind of an argument.
        let window = |a: &Arg<'_>, u0: u64, u1: u64| -> Result<(u64, u64)> {
            let total = a.bytes();
            let eb = a.dtype.size_bytes();
            match a.span {
                Span::Whole => Ok((0, total)),
                Span::Window(f) => {
                    let (lo, hi) = f(u0, u1);
                    let off = (lo * eb) / align * align;
                    if off >= total || hi < lo {
                        return Err(Error::Invalid {
                            op,
                            message: format!(
                                "kernel `{name}`: units [{u0}, {u1}) span elements [{lo}, {hi}) of an \
                                 argument of {} elements",
                                a.len
                            ),
                        });
                    }
                    let end = (hi * eb).next_multiple_of(4).clamp(off + 4, total);
                    Ok((off, end - off))
                }
            }
        };
        let fits = |u0: u64, u1: u64| -> Result<bool> {
            for a in args {
                if window(a, u0, u1)?.1 > max_bind {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let mut u0 = 0;
        while u0 < units {
            // Largest u1 such that every window fits one binding: grow, then bisect.
            let cap = (units - u0).min(max_dim * max_dim);
            let mut u1 = u0 + cap;
            if !fits(u0, u1)? {
                if !fits(u0, u0 + 1)? {
                    let mut worst = 0;
                    for a in args {
                        worst = worst.max(window(a, u0, u0 + 1)?.1);
                    }
                    return Err(Error::TooLarge {
                        op,
                        what: format!("one workgroup's window in kernel `{name}`, in bytes"),
                        size: worst,
                        limit: max_bind,
                    });
                }
                let (mut lo, mut hi) = (u0 + 1, u1);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if fits(u0, mid)? {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                u1 = lo;
            }
            let groups = u1 - u0;
            let gx = groups.min(max_dim);
            let gy = groups.div_ceil(gx);
            params.unit_base = u0 as u32;
            params.unit_end = u1 as u32;
            params.groups_x = gx as u32;
            let mut binds = Vec::with_capacity(args.len());
            for (k, a) in args.iter().enumerate() {
                let (off, size) = window(a, u0, u1)?;
                // In elements of the argument's dtype (even for f16: offsets are aligned).
                params.base[k] = (off / a.dtype.size_bytes()) as u32;
                binds.push((off, size));
            }
            let binds: Vec<(&wgpu::Buffer, u64, u64)> = args
                .iter()
                .zip(&binds)
                .map(|(a, &(off, size))| (a.buf, off, size))
                .collect();
            self.record(
                rec,
                op,
                name,
                kernel,
                |slot| {
                    params.check_slot = slot;
                    bytemuck::bytes_of(&params).to_vec()
                },
                PARAM_BYTES,
                &binds,
                [gx as u32, gy as u32, 1],
            );
            u0 = u1;
        }
        Ok(())
    }

    /// Records one dispatch of `kernel` into the batch's open compute pass: its parameters
    /// (made by `params` from the op's index-check slot) go to the next arena slot, bound as
    /// the uniform at binding 0 (`uniform_bytes` of it), then `binds` (buffer, offset, size) at
    /// bindings 1.. . Submits the batch first when the arena is full (an op's index check
    /// moves to the new batch with it).
    #[allow(clippy::too_many_arguments)] // internal: the one place every dispatch is recorded
    pub(crate) fn record(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        label: &str,
        kernel: &super::pipelines::Pipeline,
        params: impl FnOnce(u32) -> Vec<u8>,
        uniform_bytes: u64,
        binds: &[(&wgpu::Buffer, u64, u64)],
        groups: [u32; 3],
    ) {
        if rec.slots_used >= ARENA_SLOTS {
            self.flush_batch(rec);
            // An index check reserved by this op moves to the new batch with its kernels.
            self.rehome_open_check(rec);
        }
        let bytes = params(Gpu::open_check_slot(rec));
        let slot_off = rec.slots_used * self.slot_bytes;
        rec.params.resize(slot_off as usize, 0);
        rec.params.extend_from_slice(&bytes);
        rec.slots_used += 1;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.arena,
                offset: slot_off,
                size: NonZeroU64::new(uniform_bytes),
            }),
        }];
        for (k, &(buf, off, size)) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: k as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: buf,
                    offset: off,
                    size: NonZeroU64::new(size),
                }),
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &kernel.layout,
            entries: &entries,
        });
        if rec.pass.is_none() {
            let stamp = rec.capture.as_mut().and_then(|c| c.next_pass(op, label));
            let enc = self.encoder(rec);
            let pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("ntm-kernels"),
                    timestamp_writes: stamp.as_ref().map(|(set, i)| {
                        wgpu::ComputePassTimestampWrites {
                            query_set: set,
                            beginning_of_pass_write_index: Some(*i),
                            end_of_pass_write_index: Some(*i + 1),
                        }
                    }),
                })
                .forget_lifetime();
            rec.pass = Some(pass);
            rec.passes += 1;
        }
        if let Some(pass) = rec.pass.as_mut() {
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        if rec.capture.as_ref().is_some_and(|c| c.per_dispatch) {
            rec.pass = None;
        }
        rec.dispatches_recorded += 1;
    }

    /// Windows `[lo, hi)` of `rows` rows of `width` floats, each of which fits one storage
    /// binding once its start is aligned down: kernels that gather rows by index run once
    /// per window.
    pub(crate) fn row_windows(&self, rows: u64, width: u64, dtype: DType) -> Vec<(u64, u64)> {
        let max_bind = self.limits.max_storage_buffer_binding_size;
        let row_bytes = width * dtype.size_bytes();
        if rows * row_bytes <= max_bind {
            return vec![(0, rows)];
        }
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        // Windows of a whole number of aligned row groups start at aligned offsets and fill
        // the binding exactly; otherwise leave room for aligning each start down.
        let group = align / gcd(align, row_bytes);
        let per = match (max_bind / row_bytes) / group * group {
            0 => (max_bind.saturating_sub(align) / row_bytes).max(1),
            p => p,
        };
        (0..rows.div_ceil(per))
            .map(|k| (k * per, ((k + 1) * per).min(rows)))
            .collect()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::copy::SHADER;

    const COPY: KernelDef = KernelDef::new(&SHADER, "copy");

    fn gpu() -> Gpu {
        Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
    }

    /// Arguments that do not match the kernel's bindings, spans past the end of a buffer and
    /// unknown entry points are errors, never panics, and the Gpu stays usable.
    #[test]
    fn mismatched_dispatches_are_errors() {
        let g = gpu();
        let t = g.upload(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let out = g.zeros(&[4]).unwrap();
        let p = Params::new([0; 4], [4, 0, 0, 0], [0.0; 4]);
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        {
            let mut rec = g.recorder();
            let m = msg(g.launch(&mut rec, "test", &COPY, p, 1, &[Arg::whole(&t)]));
            assert!(m.contains("has 2 storage bindings but 1 arguments"), "{m}");
            let nine: Vec<Arg<'_>> = (0..9).map(|_| Arg::whole(&t)).collect();
            let m = msg(g.launch(&mut rec, "test", &COPY, p, 1, &nine));
            assert!(m.contains("but 9 arguments"), "{m}");
            let past = |_: u64, _: u64| (10u64, 20u64);
            let m = msg(g.launch(
                &mut rec,
                "test",
                &COPY,
                p,
                1,
                &[Arg::window(&t, &past), Arg::whole(&out)],
            ));
            assert!(
                m.contains("span elements [10, 20) of an argument of 4 elements"),
                "{m}"
            );
            let missing = KernelDef::new(&SHADER, "no_such_entry");
            let m = msg(g.launch(&mut rec, "test", &missing, p, 1, &[]));
            assert!(
                m.contains("no_such_entry") && m.contains("copy.wgsl"),
                "{m}"
            );
        }
        let c = g.copy(&t).unwrap();
        assert_eq!(g.download(&c).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    }
}
