//! Waiting for the GPU (with a deadline), copying results back, and the errors that only a
//! wait can report: GPU errors captured by the error scopes and out-of-range indices flagged
//! by kernels.

use std::time::{Duration, Instant};

use super::recorder::{CheckKind, CHECK_BYTES};
use super::tensor::{DType, Indices, Tensor};
use super::Gpu;
use crate::error::{Error, Result};

impl Gpu {
    /// Waits for all queued work, then copies the tensor back to the host, as f32 whatever
    /// its dtype (f16 values convert exactly).
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.check_owner("download", "tensor", t.gpu)?;
        super::tensor::require_usage("download", "tensor", &t.buf, wgpu::BufferUsages::COPY_SRC)?;
        // Copies take whole 4-byte words (allocations are whole 16-byte blocks).
        let bytes = self.read_back("download", &t.buf, t.size_bytes().next_multiple_of(4))?;
        Ok(match t.dtype {
            DType::F32 => bytemuck::cast_slice(&bytes).to_vec(),
            DType::F16 => bytes
                .chunks_exact(2)
                .take(t.len)
                .map(|h| half::f16::from_bits(u16::from_le_bytes([h[0], h[1]])).to_f32())
                .collect(),
        })
    }

    /// Waits for all queued work, then copies the indices back to the host.
    pub fn download_indices(&self, t: &Indices) -> Result<Vec<u32>> {
        self.check_owner("download_indices", "indices", t.gpu)?;
        let bytes = self.read_back("download_indices", &t.buf, t.len as u64 * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Waits until all queued work has finished, and reports any error it raised
    /// (out-of-range indices, GPU errors).
    pub fn sync(&self) -> Result<()> {
        let mut rec = self.lock();
        self.flush_batch(&mut rec);
        drop(rec);
        self.wait("sync")?;
        self.collect_errors("sync")
    }

    fn read_back(&self, op: &'static str, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let mut rec = self.lock();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.encoder(&mut rec)
            .copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
        self.flush_batch(&mut rec);
        drop(rec);
        let out = self.map_read(op, &staging, bytes)?;
        self.collect_errors(op)?;
        Ok(out)
    }

    pub(crate) fn map_read(
        &self,
        op: &'static str,
        staging: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait(op)?;
        rx.recv()
            .map_err(|_| Error::Gpu("buffer mapping was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("buffer mapping failed: {e}")))?;
        let view = staging
            .get_mapped_range(0..bytes)
            .map_err(|e| Error::Gpu(format!("buffer mapping failed: {e}")))?;
        let out = view.to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Waits for all work this Gpu submitted, up to the wait timeout.
    pub(crate) fn wait(&self, op: &'static str) -> Result<()> {
        let timeout = *self.wait_timeout.lock().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now();
        // Wait for this Gpu's newest submission by its index, not for "everything": a timed
        // wait for the device's newest submission can race with another thread's submit in
        // wgpu-core (an internal assertion fires when the wait times out just as that submit
        // is being registered).
        let Some(last) = self.lock().last_submission.clone() else {
            let _no_submit = self.rec.lock().unwrap_or_else(|p| p.into_inner());
            return match self.device.poll(wgpu::PollType::Poll) {
                Ok(_) => Ok(()),
                Err(e) => Err(Error::Gpu(format!("polling the GPU failed: {e}"))),
            };
        };
        // Wait in short slices: a backend may hold its context lock while it waits (wgpu's GL
        // backend does, and panics in other threads that wait over 6 s for it), so a long job
        // must not keep other threads of this Gpu out. Each slice holds the recorder's lock,
        // under which every submit happens: a poll never overlaps a submit of another thread
        // of this Gpu (wgpu-core 30 can fail an internal assertion, "If the queue is empty,
        // the current submission index ...", when they interleave).
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let polled = {
                let _no_submit = self.rec.lock().unwrap_or_else(|p| p.into_inner());
                self.device.poll(wgpu::PollType::Wait {
                    submission_index: Some(last.clone()),
                    timeout: Some(left.min(Duration::from_millis(100))),
                })
            };
            match polled {
                Ok(_) => return Ok(()),
                Err(wgpu::PollError::Timeout) if start.elapsed() < timeout => continue,
                Err(wgpu::PollError::Timeout) => {
                    return Err(Error::Timeout {
                        op,
                        what: "the GPU to finish the work queued on this Gpu".into(),
                        waited: start.elapsed(),
                    })
                }
                Err(e) => return Err(Error::Gpu(format!("waiting for the GPU failed: {e}"))),
            }
        }
    }

    /// Reports (and clears) GPU errors and out-of-range indices from submitted batches.
    /// Call only after waiting for the GPU.
    pub(crate) fn collect_errors(&self, op: &'static str) -> Result<()> {
        let errors =
            std::mem::take(&mut *self.gpu_errors.lock().unwrap_or_else(|p| p.into_inner()));
        let submitted = std::mem::take(&mut self.lock().submitted_checks);
        if let Some(e) = errors.into_iter().next() {
            return Err(Error::Gpu(e));
        }
        for (buf, checks) in submitted {
            let bytes = self.map_read(op, &buf, CHECK_BYTES)?;
            let flags: &[u32] = bytemuck::cast_slice(&bytes);
            for (slot, check) in checks.iter().enumerate() {
                // Kernels store u32::MAX - (first bad position) with atomicMax; 0 = all in range.
                if flags[slot] != 0 {
                    let pos = (u32::MAX - flags[slot]) as u64;
                    let (batch, head) = (pos as usize / check.heads, pos as usize % check.heads);
                    return Err(match &check.kind {
                        CheckKind::Range { indices, slots } => Error::IndexOutOfRange {
                            op: check.op,
                            batch,
                            head,
                            index: self.map_read_one(op, indices, pos)?,
                            slots: *slots,
                        },
                        CheckKind::RangeTwo {
                            first,
                            second,
                            batch: b,
                            second_heads,
                            slots,
                        } => {
                            let split = (b * check.heads) as u64;
                            let (set, p, heads) = if pos < split {
                                (first, pos, check.heads)
                            } else {
                                (second, pos - split, *second_heads)
                            };
                            Error::IndexOutOfRange {
                                op: set.1,
                                batch: p as usize / heads,
                                head: p as usize % heads,
                                index: self.map_read_one(op, &set.0, p)?,
                                slots: *slots,
                            }
                        }
                        CheckKind::NoPositiveWeight => Error::Invalid {
                            op: check.op,
                            message: format!(
                                "the weights at [batch {batch}, head {head}] have no positive entry, so nothing \
                                 can be drawn (index 0 was returned)"
                            ),
                        },
                    });
                }
            }
        }
        Ok(())
    }

    fn map_read_one(&self, op: &'static str, buf: &wgpu::Buffer, pos: u64) -> Result<u32> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels index readback"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut rec = self.lock();
        self.encoder(&mut rec)
            .copy_buffer_to_buffer(buf, pos * 4, &staging, 0, 4);
        self.flush_batch(&mut rec);
        drop(rec);
        let b = self.map_read(op, &staging, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
