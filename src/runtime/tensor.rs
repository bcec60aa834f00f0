//! Tensors and indices: GPU buffers with a shape, their allocation and upload.

use std::sync::Arc;

use super::{next_id, Gpu};
use crate::error::{Error, Result};

/// A dense f32 tensor in GPU memory, row-major, with its shape.
#[derive(Debug)]
pub struct Tensor {
    pub(crate) buf: Arc<wgpu::Buffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) id: u64,
    pub(crate) gpu: u64,
    /// Changes (to a fresh unique number) whenever an op writes the tensor in place, so that
    /// an undo record can tell whether the memory is still as its write left it.
    pub(crate) version: u64,
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
    /// The GPU buffer, to share with the application's own passes: the tensor's `len()` f32s
    /// start at byte 0, row-major. The buffer may be longer (allocations are whole 16-byte
    /// vec4s). Work recorded by this crate is submitted at its next wait; call
    /// [`Gpu::sync`] before the application reads what the crate wrote.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }
    /// Marks the tensor as written in place.
    pub(crate) fn touch(&mut self) {
        self.version = next_id();
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
            version: next_id(),
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
        let len = self.check_shape("upload", shape)?;
        if data.len() != len {
            return Err(Error::DataLength {
                op: "upload",
                shape: shape.to_vec(),
                expected: len,
                given: data.len(),
            });
        }
        let t = self.alloc("upload", shape)?;
        self.scoped(|| {
            self.queue
                .write_buffer(&t.buf, 0, bytemuck::cast_slice(data))
        });
        Ok(t)
    }

    /// Uploads host indices (u32) as an [`Indices`] tensor of the given shape.
    pub fn upload_indices(&self, shape: &[usize], data: &[u32]) -> Result<Indices> {
        let len = self.check_shape("upload_indices", shape)?;
        if data.len() != len {
            return Err(Error::DataLength {
                op: "upload_indices",
                shape: shape.to_vec(),
                expected: len,
                given: data.len(),
            });
        }
        let t = self.alloc_indices("upload_indices", shape)?;
        self.scoped(|| {
            self.queue
                .write_buffer(&t.buf, 0, bytemuck::cast_slice(data))
        });
        Ok(t)
    }

    /// A zero-filled tensor of the given shape.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        // wgpu zero-initialises new buffers.
        self.alloc("zeros", shape)
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
