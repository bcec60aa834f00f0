//! Tensors and indices: GPU buffers with a shape, their allocation and upload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{next_id, Gpu};
use crate::error::{Error, Result};

/// The storage type of a tensor's elements. Kernels always compute in f32; an f16 tensor is
/// read as f32 and rounded once when stored (DESIGN.md section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE 754 half float, contiguous (two per 32-bit word, the first in the low
    /// half). Only memory-shaped tensors ([B, N, W]: the memory, `dM'`, `d_mem`) may be f16.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        })
    }
}

/// A dense tensor in GPU memory (f32, or f16 for memory-shaped tensors), row-major, with its
/// shape.
#[derive(Debug)]
pub struct Tensor {
    pub(crate) buf: Arc<wgpu::Buffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
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
    /// Size in bytes of the elements (the buffer may be longer).
    pub fn size_bytes(&self) -> u64 {
        self.len as u64 * self.dtype.size_bytes()
    }
    /// The storage type of the elements.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The GPU buffer, to share with the application's own passes: the tensor's `len()`
    /// elements (of its [`Tensor::dtype`]) start at byte 0, row-major. The buffer may be
    /// longer (allocations are whole 16-byte blocks). Work recorded by this crate is submitted at its next wait; call
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
        self.check_shape_as(op, shape, DType::F32)
    }

    fn check_shape_as(&self, op: &'static str, shape: &[usize], dtype: DType) -> Result<usize> {
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
        self.check_bytes(op, &format!("a tensor of shape {shape:?}"), len, dtype)?;
        Ok(len as usize)
    }

    fn check_bytes(&self, op: &'static str, what: &str, len: u64, dtype: DType) -> Result<()> {
        let bytes = len
            .saturating_mul(dtype.size_bytes())
            .max(4)
            .next_multiple_of(16);
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
        self.new_buffer_bytes(len * 4, label)
    }

    /// A storage buffer of `bytes` bytes, rounded up to whole 16-byte blocks.
    pub(crate) fn new_buffer_bytes(&self, bytes: u64, label: &str) -> wgpu::Buffer {
        self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// A new zero-filled f32 tensor (used by ops for their outputs).
    pub(crate) fn alloc(&self, op: &'static str, shape: &[usize]) -> Result<Tensor> {
        self.alloc_as(op, shape, DType::F32)
    }

    /// A new zero-filled tensor of `dtype`.
    pub(crate) fn alloc_as(
        &self,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let len = self.check_shape_as(op, shape, dtype)?;
        Ok(Tensor {
            buf: Arc::new(self.new_buffer_bytes(len as u64 * dtype.size_bytes(), op)),
            shape: shape.to_vec(),
            len,
            dtype,
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

    /// Uploads host data as an f32 tensor of the given shape.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        self.upload_as(DType::F32, shape, data)
    }

    /// Uploads host data as a tensor of `dtype`: for [`DType::F16`] each value is rounded to
    /// the nearest f16, ties to even (values beyond the f16 range become infinities).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ntm_kernels::Error> {
    /// use ntm_kernels::DType;
    /// let gpu = ntm_kernels::Gpu::new()?;
    /// let m = gpu.upload_as(DType::F16, &[1, 2, 2], &[0.1, 0.2, 0.3, 0.4])?;
    /// assert_eq!(m.dtype(), DType::F16);
    /// let back = gpu.download(&m)?; // f32, exactly the f16 values
    /// assert_eq!(back[0], half::f16::from_f32(0.1).to_f32());
    /// # Ok(())
    /// # }
    /// ```
    pub fn upload_as(&self, dtype: DType, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        const OP: &str = "upload_as";
        self.check_data_as(OP, shape, data.len(), dtype)?;
        let t = self.alloc_as(OP, shape, dtype)?;
        self.write_new(&t.buf, &host_bytes(dtype, data));
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
        self.check_data_as(op, shape, given, DType::F32)
    }

    fn check_data_as(
        &self,
        op: &'static str,
        shape: &[usize],
        given: usize,
        dtype: DType,
    ) -> Result<()> {
        let len = self.check_shape_as(op, shape, dtype)?;
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
    /// batch, which is the first to see the buffer). Queue writes take whole 4-byte words:
    /// an odd number of f16s is padded with a zero half (inside the 16-byte allocation).
    fn write_new(&self, buf: &wgpu::Buffer, bytes: &[u8]) {
        let mut padded;
        let bytes = if bytes.len().is_multiple_of(4) {
            bytes
        } else {
            padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            &padded
        };
        self.scoped(|| self.queue.write_buffer(buf, 0, bytes));
    }

    /// A zero-filled f32 tensor of the given shape.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        // wgpu zero-initialises new buffers.
        self.alloc("zeros", shape)
    }

    /// A zero-filled tensor of the given shape and dtype.
    pub fn zeros_as(&self, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        self.alloc_as("zeros_as", shape, dtype)
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
        let bytes = host_bytes(t.dtype, data);
        let size = bytes.len() as u64;
        let mut rec = self.lock();
        // A staging buffer per write, copied by a command of the batch: a queue write would
        // land before the batch's earlier ops.
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels write staging"),
            size,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        let mapped = staging
            .get_mapped_range_mut(..)
            .map_err(|e| Error::Gpu(format!("write: mapping the staging buffer failed: {e}")));
        match mapped {
            Ok(mut view) => view.copy_from_slice(&bytes),
            Err(e) => return Err(e),
        }
        staging.unmap();
        self.encoder(&mut rec)
            .copy_buffer_to_buffer(&staging, 0, &t.buf, 0, size);
        t.touch();
        Ok(())
    }

    /// Copies `src` into `dst` (same shape) with the crate's copy kernel, in the batch. The
    /// dtypes may differ (a memory-shaped f16 and f32 pair): values are converted as by
    /// [`Gpu::cast`].
    pub fn copy_into(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        const OP: &str = "copy_into";
        crate::check::same_shape(self, OP, ("src", src), ("dst", dst))?;
        let mut rec = self.recorder();
        self.record_convert(&mut rec, OP, src, dst)?;
        dst.touch();
        Ok(())
    }

    /// A tensor over the application's own buffer: its elements (of `dtype`) start at byte
    /// 0, row-major. The buffer needs `STORAGE` usage (and `COPY_SRC` to be downloaded,
    /// `COPY_DST` to be written with [`Gpu::write`]), and must hold the tensor's bytes rounded
    /// up to whole 16-byte blocks (kernels load four elements at a time; they never store past
    /// the tensor's own elements, except that [`Gpu::write`] of an odd number of f16s also
    /// writes the half after them). The application keeps its handle: work the crate records
    /// on the tensor is submitted at the crate's next wait or [`Gpu::flush`].
    pub fn wrap(&self, buffer: wgpu::Buffer, shape: &[usize], dtype: DType) -> Result<Tensor> {
        const OP: &str = "wrap";
        let len = self.check_shape_as(OP, shape, dtype)?;
        require_usage(OP, "buffer", &buffer, wgpu::BufferUsages::STORAGE)?;
        let need = (len as u64 * dtype.size_bytes()).next_multiple_of(16);
        if buffer.size() < need {
            return Err(Error::Invalid {
                op: OP,
                message: format!(
                    "argument `buffer` holds {} bytes; a tensor of shape {shape:?} needs {need} \
                     (its {len} {dtype} elements rounded up to whole 16-byte blocks)",
                    buffer.size()
                ),
            });
        }
        Ok(Tensor {
            buf: Arc::new(buffer),
            shape: shape.to_vec(),
            len,
            dtype,
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

/// Host values as the bytes of `dtype` (f16: rounded to nearest, ties to even), padded to
/// whole 4-byte words.
pub(crate) fn host_bytes(dtype: DType, data: &[f32]) -> Vec<u8> {
    let mut out = match dtype {
        DType::F32 => bytemuck::cast_slice(data).to_vec(),
        DType::F16 => data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
    };
    out.resize(out.len().next_multiple_of(4), 0);
    out
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
