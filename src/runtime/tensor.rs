//! Tensors and indices: GPU buffers with a shape, their allocation and upload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{next_id, Gpu};
use crate::error::{Error, Result};

/// The storage type of a tensor's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float.
    F32,
}

/// A dense f32 tensor in GPU memory, row-major, with its shape.
#[derive(Debug)]
pub struct Tensor {
    pub(crate) buf: Arc<wgpu::Buffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) id: u64,
    pub(crate) gpu: u64,
    /// Changes (to a fresh unique number) whenever an op writes the tensor in place, so that
    /// an undo record can tell whether the memory is still as its write left it. Atomic so that
    /// a user kernel that writes a tensor it borrowed shared can mark it too.
    pub(crate) version: AtomicU64,
}

impl Tensor {
    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: zero-sized tensors are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.len as u64 * 4
    }
    /// The storage type of the elements.
    pub fn dtype(&self) -> DType {
        DType::F32
    }
    /// The GPU buffer, to share with the application's own passes: the tensor's `len()` f32s
    /// start at byte 0, row-major. The buffer may be longer (allocations are whole 16-byte
    /// vec4s). Work recorded by this crate is submitted at its next wait; call
    /// [`Gpu::sync`] before the application reads what the crate wrote.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }
    /// Marks the tensor as written in place.
    pub(crate) fn touch(&self) {
        self.version.store(next_id(), Ordering::Relaxed);
    }
    /// The tensor's current version (see `touch`).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
    /// Sets the version back (an undo restores the memory as it was before a write).
    pub(crate) fn set_version(&self, v: u64) {
        self.version.store(v, Ordering::Relaxed);
    }
}

/// A dense u32 tensor in GPU memory (slot indices), with its shape.
#[derive(Debug)]
pub struct Indices {
    pub(crate) buf: Arc<wgpu::Buffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) gpu: u64,
}

impl Indices {
    /// Another handle to the same GPU indices (they are never written after creation).
    pub(crate) fn share(&self) -> Indices {
        Indices {
            buf: self.buf.clone(),
            shape: self.shape.clone(),
            len: self.len,
            gpu: self.gpu,
        }
    }
    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: zero-sized tensors are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.len as u64 * 4
    }
}

