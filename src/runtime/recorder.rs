//! Recording and batching: every op records its dispatches into one open compute pass of a
//! batch encoder; the batch's parameters go to one uniform arena, written once per submit;
//! a batch is submitted when a wait needs it, when the arena or the index-check slots are
//! full, or when another command needs the encoder. Also the index checks of a batch and the
//! pool of scratch buffers.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, MutexGuard};

use super::{ErrorScopes, Gpu};
use crate::error::{Error, Result};

/// Dispatches recorded per batch before the batch is submitted on its own.
pub(crate) const ARENA_SLOTS: u64 = 4096;
/// Index-check slots per batch (each op that reads indices takes one).
pub(crate) const CHECK_SLOTS: u64 = 1024;
/// Bytes of the index-check flags buffer (one u32 per slot).
pub(crate) const CHECK_BYTES: u64 = CHECK_SLOTS * 4;

/// What a check slot reports if its kernel flags a (batch, head).
#[derive(Clone)]
pub(crate) struct IndexCheck {
    pub op: &'static str,
    pub heads: usize,
    pub kind: CheckKind,
}

#[derive(Clone)]
pub(crate) enum CheckKind {
    /// An index >= slots in `indices`.
    Range {
        indices: Arc<wgpu::Buffer>,
        slots: usize,
    },
    /// Sampling found no positive weight in the row.
    NoPositiveWeight,
    /// Two index sets of one op (a step's reads and writes): positions below `batch * heads`
    /// (the check's heads) are in `first`, the rest in `second` (of `second_heads` per batch
    /// element); each reported with its op label.
    RangeTwo {
        first: (Arc<wgpu::Buffer>, &'static str),
        second: (Arc<wgpu::Buffer>, &'static str),
        batch: usize,
        second_heads: usize,
        slots: usize,
    },
}

/// The batch being recorded, and what submitted batches left to read back.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) encoder: Option<wgpu::CommandEncoder>,
    /// The compute pass dispatches are recorded into, kept open across dispatches and ops
    /// (wgpu orders the dispatches inside it) until another command or a flush needs the encoder.
    pub(crate) pass: Option<wgpu::ComputePass<'static>>,
    /// Parameters staged for the batch being recorded; written to the arena just before submit.
    pub(crate) params: Vec<u8>,
    pub(crate) slots_used: u64,
    checks: Vec<IndexCheck>,
    /// The check the op being recorded reserved: if the batch is submitted in the middle of the
    /// op, the check moves to the next batch with it (see [`Gpu::launch`]).
    open_check: Option<IndexCheck>,
    /// Index checks of batches already submitted, not yet read back.
    pub(crate) submitted_checks: Vec<(wgpu::Buffer, Vec<IndexCheck>)>,
    /// The index-check flags (one u32 per slot), created on first use.
    flags: Option<Arc<wgpu::Buffer>>,
    /// Scratch buffers free for reuse, by size in bytes.
    pool: HashMap<u64, Vec<wgpu::Buffer>>,
    pub(crate) dispatches_recorded: u64,
    pub(crate) submits: u64,
    /// Compute passes begun (a pass ends when another command or a submit needs the encoder).
    pub(crate) passes: u64,
    /// The newest submission of this Gpu: waits wait for it (and so for all before it).
    pub(crate) last_submission: Option<wgpu::SubmissionIndex>,
    /// While profiling: the query set each pass writes its start and end timestamps to.
    pub(crate) capture: Option<super::profile::Capture>,
}

/// The locked recorder, with error scopes around everything recorded while it is held.
pub(crate) struct Rec<'g> {
    gpu: &'g Gpu,
    guard: MutexGuard<'g, Recorder>,
    scopes: Option<ErrorScopes>,
}

impl Deref for Rec<'_> {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.guard
    }
}

impl DerefMut for Rec<'_> {
    fn deref_mut(&mut self) -> &mut Recorder {
        &mut self.guard
    }
}

impl Drop for Rec<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.scopes.take() {
            s.pop(self.gpu);
        }
    }
}

