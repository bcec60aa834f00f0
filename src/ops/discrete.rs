//! Discrete memory access: gather reads and scatter writes of one row per head, with an undo
//! record so that backprop through time needs no memory snapshots. Every kernel does
//! O(B·H·W) work whatever N is. Shaders in `shaders/discrete.wgsl`.

use std::sync::Arc;

use crate::check::{self, Dims};
use crate::error::{Error, Result};
use crate::runtime::abi::Params;
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{Form, KernelDef, Shader};
use crate::runtime::recorder::{CheckKind, IndexCheck, Recorder, CHECK_SLOTS};
use crate::runtime::tensor::{DType, Indices, Tensor};
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "discrete.wgsl",
    source: include_str!("../../shaders/discrete.wgsl"),
    imports: &[],
};

const GATHER: KernelDef = KernelDef::new(&SHADER, "gather");
const READ_BWD: KernelDef = KernelDef::new(&SHADER, "read_bwd");
const SAVE_SCATTER: KernelDef = KernelDef::new(&SHADER, "save_scatter");
const RESTORE: KernelDef = KernelDef::new(&SHADER, "restore");
const WRITE_BWD: KernelDef = KernelDef::new(&SHADER, "write_bwd");
const ACCESS_FWD: KernelDef = KernelDef::new(&SHADER, "access_fwd");
const ACCESS_BWD_READ: KernelDef = KernelDef::new(&SHADER, "access_bwd_read");

/// What [`Gpu::discrete_write`] overwrote: the chosen indices and the old rows, O(B·H·W).
/// [`Gpu::undo_write`] restores the memory from it bit for bit, and
/// [`Gpu::discrete_write_backward`] computes the write's gradients from it.
#[derive(Debug)]
pub struct WriteUndo {
    indices: Indices,
    old_rows: Tensor,
    memory: u64,
    memory_shape: Vec<usize>,
    /// The memory's version before and after the write: undoing needs the memory exactly as
    /// the write left it (later writes undone first), and leaves it as it was before.
    version_before: u64,
    version_after: u64,
}

impl WriteUndo {
    /// The record of a write just recorded into `memory` (whose version it moves on) at
    /// `indices`, with the rows it saved.
    fn record(memory: &mut Tensor, indices: &Indices, old_rows: Tensor) -> WriteUndo {
        let version_before = memory.version();
        memory.touch();
        WriteUndo {
            indices: indices.share(),
            old_rows,
            memory: memory.id,
            memory_shape: memory.shape.clone(),
            version_before,
            version_after: memory.version(),
        }
    }
    /// Bytes this record keeps on the GPU (indices and old rows): what backprop through a
    /// discrete write must keep, against a whole memory snapshot for a soft write.
    pub fn size_bytes(&self) -> u64 {
        self.indices.size_bytes() + self.old_rows.size_bytes()
    }
    /// The rows chosen by each (batch, head), [B, H].
    pub fn indices(&self) -> &Indices {
        &self.indices
    }
    /// The rows as they were before the write, [B, H, W] (heads sharing a row hold the same row).
    pub fn old_rows(&self) -> &Tensor {
        &self.old_rows
    }
}

/// Gradients of a discrete write.
#[derive(Debug)]
pub struct DiscreteWriteGrads {
    /// d loss / d erase, [B, H, W].
    pub erase: Tensor,
    /// d loss / d add, [B, H, W].
    pub add: Tensor,
    /// d loss / d w_h(idx_h), the one-hot weight at each chosen slot, [B, H].
    pub weight_at_idx: Tensor,
}

/// Records `def` once per row window of the memory, one workgroup per (b, h).
fn per_window(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    def: &KernelDef,
    d: Dims,
    args: &[WindowArg],
) -> Result<()> {
    per_window_units(gpu, rec, op, def, d, (d.b * d.h) as u64, 0, args)
}