impl Gpu {
    fn check_shape(&self, op: &'static str, shape: &[usize]) -> Result<usize> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::Shape {
                op,
                arg: "shape",
                expected: "a non-empty shape with no zero-sized dimension".into(),
                given: shape.to_vec(),
            });
        }
        let mut len: u64 = 1;
        for &d in shape {
            len = len.checked_mul(d as u64).ok_or_else(|| Error::TooLarge {
                op,
                what: format!("the element count of shape {shape:?}"),
                size: u64::MAX,
                limit: u32::MAX as u64,
            })?;
        }
        self.check_bytes(op, &format!("a tensor of shape {shape:?}"), len)?;
        Ok(len as usize)
    }

    fn check_bytes(&self, op: &'static str, what: &str, len: u64) -> Result<()> {
        let bytes = len.saturating_mul(4).max(4).next_multiple_of(16);
        if bytes > self.limits.max_buffer_size {
            return Err(Error::TooLarge {
                op,
                what: format!("{what}, in bytes (the adapter's max_buffer_size)"),
                size: bytes,
                limit: self.limits.max_buffer_size,
            });
        }
        // Shaders index with u32.
        if len > u32::MAX as u64 {
            return Err(Error::TooLarge {
                op,
                what: format!("{what}, in elements (32-bit indexing)"),
                size: len,
                limit: u32::MAX as u64,
            });
        }
        Ok(())
    }

    /// A storage buffer of `len` f32/u32 elements (zero-initialised by wgpu), allocated in
    /// whole vec4s (16 bytes) so that kernels may read and write it four elements at a time.
    pub(crate) fn new_buffer(&self, len: u64, label: &str) -> wgpu::Buffer {
        self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (len * 4).max(4).next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// A new zero-filled f32 tensor (used by ops for their outputs).
    pub(crate) fn alloc(&self, op: &'static str, shape: &[usize]) -> Result<Tensor> {
        let len = self.check_shape(op, shape)?;
        Ok(Tensor {
            buf: Arc::new(self.new_buffer(len as u64, op)),
            shape: shape.to_vec(),
            len,
            id: next_id(),
            gpu: self.id,
            version: AtomicU64::new(next_id()),
        })
    }

    pub(crate) fn alloc_indices(&self, op: &'static str, shape: &[usize]) -> Result<Indices> {
        let len = self.check_shape(op, shape)?;
        Ok(Indices {
            buf: Arc::new(self.new_buffer(len as u64, op)),
            shape: shape.to_vec(),
            len,
            gpu: self.id,
        })
    }

    /// Uploads host data as a tensor of the given shape.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        self.check_data("upload", shape, data.len())?;
        let t = self.alloc("upload", shape)?;
        self.write_new(&t.buf, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Uploads host indices (u32) as an [`Indices`] tensor of the given shape.
    pub fn upload_indices(&self, shape: &[usize], data: &[u32]) -> Result<Indices> {
        self.check_data("upload_indices", shape, data.len())?;
        let t = self.alloc_indices("upload_indices", shape)?;
        self.write_new(&t.buf, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// An error unless `shape` is valid and holds `given` elements.
    fn check_data(&self, op: &'static str, shape: &[usize], given: usize) -> Result<()> {
        let len = self.check_shape(op, shape)?;
        if given != len {
            return Err(Error::DataLength {
                op,
                shape: shape.to_vec(),
                expected: len,
                given,
            });
        }
        Ok(())
    }

    /// Fills a buffer that no recorded work uses yet (a queue write lands before the next
    /// batch, which is the first to see the buffer).
    fn write_new(&self, buf: &wgpu::Buffer, bytes: &[u8]) {
        self.scoped(|| self.queue.write_buffer(buf, 0, bytes));
    }

    /// A zero-filled tensor of the given shape.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        // wgpu zero-initialises new buffers.
        self.alloc("zeros", shape)
    }

    /// Uploads `data` into an existing tensor of the same length, in order with the work
    /// already recorded (ops recorded before it see the old contents, those after it the new),
    /// without a submit.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let mut x = gpu.zeros(&[2, 8])?;
    /// for step in 0..3 {
    ///     gpu.write(&mut x, &vec![step as f32; 16])?; // this step's input
    ///     // ... ops reading x ...
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()> {
        const OP: &str = "write";
        self.check_owner(OP, "t", t.gpu)?;
        if data.len() != t.len {
            return Err(Error::DataLength {
                op: OP,
                shape: t.shape.clone(),
                expected: t.len,
                given: data.len(),
            });
        }
        require_usage(OP, "t", &t.buf, wgpu::BufferUsages::COPY_DST)?;
        let mut rec = self.lock();
        // A staging buffer per write, copied by a command of the batch: a queue write would
        // land before the batch's earlier ops.
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels write staging"),
            size: t.size_bytes(),
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        let mapped = staging
            .get_mapped_range_mut(..)
            .map_err(|e| Error::Gpu(format!("write: mapping the staging buffer failed: {e}")));
        match mapped {
            Ok(mut view) => view.copy_from_slice(bytemuck::cast_slice(data)),
            Err(e) => return Err(e),
        }
        staging.unmap();
        self.encoder(&mut rec)
            .copy_buffer_to_buffer(&staging, 0, &t.buf, 0, t.size_bytes());
        t.touch();
        Ok(())
    }

    /// Copies `src` into `dst` (same shape) with the crate's copy kernel, in the batch.
    pub fn copy_into(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        const OP: &str = "copy_into";
        crate::check::same_shape(self, OP, ("src", src), ("dst", dst))?;
        let mut rec = self.recorder();
        self.record_copy(&mut rec, OP, &src.buf, &dst.buf, src.len as u64)?;
        dst.touch();
        Ok(())
    }

    /// A tensor over the application's own buffer: its f32s start at byte 0, row-major.
    /// The buffer needs `STORAGE` usage (and `COPY_SRC` to be downloaded, `COPY_DST` to be
    /// written with [`Gpu::write`]), and must hold the tensor's bytes rounded up to whole
    /// 16-byte vec4s (kernels move four elements at a time; they never store past the
    /// tensor's own elements). The application keeps its handle: work the crate records on the
    /// tensor is submitted at the crate's next wait or [`Gpu::flush`].
    pub fn wrap(&self, buffer: wgpu::Buffer, shape: &[usize], dtype: DType) -> Result<Tensor> {
        const OP: &str = "wrap";
        let DType::F32 = dtype;
        let len = self.check_shape(OP, shape)?;
        require_usage(OP, "buffer", &buffer, wgpu::BufferUsages::STORAGE)?;
        let need = (len as u64 * 4).next_multiple_of(16);
        if buffer.size() < need {
            return Err(Error::Invalid {
                op: OP,
                message: format!(
                    "argument `buffer` holds {} bytes; a tensor of shape {shape:?} needs {need} \
                     (its {len} f32s rounded up to whole 16-byte vec4s)",
                    buffer.size()
                ),
            });
        }
        Ok(Tensor {
            buf: Arc::new(buffer),
            shape: shape.to_vec(),
            len,
            id: next_id(),
            gpu: self.id,
            version: AtomicU64::new(next_id()),
        })
    }

    pub(crate) fn check_owner(&self, op: &'static str, arg: &'static str, gpu: u64) -> Result<()> {
        if gpu != self.id {
            return Err(Error::Invalid {
                op,
                message: format!("argument `{arg}` belongs to another Gpu"),
            });
        }
        Ok(())
    }
}

/// An error unless `buf` has `usage`.
pub(crate) fn require_usage(
    op: &'static str,
    arg: &'static str,
    buf: &wgpu::Buffer,
    usage: wgpu::BufferUsages,
) -> Result<()> {
    if !buf.usage().contains(usage) {
        return Err(Error::Invalid {
            op,
            message: format!(
                "argument `{arg}`'s buffer has usage {:?}, which lacks {usage:?}",
                buf.usage()
            ),
        });
    }
    Ok(())
}