impl Gpu {
    /// The recorder, locked (a poisoned lock is taken over: a panic while holding it cannot
    /// leave the recorder inconsistent in a way that matters more than losing the batch).
    pub(crate) fn lock(&self) -> Rec<'_> {
        let guard = self.rec.lock().unwrap_or_else(|p| p.into_inner());
        Rec {
            gpu: self,
            guard,
            scopes: Some(ErrorScopes::push(self)),
        }
    }

    /// The recorder, locked for one op.
    pub(crate) fn recorder(&self) -> Rec<'_> {
        let mut rec = self.lock();
        rec.open_check = None;
        rec
    }

    /// Counters since creation: (dispatches recorded, command submissions). Useful to check
    /// that many small ops were batched into few submits.
    pub fn counters(&self) -> (u64, u64) {
        let rec = self.lock();
        (rec.dispatches_recorded, rec.submits)
    }

    /// Submits the work recorded so far without waiting for it, so that the GPU works while
    /// the host records the next step. Errors it raises are reported by the next wait.
    pub fn flush(&self) -> Result<()> {
        let mut rec = self.lock();
        self.flush_batch(&mut rec);
        Ok(())
    }

    /// The batch's encoder, for a command other than a dispatch: ends the open compute pass.
    pub(crate) fn encoder<'r>(&self, rec: &'r mut Recorder) -> &'r mut wgpu::CommandEncoder {
        rec.pass = None;
        rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ntm-kernels batch"),
                })
        })
    }

    /// Submits the recorded batch, if any.
    pub(crate) fn flush_batch(&self, rec: &mut Recorder) {
        rec.pass = None;
        let Some(mut enc) = rec.encoder.take() else {
            return;
        };
        if !rec.checks.is_empty() {
            // Clear the slots this batch uses: a queue write lands after earlier submits
            // (whose copies of the flags are done) and before this batch's commands.
            let flags = self.flags_buffer(rec);
            let used = vec![0u8; rec.checks.len() * 4];
            self.queue.write_buffer(&flags, 0, &used);
            // Copy the check flags out so the next batch can reuse the slots.
            let read = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ntm-kernels index checks readback"),
                size: CHECK_BYTES,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            enc.copy_buffer_to_buffer(&flags, 0, &read, 0, CHECK_BYTES);
            let checks = std::mem::take(&mut rec.checks);
            rec.submitted_checks.push((read, checks));
        }
        if !rec.params.is_empty() {
            self.queue.write_buffer(&self.arena, 0, &rec.params);
        }
        rec.last_submission = Some(self.queue.submit([enc.finish()]));
        rec.params.clear();
        rec.slots_used = 0;
        rec.submits += 1;
    }

    fn flags_buffer(&self, rec: &mut Recorder) -> Arc<wgpu::Buffer> {
        rec.flags
            .get_or_insert_with(|| {
                Arc::new(self.new_buffer(CHECK_SLOTS, "ntm-kernels index checks"))
            })
            .clone()
    }

    /// Reserves an index-check slot for the op being recorded and returns the flags buffer its
    /// kernels report to; the slot is passed to them as `Params::check_slot` by
    /// [`Gpu::launch`]. One check per op.
    pub(crate) fn reserve_check(&self, rec: &mut Recorder, check: IndexCheck) -> Arc<wgpu::Buffer> {
        if rec.checks.len() as u64 >= CHECK_SLOTS {
            self.flush_batch(rec);
        }
        rec.open_check = Some(check.clone());
        self.push_check(rec, check);
        self.flags_buffer(rec)
    }

    fn push_check(&self, rec: &mut Recorder, check: IndexCheck) {
        // The batch's flags are cleared by a queue write at its submit (see `flush_batch`),
        // not by a command in the batch, which would split its compute pass.
        rec.checks.push(check);
    }

    /// The check slot of the op being recorded, after the batch was just submitted mid-op:
    /// the check is reserved again in the new batch so that the op's remaining kernels report
    /// to a slot that is read back.
    pub(crate) fn rehome_open_check(&self, rec: &mut Recorder) {
        if let Some(check) = rec.open_check.clone() {
            self.push_check(rec, check);
        }
    }

    /// The slot of the open check in the batch being recorded (0 if none).
    pub(crate) fn open_check_slot(rec: &Recorder) -> u32 {
        if rec.open_check.is_some() {
            rec.checks.len().saturating_sub(1) as u32
        } else {
            0
        }
    }

    /// A scratch buffer of at least `len` f32 elements, contents undefined, returned with
    /// [`Gpu::release`] once the dispatches using it are recorded. Sizes are rounded up to a
    /// power of two (so buffers are reused across shapes) where that stays within
    /// `max_buffer_size`.
    pub(crate) fn scratch(
        &self,
        op: &'static str,
        rec: &mut Recorder,
        len: u64,
    ) -> Result<wgpu::Buffer> {
        let bytes = scratch_bytes(len, self.limits.max_buffer_size).ok_or(Error::TooLarge {
            op,
            what: "a scratch buffer, in bytes (the adapter's max_buffer_size)".into(),
            size: len.saturating_mul(4),
            limit: self.limits.max_buffer_size,
        })?;
        if let Some(b) = rec.pool.get_mut(&bytes).and_then(|v| v.pop()) {
            return Ok(b);
        }
        Ok(self.new_buffer(bytes / 4, "ntm-kernels scratch"))
    }

    /// Returns scratch to the pool. Later dispatches may reuse it: wgpu orders their accesses.
    pub(crate) fn release(&self, rec: &mut Recorder, b: wgpu::Buffer) {
        rec.pool.entry(b.size()).or_default().push(b);
    }

    /// Bytes of scratch buffers the pool keeps for reuse by later ops.
    pub fn scratch_bytes(&self) -> u64 {
        self.lock()
            .pool
            .iter()
            .map(|(k, v)| k * v.len() as u64)
            .sum()
    }

    /// Frees the pooled scratch buffers (the GPU memory goes once queued work that uses them
    /// is done). Later ops allocate scratch again as they need it.
    pub fn release_scratch(&self) {
        self.lock().pool.clear();
    }
}