/// [`per_window`] with `units` workgroups (those of `d`'s heads and of `extra_z` more per
/// batch element, for the kernels that take two sets of heads; `Params.extra.z`).
#[allow(clippy::too_many_arguments)] // internal: the launch's parts
fn per_window_units(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    def: &KernelDef,
    d: Dims,
    units: u64,
    extra_z: u32,
    args: &[WindowArg],
) -> Result<()> {
    let w = d.w as u64;
    // Windows sized for the widest memory-shaped argument.
    let widest = args
        .iter()
        .filter_map(|a| match a {
            WindowArg::Mem(_, _, dt) => Some(*dt),
            WindowArg::Whole(..) => None,
        })
        .max_by_key(|dt| dt.size_bytes())
        .unwrap_or(DType::F32);
    // With WORDS the kernels that store the memory run as one workgroup taking every head in
    // turn (see shaders/discrete.wgsl).
    let units = if def.spec.words() && gpu.pipeline(def)?.stores_slot {
        1
    } else {
        units
    };
    for (lo, hi) in gpu.row_windows((d.b * d.n) as u64, w, widest) {
        let span = move |_: u64, _: u64| (lo * w, hi * w);
        let params = Params::new(d.arr(), [lo as u32, hi as u32, extra_z, 0], [0.0; 4]);
        let resolved: Vec<Arg<'_>> = args
            .iter()
            .map(|a| match a {
                WindowArg::Mem(buf, len, dtype) => Arg {
                    buf,
                    len: *len,
                    dtype: *dtype,
                    span: Span::Window(&span),
                },
                WindowArg::Whole(buf, len) => Arg::raw(buf, *len, Span::Whole),
            })
            .collect();
        gpu.launch(rec, op, def, params, units, &resolved)?;
    }
    Ok(())
}

/// The write's backward (`write_bwd`, one dispatch per window): erase, add and weight
/// gradients into `[g_e, g_w, g_a]`, and `d_memory` from dM' to dM on the written rows.
#[allow(clippy::too_many_arguments)] // internal: the write's tensors and the outputs
fn write_backward(
    gpu: &Gpu,
    rec: &mut Recorder,
    op: &'static str,
    d: Dims,
    undo: &WriteUndo,
    erase: &Tensor,
    add: &Tensor,
    d_memory: &Tensor,
    [g_e, g_w, g_a]: [&Tensor; 3],
) -> Result<()> {
    per_window(
        gpu,
        rec,
        op,
        &WRITE_BWD.forms(Form::F32, gpu.form(d_memory.dtype), Form::F32),
        d,
        &[
            mem_arg(d_memory),
            whole_idx(&undo.indices),
            whole(&undo.old_rows),
            whole(erase),
            whole(add),
            whole(g_e),
            whole(g_w),
            whole(g_a),
        ],
    )
}

/// An argument of a discrete kernel: a memory-shaped tensor bound by row window, or a
/// small one bound whole.
#[derive(Clone)]
pub(crate) enum WindowArg {
    Mem(Arc<wgpu::Buffer>, u64, DType),
    Whole(Arc<wgpu::Buffer>, u64),
}

fn mem_arg(t: &Tensor) -> WindowArg {
    WindowArg::Mem(t.buf.clone(), t.len as u64, t.dtype)
}
fn whole(t: &Tensor) -> WindowArg {
    WindowArg::Whole(t.buf.clone(), t.len as u64)
}
fn whole_idx(t: &Indices) -> WindowArg {
    WindowArg::Whole(t.buf.clone(), t.len as u64)
}

fn reserve(gpu: &Gpu, rec: &mut Recorder, op: &'static str, d: Dims, ix: &Indices) -> WindowArg {
    let check = IndexCheck {
        op,
        heads: d.h,
        kind: CheckKind::Range {
            indices: ix.buf.clone(),
            slots: d.n,
        },
    };
    WindowArg::Whole(gpu.reserve_check(rec, check), CHECK_SLOTS)
}

/// The write's erase and add vectors: shape `[B, H, W]` (`names`, `dims`), f32.
fn erase_add(
    gpu: &Gpu,
    op: &'static str,
    erase: &Tensor,
    add: &Tensor,
    names: [&str; 3],
    dims: [usize; 3],
) -> Result<()> {
    check::tensor(gpu, op, "erase", erase, &names, &dims)?;
    check::tensor(gpu, op, "add", add, &names, &dims)
}

fn memory_and_indices(gpu: &Gpu, op: &'static str, m: &Tensor, ix: &Indices) -> Result<Dims> {
    let (b, n, w) = check::memory(gpu, op, "memory", m)?;
    gpu.check_owner(op, "indices", ix.gpu)?;
    if ix.shape.len() != 2 || ix.shape[0] != b {
        return Err(Error::Shape {
            op,
            arg: "indices",
            expected: format!("[B, H] = [{b}, H]"),
            given: ix.shape.clone(),
        });
    }
    Ok(Dims {
        b,
        h: ix.shape[1],
        n,
        w,
    })
}