/// Bytes of a scratch buffer of `len` f32s: the next power of two if within `max`, else
/// exact (in whole vec4s, as every buffer); `None` past `max`.
pub(crate) fn scratch_bytes(len: u64, max: u64) -> Option<u64> {
    let exact = len.max(1).checked_mul(4)?.checked_next_multiple_of(16)?;
    if exact > max {
        return None;
    }
    Some(
        exact
            .checked_next_power_of_two()
            .filter(|&p| p <= max)
            .unwrap_or(exact),
    )
}

#[cfg(test)]
mod tests {
    use super::scratch_bytes;

    #[test]
    fn scratch_sizes_stay_within_the_buffer_limit() {
        assert_eq!(scratch_bytes(0, 1 << 20), Some(16));
        assert_eq!(scratch_bytes(100, 1 << 20), Some(512));
        // 3 MiB rounds to 4 MiB where allowed, stays exact where 4 MiB is over the limit.
        assert_eq!(scratch_bytes(3 << 18, 8 << 20), Some(4 << 20));
        assert_eq!(scratch_bytes(3 << 18, 3 << 20), Some(3 << 20));
        assert_eq!(scratch_bytes((3 << 18) + 1, 3 << 20), None);
        assert_eq!(scratch_bytes(u64::MAX / 2, u64::MAX), None);
    }
}

#[cfg(test)]
mod pass_tests {
    use crate::Gpu;

    /// Index-checked ops record into the open compute pass like every other op: their checks
    /// are cleared by a queue write at submit, not by a command that would end the pass.
    #[test]
    fn index_checks_do_not_split_the_compute_pass() {
        let g = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
        let m = g.upload(&[1, 4, 2], &[1.0; 8]).unwrap();
        let w = g.upload(&[1, 1, 4], &[0.25; 4]).unwrap();
        let ix = g.upload_indices(&[1, 1], &[2]).unwrap();
        g.sync().unwrap();
        let before = g.lock().passes;
        for _ in 0..10 {
            g.soft_read(&m, &w).unwrap();
            g.discrete_read(&m, &ix).unwrap();
            g.sample(&w, 3).unwrap();
        }
        let passes = g.lock().passes - before;
        assert_eq!(
            passes, 1,
            "30 ops, index-checked or not, in one compute pass"
        );
        g.sync().unwrap();
    }
}