impl Gpu {
    /// Discrete read (gather): `r[b,h] = M[b, idx[b,h]]`, [B, H, W]; soft read with one-hot
    /// weights. An index `>= N` reads zeros and is reported by the next `download`/`sync`.
    pub fn discrete_read(&self, memory: &Tensor, indices: &Indices) -> Result<Tensor> {
        const OP: &str = "discrete_read";
        let d = memory_and_indices(self, OP, memory, indices)?;
        let out = self.alloc(OP, &[d.b, d.h, d.w])?;
        let mut rec = self.recorder();
        let flags = reserve(self, &mut rec, OP, d, indices);
        per_window(
            self,
            &mut rec,
            OP,
            &GATHER.forms(self.form(memory.dtype), Form::F32, Form::F32),
            d,
            &[
                mem_arg(memory),
                whole_idx(indices),
                whole(&out),
                flags.clone(),
            ],
        )?;
        Ok(out)
    }

    /// Backward of [`Gpu::discrete_read`] given `dr` [B, H, W]: adds `dr[b,h]` into row
    /// `idx[b,h]` of `d_memory` ([B, N, W], accumulated in place; heads sharing a row are
    /// summed in head order, so the result is the same bits every run) and returns
    /// `dr[b,h]·M[b, idx[b,h]]`, the gradient of the one-hot weight at each chosen slot, [B, H].
    pub fn discrete_read_backward(
        &self,
        memory: &Tensor,
        indices: &Indices,
        dr: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "discrete_read_backward";
        let d = memory_and_indices(self, OP, memory, indices)?;
        check::tensor(self, OP, "dr", dr, &["B", "H", "W"], &[d.b, d.h, d.w])?;
        check::memory_shaped(self, OP, "d_memory", d_memory, d)?;
        let out = self.alloc(OP, &[d.b, d.h])?;
        let mut rec = self.recorder();
        let flags = reserve(self, &mut rec, OP, d, indices);
        per_window(
            self,
            &mut rec,
            OP,
            &READ_BWD.forms(
                self.form(memory.dtype),
                Form::F32,
                self.form(d_memory.dtype),
            ),
            d,
            &[
                mem_arg(memory),
                whole_idx(indices),
                whole(dr),
                mem_arg(d_memory),
                whole(&out),
                flags.clone(),
            ],
        )?;
        d_memory.touch();
        Ok(out)
    }

    /// Discrete write (scatter), in place: for each row r chosen by some heads,
    /// `M[r] <- M[r] prod_{h: idx_h = r} (1 - e_h) + sum_{h: idx_h = r} a_h`; soft write with
    /// one-hot weights. Only the chosen rows are read or written. Returns the undo record.
    /// Rows of indices `>= N` are left unchanged and the index is reported by the next
    /// `download`/`sync`.
    pub fn discrete_write(
        &self,
        memory: &mut Tensor,
        indices: &Indices,
        erase: &Tensor,
        add: &Tensor,
    ) -> Result<WriteUndo> {
        const OP: &str = "discrete_write";
        let d = memory_and_indices(self, OP, memory, indices)?;
        erase_add(self, OP, erase, add, ["B", "H", "W"], [d.b, d.h, d.w])?;
        let old = self.alloc(OP, &[d.b, d.h, d.w])?;
        let mut rec = self.recorder();
        let flags = reserve(self, &mut rec, OP, d, indices);
        // One pass: each row's owner saves it for every head on it, then writes it.
        per_window(
            self,
            &mut rec,
            OP,
            &SAVE_SCATTER.forms(self.form(memory.dtype), Form::F32, Form::F32),
            d,
            &[
                mem_arg(memory),
                whole_idx(indices),
                whole(&old),
                whole(erase),
                whole(add),
                flags,
            ],
        )?;
        Ok(WriteUndo::record(memory, indices, old))
    }

    fn check_undo(&self, op: &'static str, memory: &Tensor, undo: &WriteUndo) -> Result<Dims> {
        check::memory(self, op, "memory", memory)?;
        if memory.id != undo.memory {
            return Err(Error::Invalid {
                op,
                message: "this WriteUndo was made by a write to a different memory tensor".into(),
            });
        }
        if memory.version() != undo.version_after {
            return Err(Error::Invalid {
                op,
                message: "the memory changed after this write (a later write not yet undone, an \
                          undo already applied, or another in-place op): undo writes in \
                          last-in-first-out order; the memory was left unchanged"
                    .into(),
            });
        }
        memory_and_indices(self, op, memory, &undo.indices)
    }

    /// Restores the rows that `undo`'s write overwrote, bit for bit. `memory` must be the
    /// tensor that write changed (the same tensor, not a copy).
    pub fn undo_write(&self, memory: &mut Tensor, undo: &WriteUndo) -> Result<()> {
        const OP: &str = "undo_write";
        let d = self.check_undo(OP, memory, undo)?;
        let mut rec = self.recorder();
        per_window(
            self,
            &mut rec,
            OP,
            &RESTORE.forms(self.form(memory.dtype), Form::F32, Form::F32),
            d,
            &[
                mem_arg(memory),
                whole_idx(&undo.indices),
                whole(&undo.old_rows),
            ],
        )?;
        memory.set_version(undo.version_before);
        Ok(())
    }

    /// Backward of [`Gpu::discrete_write`]: turns `d_memory` from `dM'` (the gradient after
    /// the write) into `dM` (before it) in place, on the written rows only, and returns the
    /// gradients of erase, add and of the one-hot weight at each chosen slot, with the products
    /// over the other heads on a row formed without division. One dispatch (per binding window
    /// of the memory): each written row's lowest head computes every head's gradients on it,
    /// then turns the row. Indices `>= N` in the record were reported by the write; their
    /// heads' gradients are zeros and no row is touched for them.
    pub fn discrete_write_backward(
        &self,
        undo: &WriteUndo,
        erase: &Tensor,
        add: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<DiscreteWriteGrads> {
        const OP: &str = "discrete_write_backward";
        let d = memory_and_indices(self, OP, d_memory, &undo.indices)
            .map_err(|e| rename_arg(e, "memory", "d_memory"))?;
        check::expect(
            OP,
            "d_memory",
            &d_memory.shape,
            &["B", "N", "W"],
            &undo.memory_shape,
        )?;
        erase_add(self, OP, erase, add, ["B", "H", "W"], [d.b, d.h, d.w])?;
        let g_e = self.alloc(OP, &[d.b, d.h, d.w])?;
        let g_a = self.alloc(OP, &[d.b, d.h, d.w])?;
        let g_w = self.alloc(OP, &[d.b, d.h])?;
        let mut rec = self.recorder();
        write_backward(
            self,
            &mut rec,
            OP,
            d,
            undo,
            erase,
            add,
            d_memory,
            [&g_e, &g_w, &g_a],
        )?;
        d_memory.touch();
        Ok(DiscreteWriteGrads {
            erase: g_e,
            add: g_a,
            weight_at_idx: g_w,
        })
    }
}

impl Gpu {
    /// A step's discrete access: [`Gpu::discrete_read`]`(memory, read_indices)` followed by
    /// [`Gpu::discrete_write`]`(memory, write_indices, erase, add)`, the same results bit for
    /// bit, in one dispatch (per binding window of the memory) instead of two. Returns the read
    /// `[B, Hr, W]` (of the memory before the write) and the write's undo record. Indices
    /// `>= N` of either set read zeros or leave their rows unchanged and are reported by the
    /// next `download`/`sync`, as `discrete_access (read)` or `discrete_access (write)`.
    pub fn discrete_access(
        &self,
        memory: &mut Tensor,
        read_indices: &Indices,
        write_indices: &Indices,
        erase: &Tensor,
        add: &Tensor,
    ) -> Result<(Tensor, WriteUndo)> {
        const OP: &str = "discrete_access";
        // The read's sizes (H: its heads) and the write's (H: its heads).
        let d = memory_and_indices(self, OP, memory, read_indices)
            .map_err(|e| rename_arg(e, "indices", "read_indices"))?;
        let dwrite = memory_and_indices(self, OP, memory, write_indices)
            .map_err(|e| rename_arg(e, "indices", "write_indices"))?;
        erase_add(self, OP, erase, add, ["B", "Hw", "W"], [d.b, dwrite.h, d.w])?;
        let out = self.alloc(OP, &[d.b, d.h, d.w])?;
        let old = self.alloc(OP, &[d.b, dwrite.h, d.w])?;
        let mut rec = self.recorder();
        let check = IndexCheck {
            op: OP,
            heads: d.h,
            kind: CheckKind::RangeTwo {
                first: (read_indices.buf.clone(), "discrete_access (read)"),
                second: (write_indices.buf.clone(), "discrete_access (write)"),
                batch: d.b,
                second_heads: dwrite.h,
                slots: d.n,
            },
        };
        let flags = WindowArg::Whole(self.reserve_check(&mut rec, check), CHECK_SLOTS);
        per_window_units(
            self,
            &mut rec,
            OP,
            &ACCESS_FWD.forms(self.form(memory.dtype), Form::F32, Form::F32),
            dwrite,
            (d.b * (d.h + dwrite.h)) as u64,
            d.h as u32,
            &[
                mem_arg(memory),
                whole_idx(write_indices),
                whole(&old),
                whole(erase),
                whole(add),
                whole_idx(read_indices),
                whole(&out),
                flags,
            ],
        )?;
        Ok((out, WriteUndo::record(memory, write_indices, old)))
    }
}

/// Gradients of a step's discrete access, a read then a write
/// ([`Gpu::discrete_access_backward`]).
#[derive(Debug)]
pub struct DiscreteAccessGrads {
    /// d loss / d w_h(idx_h) of the read, the one-hot weight at each read slot, [B, H].
    pub read_weight_at_idx: Tensor,
    /// The write's gradients, as [`Gpu::discrete_write_backward`] returns them.
    pub write: DiscreteWriteGrads,
}

impl Gpu {
    /// Backward of a step's discrete access: [`Gpu::discrete_read`]`(memory, read_indices)`
    /// followed by [`Gpu::discrete_write`]`(memory, .., erase, add)` that returned `undo`.
    /// The same results, bit for bit, as [`Gpu::discrete_write_backward`]`(undo, erase, add,
    /// d_memory)`, then [`Gpu::undo_write`]`(memory, undo)`, then
    /// [`Gpu::discrete_read_backward`]`(memory, read_indices, dr, d_memory)`, in two
    /// dispatches (per binding window of the memory) instead of three:
    /// - `d_memory` goes from the gradient after the write to the gradient before the read;
    /// - `memory` is restored to what the read saw (the undo, with its checks);
    /// - returns the read's `dr·M[idx]` and the write's erase, add and weight gradients.
    ///
    /// The write's indices were checked by the write; read indices `>= N` are reported by
    /// the next `download`/`sync` and skipped.
    #[allow(clippy::too_many_arguments)] // the step's tensors, as the three calls take them
    pub fn discrete_access_backward(
        &self,
        memory: &mut Tensor,
        read_indices: &Indices,
        dr: &Tensor,
        undo: &WriteUndo,
        erase: &Tensor,
        add: &Tensor,
        d_memory: &mut Tensor,
    ) -> Result<DiscreteAccessGrads> {
        const OP: &str = "discrete_access_backward";
        // The write's sizes (H: its heads) and the read's (H: its heads).
        let dwrite = self.check_undo(OP, memory, undo)?;
        let d = memory_and_indices(self, OP, memory, read_indices)
            .map_err(|e| rename_arg(e, "indices", "read_indices"))?;
        check::tensor(self, OP, "dr", dr, &["B", "H", "W"], &[d.b, d.h, d.w])?;
        erase_add(self, OP, erase, add, ["B", "Hw", "W"], [d.b, dwrite.h, d.w])?;
        check::memory_shaped(self, OP, "d_memory", d_memory, d)?;
        let g_r = self.alloc(OP, &[d.b, d.h])?;
        let g_e = self.alloc(OP, &[d.b, dwrite.h, d.w])?;
        let g_a = self.alloc(OP, &[d.b, dwrite.h, d.w])?;
        let g_w = self.alloc(OP, &[d.b, dwrite.h])?;
        let mut rec = self.recorder();
        let flags = reserve(self, &mut rec, OP, d, read_indices);
        // The write's gradients from dM', then dM' becomes dM on the written rows.
        write_backward(
            self,
            &mut rec,
            OP,
            dwrite,
            undo,
            erase,
            add,
            d_memory,
            [&g_e, &g_w, &g_a],
        )?;
        // The undo and the read's backward.
        per_window_units(
            self,
            &mut rec,
            OP,
            &ACCESS_BWD_READ.forms(
                self.form(memory.dtype),
                Form::F32,
                self.form(d_memory.dtype),
            ),
            d,
            (d.b * (d.h + dwrite.h)) as u64,
            dwrite.h as u32,
            &[
                mem_arg(memory),
                whole_idx(&undo.indices),
                whole(&undo.old_rows),
                whole_idx(read_indices),
                whole(dr),
                mem_arg(d_memory),
                whole(&g_r),
                flags,
            ],
        )?;
        memory.set_version(undo.version_before);
        d_memory.touch();
        Ok(DiscreteAccessGrads {
            read_weight_at_idx: g_r,
            write: DiscreteWriteGrads {
                erase: g_e,
                add: g_a,
                weight_at_idx: g_w,
            },
        })
    }
}

/// A shape error about argument `from` (as a shared check names it) renamed to `to`, the
/// name this op gives that argument.
fn rename_arg(e: Error, from: &str, to: &'static str) -> Error {
    match e {
        Error::Shape {
            op,
            arg,
            expected,
            given,
        } if arg == from => Error::Shape {
            op,
            arg: to,
            expected,
            given,
        },
        other => other,
    }
}
